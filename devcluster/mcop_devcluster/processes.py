"""Child server processes: started in their own process group, stopped by PID, never left behind.

Every process started here is remembered until it is stopped; an ``atexit`` hook stops whatever is
still running when the Python process ends (a failed test session, a Ctrl-C), so no etcd, apiserver
or database outlives the suite that started it. For the case where even that cannot run (the
session was killed with SIGKILL), each server folder records its owner and its processes' PIDs
(with their start times), and the next session reaps folders whose owner is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import psutil

_running: dict[int, ManagedProcess] = {}
_running_lock = threading.Lock()


class ProcessStartError(RuntimeError):
    """A server did not start or did not become ready; the message ends with its log's tail."""


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    alive: ManagedProcess | Sequence[ManagedProcess] = (),
) -> None:
    """Polls ``ready`` until it returns True; fails with ``what`` after ``timeout`` seconds.

    Fails at once (with the log's tail) when a process in ``alive`` exits meanwhile.
    """
    watched = [alive] if isinstance(alive, ManagedProcess) else list(alive)
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        for proc in watched:
            if not proc.running:
                raise ProcessStartError(
                    f"{proc.name} exited with code {proc.returncode} while waiting for {what}\n"
                    + proc.log_tail()
                )
        try:
            if ready():
                return
        except Exception:  # not ready yet: anything may fail while a server starts
            pass
        if time.monotonic() >= deadline:
            tail = "\n".join(proc.log_tail() for proc in watched)
            raise ProcessStartError(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


class ManagedProcess:
    """One server program writing to its own log file, in its own process group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        registry: Path | None = None,
    ) -> None:
        self.name = name
        self.registry = registry
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.user = user
        self.stop_signal = stop_signal
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    def start(self) -> None:
        if self.running:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            try:
                self._popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    user=self.user,
                    # Its own process group: a Ctrl-C in the terminal does not reach it half-way,
                    # and we stop it (and only it) by PID.
                    start_new_session=True,
                )
            except OSError as error:
                raise ProcessStartError(
                    f"cannot start {self.name} ({self.argv[0]}): {error}"
                ) from error
        with _running_lock:
            _running[self._popen.pid] = self
        if self.registry is not None:
            with open(self.registry, "a") as registry:
                registry.write(f"{record(self._popen.pid)} {self.name}\n")

    def stop(self, timeout: float = 10.0) -> None:
        """Sends the stop signal, then SIGKILL after ``timeout`` seconds; waits for the exit."""
        popen = self._popen
        if popen is None:
            return
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(popen.pid, self.stop_signal)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(popen.pid, signal.SIGKILL)
                popen.wait()
        with _running_lock:
            _running.pop(popen.pid, None)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last lines of {self.log_path} ---\n{tail}"


def record(pid: int) -> str:
    """``"<pid> <start time>"``: names a process in a way a later reuse of its PID cannot match."""
    try:
        return f"{pid} {psutil.Process(pid).create_time()!r}"
    except psutil.Error:
        return f"{pid} 0"


def _recorded_process(line: str) -> psutil.Process | None:
    try:
        pid_text, created = line.split()[:2]
        process = psutil.Process(int(pid_text))
        return process if abs(process.create_time() - float(created)) < 0.01 else None
    except (ValueError, psutil.Error):
        return None


def kill_recorded(files: Iterable[Path], timeout: float = 5.0) -> int:
    """SIGKILLs the process group of every process recorded in these files that still runs,
    waits until they are gone, and returns how many there were."""
    killed: list[psutil.Process] = []
    for path in files:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            process = _recorded_process(line)
            if process is None:
                continue
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
                killed.append(process)
    psutil.wait_procs(killed, timeout=timeout)
    return len(killed)


OWNER_FILE = ".owner"
REGISTRY_FILE = ".pids"


def claim_folder(folder: Path) -> Path:
    """Marks ``folder`` as owned by this process; returns the registry file for its processes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / OWNER_FILE).write_text(record(os.getpid()) + "\n")
    return folder / REGISTRY_FILE


def reap_abandoned(prefix: str) -> list[Path]:
    """Kills the processes of temporary folders ``<tmp>/<prefix>*`` whose owner is gone (a
    session killed with SIGKILL), and removes the folders. Returns the folders reaped."""
    reaped = []
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            owner = (folder / OWNER_FILE).read_text()
        except OSError:
            continue
        if _recorded_process(owner) is not None:
            continue  # its session still runs
        # Servers of several nodes (a Redis Cluster) keep their registries one folder down.
        kill_recorded(
            [
                folder / REGISTRY_FILE,
                *folder.glob(f"*/{REGISTRY_FILE}"),
                *folder.glob("pods/*/*.pid"),
            ]
        )
        shutil.rmtree(folder, ignore_errors=True)
        reaped.append(folder)
    return reaped


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def stop_servers_on_sigterm() -> None:
    """Makes SIGTERM (a CI timeout, say) end this process like Ctrl-C does, so that fixtures'
    teardown and the ``atexit`` hook still stop the servers. Keeps a handler someone else set."""
    if threading.current_thread() is threading.main_thread() and (
        signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _interrupt)


def stop_all() -> None:
    """Stops every process started here that still runs, newest first."""
    with _running_lock:
        procs = list(_running.values())
    for proc in reversed(procs):
        proc.stop(timeout=5.0)


atexit.register(stop_all)
