"""An asyncpg pool that behaves like the SQLAlchemy QueuePool the PerfTuning settings come from.

Mapping (docs/perftuning.md has the long form):
- poolSize      -> asyncpg min_size: opened at start and kept open (asyncpg >= 0.32 restores this
                   floor when a connection dies).
- maxOverflow   -> max_size = poolSize + maxOverflow. Like QueuePool, an overflow connection is
                   closed when it is returned while poolSize idle connections are already waiting.
- poolRecycleSeconds -> every connection records its birth time; one older than this is closed
                   when it is returned, and replaced when it is handed out (asyncpg only knows an
                   idle lifetime, not an age).
- prePing       -> `SELECT 1` before a connection is handed out; a dead one is replaced.
- commandTimeoutSeconds -> asyncpg command_timeout (the default timeout of every statement).

`reconfigure()` swaps in a pool with new settings: new acquisitions use it at once, connections
already handed out finish their work and are returned to (and closed with) the old pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from mcop_worker.settings import PgPoolSettings, redact

log = logging.getLogger(__name__)

# Errors that mean "this connection (or the server) is gone", as opposed to a bad statement.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.TooManyConnectionsError,
)

_PING_TIMEOUT_SECONDS = 5.0


class TrackedConnection(asyncpg.Connection):  # type: ignore[misc]
    """An asyncpg connection that knows when it was opened (for poolRecycleSeconds)."""

    __slots__ = ("born_at",)

    born_at: float


@dataclass(frozen=True)
class PoolStats:
    """What the PerfTuning status reports about a pool."""

    size: int  # connections open now
    in_use: int  # of which handed out
    min_size: int  # poolSize
    max_size: int  # poolSize + maxOverflow
    recycled: int  # connections closed for age since the pool started
    replaced_after_ping: int  # dead connections found by prePing


class PgPool:
    """The shared PostgreSQL pool of the operator and the workers; create with `PgPool.open()`."""

    def __init__(self, dsn: str, settings: PgPoolSettings, pool: asyncpg.Pool) -> None:
        self._dsn = dsn
        self.settings = settings
        self._pool = pool
        self._retiring: set[asyncio.Task[None]] = set()
        self.recycled = 0
        self.replaced_after_ping = 0

    @classmethod
    async def open(
        cls, dsn: str, settings: PgPoolSettings, *, connect_timeout: float = 10.0
    ) -> PgPool:
        """Open `poolSize` connections; raises OSError or asyncpg errors if unreachable."""
        return cls(dsn, settings, await _create_pool(dsn, settings, connect_timeout))

    @property
    def target(self) -> str:
        """The server, fit for a log line (password redacted)."""
        return redact(self._dsn)

    @contextlib.asynccontextmanager
    async def acquire(self, *, timeout: float | None = None) -> AsyncIterator[PoolConnectionProxy]:
        """A checked connection (young enough, pinged when prePing), returned to its pool after."""
        pool = self._pool  # the pool it came from, even if reconfigure() swaps meanwhile
        settings = self.settings
        con = await self._checkout(pool, settings, timeout)
        try:
            yield con
        finally:
            await self._checkin(pool, settings, con)

    async def _checkout(
        self, pool: asyncpg.Pool, settings: PgPoolSettings, timeout: float | None
    ) -> PoolConnectionProxy:
        # Each discarded connection goes back as a closed slot that asyncpg reconnects on its next
        # acquire, so after at most max_size + 1 attempts we are handed a brand new connection.
        for _ in range(settings.max_size + 1):
            con = cast(PoolConnectionProxy, await pool.acquire(timeout=timeout))
            try:
                if _age(con) > settings.pool_recycle_seconds:
                    self.recycled += 1
                    await _discard(pool, con)
                    continue
                if settings.pre_ping and not await _ping(con):
                    self.replaced_after_ping += 1
                    log.info("PostgreSQL connection failed its pre-ping; replacing it")
                    await _discard(pool, con)
                    continue
            except BaseException:  # cancelled mid-check: never leak the slot
                con.terminate()
                raise
            return con
        raise asyncpg.exceptions.InterfaceError("no usable PostgreSQL connection after retries")

    async def _checkin(
        self, pool: asyncpg.Pool, settings: PgPoolSettings, con: PoolConnectionProxy
    ) -> None:
        too_old = _age(con) > settings.pool_recycle_seconds
        # QueuePool: a returned connection beyond poolSize idle ones is overflow; close it.
        overflow = pool.get_idle_size() >= settings.pool_size
        if too_old or overflow or con.is_closed():
            if too_old:
                self.recycled += 1
            await _discard(pool, con)
        else:
            await pool.release(con)

    async def reconfigure(self, settings: PgPoolSettings, *, dsn: str | None = None) -> None:
        """Swap in a pool with new settings (optionally a new DSN) without losing in-flight work."""
        if settings == self.settings and (dsn is None or dsn == self._dsn):
            return
        new_dsn = dsn or self._dsn
        new_pool = await _create_pool(new_dsn, settings, 10.0)
        old_pool = self._pool
        self._pool, self.settings, self._dsn = new_pool, settings, new_dsn
        task = asyncio.create_task(_retire(old_pool))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        log.info(
            "PostgreSQL pool reconfigured: poolSize=%d maxOverflow=%d recycle=%ss prePing=%s",
            settings.pool_size,
            settings.max_overflow,
            settings.pool_recycle_seconds,
            settings.pre_ping,
        )

    def stats(self) -> PoolStats:
        pool = self._pool
        size = pool.get_size()
        return PoolStats(
            size=size,
            in_use=size - pool.get_idle_size(),
            min_size=pool.get_min_size(),
            max_size=pool.get_max_size(),
            recycled=self.recycled,
            replaced_after_ping=self.replaced_after_ping,
        )

    async def close(self, timeout: float = 10.0) -> None:
        """Close the pool (waiting up to `timeout` for connections in use), and any old ones."""
        pools = [self._pool]
        for task in list(self._retiring):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._retiring, return_exceptions=True)
        for pool in pools:
            try:
                await asyncio.wait_for(pool.close(), timeout)
            except CONNECTION_ERRORS:
                pool.terminate()

    # Conveniences for one-statement uses; each borrows a connection for the statement only.
    async def execute(self, query: str, *args: Any) -> str:
        async with self.acquire() as con:
            return cast(str, await con.execute(query, *args))

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.acquire() as con:
            return cast(list[asyncpg.Record], await con.fetch(query, *args))

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self.acquire() as con:
            return cast("asyncpg.Record | None", await con.fetchrow(query, *args))

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.acquire() as con:
            return await con.fetchval(query, *args)


async def _stamp_birth(con: asyncpg.Connection) -> None:
    con.born_at = time.monotonic()


def _age(con: PoolConnectionProxy) -> float:
    born = getattr(con, "born_at", None)
    return 0.0 if born is None else time.monotonic() - born


async def _ping(con: PoolConnectionProxy) -> bool:
    try:
        await con.fetchval("SELECT 1", timeout=_PING_TIMEOUT_SECONDS)
        return True
    except CONNECTION_ERRORS:
        return False


async def _discard(pool: asyncpg.Pool, con: PoolConnectionProxy) -> None:
    """Close a handed-out connection; asyncpg puts its slot back and reconnects it when needed."""
    if con.is_closed():
        # A dead connection: terminate() finishes asyncpg's cleanup and frees the slot.
        con.terminate()
        return
    try:
        await asyncio.wait_for(con.close(), _PING_TIMEOUT_SECONDS)
    except CONNECTION_ERRORS:
        con.terminate()


async def _retire(pool: asyncpg.Pool) -> None:
    """Close a replaced pool once its handed-out connections have come back."""
    try:
        await pool.close()  # waits for every connection to be released, then closes them
    except asyncio.CancelledError:
        pool.terminate()
        raise
    except CONNECTION_ERRORS:
        pool.terminate()


async def _create_pool(dsn: str, settings: PgPoolSettings, connect_timeout: float) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=settings.pool_size,
        max_size=settings.max_size,
        # Overflow is trimmed on check-in and age is checked by us; asyncpg's idle timer would
        # close connections QueuePool keeps, so it is off.
        max_inactive_connection_lifetime=0,
        command_timeout=settings.command_timeout_seconds,
        connection_class=TrackedConnection,
        init=_stamp_birth,
        timeout=connect_timeout,
    )
    return cast(asyncpg.Pool, pool)
