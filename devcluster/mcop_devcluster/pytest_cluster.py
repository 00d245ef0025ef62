"""pytest fixtures: a real Kubernetes control plane on 127.0.0.1 (loaded with -p in pyproject).

- ``kube_cluster`` (session): a :class:`KubeCluster` (etcd, kube-apiserver, controller-manager,
  scheduler, kwok's node and the pod runner), started once per test session.
- ``namespace`` (function): a fresh namespace (its name), deleted after the test.
- ``real_cluster`` (session): a control plane of its own with a **real node** (kubelet, containerd,
  kube-proxy; ``mcop_devcluster.realnode``) and the images of scripts/build-images imported; the
  machine's state is compared before and after (a difference fails the session's teardown).

Tests that use these fixtures are marked ``cluster`` automatically (and those that use the
PostgreSQL/Redis fixtures ``services``), so ``pytest -m "not cluster"`` leaves them out. Programs
that are not built fail the test with how to build them, never a skip.

Set ``MCOP_KEEP_CLUSTER_DIR=1`` to keep the cluster's folder (logs, pod outputs) after the session.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client, config

from mcop_devcluster import hoststate
from mcop_devcluster.binaries import MissingBinary
from mcop_devcluster.controlplane import ControlPlane
from mcop_devcluster.processes import stop_servers_on_sigterm
from mcop_devcluster.project_resources import install_priority_classes, release_finalizers
from mcop_devcluster.realnode import (
    CGROUP_PARENT,
    NODE_ADDRESS,
    RealNode,
    RealNodeError,
    built_images,
)
from mcop_devcluster.rest import ApiError, RestClient
from mcop_devcluster.services import MissingProgram

T = TypeVar("T")

_REPO = Path(__file__).resolve().parents[2]
_SERVICE_FIXTURES = {"postgres_server", "pg_dsn", "redis_server", "redis_url"}
_CLUSTER_FIXTURES = {"kube_cluster", "namespace", "real_cluster"}


@dataclass
class KubeCluster:
    """What tests use of the control plane: ``kubeconfig``, ``env``, ``kubectl()``, ``rest()``,
    ``api_client()``, ``pod_log()``, ``install_crds()``, ``install_priority_classes()`` and
    ``wait_for()``."""

    control_plane: ControlPlane
    kubeconfig: Path = field(init=False)
    server: str = field(init=False)
    env: dict[str, str] = field(init=False)
    """``os.environ`` plus ``KUBECONFIG``: the environment for subprocesses (kubectl, operator)."""

    node: RealNode | None = field(default=None, init=False)
    """The real node, for ``real_cluster`` (None: kwok's node and the pod runner)."""

    def __post_init__(self) -> None:
        self.kubeconfig = self.control_plane.kubeconfig
        self.server = self.control_plane.server
        self.env = dict(os.environ, KUBECONFIG=str(self.kubeconfig))
        self._crds_installed = False

    @property
    def base_dir(self) -> Path:
        return self.control_plane.base_dir

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Runs kubectl against the cluster; raises with its output when it fails and check."""
        argv = [str(self.control_plane.binaries.kubectl), *args]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, env=self.env, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def api_client(self) -> client.ApiClient:
        """A new admin client of the official ``kubernetes`` library (close it when done)."""
        configuration = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig), client_configuration=configuration
        )
        return client.ApiClient(configuration)

    def rest(self) -> RestClient:
        """An admin client of the REST API with plain dicts (``mcop_devcluster.rest``)."""
        return RestClient(
            self.server,
            ca_file=self.control_plane.pki.serving_ca,
            cert_file=self.control_plane.pki.admin_cert,
            key_file=self.control_plane.pki.admin_key,
        )

    def pod_log(self, namespace: str, pod: str, container: str | None = None) -> str:
        """What a pod's container process printed (the pod runner's copy of it)."""
        folders = sorted((self.base_dir / "pods").glob(f"{namespace}_{pod}_*"))
        if not folders:
            return ""
        logs = sorted(folders[-1].glob(f"{container or '*'}.log"))
        return "".join(path.read_text(errors="replace") for path in logs)

    def install_crds(self, paths: Sequence[Path] | None = None) -> None:
        """Applies the project's CRDs (``crds/*.yaml`` by default) and waits until served."""
        if paths is None and self._crds_installed:
            return
        files = list(paths) if paths is not None else sorted((_REPO / "crds").glob("*.yaml"))
        if not files:
            raise AssertionError(f"no CRD files found in {_REPO / 'crds'}")
        for path in files:
            self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        for path in files:
            self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(path))
        if paths is None:
            self._crds_installed = True

    def install_priority_classes(self) -> None:
        """The chart's PriorityClasses (charts/montecarlo-operator/files/priorityclasses.yaml)."""
        install_priority_classes(self.rest())

    @staticmethod
    def wait_for(
        probe: Callable[[], T | None], *, timeout: float = 60, what: str, interval: float = 0.2
    ) -> T:
        """Polls ``probe`` until it returns something truthy; fails naming ``what`` on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)


def pytest_configure(config: pytest.Config) -> None:
    stop_servers_on_sigterm()


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    try:
        control_plane = ControlPlane()
    except (MissingBinary, MissingProgram) as error:
        pytest.fail(str(error), pytrace=False)
    try:
        control_plane.start()
        cluster = KubeCluster(control_plane)
        yield cluster
        stuck = _namespaces_left_terminating(cluster)
        assert not stuck, "namespaces that never finished terminating:\n" + "\n".join(stuck)
    finally:
        if os.environ.get("MCOP_KEEP_CLUSTER_DIR"):
            control_plane.stop()
        else:
            control_plane.cleanup()


def _namespaces_left_terminating(cluster: KubeCluster, timeout: float = 90) -> list[str]:
    """At the session's end every test namespace is gone: one stuck in Terminating is retried by
    the namespace controller all session long, at the API server's expense."""
    rest = cluster.rest()

    def terminating() -> list[str]:
        found = []
        for ns in rest.get("/api/v1/namespaces")["items"]:
            status = ns.get("status", {})
            if status.get("phase") != "Terminating":
                continue
            reasons = [
                c.get("message", c["type"])
                for c in status.get("conditions", [])
                if c.get("status") == "True"
            ]
            found.append(f"{ns['metadata']['name']}: " + ("; ".join(reasons) or "no reason given"))
        return found

    deadline = time.monotonic() + timeout
    while (left := terminating()) and time.monotonic() < deadline:
        time.sleep(1)
    return left


