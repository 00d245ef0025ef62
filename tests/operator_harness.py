"""Running the real operator (`mcop operator`) against the test control plane, PostgreSQL and
Redis, and waiting on what it writes. Shared by the operator's end-to-end tests."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PRIORITY_CLASSES = ROOT / "charts" / "montecarlo-operator" / "files" / "priorityclasses.yaml"


def wait_for(
    check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.25, what: str = ""
) -> Any:
    """Poll until ``check()`` returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}: last {last!r}")


def secret_manifest(namespace: str, name: str, key: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": {key: base64.b64encode(value.encode()).decode()},
    }


def job_manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "montecarlo.io/v1alpha1",
        "kind": "MonteCarloJob",
        "metadata": {"name": name},
        "spec": spec,
    }


def example_spec(file: str, **over: Any) -> dict[str, Any]:
    doc = yaml.safe_load((EXAMPLES / file).read_text())
    spec: dict[str, Any] = doc["spec"]
    spec.update(over)
    return spec


class OperatorProcess:
    """`mcop operator` as a child process watching one namespace."""

    def __init__(self, kubeconfig: str, namespace: str, log_path: Path, **env: str) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log_path = log_path
        self.extra_env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": self.kubeconfig,
            "MCOP_RECONCILE_INTERVAL_SECONDS": "0.5",
            "MCOP_STATUS_INTERVAL_SECONDS": "1",
            "MCOP_WAITING_INTERVAL_SECONDS": "1",
            **self.extra_env,
        }
        mcop = str(Path(sys.executable).parent / "mcop")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [mcop, "operator", "--namespace", self.namespace, "--liveness", ""],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL: the operator gets no chance to tidy up, as in a node crash."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def running_operator(
    kubeconfig: str, namespace: str, log_path: Path, **env: str
) -> Iterator[OperatorProcess]:
    op = OperatorProcess(kubeconfig, namespace, log_path, **env)
    op.start()
    try:
        yield op
    finally:
        op.stop()


def dumps(obj: Any) -> str:
    return json.dumps(obj)
