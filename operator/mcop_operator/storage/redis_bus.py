"""The operator's half of the Redis side channel: reading the shards' progress, stop requests, the
result cache under the spec hash, and the server metrics of the PerfTuning status. Keys and the
away-tolerant calls are `mcop_worker.storage.progress_bus`."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster

from mcop_worker.storage.progress_bus import (
    STOP_TTL_SECONDS,
    Client,
    ProgressBus,
    ShardProgress,
    progress_key,
    stop_key,
)
from mcop_worker.storage.settings import RedisPoolSettings


def result_key(spec_hash: str) -> str:
    return f"mcop:result:{{{spec_hash}}}"


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


class OperatorBus(ProgressBus):
    """ProgressBus plus what only the operator does: read progress, ask workers to stop, cache."""

    def __init__(self, url: str, settings: RedisPoolSettings, **kwargs: Any) -> None:
        super().__init__(url, settings, **kwargs)
        self.cache_hits = 0
        self.cache_misses = 0

    # --- progress ------------------------------------------------------------------------------

    async def read_progress(self, uid: str) -> dict[int, ShardProgress]:
        """Every shard's last report; empty when none (or Redis is away)."""

        async def command(r: Client) -> dict[int, ShardProgress]:
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

        async def command(r: Client) -> bool:
            key = stop_key(uid)
            current = await r.get(key)
            if current is not None and int(current) <= block_limit:
                return True
            await r.set(key, str(block_limit), ex=ttl_seconds)
            return True

        return await self._call("request_stop", command, False)

    async def clear_stop(self, uid: str) -> bool:
        """Forget a stop request (a suspended job that resumes)."""
        return await self._call("clear_stop", lambda r: _deleted(r, stop_key(uid)), False)

    # --- result cache --------------------------------------------------------------------------

    async def cache_result(self, spec_hash: str, result_json: str, ttl_seconds: int) -> bool:
        """Cache a final result under its spec hash for `ttl_seconds`."""

        async def command(r: Client) -> bool:
            return bool(await r.set(result_key(spec_hash), result_json, ex=ttl_seconds))

        return await self._call("cache_result", command, False)

    async def cached_result(self, spec_hash: str) -> str | None:
        """The cached result JSON, or None; counts hits and misses (not lookups Redis missed)."""

        async def command(r: Client) -> str | None:
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

        async def command(r: Client) -> RedisMetrics:
            started = time.perf_counter()
            await r.ping()
            latency_ms = (time.perf_counter() - started) * 1000.0
            infos, keys = await _per_primary(r)
            return RedisMetrics(
                connected=True,
                keys=keys,
                used_memory_bytes=_total(infos, "used_memory"),
                keyspace_hits=_total(infos, "keyspace_hits"),
                keyspace_misses=_total(infos, "keyspace_misses"),
                connected_clients=_total(infos, "connected_clients"),
                latency_ms=latency_ms,
            )

        self._retry_at = 0.0  # metrics are the health probe: always try
        down = RedisMetrics(connected=False)
        metrics = await self._call("server_metrics", command, down)
        if not metrics.connected:
            return RedisMetrics(connected=False, error=self.last_error)
        return metrics


async def _deleted(r: Client, key: str) -> bool:
    return bool(await r.delete(key))


async def _per_primary(r: Client) -> tuple[list[dict[str, Any]], int]:
    """INFO of each primary and the keys they hold together (a cluster: summed over primaries,
    which is what "the server" means to the PerfTuning status)."""
    if not isinstance(r, RedisCluster):
        return [dict(await r.info())], int(await r.dbsize())
    infos: list[dict[str, Any]] = []
    keys = 0
    for node in r.get_primaries():
        infos.append(_one_node(await r.info(target_nodes=node)))
        keys += int(_one_value(await r.dbsize(target_nodes=node)))
    return infos, keys


def _one_node(answer: Any) -> dict[str, Any]:
    """redis-py answers a command sent to one cluster node either plainly or as {node: answer}."""
    if isinstance(answer, dict) and "redis_version" not in answer and len(answer) == 1:
        return dict(next(iter(answer.values())))
    return dict(answer)


def _one_value(answer: Any) -> Any:
    return next(iter(answer.values())) if isinstance(answer, dict) else answer


def _total(infos: list[dict[str, Any]], field: str) -> int:
    return sum(int(info.get(field, 0)) for info in infos)
