"""Fitting the platform, end to end against the real operator, control plane, PostgreSQL and Redis:
worker placement (PerfTuning default under the job's own template), the visible queue, and the
operator's default connection for namespaces without Secrets."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from mcop_devcluster.ports import free_port
from operator_harness import (
    UNSCHEDULABLE,
    JobsHarness,
    running_operator,
    secret_manifest,
    wait_for,
)
from test_operator_jobs import EUROPEAN, spec
from test_operator_tuning import tuning, wait_tuning

NODE = "mcop-node"  # the control plane's one (kwok) node
SMALL = spec(EUROPEAN, paths=50_000, cache=False)
FINISH = 300.0  # seconds: worker start-up (numba) is slow on a loaded machine


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
    jobs.create_job("placed", spec(SMALL, workerTemplate=own))
    status = jobs.wait_phase("placed", "Succeeded", "Failed", timeout=FINISH)
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
    jobs.create_job("blocker", spec(SMALL, workerTemplate=UNSCHEDULABLE))
    wait_for(lambda: jobs.status("blocker").get("workerJob"), timeout=60, what="blocker admitted")
    jobs.create_job("normal", spec(SMALL, priority="normal", seed=11))
    wait_for(lambda: _queue_state(jobs, "normal")[0] == 1, timeout=60, what="normal queued first")
    jobs.create_job("critical", spec(SMALL, priority="critical", seed=12))

    # Each waiting job writes its own position from its own loop: wait for both, in any order.
    wait_for(
        lambda: (_queue_state(jobs, "normal")[0], _queue_state(jobs, "critical")[0]) == (2, 1),
        timeout=60,
        what="critical jumps the queue",
    )
    assert _queue_state(jobs, "normal")[1] == (
        "1 job ahead (1 critical); 1 of 1 running (workers.maxConcurrentJobs)"
    )
    assert _queue_state(jobs, "critical")[1] == (
        "next in line; 1 of 1 running (workers.maxConcurrentJobs)"
    )
    assert jobs.status("normal")["phase"] == "Queued"
    wide = jobs.kubectl("get", "mcj", "-o", "wide").stdout.splitlines()
    # Empty cells (no estimate yet) are blank: read the QUEUE column by its position.
    start = wide[0].index("QUEUE")
    end = wide[0].index("PATHS")
    rows = {line.split()[0]: line[start:end].strip() for line in wide[1:]}
    assert (rows["normal"], rows["critical"], rows["blocker"]) == ("2", "1", ""), wide

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
    status = jobs.wait_phase("critical", "Running", "Succeeded", timeout=FINISH)
    assert "queuePosition" not in status, status
    wait_for(lambda: _queue_state(jobs, "normal")[0] == 1, timeout=60, what="normal moves up")
    jobs.wait_phase("critical", "Succeeded", timeout=FINISH)
    final = jobs.wait_phase("normal", "Succeeded", timeout=FINISH)
    assert "queuePosition" not in final


def test_a_namespace_without_secrets_runs_on_the_operators_default_connection(
    cluster_with_crds: Any, namespace: str, pg_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    # The operator's own namespace holds the chart's Secrets; the team's namespace has nothing.
    home = f"mcop-home-{uuid.uuid4().hex[:8]}"
    rest = cluster_with_crds.rest()
    rest.create("/api/v1/namespaces", {"metadata": {"name": home, "labels": {"mcop-test": "true"}}})
    try:
        for doc in (
            secret_manifest(home, "montecarlo-redis", "url", redis_url),
            secret_manifest(home, "montecarlo-postgres", "dsn", pg_dsn),
        ):
            cluster_with_crds.kubectl("apply", "-f", "-", input=json.dumps(doc))
        env = {"MCOP_METRICS_PORT": str(free_port()), "MCOP_DEFAULT_CONNECTION_NAMESPACE": home}
        kubeconfig = str(cluster_with_crds.kubeconfig)
        with running_operator(kubeconfig, namespace, tmp_path / "operator.log", **env) as op:
            jobs = JobsHarness(cluster_with_crds, namespace, op)
            jobs.create_job("shared", SMALL)
            status = jobs.wait_phase("shared", "Succeeded", "Failed", timeout=FINISH)
            assert status["phase"] == "Succeeded", status
            cond = jobs.condition("shared", "DefaultConnection")
            assert cond and cond["status"] == "True" and cond["reason"] == "OperatorDefault"
            assert f"in namespace {home}" in cond["message"]
            # The workers read a copy in their own namespace, owned by the job (gone with it).
            copy = jobs.get("secret", "shared-connection")
            assert copy is not None
            owner = copy["metadata"]["ownerReferences"][0]
            assert owner["uid"] == jobs.job("shared")["metadata"]["uid"]
            worker = jobs.get("job", status["workerJob"])
            assert worker is not None
            env_refs = {
                e["name"]: e["valueFrom"]["secretKeyRef"]
                for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]
                if "valueFrom" in e
            }
            assert env_refs["MCOP_POSTGRES_DSN"] == {
                "name": "shared-connection",
                "key": "postgres-dsn",
            }
            assert env_refs["MCOP_REDIS_URL"] == {"name": "shared-connection", "key": "redis-url"}
            # No secret value in the status, the events or the log.
            text = json.dumps(jobs.job("shared")) + json.dumps(jobs.events("shared")) + op.log()
            assert pg_dsn not in text and redis_url not in text
        # Switched off (no MCOP_DEFAULT_CONNECTION_NAMESPACE): the namespace must bring its own.
        port = str(free_port())
        with running_operator(
            kubeconfig, namespace, tmp_path / "operator2.log", MCOP_METRICS_PORT=port
        ) as op:
            jobs = JobsHarness(cluster_with_crds, namespace, op)
            jobs.create_job("own", spec(SMALL, seed=3))
            wait_for(
                lambda: (jobs.condition("own", "Admitted") or {}).get("reason") == "SecretNotFound",
                timeout=FINISH,  # the operator's own start-up included
                what="own waits for its namespace's Secrets",
            )
    finally:
        rest.delete(f"/api/v1/namespaces/{home}", {"propagationPolicy": "Background"})
