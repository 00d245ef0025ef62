"""``scripts/local-cluster up|down|status``: the test harness's cluster, kept running for a person.

``up`` (as root) starts the control plane with a **real node** (kubelet, containerd, kube-proxy:
``mcop_devcluster.realnode``), imports the images of scripts/build-images and installs the chart
with its defaults in namespace ``montecarlo`` (operator, Redis and PostgreSQL as containers);
``down`` stops it and puts the machine back as it was.

``up --pod-runner`` starts a supervisor process in the background that owns everything: the control
plane and
the pod runner, Redis, PostgreSQL, the project's CRDs and PriorityClasses, Secrets
``montecarlo-redis`` (key ``url``) and ``montecarlo-postgres`` (key ``dsn``) and a PerfTuning
``default`` in namespace ``default``, and the operator (``mcop operator``) once that command
exists, unless ``up --no-operator`` (then run your own replicas against it, e.g.
``mcop operator --leader-elect``). ``down`` asks the supervisor to stop it all (SIGTERM; it stops
its children in reverse order). ``status`` says what runs. The state lives in
``$MCOP_CACHE_DIR/local-cluster`` (default ``~/.cache/montecarlo-operator/local-cluster``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from mcop_devcluster.binaries import cache_dir, helm_path
from mcop_devcluster.controlplane import ControlPlane
from mcop_devcluster.processes import ManagedProcess
from mcop_devcluster.project_resources import create_connection_secrets, install_priority_classes
from mcop_devcluster.realnode import (
    NODE_ADDRESS,
    RealNode,
    built_images,
    local_storage_manifests,
    recover_abandoned,
)
from mcop_devcluster.rest import ApiError, RestClient
from mcop_devcluster.services import PostgresServer, RedisServer

REPO = Path(__file__).resolve().parents[2]
LOCAL_NAMESPACE = "montecarlo"


def state_dir() -> Path:
    return cache_dir() / "local-cluster"


def _state_file() -> Path:
    return state_dir() / "state.json"


def _read_state() -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(_state_file().read_text())
        return state
    except (OSError, ValueError):
        return None


def _write_state(state: dict[str, Any]) -> None:
    path = _state_file()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.chmod(tmp, 0o600)  # it holds the database's DSN
    tmp.replace(path)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _say(message: str) -> None:
    print(f"[local-cluster] {message}", file=sys.stderr, flush=True)


# --- the supervisor (runs in the background) -----------------------------------------------------


def _mcop() -> Path:
    return Path(sys.executable).parent / "mcop"


def _operator_available() -> bool:
    try:
        result = subprocess.run(
            [str(_mcop()), "operator", "--help"], capture_output=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _apply_project_resources(plane: ControlPlane, redis_url: str, dsn: str) -> list[str]:
    """CRDs, PriorityClasses, the two Secrets and a default PerfTuning; returns what was done."""
    applied = []
    kubectl = [str(plane.binaries.kubectl), f"--kubeconfig={plane.kubeconfig}"]
    crds = sorted((REPO / "crds").glob("*.yaml"))
    for crd in crds:
        subprocess.run([*kubectl, "apply", "--server-side", "-f", str(crd)], check=True)
        subprocess.run(
            [*kubectl, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(crd)],
            check=True,
        )
        applied.append(f"crd {crd.name}")
    rest = RestClient(
        plane.server,
        ca_file=plane.pki.serving_ca,
        cert_file=plane.pki.admin_cert,
        key_file=plane.pki.admin_key,
    )
    applied.append("priorityclasses " + ", ".join(install_priority_classes(rest)))
    create_connection_secrets(rest, "default", redis_url=redis_url, postgres_dsn=dsn)
    applied.append("secrets default/montecarlo-redis, default/montecarlo-postgres")
    tuning = {
        "apiVersion": "montecarlo.io/v1alpha1",
        "kind": "PerfTuning",
        "metadata": {"name": "default"},
        "spec": {
            "redis": {"urlSecretRef": {"name": "montecarlo-redis", "key": "url"}},
            "postgres": {"dsnSecretRef": {"name": "montecarlo-postgres", "key": "dsn"}},
        },
    }
    try:
        rest.create("/apis/montecarlo.io/v1alpha1/namespaces/default/perftunings", tuning)
        applied.append("perftuning default/default")
    except ApiError as error:
        _say(f"no default PerfTuning ({error})")
    return applied


def _helm(plane: ControlPlane, folder: Path, *args: str) -> None:
    home = str(folder / "helm")
    env = dict(os.environ, KUBECONFIG=str(plane.kubeconfig), HELM_CACHE_HOME=home,
               HELM_CONFIG_HOME=home, HELM_DATA_HOME=home)  # fmt: skip
    subprocess.run([str(helm_path()), *args], check=True, env=env, stdout=subprocess.DEVNULL)


def supervise_real_node() -> int:
    """The real node and the chart with its defaults; stops it all (and puts the machine back) on
    SIGTERM."""
    folder = state_dir()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    recover_abandoned()
    shutil.rmtree(folder / "cluster", ignore_errors=True)
    plane = ControlPlane(base_dir=folder / "cluster", node_address=NODE_ADDRESS)
    node = RealNode(plane, images=built_images(REPO))
    state: dict[str, Any] = {"supervisor_pid": os.getpid(), "phase": "starting", "node": "real"}
    _write_state(state)
    try:
        started = time.monotonic()
        node.prepare()
        plane.start()
        node.start()
        kubectl = [str(plane.binaries.kubectl), f"--kubeconfig={plane.kubeconfig}"]
        storage = local_storage_manifests(node.base_dir / "volumes" / "postgres")
        subprocess.run([*kubectl, "apply", "-f", "-"], input=yaml.safe_dump_all(storage).encode(),
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        namespace = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": LOCAL_NAMESPACE,
                "labels": {
                    f"pod-security.kubernetes.io/{m}": "restricted" for m in ("enforce", "warn")
                },
            },
        }
        subprocess.run([*kubectl, "apply", "-f", "-"], input=json.dumps(namespace).encode(),
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        _helm(plane, folder, "install", "mcop", str(REPO / "charts" / "montecarlo-operator"),
              "--namespace", LOCAL_NAMESPACE, "--wait", "--timeout", "600s")  # fmt: skip
        processes = [*plane.processes, *node.processes]
        state.update({
            "phase": "running",
            "started_seconds": round(time.monotonic() - started, 1),
            "kubeconfig": str(plane.kubeconfig),
            "server": plane.server,
            "namespace": LOCAL_NAMESPACE,
            "applied": [f"helm release mcop (chart defaults) in namespace {LOCAL_NAMESPACE}"],
            "operator": f"running as a pod in namespace {LOCAL_NAMESPACE}",
            "processes": [{"name": p.name, "pid": p.pid} for p in processes],
            "logs": str(plane.base_dir / "logs"),
        })  # fmt: skip
        _write_state(state)
        while not stop.wait(1.0):
            pass
        return 0
    except BaseException as error:
        state.update({"phase": "failed", "error": str(error)})
        _write_state(state)
        raise
    finally:
        node.stop()
        plane.stop()
        state["phase"] = "stopped"
        _write_state(state)


def supervise(no_operator: bool = False) -> int:
    """Starts everything, records it in the state file, and stops it all on SIGTERM."""
    folder = state_dir()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    shutil.rmtree(folder / "cluster", ignore_errors=True)
    shutil.rmtree(folder / "redis", ignore_errors=True)
    plane = ControlPlane(base_dir=folder / "cluster")
    redis = RedisServer(base_dir=folder / "redis")
    (folder / "redis").mkdir(parents=True, exist_ok=True)
    postgres = PostgresServer()  # under /tmp: as root, the postgres user cannot enter ~root
    operator: ManagedProcess | None = None
    state: dict[str, Any] = {"supervisor_pid": os.getpid(), "phase": "starting"}
    _write_state(state)
    try:
        started = time.monotonic()
        plane.start()
        redis.start()
        postgres.start()
        applied = _apply_project_resources(plane, redis.url, postgres.dsn)
        if not no_operator and _operator_available():
            operator = ManagedProcess(
                "mcop-operator",
                [str(_mcop()), "operator"],
                log_path=folder / "operator.log",
                env=dict(os.environ, KUBECONFIG=str(plane.kubeconfig)),
            )
            operator.start()
        processes = [*plane.processes, *([operator] if operator else [])]
        state.update({
            "phase": "running",
            "started_seconds": round(time.monotonic() - started, 1),
            "kubeconfig": str(plane.kubeconfig),
            "server": plane.server,
            "redis_url": redis.url,
            "postgres": f"127.0.0.1:{postgres.port}",
            "postgres_dsn": postgres.dsn,
            "postgres_dir": str(postgres.base_dir),
            "applied": applied,
            "operator": (
                "running"
                if operator
                else "not started (--no-operator)"
                if no_operator
                else "not available (mcop operator --help failed)"
            ),
            "processes": [{"name": p.name, "pid": p.pid} for p in processes] + [
                {"name": "redis-server", "pid": redis.pid},
                {"name": "postgres", "pid": postgres.pid},
            ],
            "logs": str(plane.base_dir / "logs"),
        })  # fmt: skip
        _write_state(state)
        while not stop.wait(1.0):
            pass
        return 0
    except BaseException as error:
        state.update({"phase": "failed", "error": str(error)})
        _write_state(state)
        raise
    finally:
        if operator is not None:
            operator.stop()
        postgres.cleanup()
        redis.stop()
        plane.stop()
        state["phase"] = "stopped"
        _write_state(state)


# --- the commands ------------------------------------------------------------------------------


def _export_line(state: dict[str, Any]) -> str:
    return f"export KUBECONFIG={state['kubeconfig']}"


def up(timeout: float = 180.0, pod_runner: bool = False, no_operator: bool = False) -> int:
    state = _read_state()
    if state and state.get("phase") == "running" and _alive(state.get("supervisor_pid")):
        _say("already running")
        print(_export_line(state))
        return 0
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        _state_file().unlink()
    log = folder / "supervisor.log"
    with open(log, "wb") as out:
        supervisor = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mcop_devcluster.localcluster",
                "supervise" if pod_runner else "supervise-real-node",
                *(["--no-operator"] if no_operator else []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # it outlives this command and the terminal
        )
    _say(f"starting (supervisor pid {supervisor.pid}, log {log})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _read_state()
        if state and state.get("phase") == "running":
            _say(f"running after {state['started_seconds']} s: {', '.join(state['applied'])}")
            _say(f"operator: {state['operator']}")
            if "redis_url" in state:
                _say(f"Redis {state['redis_url']}, PostgreSQL {state['postgres']}")
            print(_export_line(state))
            return 0
        if supervisor.poll() is not None:
            _say(f"failed to start; the end of {log}:")
            print("\n".join(log.read_text(errors="replace").splitlines()[-30:]), file=sys.stderr)
            return 1
        time.sleep(0.5)
    _say(f"not running after {timeout:.0f} s; stopping it (see {log})")
    down()
    return 1


def down(timeout: float = 60.0) -> int:
    state = _read_state()
    pid = state.get("supervisor_pid") if state else None
    if not _alive(pid):
        _say("not running")
        return 0
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        _say(f"supervisor {pid} did not stop in {timeout:.0f} s; killing it")
        os.kill(pid, signal.SIGKILL)
    for proc in (state or {}).get("processes", []):
        if _alive(proc.get("pid")):
            _say(f"{proc['name']} (pid {proc['pid']}) was left running; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc["pid"], signal.SIGKILL)
    recover_abandoned()  # a real node whose supervisor was killed: put the machine back
    _say("stopped")
    return 0


def status() -> int:
    state = _read_state()
    if not state or not _alive(state.get("supervisor_pid")):
        _say("not running (scripts/local-cluster up starts it)")
        return 1
    if state.get("phase") != "running":
        _say(f"supervisor {state['supervisor_pid']} is {state.get('phase')}")
        return 1
    _say(f"running: API server {state['server']}, operator {state['operator']}")
    for proc in state["processes"]:
        alive = "running" if _alive(proc["pid"]) else "NOT RUNNING"
        print(f"  {proc['name']:<24} pid {proc['pid']:<8} {alive}")
    if "redis_url" in state:
        print(f"  Redis {state['redis_url']}, PostgreSQL {state['postgres']}")
    print(f"  logs {state['logs']}")
    print(_export_line(state))
    return 0 if all(_alive(p["pid"]) for p in state["processes"]) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/local-cluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "supervise",
                                            "supervise-real-node"])  # fmt: skip
    parser.add_argument("--pod-runner", action="store_true",
                        help="up: kwok's node and the pod runner, not the real node")  # fmt: skip
    parser.add_argument("--no-operator", action="store_true",
                        help="up: the pod-runner variant without the operator (run your own "
                             "replicas against it); implies --pod-runner")  # fmt: skip
    args = parser.parse_args(argv)
    pod_runner = args.pod_runner or args.no_operator
    if args.command == "up":
        return up(timeout=900.0 if not pod_runner else 180.0, pod_runner=pod_runner,
                  no_operator=args.no_operator)  # fmt: skip
    if args.command == "supervise":
        return supervise(no_operator=args.no_operator)
    commands = {"down": down, "status": status, "supervise-real-node": supervise_real_node}
    return commands[args.command]()


if __name__ == "__main__":
    sys.exit(main())
