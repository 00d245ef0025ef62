"""On a real node (kubelet v1.36.3, containerd, runc, kube-proxy; docs/control-plane.md): the image
built from the Dockerfile, the chart installed with its defaults in a namespace enforcing
"restricted" (operator, bundled Redis and PostgreSQL as containers), jobs whose numbers are those
of `mcop run`, and the failures a real kubelet produces (OOM kill, deleted pods, a killed operator).

One real node for the whole session (``real_cluster``); its teardown compares the machine's state
before and after. These tests are slow (minutes), marked ``realnode``.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart_harness import CHART, RELEASE, run_helm
from mcop_devcluster import netguard
from mcop_devcluster.pytest_cluster import KubeCluster
from mcop_devcluster.realnode import NODE_ADDRESS, POD_BRIDGE, local_storage_manifests
from operator_harness import job_manifest, mcop_run_json

pytestmark = pytest.mark.realnode

ROOT = Path(__file__).resolve().parents[1]
NUMBER_KEYS = ("estimate", "stdErr", "confidenceInterval", "paths", "stoppedEarly")
RESTRICTED = {
    f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")
}


def kget(cluster: KubeCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


# --- the node itself ---------------------------------------------------------------------------


def test_the_node_is_a_kubelet_with_containerd(real_cluster: KubeCluster) -> None:
    wide = real_cluster.kubectl("get", "nodes", "-o", "wide").stdout
    assert re.search(
        r"mcop-node\s+Ready\s+\S+\s+\S+\s+v1\.36\.3\s+" + re.escape(NODE_ADDRESS), wide
    )
    assert "containerd://" in wide, wide
    node = kget(real_cluster, "node", "mcop-node")
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.36.3"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == NODE_ADDRESS


def test_the_guard_drops_what_would_leave_and_counts_it(real_cluster: KubeCluster) -> None:
    """By its rules and counters only: no packet is sent to find out."""
    assert netguard.installed()
    rules = subprocess.run(
        ["nft", "list", "table", netguard.FAMILY, netguard.TABLE],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f'ip saddr 10.244.0.0/24 oifname != "{POD_BRIDGE}" counter' in rules
    assert "ip daddr 10.0.0.0/24 counter" in rules
    counters = netguard.counters()
    assert set(counters) == {
        "forward/pod-leaves",
        "forward/service-untranslated",
        "forward/to-pods-elsewhere",
        "forward/pod-ipv6",
        "output/service-untranslated",
        "output/to-pods-elsewhere",
        "postrouting/pod-leaves",
    }
    # Every chain hooks in ahead of the machine's own filters, and drops (no accept rule).
    assert rules.count("priority filter - 10; policy accept;") == 3
    assert " accept" not in rules.replace("policy accept", "")


def test_a_missing_image_fails_at_once_without_a_registry(real_cluster: KubeCluster) -> None:
    name = "no-such-image"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "example.invalid/nothing:1"}]},
    }
    real_cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    started = time.monotonic()
    try:

        def waiting() -> dict[str, Any] | None:
            statuses = (
                kget(real_cluster, "-n", "default", "pod", name)["status"].get("containerStatuses")
                or []
            )
            state = statuses[0].get("state", {}).get("waiting") if statuses else None
            return (
                state
                if state and state.get("reason") in ("ErrImagePull", "ImagePullBackOff")
                else None
            )

        state = real_cluster.wait_for(waiting, timeout=60, what="the pull to fail")
        assert time.monotonic() - started < 30
        assert "127.0.0.1:9" in state.get("message", ""), state
    finally:
        real_cluster.kubectl("-n", "default", "delete", "pod", name, "--wait=false")


# --- the chart with its defaults ------------------------------------------------------------------


class Install:
    def __init__(self, cluster: KubeCluster, namespace: str, env: dict[str, str]) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.env = env

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> Any:
        return self.cluster.kubectl("-n", self.namespace, *args, check=check, input=input)

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def create_job(self, name: str, spec: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(job_manifest(name, spec)))

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get("montecarlojob", name).get("status") or {})

    def wait_phase(self, name: str, *phases: str, timeout: float = 300) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            status = self.status(name)
            return status if status.get("phase") in phases else None

        return self.cluster.wait_for(done, timeout=timeout, what=f"{name} in {phases}", interval=1)

    def pods(self, selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("pods", "-l", selector)["items"]
        return items

    def operator_pod(self) -> dict[str, Any]:
        """The leading operator pod (the chart runs 2 replicas; the Lease's holder is
        "<pod name>_<pid>")."""

        def leader() -> dict[str, Any] | None:
            pods = {
                p["metadata"]["name"]: p
                for p in self.pods("app.kubernetes.io/component=operator")
                if not p["metadata"].get("deletionTimestamp")
            }
            for lease in self.get("leases")["items"]:
                holder = (lease.get("spec") or {}).get("holderIdentity") or ""
                if holder.rpartition("_")[0] in pods:
                    return pods[holder.rpartition("_")[0]]
            return None

        found: dict[str, Any] = self.cluster.wait_for(
            leader, timeout=120, what="the leading operator pod", interval=1
        )
        return found


@pytest.fixture(scope="module")
def install(
    real_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Install]:
    """`helm install --wait` with the chart's defaults in a namespace enforcing "restricted"."""
    namespace = "mcop-real"
    manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": RESTRICTED},
    }
    real_cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    storage = local_storage_manifests(real_cluster.base_dir / "node" / "volumes" / "postgres")
    real_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(storage))
    home = tmp_path_factory.mktemp("helm")
    env = {
        **real_cluster.env,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    out = run_helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "--wait",
        "--timeout",
        "600s",
        env=env,
        timeout=660,
    )
    assert "would violate" not in out.stderr, out.stderr
    yield Install(real_cluster, namespace, env)
    run_helm(
        "uninstall",
        RELEASE,
        "--namespace",
        namespace,
        "--wait",
        "--timeout",
        "120s",
        env=env,
        check=False,
    )


