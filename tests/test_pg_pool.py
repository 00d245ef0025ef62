"""The asyncpg pool follows the PerfTuning's SQLAlchemy-style settings, as the server sees them."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import pytest

from mcop_worker.storage.pool import CONNECTION_ERRORS, PgPool
from mcop_worker.storage.settings import PgPoolSettings
from pg_relay import SlowCloseRelay

pytestmark = pytest.mark.services
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Sessions:
    """Counts the server-side sessions of one application_name, from a connection of its own."""

    def __init__(self, con: asyncpg.Connection, app: str) -> None:
        self.con, self.app = con, app

    async def count(self) -> int:
        return int(
            await self.con.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", self.app
            )
        )

    async def pids(self) -> set[int]:
        rows = await self.con.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1", self.app
        )
        return {row["pid"] for row in rows}

    async def wait_for(self, expected: int, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while (seen := await self.count()) != expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return seen


async def _open(dsn: str, settings: PgPoolSettings) -> tuple[PgPool, Sessions]:
    app = f"mcop-test-{uuid.uuid4().hex[:8]}"
    monitor = await asyncpg.connect(dsn)
    pool = await PgPool.open(dsn, settings, application_name=app)
    return pool, Sessions(monitor, app)


async def _load(pool: PgPool, tasks: int, seconds: float) -> None:
    async def one() -> None:
        async with pool.acquire() as con:
            await con.execute(f"SELECT pg_sleep({seconds})")

    await asyncio.gather(*(one() for _ in range(tasks)))


async def _peak_during(sessions: Sessions, work: Awaitable[None]) -> int:
    """The most sessions the server shows while `work` runs."""
    task = asyncio.ensure_future(work)
    peak = 0
    while not task.done():
        peak = max(peak, await sessions.count())
        await asyncio.sleep(0.02)
    await task
    return peak


def test_pool_size_is_kept_and_overflow_is_bounded_then_released(pg_dsn: str) -> None:
    async def scenario() -> tuple[int, int, int, int]:
        pool, sessions = await _open(pg_dsn, PgPoolSettings(pool_size=3, max_overflow=4))
        try:
            warm = await sessions.wait_for(3)
            peak = await _peak_during(sessions, _load(pool, tasks=20, seconds=0.3))
            in_use_peak = pool.stats().max_size
            after = await sessions.wait_for(3)
            return warm, peak, in_use_peak, after
        finally:
            await pool.close()
            await sessions.con.close()

    warm, peak, max_size, after = run(scenario())
    assert warm == 3, "poolSize connections open after start"
    assert peak == 7, "under load the pool grows to exactly poolSize + maxOverflow"
    assert max_size == 7
    assert after == 3, "overflow connections are closed when returned, like QueuePool"


def test_reconfigure_changes_server_connections_live_without_losing_work(pg_dsn: str) -> None:
    async def scenario() -> dict[str, Any]:
        pool, sessions = await _open(pg_dsn, PgPoolSettings(pool_size=2, max_overflow=1))
        try:
            seen: dict[str, Any] = {"before": await sessions.wait_for(2)}

            async def in_flight() -> int:
                async with pool.acquire() as con:
                    return int(await con.fetchval("SELECT 7 FROM pg_sleep(0.6)"))

            long_query = asyncio.ensure_future(in_flight())
            await asyncio.sleep(0.1)
            await pool.reconfigure(PgPoolSettings(pool_size=5, max_overflow=2))
            seen["in_flight_result"] = await long_query
            seen["after"] = await sessions.wait_for(5)
            seen["peak"] = await _peak_during(sessions, _load(pool, tasks=15, seconds=0.3))
            seen["settled"] = await sessions.wait_for(5)
            await pool.reconfigure(PgPoolSettings(pool_size=1, max_overflow=0))
            seen["shrunk"] = await sessions.wait_for(1)
            seen["peak_small"] = await _peak_during(sessions, _load(pool, tasks=5, seconds=0.1))
            return seen
        finally:
            await pool.close()
            await sessions.con.close()

    seen = run(scenario())
    assert seen["before"] == 2
    assert seen["in_flight_result"] == 7, "a query running during the swap completes"
    assert seen["after"] == 5, "the old pool closed, the new one keeps poolSize=5"
    assert seen["peak"] == 7
    assert seen["settled"] == 5
    assert seen["shrunk"] == 1
    assert seen["peak_small"] == 1


def test_connections_older_than_recycle_seconds_are_replaced(pg_dsn: str) -> None:
    async def scenario() -> tuple[int, int, set[int], int]:
        settings = PgPoolSettings(pool_size=1, max_overflow=0, pool_recycle_seconds=0.5)
        pool, sessions = await _open(pg_dsn, settings)
        try:
            async with pool.acquire() as con:
                first = con.get_server_pid()
            await asyncio.sleep(0.7)
            async with pool.acquire() as con:
                second = con.get_server_pid()
            await sessions.wait_for(1)
            return first, second, await sessions.pids(), pool.stats().recycled
        finally:
            await pool.close()
            await sessions.con.close()

    first, second, live, recycled = run(scenario())
    assert first != second, "the old connection was replaced by a new backend"
    assert live == {second}, "the old backend is gone from the server"
    assert recycled >= 1


def test_young_connections_are_reused(pg_dsn: str) -> None:
    async def scenario() -> tuple[int, int]:
        settings = PgPoolSettings(pool_size=1, max_overflow=0, pool_recycle_seconds=60)
        pool, sessions = await _open(pg_dsn, settings)
        try:
            async with pool.acquire() as con:
                first = con.get_server_pid()
            async with pool.acquire() as con:
                return first, con.get_server_pid()
        finally:
            await pool.close()
            await sessions.con.close()

    first, second = run(scenario())
    assert first == second


async def _terminate(dsn: str, pid: int) -> None:
    con = await asyncpg.connect(dsn)
    try:
        await con.execute("SELECT pg_terminate_backend($1, 5000)", pid)
    finally:
        await con.close()


async def _after_backend_killed(dsn: str, pre_ping: bool) -> tuple[int | None, int]:
    """Kill the pool's only backend with pg_terminate_backend, then use the pool again."""
    settings = PgPoolSettings(pool_size=1, max_overflow=0, pre_ping=pre_ping)
    pool, sessions = await _open(dsn, settings)
    try:
        async with pool.acquire() as con:
            victim = con.get_server_pid()
        # Kill it from another thread while this event loop is blocked, so the pool has not yet
        # read the server's goodbye: the connection looks alive, as after a silent network drop.
        killer = threading.Thread(target=asyncio.run, args=(_terminate(dsn, victim),))
        killer.start()
        killer.join()
        async with pool.acquire() as con:
            value = await con.fetchval("SELECT 42")
        return value, pool.stats().replaced_after_ping
    finally:
        await pool.close()
        await sessions.con.close()


