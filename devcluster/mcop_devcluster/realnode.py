"""A real node for the control plane: containerd + runc, a kubelet and kube-proxy v1.36.3.

Pods run as real containers from images built here (scripts/build-images) and imported into this
node's own containerd; nothing is ever pulled. Everything the node keeps lives in its folder
(containerd's root and state, the kubelet's root, CNI configuration and leases, pod logs); what it
changes on the machine (kernel parameters, netfilter, interfaces, mounts, cgroups) is recorded
before it starts (``hoststate``) and put back by :meth:`RealNode.stop`.

Network: the node's address is a local-only one on an interface of ours (``mcopnode0``, a bridge
without ports: this kernel has no dummy interfaces), pods live on the ``mcopcni0`` bridge, and the
``netguard`` table, installed before the first pod starts, drops whatever would leave the machine.
One real node at a time on a machine (its interfaces, cgroups and kube-proxy's table are global).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from mcop_devcluster import hoststate, netguard
from mcop_devcluster.binaries import MissingBinary, cache_dir, node_binaries
from mcop_devcluster.controlplane import (
    NODE_NAME,
    POD_CIDR,
    SERVICE_CLUSTER_IP_RANGE,
    ControlPlane,
)
from mcop_devcluster.ports import free_port
from mcop_devcluster.processes import ManagedProcess, wait_until

NODE_ADDRESS = "10.245.0.1"
NODE_LINK = "mcopnode0"
POD_BRIDGE = "mcopcni0"
CGROUP_PARENT = "mcop-node"  # the kubelet's cgroupRoot: every pod's cgroup is under it
SANDBOX_IMAGE = "localhost/mcop/pause:3.10.2"
CLUSTER_DOMAIN = "cluster.local"
STATE_FILE = "host-state.pickle"
# Where a missing image would be fetched from: a closed port on loopback, so a pull fails at once.
NO_REGISTRY = "https://127.0.0.1:9"


class RealNodeError(RuntimeError):
    """The node could not start; the message says why and what to do."""


def _run(*argv: str, input: str | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, input=input, check=False)
    if result.returncode != 0:
        raise RealNodeError(
            f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result.stdout


def containerd_config(base: Path) -> str:
    c = base / "containerd"
    return f"""version = 2
root = "{c / "root"}"
state = "{c / "state"}"
[grpc]
  address = "{c / "containerd.sock"}"
[ttrpc]
  address = "{c / "containerd.sock.ttrpc"}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{c / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  # The machine lacks CAP_SYS_RESOURCE: runc could not lower a container's oom_score_adj.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
        Root = "{c / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{base / "cni" / "net.d"}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{c / "certs.d"}"
"""


def registry_hosts(base: Path) -> None:
    """Every registry (docker.io and the rest) is a closed port: a missing image fails at once."""
    for name in ("_default", "docker.io", "localhost"):
        folder = base / "containerd" / "certs.d" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hosts.toml").write_text(
            f'server = "{NO_REGISTRY}"\n'
            f'[host."{NO_REGISTRY}"]\n  capabilities = ["pull", "resolve"]\n'
        )


def cni_config(base: Path) -> str:
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "mcop",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": POD_BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,  # nothing leaves: no address translation for the outside
                    "hairpinMode": True,  # a pod reaching itself through its Service
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(base / "cni" / "ipam"),
                    },
                }
            ],
        },
        indent=2,
    )


def kubelet_config(base: Path, client_ca: Path, port: int, healthz_port: int) -> str:
    return f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {NODE_ADDRESS}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz_port}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {client_ca}}}
authorization: {{mode: Webhook}}
containerRuntimeEndpoint: unix://{base / "containerd" / "containerd.sock"}
# These machines run cgroup v1 (v2 cannot be reached), without systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{CGROUP_PARENT}
failSwapOn: false
podCIDR: {POD_CIDR}
clusterDNS: [{NODE_ADDRESS}]
clusterDomain: {CLUSTER_DOMAIN}
resolvConf: {base / "resolv.conf"}
podLogsDir: {base / "pod-logs"}
volumePluginDir: {base / "kubelet" / "volume-plugins"}
serializeImagePulls: false
# Images are imported, never pulled again: the kubelet must not collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%}}
registerNode: true
"""


