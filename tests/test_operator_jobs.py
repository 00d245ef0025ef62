"""MonteCarloJob end to end: the real operator, control plane (the pod runner plays the worker
pods), PostgreSQL and Redis. Each test has its own namespace, databases and operator."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
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
    expected = mcop_run_json(job_manifest("euro", spec()), tmp_path, shards=3)
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
    assert table[0].split() == ["NAME", "PHASE", "PROGRESS", "ESTIMATE", "STDERR", "PRIORITY", "AGE"]
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
