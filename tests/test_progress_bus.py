"""The Redis progress bus against a real Redis: keys, TTLs, cache counters, pool limits, outages."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest
import redis

from mcop_devcluster.services import RedisServer
from mcop_operator.storage.redis_bus import OperatorBus, result_key
from mcop_worker.storage.progress_bus import ShardProgress, progress_key, stop_key
from mcop_worker.storage.settings import RedisPoolSettings

pytestmark = pytest.mark.services
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def with_bus(
    url: str, body: Callable[[OperatorBus], Awaitable[T]], settings: RedisPoolSettings | None = None
) -> T:
    async def scenario() -> T:
        bus = OperatorBus(url, settings or RedisPoolSettings(), client_name="mcop-test")
        try:
            return await body(bus)
        finally:
            await bus.close()

    return run(scenario())


def test_progress_is_a_hash_per_job_with_a_field_per_shard_and_a_ttl(redis_url: str) -> None:
    uid = str(uuid.uuid4())
    now = time.time()

    async def body(bus: OperatorBus) -> dict[int, ShardProgress]:
        assert await bus.read_progress(uid) == {}
        await bus.publish_progress(uid, 0, ShardProgress(1, 4, 1000, now))
        await bus.publish_progress(uid, 1, ShardProgress(2, 4, 2000, now, "running"))
        await bus.publish_progress(uid, 0, ShardProgress(4, 4, 4000, now + 1, "done"))
        return await bus.read_progress(uid)

    progress = with_bus(redis_url, body)
    assert progress == {
        0: ShardProgress(4, 4, 4000, now + 1, "done"),
        1: ShardProgress(2, 4, 2000, now, "running"),
    }
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert raw.type(progress_key(uid)) == "hash"
        assert 0 < raw.ttl(progress_key(uid)) <= 3600, "progress keys expire"
        assert '"blocksDone":4' in str(raw.hget(progress_key(uid), "0"))
    finally:
        raw.close()


def test_stop_requests_keep_the_lowest_block_limit(redis_url: str) -> None:
    uid = str(uuid.uuid4())

    async def body(bus: OperatorBus) -> list[int | None]:
        seen = [await bus.stop_requested(uid)]
        await bus.request_stop(uid, block_limit=40)
        seen.append(await bus.stop_requested(uid))
        await bus.request_stop(uid, block_limit=60)  # a later, weaker request changes nothing
        seen.append(await bus.stop_requested(uid))
        await bus.request_stop(uid, block_limit=0)
        seen.append(await bus.stop_requested(uid))
        await bus.clear_stop(uid)
        seen.append(await bus.stop_requested(uid))
        return seen

    assert with_bus(redis_url, body) == [None, 40, 40, 0, None]
    raw = redis.Redis.from_url(redis_url)
    try:
        assert raw.ttl(stop_key(uid)) == -2, "cleared"
    finally:
        raw.close()


def test_result_cache_counts_hits_and_misses_and_expires(redis_url: str) -> None:
    async def body(bus: OperatorBus) -> tuple[Any, ...]:
        miss = await bus.cached_result("sha256:abc")
        await bus.cache_result("sha256:abc", '{"estimate": 1.5}', ttl_seconds=1)
        hit = await bus.cached_result("sha256:abc")
        again = await bus.cached_result("sha256:abc")
        await asyncio.sleep(1.3)
        expired = await bus.cached_result("sha256:abc")
        return miss, hit, again, expired, bus.cache_hits, bus.cache_misses, bus.cache_rates()

    miss, hit, again, expired, hits, misses, rates = with_bus(redis_url, body)
    assert miss is None and expired is None
    assert hit == again == '{"estimate": 1.5}'
    assert (hits, misses) == (2, 2)
    assert rates == (0.5, 0.5)


def test_server_metrics(redis_url: str) -> None:
    async def body(bus: OperatorBus) -> Any:
        await bus.cache_result("h1", "{}", 60)
        await bus.cache_result("h2", "{}", 60)
        await bus.cached_result("h1")
        await bus.cached_result("nope")
        return await bus.server_metrics()

    metrics = with_bus(redis_url, body)
    assert metrics.connected and metrics.error == ""
    assert metrics.keys == 2
    assert metrics.used_memory_bytes > 0
    assert metrics.keyspace_hits >= 1 and metrics.keyspace_misses >= 1
    assert metrics.connected_clients >= 1
    assert 0 < metrics.latency_ms < 1000


def _our_clients(url: str, name: str) -> int:
    raw = redis.Redis.from_url(url)
    try:
        return sum(1 for c in raw.client_list() if c.get("name") == name)
    finally:
        raw.close()


def test_max_connections_bounds_what_the_server_sees_and_reconfigure_changes_it(
    redis_url: str,
) -> None:
    name = f"mcop-pool-{uuid.uuid4().hex[:6]}"

    async def peak_during_load(bus: OperatorBus) -> int:
        async def one(i: int) -> None:
            # BLPOP holds its connection for 0.3 s, so concurrent calls need separate connections.
            await bus._call("load", lambda r: r.blpop([f"empty-{i}"], timeout=0.3), None)

        work = asyncio.ensure_future(asyncio.gather(*(one(i) for i in range(12))))
        peak = 0
        while not work.done():
            peak = max(peak, await asyncio.to_thread(_our_clients, redis_url, name))
            await asyncio.sleep(0.05)
        await work
        return peak

    async def scenario() -> tuple[int, int, int]:
        bus = OperatorBus(redis_url, RedisPoolSettings(max_connections=3), client_name=name)
        try:
            small = await peak_during_load(bus)
            await bus.reconfigure(RedisPoolSettings(max_connections=8))
            large = await peak_during_load(bus)
            await asyncio.sleep(0.3)
            return small, large, await asyncio.to_thread(_our_clients, redis_url, name)
        finally:
            await bus.close()

    small, large, after = run(scenario())
    assert small == 3, "maxConnections=3: never more than three connections"
    assert large == 8, "after reconfigure the new limit applies (old pool closed)"
    assert after <= 8


def test_redis_down_is_tolerated_logged_once_and_recovered(
    redis_server: RedisServer, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    uid = str(uuid.uuid4())
    caplog.set_level(logging.INFO, logger="mcop_worker.storage.progress_bus")

    async def scenario() -> dict[str, Any]:
        bus = OperatorBus(
            redis_url, RedisPoolSettings(socket_timeout_seconds=1), retry_after_seconds=0.2
        )
        out: dict[str, Any] = {}
        try:
            out["up"] = await bus.publish_progress(uid, 0, ShardProgress(1, 2, 10, time.time()))
            await asyncio.to_thread(redis_server.stop)
            started = time.monotonic()
            out["publish"] = await bus.publish_progress(
                uid, 0, ShardProgress(2, 2, 20, time.time())
            )
            out["read"] = await bus.read_progress(uid)
            out["stop"] = await bus.stop_requested(uid)
            out["cached"] = await bus.cached_result("h")
            for _ in range(20):
                await bus.publish_progress(uid, 0, ShardProgress(2, 2, 20, time.time()))
                await asyncio.sleep(0.02)
            out["elapsed"] = time.monotonic() - started
            out["available"] = bus.available
            out["metrics"] = await bus.server_metrics()
            out["misses_while_down"] = bus.cache_misses
            await asyncio.to_thread(redis_server.start)
            await asyncio.sleep(0.3)
            out["back"] = await bus.publish_progress(uid, 0, ShardProgress(2, 2, 20, time.time()))
            out["available_again"] = bus.available
            return out
        finally:
            await bus.close()

    out = run(scenario())
    assert out["up"] is True
    assert out["publish"] is False and out["read"] == {} and out["stop"] is None
    assert out["cached"] is None and out["misses_while_down"] == 0
    assert out["elapsed"] < 5, "a dead Redis does not slow the caller down"
    assert out["available"] is False
    assert out["metrics"].connected is False and "Connection" in out["metrics"].error
    assert out["back"] is True and out["available_again"] is True
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "unavailable" in warnings[0].getMessage()
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def test_a_final_report_is_tried_even_while_backing_off(
    redis_server: RedisServer, redis_url: str
) -> None:
    """A shard's last word is not dropped because an earlier call failed a moment ago."""
    uid = str(uuid.uuid4())

    async def scenario() -> dict[str, Any]:
        bus = OperatorBus(
            redis_url, RedisPoolSettings(socket_timeout_seconds=1), retry_after_seconds=600
        )
        out: dict[str, Any] = {}
        try:
            await asyncio.to_thread(redis_server.stop)
            out["while_down"] = await bus.publish_progress(uid, 0, ShardProgress(1, 2, 10, 1.0))
            await asyncio.to_thread(redis_server.start)
            out["backing_off"] = await bus.publish_progress(uid, 0, ShardProgress(2, 2, 20, 2.0))
            done = ShardProgress(2, 2, 20, 3.0, "done")
            out["final"] = await bus.publish_progress(uid, 0, done, final=True)
            out["read"] = await bus.read_progress(uid)
            return out
        finally:
            await bus.close()

    out = run(scenario())
    assert out["while_down"] is False
    assert out["backing_off"] is False, "an ordinary report waits out the back-off"
    assert out["final"] is True
    assert out["read"] == {0: ShardProgress(2, 2, 20, 3.0, "done")}


