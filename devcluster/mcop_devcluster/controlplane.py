"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok (which keeps one fake node Ready), in a temporary folder.

Pods scheduled on the node are run by the pod runner (``mcop_devcluster.podrunner``), which is
started here too. Every process binds 127.0.0.1 only and runs in its own process group; ``stop()``
stops them in reverse order (SIGTERM, then SIGKILL by PID).
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcop_devcluster.binaries import ControlPlaneBinaries, control_plane_binaries
from mcop_devcluster.certs import ClusterPki, write_cluster_pki, write_kubeconfig
from mcop_devcluster.podrunner import kill_leftovers
from mcop_devcluster.ports import LOOPBACK, free_port
from mcop_devcluster.processes import ManagedProcess, claim_folder, reap_abandoned, wait_until

NODE_NAME = "mcop-node"
TEMP_PREFIX = "mcop-kube-"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"  # with kwok a setting only; a real node guards it
KUBERNETES_SERVICE_IP = "10.0.0.1"
POD_CIDR = "10.244.0.0/24"
# With ``audit_log``: one JSON line per write request (who, user agent, verb, object), no bodies.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
"""


def _environment() -> dict[str, str]:
    """The servers' environment: ours without proxies (every address is loopback), and Go's
    garbage collector run less often: a test cluster on two cores has memory to spare and no CPU
    (the API servers spent about a tenth of their CPU collecting garbage)."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.setdefault("GOGC", "400")
    return env


