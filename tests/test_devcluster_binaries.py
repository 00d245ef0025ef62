"""The build script and the harness agree on where the control-plane programs are."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from mcop_devcluster import binaries

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "build-control-plane"


def test_the_build_script_and_the_harness_use_the_same_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCOP_CACHE_DIR", str(tmp_path))
    printed = subprocess.run(
        [str(SCRIPT), "--print"], capture_output=True, text=True, check=True
    ).stdout.split()
    bin_dir = tmp_path / "bin"
    assert printed == [
        str(bin_dir / f"kubernetes-{binaries.KUBERNETES_VERSION}"),
        str(bin_dir / f"etcd-{binaries.ETCD_VERSION}"),
        str(bin_dir / f"kwok-{binaries.KWOK_VERSION}"),
        str(bin_dir / f"helm-{binaries.HELM_VERSION}"),
        str(bin_dir / f"kubernetes-node-{binaries.KUBERNETES_VERSION}"),
    ]


def test_missing_programs_say_how_to_build_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCOP_CACHE_DIR", str(tmp_path))
    with pytest.raises(binaries.MissingBinary, match="run scripts/build-control-plane"):
        binaries.control_plane_binaries()
    with pytest.raises(binaries.MissingBinary, match=r"kubelet is not built.*build-control-plane"):
        binaries.node_binaries()


def test_kubectl_comes_from_the_virtualenv() -> None:
    path = binaries.kubectl_path()
    version = subprocess.run([str(path), "version", "--client"], capture_output=True, text=True)
    assert version.returncode == 0
    assert "Client Version: v1." in version.stdout


@pytest.mark.cluster
def test_a_second_build_does_nothing_in_seconds() -> None:
    started = time.monotonic()
    result = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stderr, "run scripts/build-control-plane first"
    assert time.monotonic() - started < 10
    assert binaries.control_plane_binaries().kube_apiserver.is_file()
    assert binaries.helm_path().is_file()