def test_redis_password_never_reaches_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mcop_worker.storage.progress_bus")
    url = "redis://:hunter2-secret@127.0.0.1:1/0"

    async def scenario() -> bool:
        bus = OperatorBus(url, RedisPoolSettings(socket_timeout_seconds=1))
        try:
            return await bus.publish_progress("u", 0, ShardProgress(0, 1, 0, time.time()))
        finally:
            await bus.close()

    assert run(scenario()) is False
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "127.0.0.1:1" in text and "***" in text
    assert "hunter2" not in text


# --- Redis Cluster (spec.redis.mode: cluster) ---------------------------------------------------

CLUSTER = RedisPoolSettings(mode="cluster", socket_timeout_seconds=2.0)


def test_a_jobs_keys_share_one_slot_and_results_spread_by_hash() -> None:
    from redis.crc import key_slot

    uid = str(uuid.uuid4())
    assert key_slot(progress_key(uid).encode()) == key_slot(stop_key(uid).encode())
    slots = {key_slot(result_key(f"sha256:{n:064x}").encode()) for n in range(64)}
    assert len(slots) > 32, "result keys are spread over the cluster"


def test_progress_stop_and_cache_work_against_a_redis_cluster(redis_cluster_url: str) -> None:
    uids = [str(uuid.uuid4()) for _ in range(12)]  # enough to land on every primary
    now = time.time()

    async def body(bus: OperatorBus) -> tuple[Any, ...]:
        for n, uid in enumerate(uids):
            assert await bus.publish_progress(uid, 0, ShardProgress(n, 12, n * 100, now))
            assert await bus.request_stop(uid, block_limit=5)
            await bus.request_stop(uid, block_limit=9)  # never raised
        await bus.cache_result("sha256:abc", '{"estimate": 2.5}', ttl_seconds=60)
        progress = [await bus.read_progress(uid) for uid in uids]
        stops = [await bus.stop_requested(uid) for uid in uids]
        return progress, stops, await bus.cached_result("sha256:abc"), await bus.server_metrics()

    progress, stops, cached, metrics = with_bus(redis_cluster_url, body, CLUSTER)
    assert progress == [{0: ShardProgress(n, 12, n * 100, now)} for n in range(12)]
    assert stops == [5] * 12
    assert cached == '{"estimate": 2.5}'
    assert metrics.connected and metrics.keys == 2 * 12 + 1, metrics  # summed over primaries
    assert metrics.keyspace_hits >= 1