@pytest.fixture(scope="session")
def real_cluster() -> Iterator[KubeCluster]:
    """A control plane with a real node; one per session (one real node per machine)."""
    try:
        control_plane = ControlPlane(node_address=NODE_ADDRESS)
        node = RealNode(control_plane, images=built_images(_REPO))
    except (MissingBinary, MissingProgram, RealNodeError) as error:
        pytest.fail(str(error), pytrace=False)
    before = hoststate.snapshot((CGROUP_PARENT,))
    try:
        node.prepare()
        control_plane.start()
        node.start()
        cluster = KubeCluster(control_plane)
        cluster.node = node
        yield cluster
    finally:
        node.stop()
        if os.environ.get("MCOP_KEEP_CLUSTER_DIR"):
            control_plane.stop()
        else:
            control_plane.cleanup()
        left = hoststate.differences(before, hoststate.snapshot((CGROUP_PARENT,)))
        assert not left, "the real node left the machine changed:\n" + "\n".join(left)


def _namespace_name(test_name: str) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", test_name.lower().removeprefix("test_")).strip("-")
    return f"t-{stem[:40].strip('-')}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = _namespace_name(request.node.name)
    rest = kube_cluster.rest()
    rest.create("/api/v1/namespaces", {"metadata": {"name": name, "labels": {"mcop-test": "true"}}})
    try:
        # Pods are admitted only once the namespace's default ServiceAccount exists.
        kube_cluster.wait_for(
            lambda: rest.get_or_none(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
            timeout=30,
            what=f"ServiceAccount {name}/default",
        )
        yield name
    finally:
        # The test's operator is gone by now: nothing else would remove its finalizers.
        release_finalizers(rest, name)
        # Jobs first: the namespace controller deletes pods before anything else and waits for
        # them, but a Job whose replacement pods it may no longer create keeps the tracking
        # finalizers of its failed pods, so the namespace would wait for good (seen with the
        # failing workers of test_no_secret_value_in_status_events_or_logs).
        rest.delete(f"/apis/batch/v1/namespaces/{name}/jobs", {"propagationPolicy": "Background"})
        try:
            rest.delete(f"/api/v1/namespaces/{name}", {"propagationPolicy": "Background"})
        except ApiError as error:
            if error.status != 404:  # the test deleted it itself
                raise


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _CLUSTER_FIXTURES:
            item.add_marker(pytest.mark.cluster)
        if names & _SERVICE_FIXTURES:
            item.add_marker(pytest.mark.services)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On a failed cluster test, attach the tail of the pod runner's log to the report."""
    report = yield
    funcargs = getattr(item, "funcargs", {})
    if report.failed and "real_cluster" in funcargs:
        real: KubeCluster = funcargs["real_cluster"]
        if real.node is not None:
            report.sections.append(("real node logs (last lines)", real.node.log_tails()))
    if report.failed and "kube_cluster" in funcargs:
        cluster: KubeCluster = item.funcargs["kube_cluster"]  # type: ignore[attr-defined]
        log_file = cluster.base_dir / "logs" / "pod-runner.log"
        if log_file.exists():
            tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-40:])
            report.sections.append(("pod runner log (last 40 lines)", tail))
    return report
