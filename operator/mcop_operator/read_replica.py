"""The PerfTuning's read replica (spec.postgres.readReplicaDsnSecretRef): its pool, and whether
reads may go there now.

Reads go to the replica while it answers and keeps up; otherwise to the primary, so that a replica
that is down or behind costs nothing but the load it was meant to take. Lag is measured against the
primary's WAL position, not the age of the last replayed transaction (which grows on an idle
primary): each check notes the primary's current LSN; the replica's lag is how long ago the primary
was at the oldest position it has not replayed yet (0 once it has replayed all it was sent)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from mcop_worker.storage.pool import PgPool
from mcop_worker.storage.settings import PgPoolSettings, redact, scrub, secrets_of

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0  # how often lag is measured (at most; only when reads ask)
APP_NAME = "mcop-operator-reads"  # the replica sessions in pg_stat_activity
# A small pool: the operator's reads are a few short statements per job and loop pass.
POOL = PgPoolSettings(pool_size=2, max_overflow=8, command_timeout_seconds=10.0)


@dataclass(frozen=True)
class ReplicaState:
    """What the PerfTuning's ReadReplica condition says."""

    usable: bool
    reason: (
        str  # Replicating | NotConfigured | SecretNotFound | ReplicaUnavailable | ReplicaLagging
    )
    message: str


NOT_CONFIGURED = ReplicaState(
    False, "NotConfigured", "no readReplicaDsnSecretRef: reads go to the primary"
)


def _lsn_bytes(value: Any) -> int:
    """A WAL position as bytes from 0/0 (PostgreSQL gives a numeric: asyncpg's Decimal)."""
    return int(value or 0)


class ReadReplica:
    """One replica DSN: its pool (opened on first use) and its health, measured lazily."""

    def __init__(self, dsn: str, max_lag_seconds: float) -> None:
        self.dsn = dsn
        self.max_lag_seconds = max_lag_seconds
        self.pool: PgPool | None = None
        self.state = ReplicaState(False, "ReplicaUnavailable", "not checked yet")
        self._checked_at = -CHECK_SECONDS
        self._behind: deque[tuple[float, int]] = deque()  # (when, primary LSN) not yet replayed
        self._lock = asyncio.Lock()

    async def usable(self, primary: PgPool | None) -> PgPool | None:
        """The replica's pool when reads may go there now, else None (use the primary)."""
        if time.monotonic() - self._checked_at >= CHECK_SECONDS:
            async with self._lock:
                if time.monotonic() - self._checked_at >= CHECK_SECONDS:
                    await self._check(primary)
        return self.pool if self.state.usable else None

    def failed(self, error: BaseException) -> None:
        """A read on the replica failed: the primary serves until the next check."""
        self._set(ReplicaState(False, "ReplicaUnavailable", _short(error, self.dsn)))
        self._checked_at = time.monotonic()

    async def _check(self, primary: PgPool | None) -> None:
        self._checked_at = time.monotonic()
        try:
            if self.pool is None:
                self.pool = await PgPool.open(
                    self.dsn, POOL, application_name=APP_NAME, connect_timeout=5.0, eager=False
                )
            replay = _lsn_bytes(
                await self.pool.fetchval(
                    # A promoted replica is a server of its own: all it has is "replayed".
                    "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
                    " ELSE pg_current_wal_lsn() END - '0/0'::pg_lsn"
                )
            )
        except Exception as error:  # any failure to reach or ask it: the primary serves
            self._behind.clear()
            self._set(ReplicaState(False, "ReplicaUnavailable", _short(error, self.dsn)))
            return
        if primary is not None:
            try:
                current = _lsn_bytes(
                    await primary.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
                )
                self._behind.append((time.monotonic(), current))
            except Exception:  # the primary's own trouble is PostgresReady's to report
                pass
        while self._behind and self._behind[0][1] <= replay:
            self._behind.popleft()
        lag = time.monotonic() - self._behind[0][0] if self._behind else 0.0
        if lag > self.max_lag_seconds:
            self._set(
                ReplicaState(
                    False,
                    "ReplicaLagging",
                    f"the replica is {lag:.1f} s behind the primary (more than "
                    f"maxReplicaLagSeconds {self.max_lag_seconds:g}): reads go to the primary",
                )
            )
        else:
            self._set(
                ReplicaState(
                    True, "Replicating", f"reads go to the replica ({lag:.1f} s behind the primary)"
                )
            )

    def _set(self, state: ReplicaState) -> None:
        if state.usable != self.state.usable or state.reason != self.state.reason:
            if state.usable:
                log.info("read replica %s: %s", redact(self.dsn), state.message)
            else:
                log.warning(
                    "read replica %s: %s (%s)", redact(self.dsn), state.reason, state.message
                )
        self.state = state

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None


def _short(error: BaseException, dsn: str) -> str:
    text = scrub(f"{type(error).__name__}: {error}", secrets_of(dsn))
    return f"the replica does not answer ({text}): reads go to the primary"
