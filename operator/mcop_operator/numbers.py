"""The engine seen from the operator: parse and hash a job's spec, fold the blocks the workers
stored (in any order) into the running estimate and the final result, exactly as `mcop run` does."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import time
from collections.abc import Mapping
from typing import Any

from mcop_worker.engine.aggregate import CI_LEVEL, Estimate, JobAggregator
from mcop_worker.engine.blocks import plan_blocks
from mcop_worker.engine.stats import BlockStats
from mcop_worker.model import validation
from mcop_worker.model.spec import JobSpec, parse_spec
from mcop_worker.model.spec_hash import spec_hash

from . import job_status
from .job_status import RunningNumbers
from .naming import JOB_KIND


def parse(body: Mapping[str, Any]) -> tuple[JobSpec, str]:
    """The engine's spec and its hash, from a job the API server stored. The API server has
    checked the CRD's schema and CEL rules (the files `mcop run` validates with); checking them
    again here cost 20-60 ms of the event loop per job (seconds for 100 jobs applied at once).
    What only code can judge (a correlation that is not positive-definite) raises InvalidSpec, a
    ManifestError naming the field."""
    doc = {"spec": copy.deepcopy(dict(body.get("spec") or {}))}
    schema = validation.openapi_schema(JOB_KIND)
    validation.prune_nulls_and_default(doc, schema)  # as the API server does (a no-op on its copy)
    validation.normalise_numbers(doc, schema)  # 100 and 100.0 alike
    job_spec = parse_spec(doc["spec"])
    return job_spec, spec_hash(job_spec)


def paths_total(job_spec: JobSpec) -> int:
    return plan_blocks(job_spec).paths


@dataclasses.dataclass(frozen=True)
class Summary:
    numbers: RunningNumbers
    final: Estimate | None
    stopped_early: bool
    complete_on_record: bool  # every block the result needs is stored


class Aggregator:
    """The engine's JobAggregator plus where the database read left off."""

    def __init__(self, job_spec: JobSpec, spec_hash_: str) -> None:
        self.spec_hash = spec_hash_
        self.last_seq = 0
        self._agg = JobAggregator(job_spec)

    def add(self, seq: int, block_index: int, stats_json: str) -> None:
        stats = BlockStats.from_json(stats_json)
        if stats.block != block_index:
            raise ValueError(f"row for block {block_index} holds block {stats.block}")
        self._agg.add(stats)
        self.last_seq = max(self.last_seq, seq)

    def summary(self) -> Summary:
        progress = self._agg.progress()
        running = progress.running
        numbers = RunningNumbers(
            paths_done=progress.paths_done,
            paths_total=progress.paths_total,
            estimate=running.estimate if running else None,
            std_err=running.std_err if running else None,
            ci_level=running.ci_level if running else CI_LEVEL,
            ci_lower=running.ci_lower if running else None,
            ci_upper=running.ci_upper if running else None,
        )
        final = progress.final
        return Summary(
            numbers=numbers,
            final=final,
            stopped_early=bool(final and final.stopped_early),
            complete_on_record=final is not None,
        )


def result_dict(final: Estimate, elapsed_seconds: float) -> dict[str, Any]:
    """status.result: the same object `mcop run --json` prints, less what depends on the run."""
    result = final.to_result()
    result["elapsedSeconds"] = round(elapsed_seconds, 3)
    return result


def status_from_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """The headline status fields of a finished job, taken from its result."""
    fields: dict[str, Any] = {"pathsDone": result.get("paths")}
    for key in ("estimate", "stdErr", "confidenceInterval"):
        if result.get(key) is not None:
            fields[key] = result[key]
    fields.update(job_status.display_fields(result.get("estimate"), result.get("stdErr")))
    if "result" not in fields:
        fields["result"] = dict(result)
    return fields


def seconds_since(rfc3339: str) -> float:
    then = datetime.datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return max(0.0, (datetime.datetime.now(datetime.UTC) - then).total_seconds())


class RateMeter:
    """Paths per second since the loop first saw this run going (reset by suspend)."""

    def __init__(self) -> None:
        self._start: tuple[float, int] | None = None
        self._last: tuple[float, int] | None = None

    def observe(self, paths_done: int) -> None:
        now = time.monotonic()
        if self._start is None:
            self._start = (now, paths_done)
        self._last = (now, paths_done)

    def per_second(self) -> float | None:
        if self._start is None or self._last is None:
            return None
        dt = self._last[0] - self._start[0]
        dp = self._last[1] - self._start[1]
        return dp / dt if dt >= 1.0 and dp > 0 else None

    def reset(self) -> None:
        self._start = self._last = None
