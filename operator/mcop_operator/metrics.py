"""The operator's Prometheus metrics (/metrics on MCOP_METRICS_ADDRESS:MCOP_METRICS_PORT).

Label values come from bounded sets only (namespaces, PerfTuning names, priorities, phases,
condition reasons, error kinds): never a job's name, so the series count does not grow with jobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from .errors import Conflict, TryAgain

_T = ("namespace", "perftuning")

REDIS_UP = Gauge("mcop_redis_up", "1 when Redis answers the operator", _T)
CACHE_HIT_RATE = Gauge("mcop_cache_hit_rate", "Share of result-cache lookups that hit", _T)
CACHE_MISS_RATE = Gauge("mcop_cache_miss_rate", "Share of result-cache lookups that missed", _T)
REDIS_KEYS = Gauge("mcop_redis_keys", "Keys in the Redis database", _T)
REDIS_MEMORY = Gauge("mcop_redis_used_memory_bytes", "Memory Redis uses", _T)
REDIS_LATENCY = Gauge("mcop_redis_latency_ms", "Round trip of a Redis PING", _T)
PG_UP = Gauge("mcop_postgres_up", "1 when PostgreSQL answers the operator", _T)
PG_POOL_SIZE = Gauge("mcop_postgres_pool_size", "Connections open in the operator's pool", _T)
PG_POOL_IN_USE = Gauge("mcop_postgres_pool_in_use", "Pool connections handed out", _T)
PG_ACTIVE = Gauge("mcop_postgres_active_connections", "Sessions on the results database", _T)
PG_SLOW = Gauge("mcop_postgres_slow_queries", "Statements slower than the threshold", _T)
PG_UNUSED_INDEXES = Gauge("mcop_postgres_unused_indexes", "Indexes never scanned", _T)
SYSTEM_CPU = Gauge("mcop_system_cpu_percent", "CPU use of the operator's container")
SYSTEM_MEMORY = Gauge("mcop_system_memory_percent", "Memory use of the operator's container")
SYSTEM_DISK = Gauge("mcop_system_disk_percent", "Disk use of the root filesystem")
JOBS_RUNNING = Gauge("mcop_jobs_running", "MonteCarloJobs holding a slot", _T)
JOBS_QUEUED = Gauge("mcop_jobs_queued", "MonteCarloJobs waiting for a slot", _T)
JOBS_FINISHED = Counter(
    "mcop_jobs_finished", "MonteCarloJobs that reached a final phase", ("phase", "reason")
)
ADMISSION_WAIT = Histogram(
    "mcop_admission_wait_seconds",
    "Seconds from a MonteCarloJob's creation to its admission (workers created, or a cache hit)",
    ("namespace", "priority"),
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
)
JOB_DURATION = Histogram(
    "mcop_job_duration_seconds",
    "Seconds from a MonteCarloJob's creation to its final phase (Succeeded or Failed)",
    ("namespace", "phase"),
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400),
)
PATHS_SIMULATED = Counter(
    "mcop_paths_simulated", "Paths of finished blocks this operator counted", ("namespace",)
)
LEADER = Gauge("mcop_leader", "1 while this replica leads (always 1 without leader election)")
RECONCILE_ERRORS = Counter(
    "mcop_reconcile_errors", "Reconciling passes that ended in an error, by kind", ("reason",)
)
# The kinds of mcop_reconcile_errors_total, all exported from the start (at 0) so that rate() and
# increase() see the first error of each kind.
ERROR_REASONS = ("kubernetes", "postgres", "redis", "timeout", "internal")
for _reason in ERROR_REASONS:
    RECONCILE_ERRORS.labels(_reason)
# Failure reasons exported at 0 from the start, so increase() sees a kind's first failure too.
FAILURE_REASONS = (
    "InvalidSpec",
    "PriorityClassNotFound",
    "DeadlineExceeded",
    "WorkerFailed",
    "WorkerJobConflict",
)
for _reason in FAILURE_REASONS:
    JOBS_FINISHED.labels("Failed", _reason)
LEADER.set(1)


def set_leader(leading: bool) -> None:
    """For leader election: 1 while this replica holds the Lease, 0 otherwise."""
    LEADER.set(1 if leading else 0)


def error_reason(exc: BaseException) -> str:
    """The bounded kind of an error that ended a reconciling pass: which dependency raised it."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, (Conflict, TryAgain)):  # the API server's answers, in the operator's words
        return "kubernetes"
    module = type(exc).__module__.split(".")[0]
    if module in ("kubernetes", "urllib3", "kopf"):
        return "kubernetes"
    if module == "asyncpg":
        return "postgres"
    if module == "redis":
        return "redis"
    return "internal"


def count_error(exc: BaseException) -> None:
    RECONCILE_ERRORS.labels(error_reason(exc)).inc()


def serve(port: int, address: str = "0.0.0.0") -> None:
    if port > 0:
        start_http_server(port, addr=address)


def export_tuning(namespace: str, name: str, status: Mapping[str, Any]) -> None:
    labels = (namespace, name)
    redis, pg = status.get("redis") or {}, status.get("postgres") or {}
    REDIS_UP.labels(*labels).set(1 if redis.get("connected") else 0)
    CACHE_HIT_RATE.labels(*labels).set(redis.get("hitRate") or 0)
    CACHE_MISS_RATE.labels(*labels).set(redis.get("missRate") or 0)
    REDIS_KEYS.labels(*labels).set(redis.get("keys") or 0)
    REDIS_MEMORY.labels(*labels).set(redis.get("usedMemoryBytes") or 0)
    REDIS_LATENCY.labels(*labels).set(redis.get("latencyMs") or 0)
    PG_UP.labels(*labels).set(1 if pg.get("connected") else 0)
    PG_POOL_SIZE.labels(*labels).set(pg.get("poolSize") or 0)
    PG_POOL_IN_USE.labels(*labels).set(pg.get("poolInUse") or 0)
    PG_ACTIVE.labels(*labels).set(pg.get("activeConnections") or 0)
    PG_SLOW.labels(*labels).set(len(pg.get("slowQueries") or []))
    PG_UNUSED_INDEXES.labels(*labels).set(len(pg.get("unusedIndexes") or []))
    system = status.get("system") or {}
    SYSTEM_CPU.set(system.get("cpuPercent") or 0)
    SYSTEM_MEMORY.set(system.get("memoryPercent") or 0)
    SYSTEM_DISK.set(system.get("diskPercent") or 0)
    jobs = status.get("jobs") or {}
    JOBS_RUNNING.labels(*labels).set(jobs.get("running") or 0)
    JOBS_QUEUED.labels(*labels).set(jobs.get("queued") or 0)