def test_the_standalone_client_refuses_what_a_cluster_asks_it(redis_cluster_url: str) -> None:
    """Without mode: cluster, a key on another primary is a MOVED error: the bus says Redis is
    unavailable rather than pretending (which is why the mode is a setting, not a guess)."""
    uids = [str(uuid.uuid4()) for _ in range(12)]

    async def body(bus: OperatorBus) -> list[bool]:
        return [await bus.request_stop(uid, 3) for uid in uids]

    answers = with_bus(redis_cluster_url, body, RedisPoolSettings(socket_timeout_seconds=2.0))
    assert False in answers


async def _both(bus: OperatorBus, uid: str) -> tuple[Any, Any]:
    return await bus.read_progress(uid), await bus.stop_requested(uid)


async def _eventually(
    call: Callable[[], Awaitable[T]], good: Callable[[T], bool], timeout: float = 30.0
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = await call()
        if good(got) or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.2)


def test_a_primary_failing_over_loses_no_progress_or_stop_request(
    redis_cluster: Any, redis_cluster_url: str
) -> None:
    uid = str(uuid.uuid4())
    now = time.time()

    async def body(bus: OperatorBus) -> tuple[Any, ...]:
        await bus.publish_progress(uid, 0, ShardProgress(3, 8, 300, now))
        await bus.request_stop(uid, block_limit=6)
        # A coordinated failover: the replica catches up, then takes the primary's slots.
        await asyncio.to_thread(redis_cluster.failover, progress_key(uid))
        # A call during the switch may time out (the old primary pauses its clients, and a
        # loaded machine stretches that): such a call answers "away"; what matters is that the
        # data is on the new primary once it answers.
        after = await _eventually(lambda: _both(bus, uid), lambda got: got[0] != {})
        while not await bus.publish_progress(uid, 1, ShardProgress(4, 8, 400, now + 1)):
            await asyncio.sleep(0.2)
        return after, await bus.read_progress(uid), bus.available

    (progress, stop), later, available = with_bus(redis_cluster_url, body, CLUSTER)
    assert progress == {0: ShardProgress(3, 8, 300, now)}
    assert stop == 6
    assert later == {0: ShardProgress(3, 8, 300, now), 1: ShardProgress(4, 8, 400, now + 1)}
    assert available
