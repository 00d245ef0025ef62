"""A PerfTuning's loop: apply its settings to the live pools (no restart), then measure Redis,
PostgreSQL, the system and the job queue, and write the dashboard into its status."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from mcop_operator.storage import db_metrics
from mcop_worker.model.errors import ManifestError
from mcop_worker.storage.pool import PgPool

from . import metrics
from .admission import QueueEntry, job_counts
from .conditions import now_rfc3339, set_condition
from .connections import ConnectionRegistry, Services
from .kube import KubeApi, SecretProblem
from .system_metrics import system_snapshot

log = logging.getLogger(__name__)


async def redis_status(services: Services) -> tuple[dict[str, Any], str]:
    """(status.redis, problem or "")."""
    bus = services.redis()
    m = await bus.server_metrics()
    hit, miss = bus.cache_rates()
    if not m.connected:
        return {"connected": False, "hitRate": hit, "missRate": miss}, m.error or "no answer"
    return {
        "connected": True,
        "hitRate": round(hit, 4),
        "missRate": round(miss, 4),
        "keys": m.keys,
        "usedMemoryBytes": m.used_memory_bytes,
        "latencyMs": round(m.latency_ms, 3),
    }, ""


async def postgres_status(services: Services) -> tuple[dict[str, Any], str]:
    """(status.postgres, problem or ""). The measurements are reads: on the read replica when
    there is one that keeps up (they then describe the replica), else on the primary."""
    pool = await services.database()
    if pool is None:
        return {"connected": False}, "PostgreSQL does not answer"
    stats = pool.stats()
    reader = await services.reader() or pool
    try:
        measured = await _measurements(services, reader)
    except Exception as exc:
        if reader is pool or services.read_replica is None:
            return {"connected": False}, f"{type(exc).__name__}: {exc}"
        services.read_replica.failed(exc)
        try:
            measured = await _measurements(services, pool)
        except Exception as again:
            return {"connected": False}, f"{type(again).__name__}: {again}"
    return {"connected": True, "poolSize": stats.size, "poolInUse": stats.in_use, **measured}, ""


async def _measurements(services: Services, pool: PgPool) -> dict[str, Any]:
    usage = await db_metrics.index_usage(pool)
    slow = await db_metrics.slow_queries(pool, services.tuning.metrics.slow_query_threshold_ms)
    return {
        "activeConnections": await db_metrics.active_connections(pool),
        "slowQueriesAvailable": slow.available,
        "slowQueries": [q.to_status() for q in slow.queries],
        "tableSizesBytes": await db_metrics.table_sizes(pool),
        "indexes": [
            {"name": i.name, "table": i.table, "scans": i.scans, "sizeBytes": i.size_bytes}
            for i in usage.indexes
        ],
        "unusedIndexes": usage.unused,
    }


class _Conditions:
    """A PerfTuning's conditions as this pass leaves them."""

    def __init__(self, items: list[dict[str, Any]], generation: int) -> None:
        self.items = items
        self.generation = generation

    def set(self, type_: str, ok: bool, reason: str, message: str) -> None:
        self.items = set_condition(self.items, type_, ok, reason, message, self.generation)


class TuningReconciler:
    def __init__(self, namespace: str, name: str, kube: KubeApi, connections: ConnectionRegistry):
        self.namespace = namespace
        self.name = name
        self.kube = kube
        self.connections = connections
        self.applied_generation: int | None = None
        self.applied_at: str | None = None

    async def step(self, body: Mapping[str, Any], queue: Iterable[QueueEntry]) -> float:
        """One pass; returns the seconds until the next (spec.metrics.intervalSeconds)."""
        spec = dict(body.get("spec") or {})
        generation = int((body.get("metadata") or {}).get("generation") or 1)
        old_status: Mapping[str, Any] = body.get("status") or {}
        conds = _Conditions(list(old_status.get("conditions") or []), generation)
        status: dict[str, Any] = {"observedGeneration": generation}
        applied = await self._apply(spec, generation, conds)
        if isinstance(applied, float):
            return await self._write(status | {"phase": "Error"}, conds.items, applied)
        status["appliedAt"] = self.applied_at
        status.update(await self._measure(applied, conds), jobs=job_counts(queue))
        metrics.export_tuning(self.namespace, self.name, status)
        return await self._write(
            status, conds.items, float(applied.tuning.metrics.interval_seconds)
        )

    async def _apply(
        self, spec: Mapping[str, Any], generation: int, conds: _Conditions
    ) -> Services | float:
        """Hand the spec to the live pools; a bad spec or a missing Secret gives the seconds to
        wait before the next try instead."""
        try:
            services = await self.connections.for_tuning(self.namespace, self.name, spec)
        except ManifestError as exc:
            conds.set("SettingsApplied", False, "InvalidSpec", f"{exc.field}: {exc.message}")
            return 30.0
        except SecretProblem as exc:
            conds.set("SettingsApplied", False, "SecretNotFound", str(exc))
            conds.set("Ready", False, "SecretNotFound", str(exc))
            return 10.0
        if self.applied_generation != generation:
            self.applied_generation, self.applied_at = generation, now_rfc3339()
            log.info(
                "PerfTuning %s/%s generation %d applied", self.namespace, self.name, generation
            )
        conds.set("SettingsApplied", True, "Applied", "pools follow this spec; new worker Jobs too")
        return services

    async def _measure(self, services: Services, conds: _Conditions) -> dict[str, Any]:
        """Redis, PostgreSQL and the system, with the conditions and phase they imply."""
        redis, redis_problem = await redis_status(services)
        postgres, pg_problem = await postgres_status(services)
        conds.set(
            "RedisReady",
            not redis_problem,
            "Connected" if not redis_problem else "RedisUnavailable",
            redis_problem or "Redis answers",
        )
        conds.set(
            "PostgresReady",
            not pg_problem,
            "Connected" if not pg_problem else "PostgresUnavailable",
            pg_problem or "PostgreSQL answers",
        )
        # Not a problem for Ready: the primary serves the reads meanwhile, losing nothing.
        replica = services.replica_state()
        conds.set("ReadReplica", replica.usable, replica.reason, replica.message)
        problems = [p for p in (redis_problem and "Redis", pg_problem and "PostgreSQL") if p]
        conds.set(
            "Ready",
            not problems,
            "Degraded" if problems else "AllHealthy",
            f"unavailable: {', '.join(problems)}" if problems else "Redis and PostgreSQL answer",
        )
        return {
            "phase": "Degraded" if problems else "Ready",
            "redis": redis,
            "postgres": postgres,
            "system": system_snapshot(),
        }

    async def _write(
        self, status: dict[str, Any], conditions: list[dict[str, Any]], delay: float
    ) -> float:
        status["conditions"] = conditions
        await self.kube.patch_tuning_status(self.namespace, self.name, status)
        return delay
