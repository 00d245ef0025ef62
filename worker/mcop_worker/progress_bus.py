"""Redis as the fast, disposable side channel between workers and the operator.

Keys (all expire; PostgreSQL remains the source of truth, so losing any of them loses nothing):

| key | type | written by | content |
| --- | --- | --- | --- |
| ``mcop:progress:<job uid>`` | hash | each worker | field ``<shard index>`` -> JSON ``ShardProgress`` (blocksDone, blocksTotal, pathsDone, heartbeat unix time, state) |
| ``mcop:stop:<job uid>`` | string | operator | ``<block limit>``: blocks at or above it are not needed (0: stop all) |
| ``mcop:result:<spec hash>`` | string | operator | the final result JSON, cached for the PerfTuning's ``ttlSeconds`` |

Every call tolerates Redis being away: it logs one warning when Redis goes (and one line when it
comes back), returns a neutral answer (nothing published, no progress, no stop, a cache miss),
and does not try again for ``retry_after_seconds`` so a dead server never slows the caller down.
`available` says whether the last attempt reached Redis.
"""  # noqa: E501

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from mcop_worker.settings import RedisPoolSettings, redact, scrub, secrets_of

log = logging.getLogger(__name__)
T = TypeVar("T")

PROGRESS_TTL_SECONDS = 3600  # refreshed by every publish; a finished job's key fades away
STOP_TTL_SECONDS = 7 * 24 * 3600
ShardState = Literal["running", "done", "stopped"]


def progress_key(uid: str) -> str:
    return f"mcop:progress:{uid}"


def stop_key(uid: str) -> str:
    return f"mcop:stop:{uid}"


def result_key(spec_hash: str) -> str:
    return f"mcop:result:{spec_hash}"


