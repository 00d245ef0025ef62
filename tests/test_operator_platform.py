"""Fitting the platform, end to end against the real operator, control plane, PostgreSQL and Redis:
worker placement (PerfTuning default under the job's own template) and the visible queue."""

from __future__ import annotations

import json
from typing import Any

from operator_harness import JobsHarness, wait_for
from test_operator_jobs import EUROPEAN, spec
from test_operator_tuning import tuning, wait_tuning

NODE = "mcop-node"  # the control plane's one (kwok) node


def test_workers_are_placed_by_the_perftuning_under_the_jobs_own_template(
    jobs: JobsHarness,
) -> None:
    jobs.apply(
        tuning(
            workers={
                "template": {
                    "nodeSelector": {"kubernetes.io/hostname": NODE},
                    "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
                    "imagePullSecrets": [{"name": "regcred"}],
                    "labels": {"team": "rates", "tier": "batch"},
                    "annotations": {"example.com/owner": "rates"},
                }
            }
        )
    )
    own = {
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"montecarlo.io/job": "placed"}},
            }
        ],
        "labels": {"tier": "urgent"},
    }
    jobs.create_job("placed", spec(EUROPEAN, workerTemplate=own, cache=False))
    status = jobs.wait_phase("placed", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    pods = json.loads(
        jobs.kubectl("get", "pods", "-l", "montecarlo.io/job=placed", "-o", "json").stdout
    )
    assert pods["items"], "no worker pods"
    for pod in pods["items"]:
        meta, pod_spec = pod["metadata"], pod["spec"]
        assert pod_spec["nodeName"] == NODE  # scheduled by the real scheduler under the selector
        assert pod_spec["nodeSelector"] == {"kubernetes.io/hostname": NODE}  # the default
        # The job's list replaces the default's whole (the API server adds its own two).
        own_tolerations = [t for t in pod_spec["tolerations"] if t["key"] in ("spot", "gpu")]
        assert own_tolerations == own["tolerations"]
        assert pod_spec["topologySpreadConstraints"] == own["topologySpreadConstraints"]
        assert pod_spec["imagePullSecrets"] == [{"name": "regcred"}]
        assert (meta["labels"]["team"], meta["labels"]["tier"]) == ("rates", "urgent")
        assert meta["labels"]["montecarlo.io/job"] == "placed"
        assert meta["annotations"]["example.com/owner"] == "rates"


def _queue_state(jobs: JobsHarness, name: str) -> tuple[Any, str]:
    status = jobs.status(name)
    admitted = next((c for c in status.get("conditions") or [] if c["type"] == "Admitted"), {})
    return status.get("queuePosition"), str(admitted.get("message", ""))


def test_a_queued_job_says_who_is_ahead_and_the_position_follows_admissions(
    jobs: JobsHarness,
) -> None:
    jobs.apply(tuning(workers={"maxConcurrentJobs": 1}))
    wait_tuning(jobs, lambda s: s.get("phase") == "Ready", "PerfTuning Ready")
    # A blocker whose pods no node takes: admitted (it holds the slot) and never finishing.
    nowhere = {"nodeSelector": {"pool": "nowhere"}}
    jobs.create_job("blocker", spec(EUROPEAN, workerTemplate=nowhere, cache=False))
    wait_for(lambda: jobs.status("blocker").get("workerJob"), timeout=60, what="blocker admitted")
    jobs.create_job("normal", spec(EUROPEAN, priority="normal", cache=False, seed=11))
    wait_for(lambda: _queue_state(jobs, "normal")[0] == 1, timeout=60, what="normal queued first")
    jobs.create_job("critical", spec(EUROPEAN, priority="critical", cache=False, seed=12))

    wait_for(
        lambda: _queue_state(jobs, "normal")[0] == 2, timeout=60, what="critical jumps the queue"
    )
    assert _queue_state(jobs, "normal")[1] == (
        "1 job ahead (1 critical); 1 of 1 running (workers.maxConcurrentJobs)"
    )
    assert _queue_state(jobs, "critical") == (
        1,
        "next in line; 1 of 1 running (workers.maxConcurrentJobs)",
    )
    assert jobs.status("normal")["phase"] == "Queued"
    wide = jobs.kubectl("get", "mcj", "-o", "wide").stdout.splitlines()
    column = wide[0].split().index("QUEUE")
    rows = {line.split()[0]: line.split() for line in wide[1:]}
    assert rows["normal"][column] == "2" and rows["critical"][column] == "1"

    # Nothing changes while the blocker runs, so the waiting jobs' loops write nothing: a watch
    # over four waiting intervals (1 s in these tests) sees no modification of either.
    watched = jobs.kubectl(
        "get",
        "mcj",
        "--watch-only",
        "--output-watch-events",
        "-o",
        "name",
        "--request-timeout=4s",
        check=False,
    ).stdout
    assert "normal" not in watched and "critical" not in watched, watched

    jobs.kubectl("delete", "mcj", "blocker", "--wait=false")
    status = jobs.wait_phase("critical", "Running", "Succeeded")
    assert "queuePosition" not in status, status
    wait_for(lambda: _queue_state(jobs, "normal")[0] == 1, timeout=60, what="normal moves up")
    jobs.wait_phase("critical", "Succeeded")
    final = jobs.wait_phase("normal", "Succeeded")
    assert "queuePosition" not in final
