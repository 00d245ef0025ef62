"""Pure status computation for a MonteCarloJob: progress fields, shard counts, worker failures."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclasses.dataclass(frozen=True)
class RunningNumbers:
    """The running values over the finished blocks, as the engine aggregates them."""

    paths_done: int
    paths_total: int
    estimate: float | None
    std_err: float | None
    ci_level: float
    ci_lower: float | None
    ci_upper: float | None


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def progress_fields(numbers: RunningNumbers, paths_per_second: float | None) -> dict[str, Any]:
    """The progress part of status; ``progress`` is whole percent, never 100% before the end."""
    total = max(numbers.paths_total, 1)
    pct = min(100, math.floor(100 * numbers.paths_done / total))
    fields: dict[str, Any] = {
        "progress": f"{pct}%",
        "pathsDone": numbers.paths_done,
        "pathsTotal": numbers.paths_total,
    }
    if _finite(numbers.estimate) is not None:
        fields["estimate"] = numbers.estimate
    if _finite(numbers.std_err) is not None:
        fields["stdErr"] = numbers.std_err
    if _finite(numbers.ci_lower) is not None and _finite(numbers.ci_upper) is not None:
        fields["confidenceInterval"] = {
            "level": numbers.ci_level,
            "lower": numbers.ci_lower,
            "upper": numbers.ci_upper,
        }
    fields.update(display_fields(_finite(numbers.estimate), _finite(numbers.std_err)))
    if paths_per_second and paths_per_second > 0:
        fields["pathsPerSecond"] = round(paths_per_second)
        remaining = max(numbers.paths_total - numbers.paths_done, 0)
        fields["etaSeconds"] = math.ceil(remaining / paths_per_second)
    return fields


def shard_counts(worker_job: Mapping[str, Any] | None, shards: int) -> dict[str, int]:
    status = (worker_job or {}).get("status") or {}
    return {
        "total": shards,
        "active": int(status.get("active") or 0),
        "succeeded": int(status.get("succeeded") or 0),
        "failed": int(status.get("failed") or 0),
    }


def job_condition(worker_job: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    for cond in ((worker_job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return dict(cond)
    return None


def worker_job_finished_ok(worker_job: Mapping[str, Any] | None) -> bool:
    return job_condition(worker_job, "Complete") is not None


def worker_job_failure(worker_job: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(reason, message) when the Job controller gave up on the workers; None otherwise.

    A deadline maps to DeadlineExceeded, anything else (backoff limits, failed indexes) to
    WorkerFailed; the caller adds the failed pod's own reason to the message.
    """
    failed = job_condition(worker_job, "Failed") or job_condition(worker_job, "FailureTarget")
    if failed is None:
        return None
    if failed.get("reason") == "DeadlineExceeded":
        return "DeadlineExceeded", "the workers ran past timeoutSeconds: " + str(
            failed.get("message") or "deadline exceeded"
        )
    return "WorkerFailed", str(failed.get("message") or failed.get("reason") or "workers failed")