@dataclass(frozen=True)
class ShardProgress:
    """One shard's progress report; JSON uses the status' camelCase names."""

    blocks_done: int  # blocks of this shard stored in PostgreSQL (including earlier attempts')
    blocks_total: int  # blocks this shard owns
    paths_done: int
    heartbeat: float  # unix time of the report
    state: ShardState = "running"

    def to_json(self) -> str:
        return json.dumps(
            {
                "blocksDone": self.blocks_done,
                "blocksTotal": self.blocks_total,
                "pathsDone": self.paths_done,
                "heartbeat": self.heartbeat,
                "state": self.state,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str) -> ShardProgress:
        data = json.loads(raw)
        state = data.get("state", "running")
        return cls(
            blocks_done=int(data["blocksDone"]),
            blocks_total=int(data["blocksTotal"]),
            paths_done=int(data["pathsDone"]),
            heartbeat=float(data["heartbeat"]),
            state=state if state in ("running", "done", "stopped") else "running",
        )


@dataclass(frozen=True)
class RedisMetrics:
    """What the PerfTuning status shows about Redis."""

    connected: bool
    keys: int = 0
    used_memory_bytes: int = 0
    keyspace_hits: int = 0
    keyspace_misses: int = 0
    connected_clients: int = 0
    latency_ms: float = 0.0
    error: str = ""


@dataclass
class _LiveClient:
    client: aioredis.Redis
    pool: aioredis.BlockingConnectionPool
    settings: RedisPoolSettings
    in_flight: int = 0


class ProgressBus:
    """The Redis side of workers and operator; see the module docstring for keys and semantics."""

    def __init__(
        self,
        url: str,
        settings: RedisPoolSettings,
        *,
        client_name: str = "mcop",
        retry_after_seconds: float = 2.0,
    ) -> None:
        self._url = url
        self._client_name = client_name
        self._secrets = secrets_of(url)
        self._live = self._connect(settings)
        self._retiring: set[asyncio.Task[None]] = set()
        self.retry_after_seconds = retry_after_seconds
        self._retry_at = 0.0
        self.available = True  # optimistic until a call says otherwise
        self.last_error = ""
        self.cache_hits = 0
        self.cache_misses = 0

    @property
    def target(self) -> str:
        return redact(self._url)

    @property
    def settings(self) -> RedisPoolSettings:
        return self._live.settings

    def _connect(self, settings: RedisPoolSettings) -> _LiveClient:
        pool = aioredis.BlockingConnectionPool.from_url(
            self._url,
            max_connections=settings.max_connections,
            timeout=settings.socket_timeout_seconds,  # wait for a free connection at most this
            socket_keepalive=settings.socket_keepalive,
            socket_timeout=settings.socket_timeout_seconds,
            socket_connect_timeout=settings.socket_timeout_seconds,
            health_check_interval=settings.health_check_interval_seconds,
            client_name=self._client_name,
            decode_responses=True,
            # One quick retry replaces a connection that died while idle (a restarted server);
            # more would only delay the caller when the server is really gone.
            retry=Retry(NoBackoff(), 1),
        )
        return _LiveClient(aioredis.Redis(connection_pool=pool), pool, settings)

    async def reconfigure(self, settings: RedisPoolSettings) -> None:
        """Use a new pool from now on; the old one closes once its commands in flight are done."""
        if settings == self._live.settings:
            return
        old, self._live = self._live, self._connect(settings)
        task = asyncio.create_task(_retire(old))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        log.info(
            "Redis pool reconfigured: maxConnections=%d socketTimeout=%ss keepalive=%s",
            settings.max_connections,
            settings.socket_timeout_seconds,
            settings.socket_keepalive,
        )

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await self._live.client.aclose()
        with contextlib.suppress(RedisError, OSError):
            await self._live.pool.disconnect()

    async def _call(
        self, what: str, command: Callable[[aioredis.Redis], Awaitable[T]], default: T
    ) -> T:
        """Run one command, or answer `default` when Redis is away (see the module docstring)."""
        if not self.available and time.monotonic() < self._retry_at:
            return default
        live = self._live
        live.in_flight += 1
        try:
            result = await command(live.client)
        except (TimeoutError, RedisError, OSError) as error:
            self._went_away(what, error)
            return default
        finally:
            live.in_flight -= 1
        if not self.available:
            log.info("Redis at %s is reachable again", self.target)
        self.available, self.last_error = True, ""
        return result

    def _went_away(self, what: str, error: BaseException) -> None:
        message = scrub(f"{type(error).__name__}: {error}", self._secrets)
        if self.available:
            log.warning(
                "Redis at %s unavailable (%s during %s); carrying on without it",
                self.target,
                message,
                what,
            )
        self.available, self.last_error = False, message
        self._retry_at = time.monotonic() + self.retry_after_seconds

    # --- progress and heartbeats ---------------------------------------------------------------

    async def publish_progress(
        self, uid: str, shard: int, progress: ShardProgress, ttl_seconds: int = PROGRESS_TTL_SECONDS
    ) -> bool:
        """Record this shard's progress (and heartbeat); False when Redis is away."""

        async def command(r: aioredis.Redis) -> bool:
            async with r.pipeline(transaction=True) as pipe:
                pipe.hset(progress_key(uid), str(shard), progress.to_json())
                pipe.expire(progress_key(uid), ttl_seconds)
                await pipe.execute()
            return True

        return await self._call("publish_progress", command, False)

    async def read_progress(self, uid: str) -> dict[int, ShardProgress]:
        """Every shard's last report; empty when none (or Redis is away)."""

        async def command(r: aioredis.Redis) -> dict[int, ShardProgress]:
            raw = await r.hgetall(progress_key(uid))
            out: dict[int, ShardProgress] = {}
            for field, value in raw.items():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    out[int(field)] = ShardProgress.from_json(str(value))
            return out

        return await self._call("read_progress", command, {})

    async def clear_progress(self, uid: str) -> bool:
        return await self._call("clear_progress", lambda r: _deleted(r, progress_key(uid)), False)

    # --- stop requests -------------------------------------------------------------------------

    async def request_stop(
        self, uid: str, block_limit: int = 0, ttl_seconds: int = STOP_TTL_SECONDS
    ) -> bool:
        """Tell the job's workers that blocks >= `block_limit` are not needed (0: stop now).

        With a target precision the operator passes the length of the block prefix that reached
        it; a suspend passes 0. A lower limit never gets raised by a later request."""

        async def command(r: aioredis.Redis) -> bool:
            key = stop_key(uid)
            current = await r.get(key)
            if current is not None and int(current) <= block_limit:
                return True
            await r.set(key, str(block_limit), ex=ttl_seconds)
            return True

        return await self._call("request_stop", command, False)

    async def stop_requested(self, uid: str) -> int | None:
        """The block limit the operator asked for, None when it asked for nothing."""

        async def command(r: aioredis.Redis) -> int | None:
            raw = await r.get(stop_key(uid))
            return None if raw is None else int(raw)

        return await self._call("stop_requested", command, None)

    async def clear_stop(self, uid: str) -> bool:
        """Forget a stop request (a suspended job that resumes)."""
        return await self._call("clear_stop", lambda r: _deleted(r, stop_key(uid)), False)

    # --- result cache --------------------------------------------------------------------------

    async def cache_result(self, spec_hash: str, result_json: str, ttl_seconds: int) -> bool:
        """Cache a final result under its spec hash for `ttl_seconds`."""

        async def command(r: aioredis.Redis) -> bool:
            return bool(await r.set(result_key(spec_hash), result_json, ex=ttl_seconds))

        return await self._call("cache_result", command, False)

    async def cached_result(self, spec_hash: str) -> str | None:
        """The cached result JSON, or None; counts hits and misses (not lookups Redis missed)."""

        async def command(r: aioredis.Redis) -> str | None:
            value = await r.get(result_key(spec_hash))
            if value is None:
                self.cache_misses += 1
            else:
                self.cache_hits += 1
            return None if value is None else str(value)

        return await self._call("cached_result", command, None)

    def cache_rates(self) -> tuple[float, float]:
        """(hit rate, miss rate) of this process's lookups; (0, 0) before the first."""
        total = self.cache_hits + self.cache_misses
        if total == 0:
            return 0.0, 0.0
        return self.cache_hits / total, self.cache_misses / total

    # --- server metrics ------------------------------------------------------------------------

    async def server_metrics(self) -> RedisMetrics:
        """Keys, memory, keyspace hits/misses, clients and a PING round trip, from the server."""

        async def command(r: aioredis.Redis) -> RedisMetrics:
            started = time.perf_counter()
            await r.ping()
            latency_ms = (time.perf_counter() - started) * 1000.0
            info: dict[str, Any] = await r.info()
            return RedisMetrics(
                connected=True,
                keys=int(await r.dbsize()),
                used_memory_bytes=int(info.get("used_memory", 0)),
                keyspace_hits=int(info.get("keyspace_hits", 0)),
                keyspace_misses=int(info.get("keyspace_misses", 0)),
                connected_clients=int(info.get("connected_clients", 0)),
                latency_ms=latency_ms,
            )

        self._retry_at = 0.0  # metrics are the health probe: always try
        down = RedisMetrics(connected=False)
        metrics = await self._call("server_metrics", command, down)
        if not metrics.connected:
            return RedisMetrics(connected=False, error=self.last_error)
        return metrics


async def _deleted(r: aioredis.Redis, key: str) -> bool:
    return bool(await r.delete(key))


async def _retire(old: _LiveClient, drain_timeout: float = 30.0) -> None:
    """Close a replaced pool: idle connections now, the rest once their commands are done."""
    try:
        with contextlib.suppress(RedisError, OSError):
            await old.pool.disconnect(inuse_connections=False)
        deadline = time.monotonic() + drain_timeout
        while old.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        with contextlib.suppress(RedisError, OSError):
            await old.client.aclose()
        with contextlib.suppress(RedisError, OSError):
            await old.pool.disconnect()