def test_pre_ping_replaces_a_connection_whose_backend_was_killed(pg_dsn: str) -> None:
    value, replaced = run(_after_backend_killed(pg_dsn, pre_ping=True))
    assert value == 42
    assert replaced == 1


def test_without_pre_ping_a_killed_backend_surfaces_as_an_error(pg_dsn: str) -> None:
    # The contrast that shows the previous test can fail: the dead connection is handed out.
    with pytest.raises(
        (asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.AdminShutdownError)
    ):
        run(_after_backend_killed(pg_dsn, pre_ping=False))


@dataclass
class _AfterGoodbye:
    """What a pool did when its backend's FATAL goodbye arrived a while before the close."""

    value: Any  # what the step returned, or None when it raised
    error: BaseException | None  # what the step raised
    next_value: int  # a later statement, once the close has arrived
    replaced_after_ping: int


async def _after_goodbye_before_close(
    pg_dsn: str, pre_ping: bool, while_checked_out: bool
) -> _AfterGoodbye:
    """End the pool's only backend with pg_terminate_backend through a relay that forwards its
    FATAL message at once but the close 2 s later, then use the pool inside that window: to run a
    statement (`while_checked_out=False`) or to return a connection taken before the goodbye."""
    port = urlsplit(pg_dsn).port
    assert port is not None
    with SlowCloseRelay(port, close_delay=2.0) as relay:
        settings = PgPoolSettings(pool_size=1, max_overflow=0, pre_ping=pre_ping)
        pool = await PgPool.open(relay.dsn(pg_dsn), settings)

        async def goodbye(pid: int) -> None:
            await _terminate(pg_dsn, pid)  # waits until the backend has exited
            await asyncio.to_thread(relay.wait_for_goodbyes, 1)
            await asyncio.sleep(0.2)  # this loop reads the FATAL message; the close is held back

        value: Any = None
        error: BaseException | None = None
        try:
            if while_checked_out:
                try:
                    async with pool.acquire() as con:
                        await goodbye(con.get_server_pid())
                        value = "returned"
                except Exception as raised:  # the test reports what came out
                    error = raised
            else:
                await goodbye(int(await pool.fetchval("SELECT pg_backend_pid()")))
                try:
                    value = await pool.fetchval("SELECT 42")
                except Exception as raised:
                    error = raised
            next_value = int(await pool.fetchval("SELECT 43"))
            return _AfterGoodbye(value, error, next_value, pool.stats().replaced_after_ping)
        finally:
            await pool.close()


