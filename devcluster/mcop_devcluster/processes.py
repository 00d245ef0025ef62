"""Child server processes: started in their own process group, stopped by PID, never left behind.

Every process started here is remembered until it is stopped; an ``atexit`` hook stops whatever is
still running when the Python process ends (a failed test session, a Ctrl-C), so no etcd, apiserver
or database outlives the suite that started it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

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
    ) -> None:
        self.name = name
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


def stop_all() -> None:
    """Stops every process started here that still runs, newest first."""
    with _running_lock:
        procs = list(_running.values())
    for proc in reversed(procs):
        proc.stop(timeout=5.0)


atexit.register(stop_all)
