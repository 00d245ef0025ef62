"""The operator's connections to PostgreSQL and Redis, one set per PerfTuning, opened lazily from
the Secrets the PerfTuning names and re-tuned in place when its spec changes.

Every method here turns "the server does not answer" into a plain False/None so the reconciling
loops can say so in a condition and carry on: PostgreSQL is the source of truth, Redis a
best-effort accelerator."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from mcop_worker.storage import results_db
from mcop_worker.storage.pool import PgPool
from mcop_worker.storage.settings import redact

from . import numbers
from .builders import JobRef
from .config import DefaultConnection
from .kube import KubeApi, SecretProblem
from .leader import Fence
from .read_replica import NOT_CONFIGURED, ReadReplica, ReplicaState
from .storage import jobs_db
from .storage.redis_bus import OperatorBus
from .tuning import Tuning, tuning_from_spec

log = logging.getLogger(__name__)

# A server that failed is not asked again for this long, so a dead dependency costs one
# timeout per interval instead of one per job and step.
RETRY_SECONDS = 5.0
SECRET_CACHE_SECONDS = 60.0
# How the operator's sessions are named in pg_stat_activity and Redis' CLIENT LIST.
APP_NAME = "mcop-operator"
DB_ERRORS = (OSError, asyncio.TimeoutError, ConnectionError)


def _db_errors() -> tuple[type[BaseException], ...]:
    import asyncpg

    return (*DB_ERRORS, asyncpg.PostgresError, asyncpg.InterfaceError)


class Services:
    """PostgreSQL and Redis as one PerfTuning configures them."""

    def __init__(
        self,
        namespace: str,
        tuning: Tuning,
        kube: KubeApi,
        shared: bool = False,
        fence: Fence | None = None,
    ) -> None:
        self.namespace = namespace  # where the Secrets are read
        self.tuning = tuning
        # The operator's default connection, serving namespaces without Secrets of their own.
        self.shared = shared
        self._kube = kube
        self._fence = fence or Fence()
        self.pg: PgPool | None = None
        self.bus: OperatorBus | None = None
        self._dsn: str | None = None
        self._redis_url: str | None = None
        self._secrets_read_at = 0.0
        self._pg_failed_at = 0.0
        self._lock = asyncio.Lock()
        self._recorded: dict[str, str] = {}
        self.read_replica: ReadReplica | None = None
        self._replica_problem: ReplicaState | None = None  # a missing Secret, say

    # -- set-up --------------------------------------------------------------------------------
    async def read_secrets(self) -> None:
        """Raises kube.SecretProblem with what to create when a Secret or key is missing."""
        if self._dsn and time.monotonic() - self._secrets_read_at < SECRET_CACHE_SECONDS:
            return
        pg, rd = self.tuning.postgres.dsn_secret, self.tuning.redis.url_secret
        dsn = await self._kube.read_secret_value(self.namespace, pg.name, pg.key)
        url = await self._kube.read_secret_value(self.namespace, rd.name, rd.key)
        await self._read_replica_secret()
        self._secrets_read_at = time.monotonic()
        if dsn != self._dsn and self.pg is not None:
            await self.pg.reconfigure(self.tuning.postgres.pool, dsn=dsn)
        if url != self._redis_url and self.bus is not None:
            await self.bus.close()
            self.bus = None
        self._dsn, self._redis_url = dsn, url

    async def _read_replica_secret(self) -> None:
        """The replica's DSN; a missing Secret leaves reads on the primary and says so."""
        ref = self.tuning.postgres.replica_secret
        dsn: str | None = None
        self._replica_problem = None
        if ref is not None:
            try:
                dsn = await self._kube.read_secret_value(self.namespace, ref.name, ref.key)
            except SecretProblem as exc:
                self._replica_problem = ReplicaState(
                    False,
                    "SecretNotFound",
                    f"spec.postgres.readReplicaDsnSecretRef: {exc}; reads go to the primary",
                )
        lag = self.tuning.postgres.max_replica_lag_seconds
        current = self.read_replica
        if current is not None and (current.dsn != dsn or current.max_lag_seconds != lag):
            self.read_replica = None
            await current.close()
        if dsn is not None and self.read_replica is None:
            self.read_replica = ReadReplica(dsn, lag)

    def replica_state(self) -> ReplicaState:
        """What the PerfTuning's ReadReplica condition says."""
        if self._replica_problem is not None:
            return self._replica_problem
        return NOT_CONFIGURED if self.read_replica is None else self.read_replica.state

    async def reader(self) -> PgPool | None:
        """Where reads go: the replica while it answers and keeps up, else the primary."""
        primary = await self.database()
        if self.read_replica is not None:
            replica = await self.read_replica.usable(primary)
            if replica is not None:
                return replica
        return primary

    async def retune(self, tuning: Tuning) -> None:
        """Apply a changed PerfTuning without a restart: pools are swapped, work in flight kept."""
        old, self.tuning = self.tuning, tuning
        if (
            old.postgres.dsn_secret != tuning.postgres.dsn_secret
            or old.postgres.replica_secret != tuning.postgres.replica_secret
            or old.postgres.max_replica_lag_seconds != tuning.postgres.max_replica_lag_seconds
            or old.redis.url_secret != tuning.redis.url_secret
        ):
            self._secrets_read_at = 0.0
        if self.pg is not None and old.postgres.pool != tuning.postgres.pool:
            await self.pg.reconfigure(tuning.postgres.pool)
        if self.bus is not None and old.redis.pool != tuning.redis.pool:
            await self.bus.reconfigure(tuning.redis.pool)
        if old.postgres.replica_secret is not None and tuning.postgres.replica_secret is None:
            await self._read_replica_secret()  # no replica any more: close its pool now

    async def database(self) -> PgPool | None:
        """The pool, opened (and migrated) on first use; None while PostgreSQL does not answer."""
        if self.pg is not None:
            return self.pg
        if time.monotonic() - self._pg_failed_at < RETRY_SECONDS:
            return None
        async with self._lock:
            if self.pg is None:
                assert self._dsn is not None
                try:
                    # Connections open on demand, as SQLAlchemy's QueuePool opens them: poolSize
                    # is how many are kept once opened, not a floor (docs/perftuning.md).
                    pool = await PgPool.open(
                        self._dsn, self.tuning.postgres.pool, application_name=APP_NAME, eager=False
                    )
                    await results_db.migrate(pool)
                    if self.tuning.postgres.ensure_indexes:
                        await jobs_db.ensure_indexes(pool)
                    self.pg = pool
                except _db_errors() as exc:
                    self._pg_failed_at = time.monotonic()
                    log.warning("PostgreSQL %s unavailable: %s", redact(self._dsn), exc)
                    return None
        return self.pg

    def connection(self) -> dict[str, str]:
        """The Redis URL and PostgreSQL DSN, for the copy a shared connection's workers read."""
        assert self._redis_url is not None and self._dsn is not None
        return {"redis-url": self._redis_url, "postgres-dsn": self._dsn}

    def redis(self) -> OperatorBus:
        if self.bus is None:
            assert self._redis_url is not None
            self.bus = OperatorBus(self._redis_url, self.tuning.redis.pool, client_name=APP_NAME)
        return self.bus

    async def close(self) -> None:
        if self.read_replica is not None:
            await self.read_replica.close()
        if self.pg is not None:
            await self.pg.close()
        if self.bus is not None:
            await self.bus.close()

    # -- what the job loops use ----------------------------------------------------------------
    async def _db_call(self, fn: Any, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        pool = await self.database()
        if pool is None:
            return False, None
        try:
            return True, await fn(pool, *args, **kwargs)
        except _db_errors() as exc:
            log.warning("PostgreSQL call %s failed: %s", getattr(fn, "__name__", fn), exc)
            self._pg_failed_at = time.monotonic()
            return False, None

    async def _read_call(self, fn: Any, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        """A read: on the replica when it may serve, on the primary otherwise, and on the primary
        at once when the replica fails mid-call (nothing waits for the replica to come back)."""
        pool = await self.reader()
        if pool is None or pool is self.pg:
            return await self._db_call(fn, *args, **kwargs)
        try:
            return True, await fn(pool, *args, **kwargs)
        except _db_errors() as exc:
            assert self.read_replica is not None
            self.read_replica.failed(exc)
            return await self._db_call(fn, *args, **kwargs)

    async def record_job(
        self,
        ref: JobRef,
        spec: Mapping[str, Any],
        spec_hash: str,
        status: str,
        result: Mapping[str, Any] | None,
    ) -> bool:
        """Keep the jobs table in step; written only when the status changes."""
        if self._recorded.get(ref.uid) == status and result is None:
            return True
        # The leader's epoch goes with every write: a replica that lost its Lease and writes
        # late is refused by PostgreSQL (jobs_db.Fenced), whatever its clock says.
        epoch = self._fence.epoch
        self._fence.check()
        ok, _ = await self._db_call(
            jobs_db.upsert_job,
            uid=ref.uid,
            namespace=ref.namespace,
            name=ref.name,
            status=status,
            spec_hash=spec_hash,
            spec=dict(spec),
            epoch=epoch,
        )
        if ok and result is not None:
            try:
                ok, _ = await self._db_call(
                    jobs_db.store_result, ref.uid, result, status=status, epoch=epoch
                )
            except jobs_db.Fenced as exc:
                self._fence.lost(str(exc))
                raise
        if ok:
            self._recorded[ref.uid] = status
        return ok

    async def store_result(
        self, ref: JobRef, spec: Mapping[str, Any], spec_hash: str, result: Mapping[str, Any]
    ) -> bool:
        return await self.record_job(ref, spec, spec_hash, "Succeeded", result)

    async def pull_blocks(self, uid: str, aggregator: numbers.Aggregator) -> bool:
        """Feed the blocks stored since the last call into the aggregator."""
        ok, rows = await self._read_call(
            jobs_db.blocks_since, uid, aggregator.spec_hash, aggregator.last_seq
        )
        if ok:
            for seq, index, stats_json in rows:
                aggregator.add(seq, index, stats_json)
        return ok

    async def cached_result(self, spec_hash: str) -> dict[str, Any] | None:
        """Redis first; on a miss, the jobs table (on the read replica when there is one): a result
        stored within the PerfTuning's ttlSeconds serves as a cache hit, so an evicted key or a
        restarted Redis does not cost a recomputation."""
        raw = await self.redis().cached_result(spec_hash)
        if raw is not None:
            return dict(json.loads(raw))
        ok, stored = await self._read_call(
            jobs_db.result_for_spec_hash, spec_hash, self.tuning.redis.ttl_seconds
        )
        return dict(stored) if ok and stored is not None else None

    async def cache_result(self, spec_hash: str, result: Mapping[str, Any]) -> None:
        await self.redis().cache_result(
            spec_hash, json.dumps(dict(result), sort_keys=True), self.tuning.redis.ttl_seconds
        )

    async def request_stop(self, uid: str, block_limit: int = 0) -> bool:
        """False when Redis did not take the request."""
        return await self.redis().request_stop(uid, block_limit)

    async def shard_progress(self, uid: str) -> tuple[bool, dict[int, Any]]:
        """(Redis answers?, each shard's last report with its heartbeat)."""
        bus = self.redis()
        reports = await bus.read_progress(uid)
        return bus.available, reports

    async def forget_job(self, uid: str) -> None:
        ok, _ = await self._db_call(jobs_db.delete_job_blocks, uid)
        if not ok:
            raise RuntimeError("PostgreSQL unavailable: the job's blocks are deleted on retry")
        await self.redis().clear_progress(uid)
        await self.redis().clear_stop(uid)
        self._recorded.pop(uid, None)


class ConnectionRegistry:
    """One Services per (namespace, PerfTuning name), shared by every job that names it."""

    def __init__(
        self, kube: KubeApi, default: DefaultConnection | None = None, fence: Fence | None = None
    ) -> None:
        self._kube = kube
        self.default = default
        self._fence = fence or Fence()
        self._services: dict[tuple[str, str], Services] = {}
        self._used: dict[tuple[str, str], float] = {}  # key -> monotonic time of the last use
        # Namespaces seen without their Secrets a moment ago: not asked again on every pass.
        self._no_secrets: dict[tuple[str, str], float] = {}
        self._lock = asyncio.Lock()
        self._typed: dict[tuple[str, str], tuple[str, Tuning]] = {}

    def _tuning(self, key: tuple[str, str], spec: Mapping[str, Any] | None) -> Tuning:
        """tuning_from_spec, redone only when the spec changes: it validates the spec against the
        CRD (~1.5 ms of CPU), and every job's loop asks on every pass."""
        text = json.dumps(spec, sort_keys=True)
        typed = self._typed.get(key)
        if typed is None or typed[0] != text:
            typed = self._typed[key] = (text, tuning_from_spec(key[1] or "default", spec))
        return typed[1]

    async def for_tuning(
        self,
        namespace: str,
        name: str,
        spec: Mapping[str, Any] | None,
        shared: bool | None = None,
    ) -> Services:
        """The Services of PerfTuning ``name`` (``spec`` None: it does not exist). ``shared``:
        True for a job that started on the operator's default connection, False for one that
        started on its namespace's own; None decides: the default connection serves where the
        namespace has neither that PerfTuning nor the Secrets the built-in defaults name."""
        if shared and self.default is not None:
            return await self._shared()
        auto = shared is None and spec is None and self.default is not None
        key = (namespace, name)
        if auto and time.monotonic() - self._no_secrets.get(key, -RETRY_SECONDS) < RETRY_SECONDS:
            return await self._shared()
        services = await self._services_for(key, spec)
        try:
            await services.read_secrets()
        except SecretProblem:
            if not auto:
                raise
            self._no_secrets[key] = time.monotonic()
            return await self._shared()
        self._no_secrets.pop(key, None)
        return services

    async def _services_for(
        self, key: tuple[str, str], spec: Mapping[str, Any] | None, shared: bool = False
    ) -> Services:
        self._used[key] = time.monotonic()
        tuning = self._tuning(key, spec)
        async with self._lock:
            services = self._services.get(key)
            if services is None:
                services = Services(key[0], tuning, self._kube, shared=shared, fence=self._fence)
                self._services[key] = services
        if services.tuning != tuning:
            await services.retune(tuning)
        return services

    async def _shared(self) -> Services:
        """One set of pools for every namespace on the default connection."""
        d = self.default
        assert d is not None
        spec = {
            "redis": {"urlSecretRef": {"name": d.redis_secret[0], "key": d.redis_secret[1]}},
            "postgres": {
                "dsnSecretRef": {"name": d.postgres_secret[0], "key": d.postgres_secret[1]}
            },
        }
        # "" is no PerfTuning's name: the key cannot clash with the namespace's own.
        services = await self._services_for((d.namespace, ""), spec, shared=True)
        await services.read_secrets()
        return services

    async def forget(self, namespace: str, name: str) -> None:
        """A PerfTuning went: close its pools (jobs still naming it open new ones, lazily)."""
        key = (namespace, name)
        self._typed.pop(key, None)
        self._used.pop(key, None)
        services = self._services.pop(key, None)
        if services is not None:
            await services.close()

    async def close_idle(self, idle_seconds: float) -> list[tuple[str, str]]:
        """Close the pools nobody asked for in `idle_seconds` (jobs finished, namespace idle)."""
        now = time.monotonic()
        idle = [k for k in self._services if now - self._used.get(k, now) > idle_seconds]
        for key in idle:
            await self.forget(*key)
        return idle

    async def close_idle_forever(self, idle_seconds: float) -> None:
        while True:
            await asyncio.sleep(idle_seconds / 4)
            for namespace, name in await self.close_idle(idle_seconds):
                log.info("closed the idle connections of PerfTuning %s/%s", namespace, name)

    async def close(self) -> None:
        for services in self._services.values():
            await services.close()
        self._services.clear()