def test_pre_ping_replaces_a_connection_whose_goodbye_came_before_its_close(pg_dsn: str) -> None:
    # asyncpg reads the FATAL while idle, is left out of step with the server, and raised
    # InternalClientError "cannot switch to state 12" from the pre-ping (the worker's CI failure).
    seen = run(_after_goodbye_before_close(pg_dsn, pre_ping=True, while_checked_out=False))
    assert seen.error is None, f"{type(seen.error).__name__}: {seen.error}"
    assert seen.value == 42
    assert seen.replaced_after_ping == 1
    assert seen.next_value == 43


def test_without_pre_ping_a_goodbye_before_the_close_is_a_connection_error(pg_dsn: str) -> None:
    # The statement cannot succeed, but it must fail as a lost connection (which the worker's
    # retries and the operator's _db_call handle), not as asyncpg's InternalClientError.
    seen = run(_after_goodbye_before_close(pg_dsn, pre_ping=False, while_checked_out=False))
    assert isinstance(seen.error, asyncpg.exceptions.ConnectionDoesNotExistError), repr(seen.error)
    assert isinstance(seen.error, CONNECTION_ERRORS)
    assert seen.next_value == 43, "the pool replaced the lost connection"


def test_returning_a_connection_whose_goodbye_came_before_its_close(pg_dsn: str) -> None:
    # The work inside `acquire()` was done; the reset on return used to raise "cannot switch to
    # state 15" out of the `async with`.
    seen = run(_after_goodbye_before_close(pg_dsn, pre_ping=True, while_checked_out=True))
    assert seen.error is None, f"{type(seen.error).__name__}: {seen.error}"
    assert seen.value == "returned"
    assert seen.next_value == 43


def test_command_timeout_bounds_every_statement(pg_dsn: str) -> None:
    async def scenario() -> Callable[[], None]:
        settings = PgPoolSettings(pool_size=1, max_overflow=0, command_timeout_seconds=0.2)
        pool, sessions = await _open(pg_dsn, settings)
        try:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await pool.execute("SELECT pg_sleep(3)")
            elapsed = time.monotonic() - started
            assert elapsed < 2.0
            assert await pool.fetchval("SELECT 1") == 1, "the pool recovers after a timeout"
            return lambda: None
        finally:
            await pool.close()
            await sessions.con.close()

    run(scenario())


def test_unreachable_server_fails_fast_without_the_password(pg_dsn: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(pg_dsn)
    dead = pg_dsn.replace(f":{parts.port}/", ":1/")
    with pytest.raises(OSError) as caught:
        run(PgPool.open(dead, PgPoolSettings(pool_size=1, max_overflow=0), connect_timeout=2))
    assert parts.password and parts.password not in str(caught.value)