@dataclass
class ControlPlane:
    """Start with :meth:`start`, stop with :meth:`stop`; ``kubeconfig`` is the admin kubeconfig."""

    base_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix=TEMP_PREFIX)))
    pod_runner_concurrency: int = field(
        default_factory=lambda: int(os.environ.get("MCOP_POD_RUNNER_CONCURRENCY", "8"))
    )
    start_pod_runner: bool = True
    binaries: ControlPlaneBinaries = field(default_factory=control_plane_binaries)
    audit_log: Path | None = None
    """If set, the API server writes its audit log of write requests (AUDIT_POLICY) here."""
    audit_policy: str = AUDIT_POLICY
    """The audit policy (YAML) used with ``audit_log``: by default, write requests only."""
    node_address: str | None = None
    """For a real node (``mcop_devcluster.realnode``): the node's local-only address, where the
    API server listens instead of 127.0.0.1 (pods reach it through the ``kubernetes`` Service); no
    kwok, no fake node and no pod runner then."""

    def __post_init__(self) -> None:
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.apiserver_port = free_port()
        self.listen_address = self.node_address or LOOPBACK
        self.server = f"https://{self.listen_address}:{self.apiserver_port}"
        self.kubeconfig = self.base_dir / "admin.kubeconfig"
        self.processes: list[ManagedProcess] = []
        self.timings: dict[str, float] = {}
        self._pki: ClusterPki | None = None
        self._registry: Path | None = None

    # --- helpers -----------------------------------------------------------------------------

    @property
    def pki(self) -> ClusterPki:
        if self._pki is None:
            raise RuntimeError("the control plane is not started")
        return self._pki

    def _process(self, name: str, argv: list[str]) -> ManagedProcess:
        proc = ManagedProcess(
            name,
            argv,
            log_path=self.base_dir / "logs" / f"{name}.log",
            env=_environment(),
            cwd=self.base_dir,
            registry=self._registry,
        )
        proc.start()
        self.processes.append(proc)
        return proc

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.serving_ca))
        context.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return context

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET on the API server as admin; returns the status and body."""
        request = urllib.request.Request(self.server + path)
        opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=self._ssl_context()),
            urllib.request.ProxyHandler({}),
        )
        try:
            with opener.open(request, timeout=timeout) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as error:
            return int(error.code), bytes(error.read())

    def request_json(self, method: str, path: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.server + path,
            method=method,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=self._ssl_context()),
            urllib.request.ProxyHandler({}),
        )
        try:
            with opener.open(request, timeout=10) as response:
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as error:
            return int(error.code), json.loads(error.read() or b"{}")

    # --- the components ------------------------------------------------------------------------

    def _start_etcd(self) -> None:
        peer = f"http://{LOOPBACK}:{self.etcd_peer_port}"
        client = f"http://{LOOPBACK}:{self.etcd_port}"
        proc = self._process(
            "etcd",
            [
                str(self.binaries.etcd),
                f"--data-dir={self.base_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--unsafe-no-fsync=true",  # throw-away data: no fsync
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                f"{client}/health", timeout=1
            ) as response:
                return bool(json.loads(response.read()).get("health") == "true")

        wait_until(healthy, timeout=60, what="etcd /health", alive=proc)

    def _audit_flags(self) -> list[str]:
        if self.audit_log is None:
            return []
        policy = self.base_dir / "audit-policy.yaml"
        policy.write_text(self.audit_policy)
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}"]

    def _start_apiserver(self) -> None:
        pki = self.pki
        proc = self._process(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers=http://{LOOPBACK}:{self.etcd_port}",
                f"--bind-address={self.listen_address}",
                f"--secure-port={self.apiserver_port}",
                f"--advertise-address={self.listen_address}",
                # A real node's pods reach the API server through the kubernetes Service.
                f"--endpoint-reconciler-type={'lease' if self.node_address else 'none'}",
                # For logs and exec through a real kubelet (which authorizes admin by webhook).
                f"--kubelet-client-certificate={pki.admin_cert}",
                f"--kubelet-client-key={pki.admin_key}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.client_ca}",
                f"--service-account-issuer={self.server}/",
                f"--service-account-key-file={pki.service_account_public_key}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                "--kubelet-preferred-address-types=InternalIP",
                *self._audit_flags(),
            ],
        )
        wait_until(
            lambda: self.get("/readyz", timeout=2)[0] == 200,
            timeout=120,
            what="kube-apiserver /readyz",
            alive=proc,
        )

    def _start_controllers(self) -> None:
        pki = self.pki
        kubeconfig = f"--kubeconfig={self.kubeconfig}"
        self._process(
            "kube-controller-manager",
            [
                str(self.binaries.kube_controller_manager),
                kubeconfig,
                "--secure-port=0",
                "--leader-elect=false",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.serving_ca}",
                "--use-service-account-credentials=false",
            ],
        )
        self._process(
            "kube-scheduler",
            [
                str(self.binaries.kube_scheduler),
                kubeconfig,
                "--secure-port=0",
                "--leader-elect=false",
            ],
        )

    def _start_kwok(self) -> None:
        kubeconfig = f"--kubeconfig={self.kubeconfig}"
        self._process(
            "kwok",
            [
                str(self.binaries.kwok),
                kubeconfig,
                "--manage-all-nodes=true",
                f"--node-ip={LOOPBACK}",
                f"--cidr={POD_CIDR}",
                "--node-lease-duration-seconds=40",
                # Only the node stages: pods are run (and their status written) by the pod runner.
                *(
                    f"--config={stage}"
                    for stage in sorted(self.binaries.kwok_stages.glob("*.yaml"))
                ),
            ],
        )

    def _create_node(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "labels": {
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
                "annotations": {"kwok.x-k8s.io/node": "fake"},
            },
            "spec": {"podCIDR": POD_CIDR},
            "status": {
                "capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"},
                "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"},
                "nodeInfo": {"kubeletVersion": "fake", "architecture": "amd64",
                             "operatingSystem": "linux"},
            },
        }  # fmt: skip
        status, body = self.request_json("POST", "/api/v1/nodes", node)
        if status not in (201, 409):
            raise RuntimeError(f"could not create node {NODE_NAME}: {status} {body}")

    def _node_schedulable(self) -> bool:
        status, body = self.get(f"/api/v1/nodes/{NODE_NAME}")
        if status != 200:
            return False
        node = json.loads(body)
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in node.get("status", {}).get("conditions", [])
        )
        return ready and not node.get("spec", {}).get("taints")

    def _default_service_account_exists(self) -> bool:
        return self.get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200

    def _start_pod_runner(self) -> None:
        state = self.base_dir / "pods"
        ready_file = state / "ready"
        proc = self._process(
            "pod-runner",
            [
                sys.executable,
                "-m",
                "mcop_devcluster.podrunner",
                f"--kubeconfig={self.kubeconfig}",
                f"--node={NODE_NAME}",
                f"--state-dir={state}",
                f"--concurrency={self.pod_runner_concurrency}",
            ],
        )
        wait_until(ready_file.exists, timeout=60, what="the pod runner", alive=proc)

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        reap_abandoned(TEMP_PREFIX)  # clusters of sessions that were killed outright
        self._registry = claim_folder(self.base_dir)
        try:
            self._pki = write_cluster_pki(
                self.base_dir / "pki",
                extra_ips=(self.node_address, KUBERNETES_SERVICE_IP) if self.node_address else (),
            )
            write_kubeconfig(
                self.kubeconfig,
                server=self.server,
                ca_pem=self.pki.serving_ca.read_bytes(),
                user="admin",
                client_cert_pem=self.pki.admin_cert.read_bytes(),
                client_key_pem=self.pki.admin_key.read_bytes(),
            )
            self._start_etcd()
            self.timings["etcd"] = time.monotonic() - started
            self._start_apiserver()
            self.timings["kube-apiserver"] = time.monotonic() - started
            self._start_controllers()
            checks = [("ServiceAccount default/default (controller-manager)",
                       self._default_service_account_exists)]  # fmt: skip
            if self.node_address is None:
                self._start_kwok()
                self._create_node()
                if self.start_pod_runner:
                    self._start_pod_runner()
                checks.insert(0, (f"node {NODE_NAME} Ready and untainted (kwok, node controller)",
                                  self._node_schedulable))  # fmt: skip
            for what, ready in checks:
                wait_until(ready, timeout=90, what=what, alive=self.processes)
            self.timings["ready"] = time.monotonic() - started
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stops every process, newest first: SIGTERM, then SIGKILL after a grace period."""
        for proc in reversed(self.processes):
            proc.stop(timeout=10.0)
        # Pod processes outlive a pod runner that was killed: end them from their pid files.
        kill_leftovers(self.base_dir / "pods")

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def log_tails(self) -> str:
        return "\n".join(proc.log_tail(15) for proc in self.processes)