def kube_proxy_config(kubeconfig: Path, healthz_port: int, metrics_port: int) -> str:
    return f"""apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {{kubeconfig: {kubeconfig}}}
hostnameOverride: {NODE_NAME}
bindAddress: {NODE_ADDRESS}
healthzBindAddress: 127.0.0.1:{healthz_port}
metricsBindAddress: 127.0.0.1:{metrics_port}
clusterCIDR: {POD_CIDR}
nodePortAddresses: [{NODE_ADDRESS}/32]
# 0: leave the machine's conntrack settings as they are.
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
"""


def _lock(path: Path) -> IO[str]:
    handle = open(path, "w")  # noqa: SIM115 (held open: the lock lives as long as the node)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RealNodeError(
            f"another real node runs on this machine ({path} is locked): stop it first "
            "(scripts/local-cluster down, or the test session that started it)"
        ) from None
    return handle


@dataclass
class RealNode:
    """Start with :meth:`start` once the control plane (``node_address=NODE_ADDRESS``) runs."""

    control_plane: ControlPlane
    images: list[tuple[str, Path]] = field(default_factory=list)
    """(name, docker-archive) pairs imported into containerd before the kubelet starts."""
    base_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        if self.control_plane.node_address != NODE_ADDRESS:
            raise ValueError(f"the control plane must be started with node_address={NODE_ADDRESS}")
        self.base_dir = self.control_plane.base_dir / "node"
        self.binaries = node_binaries()
        self.processes: list[ManagedProcess] = []
        self.before: hoststate.HostState | None = None
        self._lock: IO[str] | None = None
        self.socket = self.base_dir / "containerd" / "containerd.sock"

    # --- helpers --------------------------------------------------------------------------------

    def _process(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> ManagedProcess:
        environment = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        environment.update(env or {})
        proc = ManagedProcess(
            name,
            argv,
            log_path=self.control_plane.base_dir / "logs" / f"{name}.log",
            env=environment,
            cwd=self.base_dir,
            registry=self.control_plane._registry,
        )
        proc.start()
        self.processes.append(proc)
        return proc

    def ctr(self, *args: str) -> str:
        return _run(str(self.binaries.ctr), "--address", str(self.socket), "-n", "k8s.io", *args)

    def _node(self) -> dict[str, Any] | None:
        status, body = self.control_plane.get(f"/api/v1/nodes/{NODE_NAME}")
        return json.loads(body) if status == 200 else None

    def _node_ready(self) -> bool:
        node = self._node()
        if not node:
            return False
        conditions = node.get("status", {}).get("conditions", [])
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        return ready and not node.get("spec", {}).get("taints")

    # --- steps ----------------------------------------------------------------------------------

    def _cgroups(self) -> None:
        """The kubelet's cgroupRoot in every hierarchy (it refuses to start without it)."""
        for hierarchy in sorted(hoststate.CGROUP_ROOT.iterdir()):
            if not hierarchy.is_dir() or hierarchy.is_symlink():
                continue
            folder = hierarchy / CGROUP_PARENT
            folder.mkdir(exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):  # empty in a new cpuset cgroup
                if (hierarchy / name).exists():
                    (folder / name).write_text((hierarchy / name).read_text())

    def _interface(self) -> None:
        _run("ip", "link", "add", NODE_LINK, "type", "bridge")
        _run("ip", "address", "add", f"{NODE_ADDRESS}/32", "dev", NODE_LINK)
        _run("ip", "link", "set", NODE_LINK, "up")

    def _write_configs(self) -> tuple[Path, Path, Path]:
        base = self.base_dir
        for folder in ("containerd", "cni/net.d", "cni/ipam", "kubelet", "pod-logs"):
            (base / folder).mkdir(parents=True, exist_ok=True)
        registry_hosts(base)
        (base / "containerd" / "config.toml").write_text(containerd_config(base))
        (base / "cni" / "net.d" / "10-mcop.conflist").write_text(cni_config(base))
        # Pods resolve names with the node's DNS server only (no search domains from the machine).
        (base / "resolv.conf").write_text(f"nameserver {NODE_ADDRESS}\n")
        pki = self.control_plane.pki
        self.kubelet_port = free_port()
        kubelet = base / "kubelet-config.yaml"
        kubelet.write_text(kubelet_config(base, pki.client_ca, self.kubelet_port, free_port()))
        proxy = base / "kube-proxy-config.yaml"
        proxy.write_text(kube_proxy_config(self.control_plane.kubeconfig, free_port(), free_port()))
        return base / "containerd" / "config.toml", kubelet, proxy

    def _start_containerd(self, config: Path) -> None:
        proc = self._process(
            "containerd",
            [str(self.binaries.containerd), "--config", str(config)],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        wait_until(lambda: bool(self.ctr("version")), timeout=60, what="containerd", alive=proc)

    def _import_images(self) -> None:
        for name, archive in self.images:
            if not archive.is_file():
                raise RealNodeError(f"image {name}: {archive} is missing: run scripts/build-images")
            self.ctr("images", "import", str(archive))
        present = set(self.ctr("images", "list", "-q").split())
        missing = [name for name, _ in self.images if name not in present]
        if missing:
            raise RealNodeError(f"images not in containerd after the import: {missing}")

    def _start_dns(self) -> None:
        proc = self._process(
            "cluster-dns",
            [
                sys.executable,
                "-m",
                "mcop_devcluster.clusterdns",
                f"--kubeconfig={self.control_plane.kubeconfig}",
                f"--listen={NODE_ADDRESS}",
                f"--domain={CLUSTER_DOMAIN}",
                f"--ready-file={self.base_dir / 'dns-ready'}",
            ],
        )
        wait_until((self.base_dir / "dns-ready").exists, timeout=30, what="cluster DNS", alive=proc)

    def _start_kubelet(self, config: Path) -> None:
        proc = self._process(
            "kubelet",
            [
                str(self.binaries.kubelet),
                f"--config={config}",
                f"--kubeconfig={self.control_plane.kubeconfig}",
                f"--root-dir={self.base_dir / 'kubelet'}",
                f"--cert-dir={self.base_dir / 'kubelet' / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_ADDRESS}",
                "--v=1",
            ],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        wait_until(
            self._node_ready,
            timeout=120,
            what=f"node {NODE_NAME} Ready (kubelet)",
            alive=[proc, *self.processes],
        )

    def _start_kube_proxy(self, config: Path) -> None:
        proc = self._process(
            "kube-proxy",
            [str(self.binaries.kube_proxy), f"--config={config}", "--v=1"],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )

        def kubernetes_service_rules() -> bool:
            out = subprocess.run(
                ["nft", "list", "table", "ip", "kube-proxy"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            return "default/kubernetes" in out

        wait_until(
            kubernetes_service_rules,
            timeout=60,
            what="kube-proxy's rules for the kubernetes Service",
            alive=proc,
        )

    # --- lifecycle ------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Records the machine's state, then adds the node's address and the traffic guard: call
        it before the control plane starts (its API server listens on the node's address)."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        cache_dir().mkdir(parents=True, exist_ok=True)
        self._lock = _lock(cache_dir() / "real-node.lock")
        recover_abandoned()
        self.before = hoststate.snapshot((CGROUP_PARENT,))
        (cache_dir() / "real-node.state").write_bytes(
            pickle.dumps((self.before, str(self.base_dir)))
        )
        try:
            self._interface()
            self._cgroups()
            # Before anything could start a pod.
            netguard.install(netguard.GuardNetworks(POD_CIDR, SERVICE_CLUSTER_IP_RANGE, POD_BRIDGE))
        except BaseException:
            self.stop()
            raise

    def start(self) -> None:
        """Starts the node once :meth:`prepare` ran and the control plane is ready."""
        started = time.monotonic()
        try:
            containerd, kubelet, proxy = self._write_configs()
            self._start_dns()
            self._start_containerd(containerd)
            self._import_images()
            self._start_kube_proxy(proxy)
            self._start_kubelet(kubelet)
            self.timings = {"ready": time.monotonic() - started}
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stops the kubelet, every container, containerd and kube-proxy; puts the machine back."""
        for proc in reversed(self.processes):
            if proc.name == "kubelet":
                proc.stop(timeout=10.0)
        kill_containers(self.base_dir)
        for proc in reversed(self.processes):
            proc.stop(timeout=10.0)
        if self.before is not None:
            teardown(self.before, self.base_dir)
            self.before = None
            with contextlib.suppress(OSError):
                (cache_dir() / "real-node.state").unlink()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def log_tails(self) -> str:
        return "\n".join(proc.log_tail(15) for proc in self.processes)


def kill_containers(base_dir: Path) -> None:
    """SIGKILLs every process in the node's pod cgroups and the containerd shims of this node."""
    pids: set[int] = set()
    for path in hoststate.cgroups((CGROUP_PARENT,)):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in Path(path, "cgroup.procs").read_text().split())
    needle = str(base_dir / "containerd")
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and "containerd-shim" in cmdline[0] and any(needle in a for a in cmdline):
            pids.add(process.pid)
    victims = []
    for pid in pids:
        with contextlib.suppress(psutil.Error, OSError):
            victim = psutil.Process(pid)
            victim.send_signal(signal.SIGKILL)
            victims.append(victim)
    psutil.wait_procs(victims, timeout=10)


def teardown(before: hoststate.HostState, base_dir: Path) -> None:
    netguard_last = netguard.installed()
    hoststate.restore(before, (CGROUP_PARENT,), owned_dirs=(base_dir,))
    if netguard_last:  # restore() removed it with the tables created since; make sure
        netguard.remove()


def recover_abandoned() -> None:
    """Puts back the machine after a real node whose session was killed outright."""
    state = cache_dir() / "real-node.state"
    if not state.is_file():
        return
    before, base = pickle.loads(state.read_bytes())
    kill_containers(Path(base))
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if any(str(base) in arg for arg in cmdline[1:]):
            with contextlib.suppress(psutil.Error):
                process.kill()
    teardown(before, Path(base))
    state.unlink()


__all__ = ["NODE_ADDRESS", "MissingBinary", "RealNode", "RealNodeError", "recover_abandoned"]


def built_images(repo: Path) -> list[tuple[str, Path]]:
    """(name, archive) of the images scripts/build-images made (it builds what is missing)."""
    result = subprocess.run(
        [str(repo / "scripts" / "build-images"), "--print"],
        capture_output=True,
        text=True,
        check=False,
        timeout=3000,
    )
    if result.returncode != 0:
        raise RealNodeError(f"scripts/build-images failed:\n{result.stderr[-3000:]}")
    pairs = [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]
    return [(name, Path(archive)) for name, archive in pairs]


def local_storage_manifests(folder: Path, size: str = "8Gi") -> list[dict[str, object]]:
    """A default StorageClass and one local volume on the node, for the bundled PostgreSQL's
    claim (the chart's default persistence). The folder is made here, owned by uid 999."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chown(folder, 999, 999)
    on_node = {
        "nodeSelectorTerms": [
            {
                "matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]}
                ]
            }
        ]
    }
    return [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": "local",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer",
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": "local-postgres"},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "local",
                "persistentVolumeReclaimPolicy": "Retain",
                "local": {"path": str(folder)},
                "nodeAffinity": {"required": on_node},
            },
        },
    ]
