"""The settings a PerfTuning carries, typed; built-in defaults come from the CRD's own defaults."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mcop_worker.model import validation
from mcop_worker.storage.settings import PgPoolSettings, RedisPoolSettings, pool_env

from .naming import API_VERSION, TUNING_KIND


@dataclasses.dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str


@dataclasses.dataclass(frozen=True)
class RedisSettings:
    url_secret: SecretKeyRef
    pool: RedisPoolSettings
    ttl_seconds: int


@dataclasses.dataclass(frozen=True)
class PostgresSettings:
    dsn_secret: SecretKeyRef
    pool: PgPoolSettings
    ensure_indexes: bool
    # spec.postgres.readReplicaDsnSecretRef: where reads go while the replica keeps up
    replica_secret: SecretKeyRef | None = None
    max_replica_lag_seconds: float = 10.0


@dataclasses.dataclass(frozen=True)
class WorkerLimits:
    max_concurrent_jobs: int
    job_timeout_seconds: int
    heartbeat_interval_seconds: int
    # spec.workers.template: the namespace's default placement of worker pods (placement.py)
    template: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class MetricsSettings:
    interval_seconds: int
    slow_query_threshold_ms: int


@dataclasses.dataclass(frozen=True)
class Tuning:
    """One namespace's PerfTuning (or the built-in defaults when the job names none that exists)."""

    name: str
    found: bool
    redis: RedisSettings
    postgres: PostgresSettings
    workers: WorkerLimits
    metrics: MetricsSettings

    def worker_env(self) -> dict[str, str]:
        """The settings worker pods need, as the environment variables mcop worker reads."""
        return {
            "MCOP_HEARTBEAT_SECONDS": str(self.workers.heartbeat_interval_seconds),
            # How long a worker keeps trying an unreachable PostgreSQL before its pod fails
            # (and the Job controller retries it): a few command timeouts.
            "MCOP_DB_RETRY_SECONDS": str(max(5.0, 4 * self.postgres.pool.command_timeout_seconds)),
            **pool_env(self.postgres.pool, self.redis.pool),
        }


def tuning_from_spec(name: str, spec: Mapping[str, Any] | None) -> Tuning:
    """Type a PerfTuning spec; missing fields (or a missing PerfTuning) get the CRD's defaults."""
    doc = validation.validate_perftuning(
        {
            "apiVersion": API_VERSION,
            "kind": TUNING_KIND,
            "metadata": {"name": name},
            "spec": dict(spec or {}),
        }
    )
    s = doc["spec"]
    redis, pg, workers, metrics = s["redis"], s["postgres"], s["workers"], s["metrics"]
    return Tuning(
        name=name,
        found=spec is not None,
        redis=RedisSettings(
            url_secret=SecretKeyRef(**redis["urlSecretRef"]),
            pool=RedisPoolSettings(
                mode=redis["mode"],
                max_connections=redis["maxConnections"],
                socket_keepalive=redis["socketKeepalive"],
                socket_timeout_seconds=redis["socketTimeoutSeconds"],
                health_check_interval_seconds=redis["healthCheckIntervalSeconds"],
            ),
            ttl_seconds=redis["ttlSeconds"],
        ),
        postgres=PostgresSettings(
            dsn_secret=SecretKeyRef(**pg["dsnSecretRef"]),
            pool=PgPoolSettings(
                pool_size=pg["poolSize"],
                max_overflow=pg["maxOverflow"],
                pool_recycle_seconds=pg["poolRecycleSeconds"],
                pre_ping=pg["prePing"],
                command_timeout_seconds=pg["commandTimeoutSeconds"],
            ),
            ensure_indexes=pg["ensureIndexes"],
            replica_secret=(
                SecretKeyRef(**pg["readReplicaDsnSecretRef"])
                if pg.get("readReplicaDsnSecretRef")
                else None
            ),
            max_replica_lag_seconds=float(pg["maxReplicaLagSeconds"]),
        ),
        workers=WorkerLimits(
            max_concurrent_jobs=workers["maxConcurrentJobs"],
            job_timeout_seconds=workers["jobTimeoutSeconds"],
            heartbeat_interval_seconds=workers["heartbeatIntervalSeconds"],
            template=workers.get("template") or {},
        ),
        metrics=MetricsSettings(
            interval_seconds=metrics["intervalSeconds"],
            slow_query_threshold_ms=metrics["slowQueryThresholdMs"],
        ),
    )
