"""The pod runner: plays the kubelet for the pods scheduled on the fake node.

For each pod bound to the node it runs each container's program as a local process (see
``mcop_devcluster.podspec`` for how the program and its environment are found), with a kubeconfig
holding a token of the pod's ServiceAccount (TokenRequest API, bound to the pod) in ``KUBECONFIG``
so that RBAC applies as in a cluster. It writes the pod's status through the API: Running when the
processes start, then Succeeded or Failed with each container's exit code and reason, so that the
real Job controller counts completions and failures. When a pod is deleted, its processes get
SIGTERM, then SIGKILL after the grace period, and the pod is let go (deleted with grace 0).

At most ``--concurrency`` pods run at once; the others stay Pending until a slot frees up.

    python -m mcop_devcluster.podrunner --kubeconfig K --node N --state-dir D [--concurrency 8]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcop_devcluster import podspec
from mcop_devcluster.certs import write_kubeconfig
from mcop_devcluster.processes import kill_recorded, record
from mcop_devcluster.rest import ApiError, RestClient

log = logging.getLogger("mcop.podrunner")

TOKEN_SECONDS = 24 * 3600
CONFIG_RETRY_SECONDS = 1.0
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def exit_code(returncode: int) -> int:
    """A container's exit code: 128 + signal number for a process killed by a signal."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class Container:
    """One container's process and what its status says."""

    spec: Mapping[str, Any]
    process: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    state: dict[str, Any] = field(default_factory=dict)
    restart_count: int = 0
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_at: float | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def status(self) -> dict[str, Any]:
        running = "running" in self.state
        return {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "containerID": f"local://{self.process.pid}" if self.process else "",
            "ready": running,
            "started": running,
            "restartCount": self.restart_count,
            "state": self.state or {"waiting": {"reason": "ContainerCreating"}},
            "lastState": self.last_state,
        }


