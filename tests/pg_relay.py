"""A TCP relay to PostgreSQL on 127.0.0.1 that passes every byte at once but delays the server's
close towards the client.

Why: when PostgreSQL ends a session (fast shutdown, pg_terminate_backend) it sends the client a
FATAL ErrorResponse and closes the socket only when the backend process exits. A client that
reads the message before the close sees a connection that still looks open. On this machine that
window lasts microseconds to milliseconds, depending on load (a proxy or a busy server makes it
longer); the relay holds it open for `close_delay` seconds so tests can act inside it every time.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType

from mcop_devcluster.ports import LOOPBACK


class SlowCloseRelay:
    """Listen on a free 127.0.0.1 port and relay each connection to `target_port`.

    `goodbyes` counts the sessions that the server ended (their last bytes are already forwarded);
    the client side of such a session is closed `close_delay` seconds later. Use as a
    context manager: leaving it closes every socket and stops its threads."""

    def __init__(self, target_port: int, close_delay: float) -> None:
        self.target_port = target_port
        self.close_delay = close_delay
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._goodbyes = 0
        self._sockets: list[socket.socket] = [self._listener]
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._accept, name="relay-accept", daemon=True)]

    def dsn(self, dsn: str) -> str:
        """The same DSN, through the relay."""
        return dsn.replace(f"{LOOPBACK}:{self.target_port}/", f"{LOOPBACK}:{self.port}/", 1)

    @property
    def goodbyes(self) -> int:
        with self._lock:
            return self._goodbyes

    def wait_for_goodbyes(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.goodbyes < count:
            if time.monotonic() > deadline:
                ended = self.goodbyes
                raise AssertionError(f"only {ended} of {count} sessions ended in {timeout} s")
            time.sleep(0.01)

    def __enter__(self) -> SlowCloseRelay:
        self._threads[0].start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopping.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)
        for thread in list(self._threads):
            thread.join(timeout=5)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed by __exit__
            self._track(client)
            try:
                server = socket.create_connection((LOOPBACK, self.target_port), timeout=5)
            except OSError:
                _close(client)  # PostgreSQL is down: the client sees a refused-like close
                continue
            server.settimeout(None)
            self._track(server)
            client_left = threading.Event()
            for target, args in (
                (self._client_to_server, (client, server, client_left)),
                (self._server_to_client, (server, client, client_left)),
            ):
                thread = threading.Thread(target=target, args=args, daemon=True)
                self._threads.append(thread)
                thread.start()

    def _client_to_server(
        self, client: socket.socket, server: socket.socket, client_left: threading.Event
    ) -> None:
        _pump(client, server)
        client_left.set()
        _shutdown_write(server)  # the client closed first: pass it on at once

    def _server_to_client(
        self, server: socket.socket, client: socket.socket, client_left: threading.Event
    ) -> None:
        _pump(server, client)
        if not client_left.is_set():  # the server ended the session
            with self._lock:
                self._goodbyes += 1
            self._stopping.wait(self.close_delay)  # its last message is out, its close comes late
        _shutdown_write(client)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    while True:
        try:
            data = source.recv(65536)
            if not data:
                return
            sink.sendall(data)
        except OSError:
            return


def _shutdown_write(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
