"""The operator's own settings, read once from its environment at start-up (kept in kopf's memo)."""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class DefaultConnection:
    """The chart's Redis and PostgreSQL, read from the operator's own namespace, for namespaces
    that have neither a PerfTuning nor Secrets of their own."""

    namespace: str
    redis_secret: tuple[str, str]  # (Secret name, key)
    postgres_secret: tuple[str, str]

    @classmethod
    def from_env(cls, e: dict[str, str]) -> DefaultConnection | None:
        namespace = e.get("MCOP_DEFAULT_CONNECTION_NAMESPACE", "")
        if not namespace:
            return None
        redis = e.get("MCOP_DEFAULT_REDIS_SECRET", "montecarlo-redis/url")
        postgres = e.get("MCOP_DEFAULT_POSTGRES_SECRET", "montecarlo-postgres/dsn")
        return cls(namespace, _name_key(redis), _name_key(postgres))


def _name_key(text: str) -> tuple[str, str]:
    """ "name/key" (neither a Secret's name nor a key can hold a slash)."""
    name, _, key = text.partition("/")
    if not name or not key:
        raise ValueError(f"expected SECRET/KEY, not {text!r}")
    return name, key


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    worker_image: str
    worker_image_pull_policy: str
    # How often a running job's loop looks at blocks and pods, and the least time between two
    # progress writes to its status (transitions are written at once).
    reconcile_interval_seconds: float
    status_interval_seconds: float
    # How often jobs that wait (for a Secret, a queue slot) look again.
    waiting_interval_seconds: float
    metrics_port: int
    # How often the Job controller retries one failed shard before the job fails (WorkerFailed);
    # a retry skips the blocks its predecessor stored.
    shard_retries: int
    # Where /metrics listens: all interfaces in a pod (Prometheus scrapes the pod IP); tests
    # running the operator as a local process bind 127.0.0.1.
    metrics_address: str = "0.0.0.0"
    # None: every namespace brings its own Secrets (or a PerfTuning naming them).
    default_connection: DefaultConnection | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorConfig:
        e = dict(os.environ if env is None else env)
        return cls(
            worker_image=e.get("MCOP_WORKER_IMAGE", "montecarlo-operator:0.1.0"),
            worker_image_pull_policy=e.get("MCOP_WORKER_IMAGE_PULL_POLICY", "IfNotPresent"),
            reconcile_interval_seconds=float(e.get("MCOP_RECONCILE_INTERVAL_SECONDS", "1")),
            status_interval_seconds=float(e.get("MCOP_STATUS_INTERVAL_SECONDS", "2")),
            waiting_interval_seconds=float(e.get("MCOP_WAITING_INTERVAL_SECONDS", "5")),
            metrics_port=int(e.get("MCOP_METRICS_PORT", "8080")),
            shard_retries=int(e.get("MCOP_SHARD_RETRIES", "3")),
            metrics_address=e.get("MCOP_METRICS_ADDRESS", "0.0.0.0"),
            default_connection=DefaultConnection.from_env(e),
        )
