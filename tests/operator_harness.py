"""Running the real operator (`mcop operator`) against the test control plane, PostgreSQL and
Redis, and waiting on what it writes. Shared by the operator's end-to-end tests."""

from __future__ import annotations

import base64
import contextlib
import io
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

    def __init__(
        self,
        kubeconfig: str,
        namespace: str,
        log_path: Path,
        args: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log_path = log_path
        self.args = args
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
            [mcop, "operator", "--namespace", self.namespace, "--liveness", "", *self.args],
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

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def signal(self, signum: int) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signum)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> str:
        """What the operator's Prometheus endpoint serves now."""
        import urllib.request

        port = self.extra_env["MCOP_METRICS_PORT"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text: str = response.read().decode()
        return text


@contextlib.contextmanager
def running_operator(
    kubeconfig: str, namespace: str, log_path: Path, **env: str
) -> Iterator[OperatorProcess]:
    op = OperatorProcess(kubeconfig, namespace, log_path, (), **env)
    op.start()
    try:
        yield op
    finally:
        op.stop()


def dumps(obj: Any) -> str:
    return json.dumps(obj)


# A workerTemplate no node matches: the job is admitted (it holds a concurrency slot) and its pods
# stay Pending, so it never finishes and costs no CPU.
UNSCHEDULABLE: dict[str, Any] = {"nodeSelector": {"pool": "nowhere"}}

# What the tests poll is read through the REST client: a kubectl process costs about 0.1 s of CPU
# and the tests poll several times a second while they wait. Tests of what a user sees (printer
# columns, `kubectl logs`, apply) still run kubectl.
_READ_PATHS = {
    "montecarlojob": "/apis/montecarlo.io/v1alpha1/namespaces/{ns}/montecarlojobs/{name}",
    "perftuning": "/apis/montecarlo.io/v1alpha1/namespaces/{ns}/perftunings/{name}",
    "job": "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
}


class JobsHarness:
    """A namespace with the Secrets the default PerfTuning names and a running operator."""

    def __init__(self, cluster: Any, namespace: str, operator: OperatorProcess) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.operator = operator
        self.rest = cluster.rest()

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> Any:
        return self.cluster.kubectl("-n", self.namespace, *args, check=check, input=input)

    def apply(self, manifest: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def create_job(self, name: str, spec: dict[str, Any]) -> None:
        self.apply(job_manifest(name, spec))

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        path = _READ_PATHS.get(kind)
        if path is not None:
            found: dict[str, Any] | None = self.rest.get_or_none(
                path.format(ns=self.namespace, name=name)
            )
            return found
        result = self.kubectl("get", kind, name, "-o", "json", check=False)
        if result.returncode != 0:
            return None
        doc: dict[str, Any] = json.loads(result.stdout)
        return doc

    def list_jobs(self) -> list[dict[str, Any]]:
        """Every MonteCarloJob of the namespace."""
        path = f"/apis/montecarlo.io/v1alpha1/namespaces/{self.namespace}/montecarlojobs"
        items: list[dict[str, Any]] = self.rest.get(path)["items"]
        return items

    def job(self, name: str) -> dict[str, Any]:
        doc = self.get("montecarlojob", name)
        assert doc is not None, f"MonteCarloJob {name} not found"
        return doc

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.job(name).get("status") or {})

    def wait_phase(self, name: str, *phases: str, timeout: float = 120.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            status = self.status(name)
            return status if status.get("phase") in phases else None

        try:
            return dict(wait_for(check, timeout=timeout, what=f"{name} in {phases}"))
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\nstatus: {json.dumps(self.status(name), indent=1)}\n"
                f"operator log (tail):\n{self.operator.log()[-4000:]}"
            ) from None

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        for cond in self.status(name).get("conditions") or []:
            if cond.get("type") == type_:
                return dict(cond)
        return None

    def events(self, name: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.rest.get(
            f"/api/v1/namespaces/{self.namespace}/events",
            fieldSelector=f"involvedObject.name={name}",
        )["items"]
        return items


def mcop_run_json(manifest: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """What `mcop run FILE --json --shards 1` prints for the same manifest, on this machine: the
    command's own code, run in this process (a process per reference cost seconds of start-up
    each). One shard whatever the job's: the numbers do not depend on it, so a cluster's N shards
    against one local shard is the stronger check."""
    from mcop_worker.cli import main

    path = tmp_path / f"{manifest['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["run", str(path), "--json", "--shards", "1", "--progress", "never"])
    assert code == 0, err.getvalue()
    doc: dict[str, Any] = json.loads(out.getvalue())
    return doc
