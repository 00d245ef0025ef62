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
  A connection lost while handed out is reported as ConnectionDoesNotExistError (one of
  CONNECTION_ERRORS), and one that cannot be reset when it is returned is dropped, not reported.
- commandTimeoutSeconds -> asyncpg command_timeout (the default timeout of every statement).

`reconfigure()` swaps in a pool with new settings: new acquisitions use it at once, connections
already handed out finish their work and are returned to (and closed with) the old pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from mcop_worker.storage.settings import PgPoolSettings, redact

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

# When PostgreSQL ends an idle session (fast shutdown, pg_terminate_backend, idle timeouts) it sends
# a FATAL message, and the socket closes only when the backend has exited. asyncpg reads the message
# in its idle state and is left out of step with the server, while the connection still looks open
# until the close arrives: the next statement raises InternalClientError "cannot switch to state N;
# another operation (2) is in progress" (asyncpg issue 1069), which is not an InterfaceError, and
# asyncpg aborts the connection as it raises. The pool treats that error as an unusable connection.
_OUT_OF_STEP = asyncpg.exceptions.InternalClientError
_UNUSABLE: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, _OUT_OF_STEP)

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

    def __init__(self, connect: _Connect, settings: PgPoolSettings, pool: asyncpg.Pool) -> None:
        self._connect = connect
        self._live = _LivePool(pool, settings)
        self._retiring: set[asyncio.Task[None]] = set()
        self.recycled = 0
        self.replaced_after_ping = 0

    @classmethod
    async def open(
        cls,
        dsn: str,
        settings: PgPoolSettings,
        *,
        application_name: str = "mcop",
        connect_timeout: float = 10.0,
        eager: bool = True,
    ) -> PgPool:
        """Open `poolSize` connections; raises OSError or asyncpg errors if unreachable.

        `application_name` labels the sessions in pg_stat_activity (e.g. "mcop-worker").
        `eager=False` opens connections only on demand (SQLAlchemy's own behaviour), for a client
        that needs one connection at a time, such as a worker; the limits stay the same."""
        connect = _Connect(dsn, application_name, connect_timeout, eager)
        return cls(connect, settings, await connect.pool(settings))

    @property
    def settings(self) -> PgPoolSettings:
        return self._live.settings

    @property
    def target(self) -> str:
        """The server, fit for a log line (password redacted)."""
        return redact(self._connect.dsn)

    @contextlib.asynccontextmanager
    async def acquire(self, *, timeout: float | None = None) -> AsyncIterator[PoolConnectionProxy]:
        """A checked connection (young enough, pinged when prePing), returned to its pool after."""
        live = self._live  # the pool it came from, even if reconfigure() swaps meanwhile
        con = await self._checkout(live, timeout)
        try:
            yield con
        except _OUT_OF_STEP as error:
            if not _is_dead(con):
                raise
            # A lost connection, as CONNECTION_ERRORS say it, so callers' retries apply.
            raise asyncpg.exceptions.ConnectionDoesNotExistError(
                f"the server closed the connection ({error})"
            ) from error
        finally:
            await self._checkin(live, con)

    async def _checkout(self, live: _LivePool, timeout: float | None) -> PoolConnectionProxy:
        settings = live.settings
        # Each discarded connection goes back as a closed slot that asyncpg reconnects on its next
        # acquire, so after at most max_size + 1 attempts we are handed a brand new connection.
        for _ in range(settings.max_size + 1):
            con = cast(PoolConnectionProxy, await live.pool.acquire(timeout=timeout))
            try:
                if _age(con) > settings.pool_recycle_seconds:
                    self.recycled += 1
                    await _discard(con)
                    continue
                if settings.pre_ping and not await _ping(con):
                    self.replaced_after_ping += 1
                    log.info("PostgreSQL connection failed its pre-ping; replacing it")
                    await _discard(con)
                    continue
            except BaseException:  # cancelled mid-check: never leak the slot
                _terminate(con)
                raise
            return con
        raise asyncpg.exceptions.InterfaceError("no usable PostgreSQL connection after retries")

    async def _checkin(self, live: _LivePool, con: PoolConnectionProxy) -> None:
        too_old = _age(con) > live.settings.pool_recycle_seconds
        # QueuePool: a connection returned while poolSize idle ones wait is overflow; close it.
        # `keeping` counts returns still in flight (asyncpg resets a connection before it is idle).
        overflow = live.pool.get_idle_size() + live.keeping >= live.settings.pool_size
        if too_old or overflow or _is_dead(con):
            if too_old:
                self.recycled += 1
            await _discard(con)
            return
        live.keeping += 1
        try:
            await live.pool.release(con)
        except _UNUSABLE as error:
            # The reset before reuse failed: the connection died after the borrower's last
            # statement. asyncpg terminated it and frees its slot; the borrower's work is done.
            log.info("PostgreSQL connection lost while being returned (%s); dropped it", error)
            _terminate(con)
        finally:
            live.keeping -= 1

    async def reconfigure(self, settings: PgPoolSettings, *, dsn: str | None = None) -> None:
        """Swap in a pool with new settings (optionally a new DSN) without losing in-flight work."""
        if settings == self.settings and (dsn is None or dsn == self._connect.dsn):
            return
        connect = self._connect if dsn is None else dataclasses.replace(self._connect, dsn=dsn)
        new_pool = await connect.pool(settings)
        old = self._live
        self._live, self._connect = _LivePool(new_pool, settings), connect
        task = asyncio.create_task(_retire(old.pool))
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
        pool = self._live.pool
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
        pools = [self._live.pool]
        for task in list(self._retiring):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._retiring, return_exceptions=True)
        for pool in pools:
            try:
                await asyncio.wait_for(pool.close(), timeout)
            except _UNUSABLE:
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
    except _UNUSABLE:  # gone, or out of step with a server that said goodbye
        return False


