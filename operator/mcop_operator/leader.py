"""Leader election on a coordination.k8s.io/v1 Lease, the way client-go's leaderelection does it,
and the fence every write of the operator passes.

- A replica takes the Lease when nobody holds it, or when the holder's record has not changed for
  `lease_seconds` of *this* replica's clock (observed time, not the remote timestamp: no trust in
  clock skew). Taking it over increments `leaseTransitions`: that number is the leader's epoch,
  stored with the results in PostgreSQL so a late write of an older leader is refused there.
- The leader renews every `retry_seconds`. A renewal counts from the moment its request was sent;
  once `renew_deadline_seconds` pass without one, the replica is no longer the leader and exits at
  once (Kubernetes restarts it as a standby), long before the others may take the Lease
  (`lease_seconds` after *they* saw the last renewal).
- `Fence.check()` runs before every write that matters: a replica that was stopped (SIGSTOP, a
  frozen VM) for longer than the deadline finds out there, before it writes, not when its renewal
  thread wakes up. What slips through anyway (a request sent just before the freeze) is made
  harmless by the writes themselves: deterministic names, resourceVersion preconditions on status,
  the epoch in PostgreSQL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger("mcop.leader")


@dataclasses.dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    name: str = "montecarlo-operator"
    identity: str = ""
    lease_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_seconds: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_seconds < self.renew_deadline_seconds < self.lease_seconds:
            raise ValueError(
                "leader election needs retry < renew deadline < lease duration "
                f"(got {self.retry_seconds}, {self.renew_deadline_seconds}, {self.lease_seconds})"
            )


class Fence:
    """What every write asks first. Without leader election: always allowed, epoch 0."""

    epoch: int = 0
    acquired_at: float | None = None  # time.monotonic() when this replica took the Lease

    def check(self) -> None:
        """Return when this replica may write; otherwise end the process at once."""

    def is_leader(self) -> bool:
        return True

    def lost(self, why: str) -> None:
        """A write was refused because a newer leader made one: stop acting."""
        raise RuntimeError(f"fenced without leader election: {why}")


def _now_micro() -> datetime.datetime:
    """A MicroTime for the Lease (the client serialises it as RFC 3339 with microseconds)."""
    return datetime.datetime.now(datetime.UTC)


def _exit_lost(why: str) -> None:
    """Stop acting at once: no cleanup handler may write anything more."""
    from . import metrics

    metrics.set_leader(False)
    log.error("leadership lost (%s): exiting so that Kubernetes restarts this replica", why)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(1)


class LeaderElector(Fence):
    """Acquire (blocking), then renew in a thread of its own; see the module docstring."""

    def __init__(
        self,
        config: LeaseConfig,
        api: Any,  # kubernetes.client.CoordinationV1Api
        on_lost: Callable[[str], None] = _exit_lost,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.api = api
        self.on_lost = on_lost
        self.clock = clock
        self.epoch = 0
        self._renewed_at: float | None = None  # when the last successful renewal was sent
        self._observed: tuple[Any, ...] | None = None  # the holder's record as last seen
        self._observed_at = 0.0
        self._observed_lock = threading.Lock()  # the watch thread observes too
        self._released = threading.Event()  # the watch saw the Lease given up: try at once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost = False

    # -- the fence ----------------------------------------------------------------------------
    def is_leader(self) -> bool:
        renewed = self._renewed_at
        return (
            not self._lost
            and renewed is not None
            and self.clock() - renewed < self.config.renew_deadline_seconds
        )

    def check(self) -> None:
        if not self.is_leader():
            self._lose("no renewal within the renew deadline")

    def lost(self, why: str) -> None:
        self._lose(why)

    def _lose(self, why: str) -> None:
        if not self._lost:
            self._lost = True
            self.on_lost(why)

    # -- acquiring ----------------------------------------------------------------------------
    def acquire(self) -> int:
        """Block until this replica holds the Lease; returns its epoch (leaseTransitions)."""
        from . import metrics

        metrics.set_leader(False)
        log.info(
            "waiting for Lease %s/%s as %s",
            self.config.namespace,
            self.config.name,
            self.config.identity,
        )
        watching: threading.Thread | None = None
        while not self._stop.is_set():
            before, seen = self._observed, self._observed_at
            self._released.clear()
            wait = self.try_acquire_or_renew()
            if wait is None:
                metrics.set_leader(True)
                self.acquired_at = self.clock()
                log.info(
                    "leading as %s (epoch %d); %s",
                    self.config.identity,
                    self.epoch,
                    "the Lease was free"
                    if before is None or not before[0]
                    else f"{before[0]} last renewed {self.acquired_at - seen:.1f} s ago",
                )
                return self.epoch
            if watching is None:  # standing by
                watching = threading.Thread(target=self._watch, name="lease-watch", daemon=True)
                watching.start()
            self._released.wait(wait)
        raise RuntimeError("stopped before leading")

    # -- observing ----------------------------------------------------------------------------
    def observe(self, lease: Any) -> None:
        """Note the Lease's record as read or watched: a change restarts the lease duration the
        holder has on this replica's clock; a Lease given up (no holder) wakes `acquire` at once."""
        spec = lease.spec
        record = (
            spec.holder_identity or "",
            spec.renew_time,
            spec.lease_transitions,
            lease.metadata.resource_version,
        )
        with self._observed_lock:
            if record != self._observed:
                self._observed, self._observed_at = record, self.clock()
        if not record[0]:
            self._released.set()

    def _watch(self) -> None:
        """While standing by, watch the Lease: every renewal is seen when it is made, not up to a
        retry period later, so a dead holder's lease duration is counted from its last renewal
        (one object, selected by name on the server)."""
        from kubernetes import watch

        cfg = self.config
        watch_class: Any = watch.Watch  # untyped
        while not self._stop.is_set() and self.acquired_at is None:
            stream = watch_class()
            try:
                for event in stream.stream(
                    self.api.list_namespaced_lease,
                    cfg.namespace,
                    field_selector=f"metadata.name={cfg.name}",
                    timeout_seconds=60,
                    _request_timeout=90,
                ):
                    if self._stop.is_set() or self.acquired_at is not None:
                        break
                    if event.get("type") == "DELETED":
                        self._released.set()
                    elif event.get("type") in ("ADDED", "MODIFIED"):
                        self.observe(event["object"])
            except Exception as exc:  # the poll of `acquire` goes on; the watch comes back
                log.info("watching Lease %s/%s: %s", cfg.namespace, cfg.name, exc)
                self._stop.wait(cfg.retry_seconds)
            finally:
                stream.stop()

    def try_acquire_or_renew(self) -> float | None:
        """One attempt: None when this replica leads now, else the seconds to wait."""
        from kubernetes.client.exceptions import ApiException

        cfg = self.config
        sent = self.clock()
        try:
            lease = self.api.read_namespaced_lease(
                cfg.name, cfg.namespace, _request_timeout=self._timeout()
            )
        except ApiException as exc:
            if exc.status != 404:
                log.warning("reading Lease %s/%s: %s", cfg.namespace, cfg.name, exc.reason)
                return cfg.retry_seconds
            return self._create(sent)
        except Exception as exc:  # the API server does not answer: try again
            log.warning("reading Lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            return cfg.retry_seconds
        self.observe(lease)
        spec = lease.spec
        holder = spec.holder_identity or ""
        duration = float(spec.lease_duration_seconds or cfg.lease_seconds)
        if holder and holder != cfg.identity:
            left = self._observed_at + duration - self.clock()
            if left > 0:
                return min(cfg.retry_seconds, left + 0.05)
        transitions = int(spec.lease_transitions or 0)
        if holder != cfg.identity:
            transitions += 1  # a new epoch: older leaders' late writes are refused with it
        now = _now_micro()
        spec.holder_identity = cfg.identity
        spec.lease_duration_seconds = int(cfg.lease_seconds)
        spec.renew_time = now
        spec.lease_transitions = transitions
        if holder != cfg.identity:
            spec.acquire_time = now
        try:
            updated = self.api.replace_namespaced_lease(
                cfg.name, cfg.namespace, lease, _request_timeout=self._timeout()
            )
        except ApiException as exc:
            log.info("Lease %s/%s not taken: %s", cfg.namespace, cfg.name, exc.reason)
            return cfg.retry_seconds
        except Exception as exc:
            log.warning("updating Lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            return cfg.retry_seconds
        self._won(updated, sent)
        return None

    def _create(self, sent: float) -> float | None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        cfg = self.config
        now = _now_micro()
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=cfg.name, namespace=cfg.namespace),
            spec=client.V1LeaseSpec(
                holder_identity=cfg.identity,
                lease_duration_seconds=int(cfg.lease_seconds),
                acquire_time=now,
                renew_time=now,
                lease_transitions=1,
            ),
        )
        try:
            created = self.api.create_namespaced_lease(
                cfg.namespace, body, _request_timeout=self._timeout()
            )
        except ApiException as exc:
            log.info("Lease %s/%s not created: %s", cfg.namespace, cfg.name, exc.reason)
            return cfg.retry_seconds
        except Exception as exc:
            log.warning("creating Lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            return cfg.retry_seconds
        self._won(created, sent)
        return None

    def _won(self, lease: Any, sent: float) -> None:
        spec = lease.spec
        self.epoch = int(spec.lease_transitions or 0)
        self._observed = (
            spec.holder_identity,
            spec.renew_time,
            spec.lease_transitions,
            lease.metadata.resource_version,
        )
        self._observed_at = sent
        self._renewed_at = sent

    def _timeout(self) -> float:
        # A request that hangs must not outlive the renew deadline.
        return max(1.0, self.config.renew_deadline_seconds / 3)

    # -- renewing -----------------------------------------------------------------------------
    def start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="lease-renew", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        cfg = self.config
        while not self._stop.wait(cfg.retry_seconds):
            if not self.is_leader():
                self._lose("no renewal within the renew deadline")
                return
            epoch = self.epoch
            if self.try_acquire_or_renew() is None and self.epoch == epoch:
                continue
            if self.epoch != epoch or (self._observed and self._observed[0] != cfg.identity):
                self._lose("another replica holds the Lease")
                return
            # Not renewed this time: try again until the deadline says otherwise.

    def release(self) -> None:
        """On a clean shutdown: give the Lease up so a standby takes over at once."""
        from kubernetes.client.exceptions import ApiException

        self._stop.set()
        if not self.is_leader():
            return
        cfg = self.config
        try:
            lease = self.api.read_namespaced_lease(cfg.name, cfg.namespace, _request_timeout=2)
            if lease.spec.holder_identity != cfg.identity:
                return
            lease.spec.holder_identity = ""
            lease.spec.lease_duration_seconds = 1
            lease.spec.renew_time = _now_micro()
            self.api.replace_namespaced_lease(cfg.name, cfg.namespace, lease, _request_timeout=2)
            log.info("Lease %s/%s released", cfg.namespace, cfg.name)
        except (ApiException, OSError) as exc:
            log.warning("releasing Lease %s/%s: %s", cfg.namespace, cfg.name, exc)
        finally:
            self._lost = True


@contextlib.contextmanager
def standby_liveness(url: str) -> Iterator[None]:
    """Answer the liveness probe while waiting for the Lease (kopf serves it once leading): a
    standby is alive, and must not be restarted for not leading."""
    if not url:
        yield
        return
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import urlsplit

    parts = urlsplit(url)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path.split("?")[0] == (parts.path or "/")
            self.send_response(200 if ok else 404)
            self.end_headers()
            self.wfile.write(b"standby\n" if ok else b"")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((parts.hostname or "0.0.0.0", parts.port or 80), Handler)
    thread = threading.Thread(target=server.serve_forever, name="standby-liveness", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def default_identity() -> str:
    """The pod's name (HOSTNAME in a pod) plus the process id: unique per incarnation."""
    import socket

    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}_{os.getpid()}"


def default_namespace() -> str:
    """The pod's namespace (its ServiceAccount's), else POD_NAMESPACE, else "default"."""
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return os.environ.get("POD_NAMESPACE", "default")