def pod_failure_summary(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """The most telling reason a worker pod gave, e.g. 'shard 1: exit code 1 (Error): ...'."""
    for pod in pods:
        if (pod.get("status") or {}).get("phase") != "Failed":
            continue
        index = (
            (pod.get("metadata") or {})
            .get("annotations", {})
            .get("batch.kubernetes.io/job-completion-index", "?")
        )
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            if term:
                msg = (term.get("message") or "").strip().splitlines()
                detail = f": {msg[-1]}" if msg else ""
                if term.get("reason") == "OOMKilled":
                    detail += ": the worker went over its memory limit; raise spec.resources"
                    detail += ".limits.memory (resources is immutable: create a new MonteCarloJob)"
                return (
                    f"shard {index}: exit code {term.get('exitCode')} "
                    f"({term.get('reason') or 'Error'}){detail}"
                )
        reason = (pod.get("status") or {}).get("reason") or "Failed"
        message = (pod.get("status") or {}).get("message") or ""
        return f"shard {index}: {reason} {message}".strip()
    return None


def pod_shard(pod: Mapping[str, Any]) -> int | None:
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(
        "batch.kubernetes.io/job-completion-index"
    )
    return int(raw) if raw is not None and str(raw).isdigit() else None


def _rfc3339_to_unix(value: str) -> float:
    import datetime

    return (
        datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
        .replace(tzinfo=datetime.UTC)
        .timestamp()
    )


def silent_pods(
    reports: Mapping[int, Any],
    pods: Sequence[Mapping[str, Any]],
    now: float,
    heartbeat_interval: float,
) -> list[tuple[int, str, float]]:
    """Running worker pods whose shard has not reported for three heartbeat intervals, as
    (shard, pod name, seconds silent). A pod that started after its shard's last report is a
    replacement still starting up, and is left alone."""
    limit = 3 * heartbeat_interval
    out: list[tuple[int, str, float]] = []
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        shard = pod_shard(pod)
        report = reports.get(shard) if shard is not None else None
        if report is None or status.get("phase") != "Running" or meta.get("deletionTimestamp"):
            continue
        if getattr(report, "state", "running") != "running":
            continue
        silent = now - float(report.heartbeat)
        created = meta.get("creationTimestamp")
        if silent > limit and created and _rfc3339_to_unix(created) <= float(report.heartbeat):
            out.append((int(shard), str(meta.get("name")), silent))  # type: ignore[arg-type]
    return out


# -- what kubectl shows, and the convergence so far ---------------------------------------------
HISTORY_POINTS = 32


def display_fields(estimate: float | None, std_err: float | None) -> dict[str, Any]:
    """status.display: the estimate rounded to the digits its standard error justifies, the
    standard error to two significant digits (strings, for `kubectl get`; the numbers in status
    and status.result keep full precision). A zero standard error (nothing random) shows the
    estimate to 6 significant digits."""
    if _finite(estimate) is None or _finite(std_err) is None:
        return {}
    assert estimate is not None and std_err is not None
    if std_err <= 0:
        return {"display": {"estimate": f"{estimate:.6g}", "stdErr": "0"}}
    # The decimal place of the standard error's second significant digit.
    places = 1 - math.floor(math.log10(std_err))
    if places > 12 or abs(estimate) >= 1e12:
        return {"display": {"estimate": f"{estimate:.6g}", "stdErr": f"{std_err:.2g}"}}
    err = round(std_err, places)
    if err >= 10 ** (2 - places):  # rounding made a third digit (e.g. 0.0996 -> 0.100)
        places -= 1
        err = round(std_err, places)
    value = round(estimate, places)
    fmt = f"{{:.{max(places, 0)}f}}"
    shown = fmt.format(value)
    return {
        "display": {
            "estimate": "0" + shown[2:] if shown.startswith("-0") and float(shown) == 0 else shown,
            "stdErr": fmt.format(err),
        }
    }


def extend_history(
    history: Sequence[Mapping[str, Any]] | None,
    paths: int | None,
    estimate: float | None,
    std_err: float | None,
    limit: int = HISTORY_POINTS,
) -> list[dict[str, Any]]:
    """status.history with the point (paths, estimate, stdErr) added: at most ``limit`` points,
    thinned so that they stay spread over log(paths), the scale the convergence is drawn on
    (the first and the latest point always stay)."""
    points = [dict(p) for p in history or []]
    if not paths or _finite(estimate) is None or _finite(std_err) is None:
        return points
    point = {"paths": int(paths), "estimate": estimate, "stdErr": std_err}
    if points and points[-1]["paths"] >= paths:
        if points[-1]["paths"] == paths:
            points[-1] = point  # the same paths, maybe the final numbers: keep the newest
        return points
    points.append(point)
    while len(points) > max(limit, 2):
        logs = [math.log(p["paths"]) for p in points]
        # Drop the inner point whose neighbours are closest: the densest part of the curve.
        drop = min(range(1, len(points) - 1), key=lambda i: logs[i + 1] - logs[i - 1])
        del points[drop]
    return points
