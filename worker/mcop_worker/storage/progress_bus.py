"""Redis as the fast, disposable side channel between workers and the operator: the keys, and the
workers' half (the operator's reading half and the result cache: `mcop_operator.storage.redis_bus`).

Keys (all expire; PostgreSQL remains the source of truth, so losing any of them loses nothing):

| key | type | written by | content |
| --- | --- | --- | --- |
| ``mcop:{<job uid>}:progress`` | hash | each worker | field ``<shard index>`` -> JSON ``ShardProgress`` (blocksDone, blocksTotal, pathsDone, heartbeat unix time, state) |
| ``mcop:{<job uid>}:stop`` | string | operator | ``<block limit>``: blocks at or above it are not needed (0: stop all) |
| ``mcop:result:{<spec hash>}`` | string | operator | the final result JSON, cached for the PerfTuning's ``ttlSeconds`` |

The ``{...}`` parts are Redis Cluster hash tags: only they decide a key's slot, so a job's keys live
on one primary (one node to ask, one failover that concerns them) and result keys spread over the
cluster by spec hash. The same names serve a standalone server, where braces mean nothing.
``RedisPoolSettings.mode`` (PerfTuning ``spec.redis.mode``) picks the client: one connection pool
(``standalone``) or redis-py's cluster client (``cluster``), which learns the slot map from any node
of the URL, follows MOVED redirections and re-reads the map when a primary fails over.

Every call tolerates Redis being away: it logs one warning when Redis goes (and one line when it
comes back), returns a neutral answer (nothing published, no progress, no stop, a cache miss),
and does not try again for ``retry_after_seconds`` so a dead server never slows the caller down
(a shard's final progress report is the exception: it is always tried once).
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
from typing import Literal, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from mcop_worker.storage.settings import RedisPoolSettings, redact, scrub, secrets_of

log = logging.getLogger(__name__)
T = TypeVar("T")
Client = aioredis.Redis | RedisCluster  # what the commands below are written against

PROGRESS_TTL_SECONDS = 3600  # refreshed by every publish; a finished job's key fades away
STOP_TTL_SECONDS = 7 * 24 * 3600
ShardState = Literal["running", "done", "stopped"]


def progress_key(uid: str) -> str:
    return f"mcop:{{{uid}}}:progress"


def stop_key(uid: str) -> str:
    return f"mcop:{{{uid}}}:stop"


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


@dataclass
class _LiveClient:
    client: Client
    pool: aioredis.BlockingConnectionPool | None  # None for a cluster: a pool per node inside
    settings: RedisPoolSettings
    in_flight: int = 0


class ProgressBus:
    """The Redis side of a worker (progress, heartbeats, stop requests read) and the pooled,
    live-reconfigurable connection the operator's `OperatorBus` builds on. See the module
    docstring for keys and semantics."""

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

    @property
    def target(self) -> str:
        return redact(self._url)

    @property
    def settings(self) -> RedisPoolSettings:
        return self._live.settings

    def _connect(self, settings: RedisPoolSettings) -> _LiveClient:
        if settings.mode == "cluster":
            return self._connect_cluster(settings)
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

    def _connect_cluster(self, settings: RedisPoolSettings) -> _LiveClient:
        cluster = RedisCluster.from_url(
            self._url,
            max_connections=settings.max_connections,  # per node
            socket_keepalive=settings.socket_keepalive,
            socket_timeout=settings.socket_timeout_seconds,
            socket_connect_timeout=settings.socket_timeout_seconds,
            health_check_interval=settings.health_check_interval_seconds,
            client_name=self._client_name,
            decode_responses=True,
            # A command that meets a primary going away re-reads the slot map and tries again,
            # briefly: enough to ride a failover, short enough not to stall the caller for long.
            retry=Retry(ExponentialWithJitterBackoff(base=0.2, cap=1.0), 4),
        )
        return _LiveClient(cluster, None, settings)

    async def reconfigure(self, settings: RedisPoolSettings) -> None:
        """Use a new pool from now on; the old one closes once its commands in flight are done."""
        if settings == self._live.settings:
            return
        old, self._live = self._live, self._connect(settings)
        task = asyncio.create_task(_retire(old))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        log.info(
            "Redis pool reconfigured: mode=%s maxConnections=%d socketTimeout=%ss keepalive=%s",
            settings.mode,
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
        if self._live.pool is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._live.pool.disconnect()

    async def _call(
        self,
        what: str,
        command: Callable[[Client], Awaitable[T]],
        default: T,
        *,
        even_while_backing_off: bool = False,
    ) -> T:
        """Run one command, or answer `default` when Redis is away (see the module docstring)."""
        backing_off = not self.available and time.monotonic() < self._retry_at
        if backing_off and not even_while_backing_off:
            return default
        live = self._live
        live.in_flight += 1
        try:
            result = await command(live.client)
        except (TimeoutError, RedisError, RedisClusterException, OSError) as error:
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
        self,
        uid: str,
        shard: int,
        progress: ShardProgress,
        ttl_seconds: int = PROGRESS_TTL_SECONDS,
        *,
        final: bool = False,
    ) -> bool:
        """Record this shard's progress (and heartbeat); False when Redis is away.

        A `final` report (a shard's last word: done or stopped) is tried even during the back-off
        after a failure: one slow call (say, while a kernel compiled and held the GIL) must not
        leave the shard shown as running until its key expires."""

        async def command(r: Client) -> bool:
            # One key, so one slot: a MULTI/EXEC works in cluster mode too.
            async with r.pipeline(transaction=True) as pipe:
                pipe.hset(progress_key(uid), str(shard), progress.to_json())
                pipe.expire(progress_key(uid), ttl_seconds)
                await pipe.execute()
            return True

        return await self._call("publish_progress", command, False, even_while_backing_off=final)

    # --- stop requests -------------------------------------------------------------------------

    async def stop_requested(self, uid: str) -> int | None:
        """The block limit the operator asked for, None when it asked for nothing."""

        async def command(r: Client) -> int | None:
            raw = await r.get(stop_key(uid))
            return None if raw is None else int(raw)

        return await self._call("stop_requested", command, None)


async def _retire(old: _LiveClient, drain_timeout: float = 30.0) -> None:
    """Close a replaced pool: idle connections now, the rest once their commands are done."""
    try:
        if old.pool is not None:
            with contextlib.suppress(RedisError, OSError):
                await old.pool.disconnect(inuse_connections=False)
        deadline = time.monotonic() + drain_timeout
        while old.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        with contextlib.suppress(RedisError, OSError):
            await old.client.aclose()
        if old.pool is not None:
            with contextlib.suppress(RedisError, OSError):
                await old.pool.disconnect()