class PodTask(threading.Thread):
    """Runs one pod from start to its terminal status (or its deletion)."""

    def __init__(self, runner: PodRunner, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.runner = runner
        self.pod = pod
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.dir = runner.state_dir / f"{self.namespace}_{self.pod_name}_{self.uid[:8]}"
        self.containers = [Container(spec) for spec in pod["spec"]["containers"]]
        self.restart_policy: str = pod["spec"].get("restartPolicy", "Always")
        self.start_time: str | None = None
        self.deletion = threading.Event()
        self.grace_seconds = float(pod["spec"].get("terminationGracePeriodSeconds", 30))
        self.kill_at = float("inf")
        self._lock = threading.Lock()

    # --- requests from the watch -----------------------------------------------------------------

    def request_deletion(self, grace_seconds: float) -> None:
        """The pod is being deleted: SIGTERM now, SIGKILL after the grace period."""
        with self._lock:
            first = not self.deletion.is_set()
            self.grace_seconds = (
                min(self.grace_seconds, grace_seconds) if not first else grace_seconds
            )
            self.kill_at = time.monotonic() + self.grace_seconds
            self.deletion.set()
            if first:
                for container in self.containers:
                    if container.process and container.process.poll() is None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(container.process.pid, signal.SIGTERM)

    # --- the pod's life ------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except Exception as error:
            log.exception("pod %s/%s: the runner failed", self.namespace, self.pod_name)
            with contextlib.suppress(Exception):
                self._fail_to_start(f"pod runner error: {error}")
        finally:
            self.kill_all()
            if self.deletion.is_set():
                self.runner.let_go(self.namespace, self.pod_name, self.uid)
            self.runner.forget(self.uid)

    def _run(self) -> None:
        if not self.runner.acquire_slot(self.deletion):
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.start_time = _now()
            prepared = self._prepare()
            if prepared is None:
                return
            if not self._start_all(prepared):
                return
            self._supervise(prepared)
        finally:
            self.runner.release_slot()

    def _prepare(self) -> dict[str, tuple[list[str], dict[str, str]]] | None:
        """Each container's argv and environment; waits (Pending) while a Secret is missing."""
        if self.pod["spec"].get("initContainers"):
            self._fail_to_start("init containers are not supported by the pod runner")
            return None
        reported: str | None = None
        while not self.deletion.is_set():
            try:
                base = self._base_environment()
                prepared = {}
                for container in self.containers:
                    env = base | podspec.environment(
                        self.pod,
                        container.spec,
                        secrets=self.runner.secret_data,
                        config_maps=self.runner.config_map_data,
                    )
                    prepared[container.name] = (
                        podspec.argv(container.spec, env, self.runner.programs),
                        env,
                    )
                return prepared
            except podspec.ContainerConfigError as error:
                if str(error) != reported:
                    reported = str(error)
                    log.info("pod %s/%s waits: %s", self.namespace, self.pod_name, error)
                    for container in self.containers:
                        container.state = {
                            "waiting": {"reason": "CreateContainerConfigError", "message": reported}
                        }
                    self._write_status("Pending")
                self.deletion.wait(CONFIG_RETRY_SECONDS)
            except podspec.StartError as error:
                self._fail_to_start(str(error))
                return None
        return None

    def _base_environment(self) -> dict[str, str]:
        """What every container gets before its own variables: a small PATH-and-locale base, the
        pod's hostname, and KUBECONFIG with the ServiceAccount's token."""
        env = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
        env.update({name: os.environ[name] for name in self.runner.pass_env if name in os.environ})
        env["PATH"] = f"{self.runner.programs.mcop.parent}:{env.get('PATH', '/usr/bin:/bin')}"
        env["HOME"] = str(self.dir)
        env["HOSTNAME"] = self.pod_name
        env["PYTHONUNBUFFERED"] = "1"
        spec = self.pod["spec"]
        if spec.get("automountServiceAccountToken", True):
            sa = spec.get("serviceAccountName") or "default"
            token = self.runner.service_account_token(self.namespace, sa, self.pod_name, self.uid)
            kubeconfig = write_kubeconfig(
                self.dir / "kubeconfig",
                server=self.runner.server,
                ca_pem=self.runner.ca_pem,
                user=f"system:serviceaccount:{self.namespace}:{sa}",
                token=token,
                namespace=self.namespace,
            )
            env["KUBECONFIG"] = str(kubeconfig)
        return env

    def _fail_to_start(self, message: str) -> None:
        log.warning("pod %s/%s cannot start: %s", self.namespace, self.pod_name, message)
        now = _now()
        for container in self.containers:
            container.state = {
                "terminated": {
                    "exitCode": 128, "reason": "StartError", "message": message,
                    "startedAt": now, "finishedAt": now,
                }
            }  # fmt: skip
        self._write_status("Failed", message=message, reason="StartError")

    def _start(self, container: Container, argv: list[str], env: dict[str, str]) -> bool:
        workdir = container.spec.get("workingDir") or str(self.dir)
        log_path = self.dir / f"{container.name}.log"
        try:
            with open(log_path, "ab") as out:
                container.process = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own group, killed whole like a container
                )
        except OSError as error:
            self._fail_to_start(f'exec: "{argv[0]}": {error.strerror}')
            return False
        (self.dir / f"{container.name}.pid").write_text(record(container.process.pid) + "\n")
        container.started_at = _now()
        container.state = {"running": {"startedAt": container.started_at}}
        container.restart_at = None
        log.info(
            "pod %s/%s container %s: started pid %d: %s",
            self.namespace, self.pod_name, container.name, container.process.pid, argv,
        )  # fmt: skip
        return True

    def _start_all(self, prepared: Mapping[str, tuple[list[str], dict[str, str]]]) -> bool:
        for container in self.containers:
            argv, env = prepared[container.name]
            if not self._start(container, argv, env):
                self.kill_all()
                return False
        self._write_status("Running")
        return True

    def _supervise(self, prepared: Mapping[str, tuple[list[str], dict[str, str]]]) -> None:
        while True:
            changed = False
            for container in self.containers:
                process = container.process
                if process is not None and "running" in container.state:
                    code = process.poll()
                    if code is not None:
                        self._record_exit(container, exit_code(code))
                        changed = True
                elif (
                    container.restart_at is not None
                    and not self.deletion.is_set()
                    and time.monotonic() >= container.restart_at
                ):
                    argv, env = prepared[container.name]
                    container.restart_count += 1
                    changed = self._start(container, argv, env) or changed
            if self.deletion.is_set() and time.monotonic() >= self.kill_at:
                self.kill_all()
            if all("terminated" in c.state for c in self.containers):
                self._write_status(self._terminal_phase())
                return
            if changed:
                self._write_status("Running")
            time.sleep(0.1)

    def _record_exit(self, container: Container, code: int) -> None:
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": container.started_at,
            "finishedAt": _now(),
        }
        log.info(
            "pod %s/%s container %s: exited with %d",
            self.namespace, self.pod_name, container.name, code,
        )  # fmt: skip
        restart = not self.deletion.is_set() and (
            self.restart_policy == "Always" or (self.restart_policy == "OnFailure" and code != 0)
        )
        if restart:
            container.last_state = {"terminated": terminated}
            delay = min(1.0 * 2**container.restart_count, 30.0)
            container.restart_at = time.monotonic() + delay
            container.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {delay:.0f}s restarting failed container",
                }
            }
        else:
            container.state = {"terminated": terminated}

    def _terminal_phase(self) -> str:
        codes = [c.state["terminated"]["exitCode"] for c in self.containers]
        return "Succeeded" if all(code == 0 for code in codes) else "Failed"

    def kill_all(self) -> None:
        """SIGKILL every process group of this pod that still runs (a container's teardown)."""
        for container in self.containers:
            process = container.process
            if process is None:
                continue
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                if "running" in container.state:
                    self._record_exit(container, exit_code(process.returncode))
            else:
                # The main process is gone; anything it left in its group goes with the container.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)

    def _write_status(
        self, phase: str, *, message: str | None = None, reason: str | None = None
    ) -> None:
        now = _now()
        running = phase == "Running" and all("running" in c.state for c in self.containers)
        terminal = phase in ("Succeeded", "Failed")

        def condition(kind: str, ok: bool, why: str | None = None) -> dict[str, Any]:
            item: dict[str, Any] = {"type": kind, "status": "True" if ok else "False",
                                    "lastProbeTime": None, "lastTransitionTime": now}  # fmt: skip
            if why and not ok:
                item["reason"] = why
            return item

        not_ready = "PodCompleted" if terminal else "ContainersNotReady"
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": podspec.POD_IP,
            "hostIPs": [{"ip": podspec.POD_IP}],
            "podIP": podspec.POD_IP,
            "podIPs": [{"ip": podspec.POD_IP}],
            "startTime": self.start_time or now,
            "conditions": [
                condition("PodReadyToStartContainers", not terminal),
                condition("Initialized", True),
                condition("Ready", running, not_ready),
                condition("ContainersReady", running, not_ready),
                condition("PodScheduled", True),
            ],
            "containerStatuses": [c.status() for c in self.containers],
        }
        if message is not None:
            status["message"] = message
        if reason is not None:
            status["reason"] = reason
        self.runner.patch_status(self.namespace, self.pod_name, status)