def _is_dead(con: PoolConnectionProxy) -> bool:
    try:
        return bool(con.is_closed())
    except asyncpg.InterfaceError:  # asyncpg already took back a connection that died in use
        return True


def _terminate(con: PoolConnectionProxy) -> None:
    with contextlib.suppress(asyncpg.InterfaceError):  # already taken back by asyncpg
        con.terminate()


async def _discard(con: PoolConnectionProxy) -> None:
    """Close a handed-out connection; asyncpg puts its slot back and reconnects it when needed."""
    if _is_dead(con):
        _terminate(con)  # finishes asyncpg's cleanup of a dead connection and frees the slot
        return
    try:
        await asyncio.wait_for(con.close(), _PING_TIMEOUT_SECONDS)
    except (*_UNUSABLE, asyncpg.PostgresError):
        _terminate(con)


async def _retire(pool: asyncpg.Pool) -> None:
    """Close a replaced pool once its handed-out connections have come back."""
    try:
        await pool.close()  # waits for every connection to be released, then closes them
    except asyncio.CancelledError:
        pool.terminate()
        raise
    except _UNUSABLE:
        pool.terminate()


@dataclass
class _LivePool:
    """One asyncpg pool with the settings it was made with; reconfigure() makes a new one."""

    pool: asyncpg.Pool
    settings: PgPoolSettings
    keeping: int = 0  # connections being returned to the idle set right now


@dataclass(frozen=True)
class _Connect:
    """How to reach the server; the pool settings come separately so reconfigure() can swap them."""

    dsn: str
    application_name: str
    timeout: float
    eager: bool

    def __repr__(self) -> str:  # the DSN holds a password
        return f"_Connect({redact(self.dsn)}, {self.application_name!r})"

    async def pool(self, settings: PgPoolSettings) -> asyncpg.Pool:
        pool = await asyncpg.create_pool(
            self.dsn,
            min_size=settings.pool_size if self.eager else 0,
            max_size=settings.max_size,
            # Overflow is trimmed on check-in and age is checked by us; asyncpg's idle timer would
            # close connections that QueuePool keeps, so it is off.
            max_inactive_connection_lifetime=0,
            command_timeout=settings.command_timeout_seconds,
            connection_class=TrackedConnection,
            init=_stamp_birth,
            timeout=self.timeout,
            server_settings={"application_name": self.application_name},
        )
        return cast(asyncpg.Pool, pool)
