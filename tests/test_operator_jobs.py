"""MonteCarloJob end to end: the real operator, control plane (the pod runner plays the worker
pods), PostgreSQL and Redis. Each test has its own namespace, databases and operator."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from operator_harness import JobsHarness, job_manifest, mcop_run_json, wait_for

EUROPEAN: dict[str, Any] = {
    "model": {"type": "gbm", "spot": 100.0, "volatility": 0.2, "rate": 0.05},
    "instrument": {"type": "european", "optionType": "call", "strike": 100.0, "maturity": 1.0},
    "paths": 400_000,
    "seed": 7,
    "shards": 2,
    "priority": "high",
}

NUMBER_KEYS = ("estimate", "stdErr", "confidenceInterval", "paths", "stoppedEarly")


def spec(base: dict[str, Any] = EUROPEAN, **over: Any) -> dict[str, Any]:
    s = copy.deepcopy(base)
    s.update(over)
    return s


def test_european_runs_to_succeeded_with_the_numbers_of_mcop_run(
    jobs: JobsHarness, tmp_path: Path
) -> None:
    jobs.create_job("euro", spec())
    status = jobs.wait_phase("euro", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    expected = mcop_run_json(job_manifest("euro", spec()), tmp_path)
    for key in NUMBER_KEYS:
        assert status["result"][key] == expected[key], key
    assert status["specHash"] == expected["specHash"]
    assert status["progress"] == "100%"
    assert status["pathsDone"] == status["pathsTotal"] == expected["paths"]
    assert status["cacheHit"] is False
    assert status["priorityClassName"] == "montecarlo-high"
    worker = jobs.get("job", status["workerJob"])
    assert worker is not None
    assert worker["spec"]["template"]["spec"]["priorityClassName"] == "montecarlo-high"
    assert worker["spec"]["completions"] == 2
    cond = jobs.condition("euro", "Succeeded")
    assert cond and cond["status"] == "True" and cond["reason"] == "AllPathsSimulated"
    # kubectl's view: the printer columns and `kubectl wait`.
    jobs.kubectl("wait", "--for=condition=Succeeded", "mcj/euro", "--timeout=10s")
    table = jobs.kubectl("get", "montecarlojobs").stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "PHASE",
        "PROGRESS",
        "ESTIMATE",
        "STDERR",
        "PRIORITY",
        "AGE",
    ]
    assert table[1].split()[:3] == ["euro", "Succeeded", "100%"]
    wide = jobs.kubectl("get", "mcj", "-o", "wide").stdout.splitlines()[0].split()
    assert {"PATHS", "SHARDS", "ETA"} <= set(wide)


def test_unknown_priority_class_fails_with_a_reason(jobs: JobsHarness) -> None:
    jobs.create_job("nopc", spec(priorityClassName="no-such-class"))
    status = jobs.wait_phase("nopc", "Failed", "Succeeded")
    assert status["phase"] == "Failed"
    cond = jobs.condition("nopc", "Failed")
    assert cond and cond["reason"] == "PriorityClassNotFound"
    assert "no-such-class" in cond["message"]
    assert jobs.get("job", "nopc-workers") is None
    reasons = {e["reason"] for e in jobs.events("nopc")}
    assert "PriorityClassNotFound" in reasons


# A job long enough to act on while it runs: one shard, 252 steps, many blocks.
LONG_ASIAN: dict[str, Any] = {
    "model": {"type": "gbm", "spot": 100.0, "volatility": 0.2, "rate": 0.05},
    "instrument": {
        "type": "asian",
        "optionType": "call",
        "strike": 100.0,
        "maturity": 1.0,
        "steps": 252,
    },
    "paths": 6_000_000,
    "seed": 5,
    "shards": 1,
    "varianceReduction": {"antithetic": True, "controlVariate": True},
}


def _running_with_progress(jobs: JobsHarness, name: str) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: (
                (s := jobs.status(name)).get("phase") == "Running"
                and (s.get("pathsDone") or 0) > 0
                and s
            ),
            timeout=120,
            what=f"{name} running with progress",
        )
    )


@pytest.mark.parametrize("example", ["asian", "barrier", "basket", "var"])
def test_every_instrument_matches_mcop_run(jobs: JobsHarness, tmp_path: Path, example: str) -> None:
    doc = yaml.safe_load((Path(__file__).parents[1] / "examples" / f"{example}.yaml").read_text())
    s = spec(doc["spec"], paths=min(doc["spec"]["paths"], 300_000), shards=3)
    jobs.create_job(example, s)
    status = jobs.wait_phase(example, "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    expected = mcop_run_json(job_manifest(example, s), tmp_path)
    keys = NUMBER_KEYS + (("valueAtRisk", "expectedShortfall") if example == "var" else ())
    for key in keys:
        assert status["result"][key] == expected[key], key
    if example == "var":
        assert status["estimate"] == expected["valueAtRisk"]["0.99"]


def test_identical_spec_is_served_from_the_cache(jobs: JobsHarness) -> None:
    jobs.create_job("first", spec())
    first = jobs.wait_phase("first", "Succeeded")
    # Shards, priority and the name do not enter the spec hash: a cache hit all the same.
    jobs.create_job("second", spec(shards=5, priority="low"))
    second = jobs.wait_phase("second", "Succeeded", "Failed", timeout=30)
    assert second["cacheHit"] is True
    assert second["specHash"] == first["specHash"]
    for key in NUMBER_KEYS:
        assert second["result"][key] == first["result"][key]
    assert jobs.get("job", "second-workers") is None
    cond = jobs.condition("second", "Succeeded")
    assert cond and cond["reason"] == "CacheHit"
    # cache: false computes again.
    jobs.create_job("third", spec(cache=False))
    third = jobs.wait_phase("third", "Succeeded")
    assert third["cacheHit"] is False and third["result"]["estimate"] == first["result"]["estimate"]


def test_target_precision_stops_early_with_the_numbers_of_mcop_run(
    jobs: JobsHarness, tmp_path: Path
) -> None:
    s = spec(LONG_ASIAN, shards=2, targetStdErr=0.002)
    jobs.create_job("early", s)
    status = jobs.wait_phase("early", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    assert status["result"]["stoppedEarly"] is True
    assert status["result"]["stdErr"] <= 0.002
    assert status["result"]["paths"] < status["pathsTotal"]
    cond = jobs.condition("early", "Succeeded")
    assert cond and cond["reason"] == "TargetPrecisionReached"
    expected = mcop_run_json(job_manifest("early", s), tmp_path)
    for key in NUMBER_KEYS:
        assert status["result"][key] == expected[key], key


def test_suspend_keeps_finished_blocks_and_resume_finishes(
    jobs: JobsHarness, tmp_path: Path
) -> None:
    jobs.create_job("pausing", spec(LONG_ASIAN))
    _running_with_progress(jobs, "pausing")
    jobs.kubectl("patch", "mcj", "pausing", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    suspended = jobs.wait_phase("pausing", "Suspended", timeout=60)
    cond = jobs.condition("pausing", "Suspended")
    assert cond and cond["status"] == "True"
    wait_for(
        lambda: (
            not jobs.kubectl(
                "get", "pods", "-l", "montecarlo.io/job=pausing", "-o", "name"
            ).stdout.strip()
        ),
        timeout=60,
        what="worker pods gone while suspended",
    )
    kept = jobs.status("pausing")["pathsDone"]
    assert kept >= suspended["pathsDone"] > 0
    jobs.kubectl("patch", "mcj", "pausing", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    final = jobs.wait_phase("pausing", "Succeeded", "Failed", timeout=180)
    assert final["phase"] == "Succeeded"
    expected = mcop_run_json(job_manifest("pausing", spec(LONG_ASIAN)), tmp_path)
    for key in NUMBER_KEYS:
        assert final["result"][key] == expected[key], key


def test_timeout_fails_with_deadline_exceeded(jobs: JobsHarness) -> None:
    jobs.create_job("slow", spec(LONG_ASIAN, paths=200_000_000, timeoutSeconds=3))
    status = jobs.wait_phase("slow", "Failed", "Succeeded", timeout=90)
    assert status["phase"] == "Failed"
    cond = jobs.condition("slow", "Failed")
    assert cond and cond["reason"] == "DeadlineExceeded", cond


@pytest.mark.operator_env(MCOP_SHARD_RETRIES="0")
def test_failing_worker_fails_the_job_with_the_pods_reason(jobs: JobsHarness) -> None:
    # The workers' database is unreachable: each shard gives up after its retry budget.
    from operator_harness import secret_manifest

    jobs.apply(secret_manifest(jobs.namespace, "dead-pg", "dsn", "postgresql://u:pw@127.0.0.1:9/x"))
    jobs.apply(
        {
            "apiVersion": "montecarlo.io/v1alpha1",
            "kind": "PerfTuning",
            "metadata": {"name": "deadpg"},
            "spec": {
                "postgres": {
                    "dsnSecretRef": {"name": "dead-pg", "key": "dsn"},
                    "commandTimeoutSeconds": 1,
                }
            },
        }
    )
    jobs.create_job("doomed", spec(tuningRef="deadpg"))
    status = jobs.wait_phase("doomed", "Failed", "Succeeded", timeout=120)
    assert status["phase"] == "Failed"
    cond = jobs.condition("doomed", "Failed")
    assert cond and cond["reason"] == "WorkerFailed", cond
    assert "exit code" in cond["message"]
    assert "pw" not in cond["message"]  # never the secret


def test_deleting_a_job_removes_its_workers_and_blocks(jobs: JobsHarness, pg_dsn: str) -> None:
    import asyncio

    import asyncpg

    jobs.create_job("doomed", spec(LONG_ASIAN))
    status = _running_with_progress(jobs, "doomed")
    uid = jobs.job("doomed")["metadata"]["uid"]
    assert jobs.get("job", status["workerJob"]) is not None
    jobs.kubectl("delete", "mcj", "doomed", "--wait=true", "--timeout=60s")
    wait_for(
        lambda: jobs.get("job", "doomed-workers") is None,
        timeout=60,
        what="worker Job garbage-collected",
    )

    async def blocks_left() -> int:
        con = await asyncpg.connect(pg_dsn)
        try:
            return int(
                await con.fetchval("SELECT count(*) FROM block_results WHERE job_uid = $1", uid)
            )
        finally:
            await con.close()

    assert jobs.get("montecarlojob", "doomed") is None
    # The delete handler removed the job's blocks before kopf released the finalizer.
    assert asyncio.run(blocks_left()) == 0


def test_operator_killed_mid_job_resumes_without_loss(jobs: JobsHarness, tmp_path: Path) -> None:
    s = spec(LONG_ASIAN, shards=2)
    jobs.create_job("phoenix", s)
    _running_with_progress(jobs, "phoenix")
    jobs.operator.kill()
    jobs.operator.start()
    final = jobs.wait_phase("phoenix", "Succeeded", "Failed", timeout=180)
    assert final["phase"] == "Succeeded"
    workers = jobs.kubectl("get", "jobs", "-l", "montecarlo.io/job=phoenix", "-o", "name")
    assert workers.stdout.split() == ["job.batch/phoenix-workers"]  # never a second one
    expected = mcop_run_json(job_manifest("phoenix", s), tmp_path)
    for key in NUMBER_KEYS:
        assert final["result"][key] == expected[key], key


def test_redis_stopped_mid_job_still_finishes(
    jobs: JobsHarness, redis_server: Any, tmp_path: Path
) -> None:
    s = spec(LONG_ASIAN, shards=2)
    jobs.create_job("noredis", s)
    _running_with_progress(jobs, "noredis")
    redis_server.stop()
    try:
        wait_for(
            lambda: (
                ((c := jobs.condition("noredis", "RedisAvailable")) and c["status"] == "False")
                or jobs.status("noredis").get("phase") == "Succeeded"
            ),
            timeout=60,
            what="RedisAvailable=False",
        )
        final = jobs.wait_phase("noredis", "Succeeded", "Failed", timeout=180)
    finally:
        redis_server.start()
    assert final["phase"] == "Succeeded"
    expected = mcop_run_json(job_manifest("noredis", s), tmp_path)
    for key in NUMBER_KEYS:
        assert final["result"][key] == expected[key], key


def test_correlation_that_is_not_positive_definite_fails_with_invalid_spec(
    jobs: JobsHarness,
) -> None:
    doc = yaml.safe_load((Path(__file__).parents[1] / "examples" / "basket.yaml").read_text())
    # Symmetric, unit diagonal, entries in [-1, 1]: the CRD accepts it; Cholesky does not.
    bad = [[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]]
    s = spec(doc["spec"], paths=100_000)
    s["model"]["correlation"] = bad
    jobs.create_job("notpd", s)
    status = jobs.wait_phase("notpd", "Failed", "Succeeded", timeout=30)
    assert status["phase"] == "Failed"
    cond = jobs.condition("notpd", "Failed")
    assert cond and cond["reason"] == "InvalidSpec", cond
    assert "spec.model.correlation" in cond["message"]
    assert "positive-definite" in cond["message"]
    assert jobs.get("job", "notpd-workers") is None


def test_missing_secret_waits_with_a_clear_condition_then_runs(jobs: JobsHarness) -> None:
    jobs.apply(
        {
            "apiVersion": "montecarlo.io/v1alpha1",
            "kind": "PerfTuning",
            "metadata": {"name": "later"},
            "spec": {"redis": {"urlSecretRef": {"name": "redis-later", "key": "url"}}},
        }
    )
    jobs.create_job("patient", spec(tuningRef="later", paths=100_000))
    wait_for(
        lambda: (c := jobs.condition("patient", "Admitted")) and c["reason"] == "SecretNotFound",
        timeout=30,
        what="SecretNotFound",
    )
    cond = jobs.condition("patient", "Admitted")
    assert cond and "redis-later" in cond["message"] and "'url'" in cond["message"]
    assert jobs.status("patient")["phase"] == "Pending"
    redis_url = jobs.kubectl(
        "get", "secret", "montecarlo-redis", "-o", "jsonpath={.data.url}"
    ).stdout
    jobs.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "redis-later"},
            "data": {"url": redis_url},
        }
    )
    final = jobs.wait_phase("patient", "Succeeded", "Failed", timeout=120)
    assert final["phase"] == "Succeeded"