class PodRunner:
    """Watches the pods bound to one node and runs each in a :class:`PodTask`."""

    def __init__(
        self,
        rest: RestClient,
        *,
        node: str,
        state_dir: Path,
        concurrency: int,
        programs: podspec.Programs,
        ca_pem: bytes,
        pass_env: tuple[str, ...] = (),
    ) -> None:
        self.rest = rest
        self.node = node
        self.state_dir = state_dir
        self.programs = programs
        self.pass_env = pass_env
        self.server = rest.server
        self.ca_pem = ca_pem
        self._slots = threading.Semaphore(concurrency)
        self._tasks: dict[str, PodTask] = {}
        self._tasks_lock = threading.Lock()
        self.stopping = threading.Event()

    # --- concurrency ---------------------------------------------------------------------------

    def acquire_slot(self, cancelled: threading.Event) -> bool:
        while not (cancelled.is_set() or self.stopping.is_set()):
            if self._slots.acquire(timeout=0.2):
                return True
        return False

    def release_slot(self) -> None:
        self._slots.release()

    # --- API calls -------------------------------------------------------------------------------

    def secret_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return podspec.secret_lookup(
            lambda ns, n: self.rest.get_or_none(f"/api/v1/namespaces/{ns}/secrets/{n}")
        )(namespace, name)

    def config_map_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        config_map = self.rest.get_or_none(f"/api/v1/namespaces/{namespace}/configmaps/{name}")
        return None if config_map is None else dict(config_map.get("data") or {})

    def service_account_token(self, namespace: str, account: str, pod: str, uid: str) -> str:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": TOKEN_SECONDS,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid},
            },
        }
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"
        try:
            answer = self.rest.create(path, body)
        except ApiError as error:
            if error.status == 404:
                raise podspec.ContainerConfigError(
                    f'serviceaccount "{account}" not found in namespace {namespace}'
                ) from error
            raise podspec.ContainerConfigError(
                f"token for serviceaccount {namespace}/{account} refused: {error}"
            ) from error
        return str(answer["status"]["token"])

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        try:
            self.rest.patch(
                f"/api/v1/namespaces/{namespace}/pods/{name}/status", {"status": status}
            )
        except ApiError as error:
            if error.status != 404:
                log.warning("pod %s/%s: status not written: %s", namespace, name, error)

    def let_go(self, namespace: str, name: str, uid: str) -> None:
        """The kubelet's last word on a deleted pod: delete it with grace 0 (its UID only)."""
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        try:
            self.rest.delete(f"/api/v1/namespaces/{namespace}/pods/{name}", body)
        except ApiError as error:
            if error.status not in (404, 409):
                log.warning("pod %s/%s: not deleted: %s", namespace, name, error)

    # --- the watch -------------------------------------------------------------------------------

    def forget(self, uid: str) -> None:
        with self._tasks_lock:
            self._tasks.pop(uid, None)

    def reconcile(self, pod: Mapping[str, Any], deleted: bool = False) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        with self._tasks_lock:
            task = self._tasks.get(uid)
        if deleted:  # gone from the API (force-deleted): stop at once
            if task is not None:
                task.request_deletion(0)
            return
        being_deleted = meta.get("deletionTimestamp") is not None
        grace = float(meta.get("deletionGracePeriodSeconds") or 0)
        if task is not None:
            if being_deleted:
                task.request_deletion(grace)
            return
        phase = pod.get("status", {}).get("phase")
        if being_deleted:
            if grace > 0 or phase not in ("Succeeded", "Failed"):
                self.let_go(meta["namespace"], meta["name"], uid)
            return
        if phase in ("Succeeded", "Failed") or self.stopping.is_set():
            return
        task = PodTask(self, pod)
        with self._tasks_lock:
            self._tasks[uid] = task
        task.start()

    def run(self, ready_file: Path | None = None) -> None:
        """Lists and watches the node's pods until :meth:`stop`; relists after any watch error."""
        selector = f"spec.nodeName={self.node}"
        while not self.stopping.is_set():
            try:
                listing = self.rest.get("/api/v1/pods", fieldSelector=selector)
                for pod in listing["items"]:
                    self.reconcile(pod)
                if ready_file is not None and not ready_file.exists():
                    ready_file.write_text(f"{os.getpid()}\n")
                version = listing["metadata"]["resourceVersion"]
                while not self.stopping.is_set():
                    for event in self.rest.watch(
                        "/api/v1/pods", resource_version=version, fieldSelector=selector
                    ):
                        if event["type"] == "ERROR":
                            raise ApiError(int(event["object"].get("code", 500)), "watch ended")
                        version = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            self.reconcile(event["object"], deleted=event["type"] == "DELETED")
                        if self.stopping.is_set():
                            return
            except Exception as error:
                if self.stopping.is_set():
                    break
                log.warning("watch failed (%s); listing again", error)
                self.stopping.wait(1.0)

    def stop(self) -> None:
        """Stops watching and ends every pod's processes (SIGTERM, SIGKILL after 5 s)."""
        self.stopping.set()
        with self._tasks_lock:
            tasks = list(self._tasks.values())
        for task in tasks:
            for container in task.containers:
                if container.process and container.process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(container.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for task in tasks:
            for container in task.containers:
                if container.process is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        container.process.wait(max(0.0, deadline - time.monotonic()))
            task.kill_all()


def kill_leftovers(state_dir: Path) -> int:
    """Kills pod processes a dead runner left behind (from their pid files); returns how many."""
    return kill_recorded(state_dir.glob("*/*.pid"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mcop_devcluster.podrunner", description=__doc__
    )
    parser.add_argument("--kubeconfig", type=Path, required=True, help="admin kubeconfig")
    parser.add_argument("--node", required=True, help="the node whose pods to run")
    parser.add_argument("--state-dir", type=Path, required=True, help="pod folders and logs")
    parser.add_argument("--concurrency", type=int, default=8, help="pods running at once")
    parser.add_argument(
        "--mcop", type=Path, default=Path(sys.executable).parent / "mcop",
        help="the program that stands for the image's `mcop` entrypoint",
    )  # fmt: skip
    parser.add_argument(
        "--pass-env", action="append", default=[], metavar="NAME",
        help="also pass this variable of the runner's environment to every container",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    args.state_dir.mkdir(parents=True, exist_ok=True)
    rest = RestClient.from_kubeconfig(args.kubeconfig, folder=args.state_dir)
    runner = PodRunner(
        rest,
        node=args.node,
        state_dir=args.state_dir,
        concurrency=args.concurrency,
        programs=podspec.Programs(
            mcop=args.mcop,
            python=Path(sys.executable),
            path=os.environ.get("PATH", "/usr/bin:/bin"),
        ),
        ca_pem=rest.ca_file.read_bytes(),
        pass_env=tuple(args.pass_env),
    )

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        runner.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    watcher = threading.Thread(target=runner.run, args=(args.state_dir / "ready",), daemon=True)
    watcher.start()
    while not runner.stopping.wait(1.0):
        pass
    runner.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