SMALL: dict[str, Any] = {"paths": 20_000, "shards": 2}


def instrument_specs() -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        spec = {**doc["spec"], **SMALL}
        spec.pop("targetStdErr", None)
        specs.append((path.stem, spec))
    return specs


def test_the_chart_defaults_run_as_containers_under_restricted(install: Install) -> None:
    pods = install.get("pods")["items"]
    images = {p["spec"]["containers"][0]["image"] for p in pods}
    assert {"montecarlo-operator:0.1.0", "redis:7.2.7-bookworm", "postgres:16.9-bookworm"} <= images
    for pod in pods:
        assert pod["status"]["phase"] == "Running", pod["metadata"]["name"]
        for cs in pod["status"]["containerStatuses"]:
            assert cs["ready"] and cs["containerID"].startswith("containerd://"), cs


@pytest.mark.parametrize(
    "instrument,spec", instrument_specs(), ids=[n for n, _ in instrument_specs()]
)
def test_every_instrument_gives_the_numbers_of_mcop_run(
    install: Install, instrument: str, spec: dict[str, Any], tmp_path: Path
) -> None:
    name = f"real-{instrument}"
    install.create_job(name, spec)
    status = install.wait_phase(name, "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    expected = mcop_run_json(job_manifest(name, spec), tmp_path)
    for key in NUMBER_KEYS:
        assert status["result"][key] == expected[key], key


def test_kubectl_logs_of_a_worker(install: Install) -> None:
    install.create_job("real-logs", {**dict(instrument_specs())["european"], "seed": 7})
    install.wait_phase("real-logs", "Succeeded", "Failed")
    pods = install.pods("montecarlo.io/job=real-logs")
    assert pods
    log = install.kubectl("logs", pods[0]["metadata"]["name"]).stdout
    assert log.strip(), "empty worker log"
    # The kernels compiled at the image's build are found for this engine (numba_cache.py).
    assert "numba kernels: the image's" in log, log


def test_a_worker_over_its_memory_limit_fails_naming_oomkilled(install: Install) -> None:
    spec = {
        **dict(instrument_specs())["european"],
        "seed": 8,
        "resources": {"requests": {"memory": "8Mi"}, "limits": {"memory": "8Mi"}},
    }
    install.create_job("real-oom", spec)
    status = install.wait_phase("real-oom", "Succeeded", "Failed")
    assert status["phase"] == "Failed", status
    ready = next(c for c in status["conditions"] if c["type"] == "Failed" or c.get("reason"))
    text = json.dumps(status)
    assert "WorkerFailed" in text and "OOMKilled" in text and "resources" in text, ready


def test_a_deleted_worker_pod_is_retried_with_the_same_numbers(
    install: Install, tmp_path: Path
) -> None:
    spec = {**dict(instrument_specs())["asian"], "paths": 200_000, "seed": 9}
    install.create_job("real-retry", spec)

    def running_worker() -> str | None:
        for pod in install.pods("montecarlo.io/job=real-retry"):
            if pod["status"].get("phase") == "Running":
                return str(pod["metadata"]["name"])
        return None

    victim = install.cluster.wait_for(running_worker, timeout=120, what="a running worker")
    install.kubectl("delete", "pod", victim, "--wait=false")
    status = install.wait_phase("real-retry", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    expected = mcop_run_json(job_manifest("real-retry", spec), tmp_path)
    for key in NUMBER_KEYS:
        assert status["result"][key] == expected[key], key


def test_the_operator_killed_mid_job_comes_back_and_finishes_once(install: Install) -> None:
    spec = {**dict(instrument_specs())["asian"], "paths": 200_000, "seed": 10}
    install.create_job("real-operator", spec)
    install.cluster.wait_for(
        lambda: install.status("real-operator").get("phase") == "Running",
        timeout=120,
        what="the job running",
    )
    old = install.operator_pod()["metadata"]["name"]
    install.kubectl("delete", "pod", old, "--grace-period=0", "--force", "--wait=false")
    status = install.wait_phase("real-operator", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    assert install.operator_pod()["metadata"]["name"] != old
    events = install.get("events", "--field-selector", "involvedObject.name=real-operator")["items"]
    succeeded = [e for e in events if e.get("reason") == "Succeeded"]
    assert sum(int(e.get("count") or 1) for e in succeeded) <= 1, succeeded
