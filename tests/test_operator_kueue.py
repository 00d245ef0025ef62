"""spec.queueName against a real Kueue controller (built from its Go module by scripts/build-kueue,
run by mcop_devcluster.kueue with its webhooks on 127.0.0.1): worker Jobs created suspended in a
LocalQueue, Queued/WaitingForKueue until Kueue admits them, a ClusterQueue whose quota admits one
job at a time, and the operator's own maxConcurrentJobs out of the way."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcop_devcluster.binaries import MissingBinary
from mcop_devcluster.kueue import KueueController, kueue_dir, webhook_configurations
from operator_harness import JobsHarness, job_manifest, mcop_run_json, wait_for
from test_operator_jobs import EUROPEAN, LONG_ASIAN, NUMBER_KEYS, spec
from test_operator_tuning import tuning

FINISH = 400.0  # seconds: worker start-up (numba) is slow on a loaded machine
ONE_JOB = {"requests": {"cpu": "1", "memory": "256Mi"}}  # the ClusterQueue's whole quota


@pytest.fixture
def kueue(cluster_with_crds: Any, namespace: str) -> Iterator[KueueController]:
    try:
        controller = KueueController(
            cluster_with_crds.kubeconfig, cluster_with_crds.kubectl, [namespace]
        )
    except MissingBinary as error:
        pytest.fail(str(error), pytrace=False)
    try:
        controller.start()
        yield controller
    finally:
        controller.cleanup()


def _queues(jobs: JobsHarness, cluster_queue: str) -> None:
    """A ResourceFlavor, a ClusterQueue admitting one worker Job (1 CPU) and its LocalQueue."""
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ResourceFlavor",
            "metadata": {"name": "mcop-default-flavor"},
        },
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ClusterQueue",
            "metadata": {"name": cluster_queue},
            "spec": {
                "namespaceSelector": {},
                "resourceGroups": [
                    {
                        "coveredResources": ["cpu", "memory"],
                        "flavors": [
                            {
                                "name": "mcop-default-flavor",
                                "resources": [
                                    {"name": "cpu", "nominalQuota": "1"},
                                    {"name": "memory", "nominalQuota": "1Gi"},
                                ],
                            }
                        ],
                    }
                ],
            },
        },
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "LocalQueue",
            "metadata": {"name": "batch", "namespace": jobs.namespace},
            "spec": {"clusterQueue": cluster_queue},
        },
    ]
    for doc in docs:
        jobs.kubectl("apply", "-f", "-", input=json.dumps(doc))


def _worker_job(jobs: JobsHarness, name: str) -> dict[str, Any]:
    return jobs.get("job", f"{name}-workers") or {}


def test_webhook_configurations_point_at_loopback_and_only_what_runs() -> None:
    try:
        manifests = (kueue_dir() / "webhooks.yaml").read_text()
    except MissingBinary as error:
        pytest.fail(str(error), pytrace=False)
    docs = webhook_configurations(manifests, "https://127.0.0.1:9443", b"CA", ["team-a"])
    hooks = [hook for doc in docs for hook in doc["webhooks"]]
    assert hooks and all(
        h["clientConfig"]["url"].startswith("https://127.0.0.1:9443/") for h in hooks
    )
    groups = {g for h in hooks for rule in h["rules"] for g in rule["apiGroups"]}
    assert groups == {"kueue.x-k8s.io", "batch"}, groups
    for hook in hooks:
        if "batch" in hook["rules"][0]["apiGroups"]:
            selector = hook["namespaceSelector"]["matchExpressions"][0]
            assert selector["values"] == ["team-a"]


def test_kueue_admits_one_job_at_a_time_and_the_operators_limit_stays_out_of_it(
    jobs: JobsHarness, kueue: KueueController, tmp_path: Path
) -> None:
    cluster_queue = f"mcop-{uuid.uuid4().hex[:8]}"
    _queues(jobs, cluster_queue)
    try:
        # The operator's own limit: one job, taken by a job without a queueName.
        jobs.apply(tuning(workers={"maxConcurrentJobs": 1}, metrics={"intervalSeconds": 1}))
        plain = spec(LONG_ASIAN, paths=3_000_000, cache=False)
        jobs.create_job("plain", plain)
        wait_for(
            lambda: jobs.status("plain").get("phase") == "Running", timeout=120, what="plain runs"
        )
        first = spec(LONG_ASIAN, paths=1_500_000, seed=21, cache=False, queueName="batch")
        second = spec(EUROPEAN, paths=200_000, seed=22, shards=1, cache=False, queueName="batch")
        first["shards"] = 1
        first["resources"] = second["resources"] = ONE_JOB
        # One priority (Kueue reads the worker pods' PriorityClass): Kueue's order is then FIFO.
        first["priority"] = second["priority"] = "normal"
        jobs.create_job("first", first)
        wait_for(lambda: _worker_job(jobs, "first"), timeout=60, what="first's worker Job")
        jobs.create_job("second", second)
        worker = wait_for(lambda: _worker_job(jobs, "second"), timeout=60, what="second's Job")
        # Created suspended, in the LocalQueue; Kueue made a Workload of it.
        assert worker["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "batch"
        assert worker["spec"]["suspend"] is True
        # Kueue admits the first although the operator's one slot is taken by "plain".
        wait_for(
            lambda: (
                jobs.status("first").get("phase") == "Running"
                and _worker_job(jobs, "first")["spec"].get("suspend") is False
            ),
            timeout=FINISH,
            what="Kueue admits the first",
        )
        assert jobs.status("plain").get("phase") == "Running", "both run: Kueue ignores the limit"
        # The second waits for the first: quota for one job only.
        admitted = jobs.condition("second", "Admitted") or {}
        assert jobs.status("second")["phase"] == "Queued", jobs.status("second")
        assert admitted.get("reason") == "WaitingForKueue", admitted
        assert "LocalQueue 'batch'" in admitted.get("message", "")
        assert _worker_job(jobs, "second")["spec"]["suspend"] is True
        workloads = json.loads(jobs.kubectl("get", "workloads", "-o", "json").stdout)["items"]
        assert len(workloads) == 2, [w["metadata"]["name"] for w in workloads]
        done_first = jobs.wait_phase("first", "Succeeded", "Failed", timeout=FINISH)
        assert done_first["phase"] == "Succeeded", done_first
        first_job = wait_for(
            lambda: (_worker_job(jobs, "first").get("status") or {}).get("completionTime"),
            timeout=120,
            what="the first worker Job complete",
        )
        done_second = jobs.wait_phase("second", "Succeeded", "Failed", timeout=FINISH)
        assert done_second["phase"] == "Succeeded", done_second
        assert (jobs.condition("second", "Admitted") or {}).get("reason") == "AdmittedByKueue"
        # Kueue's order: the second Job was unsuspended (its startTime, set by the Job
        # controller on resume) only once the first Job had completed and freed the quota.
        second_start = (_worker_job(jobs, "second").get("status") or {}).get("startTime", "")
        assert second_start >= first_job, (first_job, second_start)
        for name, s, done in (("first", first, done_first), ("second", second, done_second)):
            expected = mcop_run_json(job_manifest(name, s), tmp_path)
            for key in NUMBER_KEYS:
                assert done["result"][key] == expected[key], (name, key)
        jobs.wait_phase("plain", "Succeeded", "Failed", timeout=FINISH)
    finally:
        jobs.kubectl("delete", "clusterqueue", cluster_queue, "--ignore-not-found", "--wait=false")
