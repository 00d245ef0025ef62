"""Typed settings of a worker pod, read from its environment, and `redact()` for log lines.

The operator sets these variables on the worker Job (see docs/architecture.md, "The worker pods");
the pool settings are the PerfTuning's at the time the Job was created. A missing or malformed
variable raises `SettingsError` naming it. Connection strings carry passwords: their values never
appear in an error message, and every log line that names a server passes it through `redact()`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

T = TypeVar("T")

_SECRET_VARIABLES = frozenset({"MCOP_REDIS_URL", "MCOP_POSTGRES_DSN"})
_SECRET_QUERY_KEYS = frozenset({"password", "passfile", "sslpassword", "token"})
REDIS_MODES = ("standalone", "cluster")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class SettingsError(ValueError):
    """A missing or malformed environment variable; ``variable`` names it."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable
        self.message = message


@dataclasses.dataclass(frozen=True)
class RedisPoolSettings:
    """The PerfTuning's `spec.redis` pool settings (redis.asyncio connection pool)."""

    max_connections: int = 100
    socket_keepalive: bool = True
    socket_timeout_seconds: float = 5.0
    health_check_interval_seconds: float = 30.0
    # standalone: one server (or a proxy); cluster: a Redis Cluster reached through any node
    mode: str = "standalone"

    def __post_init__(self) -> None:
        _require(self.mode in REDIS_MODES, "mode", f"must be one of {', '.join(REDIS_MODES)}")
        _require(self.max_connections >= 1, "maxConnections", "must be at least 1")
        _require(self.socket_timeout_seconds > 0, "socketTimeoutSeconds", "must be positive")
        _require(
            self.health_check_interval_seconds >= 0,
            "healthCheckIntervalSeconds",
            "must not be negative",
        )


@dataclasses.dataclass(frozen=True)
class PgPoolSettings:
    """The PerfTuning's `spec.postgres` pool settings in SQLAlchemy terms (docs/perftuning.md)."""

    pool_size: int = 20
    max_overflow: int = 30
    pool_recycle_seconds: float = 3600.0
    pre_ping: bool = True
    command_timeout_seconds: float = 30.0

    def __post_init__(self) -> None:
        _require(self.pool_size >= 1, "poolSize", "must be at least 1")
        _require(self.max_overflow >= 0, "maxOverflow", "must not be negative")
        _require(self.pool_recycle_seconds > 0, "poolRecycleSeconds", "must be positive")
        _require(self.command_timeout_seconds > 0, "commandTimeoutSeconds", "must be positive")

    @property
    def max_size(self) -> int:
        """The most connections the pool opens: poolSize + maxOverflow."""
        return self.pool_size + self.max_overflow


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    """Everything `mcop worker` needs: which job and shard, where the servers are, pool tuning."""

    job_uid: str
    job_namespace: str
    job_name: str
    spec: dict[str, Any]
    shards: int
    shard_index: int
    redis_url: str
    postgres_dsn: str
    heartbeat_seconds: float
    redis: RedisPoolSettings
    postgres: PgPoolSettings
    expected_spec_hash: str | None = None
    db_retry_seconds: float = 30.0  # how long a worker rides out a PostgreSQL outage

    def __repr__(self) -> str:  # the URLs hold passwords: never show them, even in a traceback
        return (
            f"WorkerSettings(job={self.job_namespace}/{self.job_name} uid={self.job_uid}, "
            f"shard={self.shard_index}/{self.shards}, redis={redact(self.redis_url)}, "
            f"postgres={redact(self.postgres_dsn)})"
        )


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ValueError(f"{field}: {message}")


# --- reading variables -------------------------------------------------------------------------


def _raw(env: Mapping[str, str], name: str, default: str | None) -> str:
    value = env.get(name)
    if value is None or value.strip() == "":
        if default is None:
            raise SettingsError(name, "is not set")
        return default
    return value.strip()


def _shown(name: str, value: str) -> str:
    return "(value hidden)" if name in _SECRET_VARIABLES else repr(value)


def _typed(
    env: Mapping[str, str],
    name: str,
    default: str | None,
    convert: Callable[[str], T],
    expected: str,
) -> T:
    raw = _raw(env, name, default)
    try:
        return convert(raw)
    except ValueError:
        raise SettingsError(name, f"must be {expected}, got {_shown(name, raw)}") from None


def _int(env: Mapping[str, str], name: str, default: int | None, minimum: int) -> int:
    value = _typed(env, name, None if default is None else str(default), int, "an integer")
    if value < minimum:
        raise SettingsError(name, f"must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, *, positive: bool = True) -> float:
    value = _typed(env, name, str(default), float, "a number")
    if value != value or value in (float("inf"), float("-inf")):
        raise SettingsError(name, f"must be a finite number, got {value}")
    if positive and value <= 0:
        raise SettingsError(name, f"must be positive, got {value}")
    if value < 0:
        raise SettingsError(name, f"must not be negative, got {value}")
    return value


def _parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(raw)


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    return _typed(env, name, "true" if default else "false", _parse_bool, "true or false")


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...], example: str) -> str:
    value = _raw(env, name, None)
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme not in schemes:
        raise SettingsError(name, f"must be a URL like {example} (value hidden)")
    return value


def _spec(env: Mapping[str, str]) -> dict[str, Any]:
    raw = _raw(env, "MCOP_SPEC", None)
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as error:
        message = f"is not valid JSON ({error.msg} at character {error.pos})"
        raise SettingsError("MCOP_SPEC", message) from None
    if not isinstance(spec, dict):
        raise SettingsError("MCOP_SPEC", "must be a JSON object (the MonteCarloJob's spec)")
    return spec


def redis_pool_settings_from_env(env: Mapping[str, str]) -> RedisPoolSettings:
    defaults = RedisPoolSettings()
    mode = _raw(env, "MCOP_REDIS_MODE", defaults.mode)
    if mode not in REDIS_MODES:
        allowed = ", ".join(REDIS_MODES)
        raise SettingsError("MCOP_REDIS_MODE", f"must be one of {allowed}, got {mode!r}")
    return RedisPoolSettings(
        mode=mode,
        max_connections=_int(env, "MCOP_REDIS_MAX_CONNECTIONS", defaults.max_connections, 1),
        socket_keepalive=_bool(env, "MCOP_REDIS_SOCKET_KEEPALIVE", defaults.socket_keepalive),
        socket_timeout_seconds=_float(
            env, "MCOP_REDIS_SOCKET_TIMEOUT_SECONDS", defaults.socket_timeout_seconds
        ),
        health_check_interval_seconds=_float(
            env,
            "MCOP_REDIS_HEALTH_CHECK_INTERVAL_SECONDS",
            defaults.health_check_interval_seconds,
            positive=False,
        ),
    )


def pg_pool_settings_from_env(env: Mapping[str, str]) -> PgPoolSettings:
    defaults = PgPoolSettings()
    return PgPoolSettings(
        pool_size=_int(env, "MCOP_PG_POOL_SIZE", defaults.pool_size, 1),
        max_overflow=_int(env, "MCOP_PG_MAX_OVERFLOW", defaults.max_overflow, 0),
        pool_recycle_seconds=_float(
            env, "MCOP_PG_POOL_RECYCLE_SECONDS", defaults.pool_recycle_seconds
        ),
        pre_ping=_bool(env, "MCOP_PG_PRE_PING", defaults.pre_ping),
        command_timeout_seconds=_float(
            env, "MCOP_PG_COMMAND_TIMEOUT_SECONDS", defaults.command_timeout_seconds
        ),
    )


def worker_settings_from_env(env: Mapping[str, str]) -> WorkerSettings:
    """Read and check a worker pod's variables; raises SettingsError naming the first bad one."""
    shards = _int(env, "MCOP_SHARDS", None, 1)
    index = _int(env, "JOB_COMPLETION_INDEX", None, 0)
    if index >= shards:
        raise SettingsError(
            "JOB_COMPLETION_INDEX", f"must be below MCOP_SHARDS ({shards}), got {index}"
        )
    expected_hash = env.get("MCOP_SPEC_HASH", "").strip() or None
    return WorkerSettings(
        job_uid=_raw(env, "MCOP_JOB_UID", None),
        job_namespace=_raw(env, "MCOP_JOB_NAMESPACE", None),
        job_name=_raw(env, "MCOP_JOB_NAME", None),
        spec=_spec(env),
        shards=shards,
        shard_index=index,
        redis_url=_url(env, "MCOP_REDIS_URL", ("redis", "rediss", "unix"), "redis://host:6379/0"),
        postgres_dsn=_url(
            env, "MCOP_POSTGRES_DSN", ("postgres", "postgresql"), "postgresql://user@host/db"
        ),
        heartbeat_seconds=_float(env, "MCOP_HEARTBEAT_SECONDS", 30.0),
        redis=redis_pool_settings_from_env(env),
        postgres=pg_pool_settings_from_env(env),
        expected_spec_hash=expected_hash,
        db_retry_seconds=_float(env, "MCOP_DB_RETRY_SECONDS", 30.0),
    )


def pool_env(postgres: PgPoolSettings, redis: RedisPoolSettings) -> dict[str, str]:
    """The inverse of the *_from_env readers: the variables that carry these pool settings."""
    return {
        "MCOP_REDIS_MODE": redis.mode,
        "MCOP_REDIS_MAX_CONNECTIONS": str(redis.max_connections),
        "MCOP_REDIS_SOCKET_KEEPALIVE": "true" if redis.socket_keepalive else "false",
        "MCOP_REDIS_SOCKET_TIMEOUT_SECONDS": repr(float(redis.socket_timeout_seconds)),
        "MCOP_REDIS_HEALTH_CHECK_INTERVAL_SECONDS": repr(
            float(redis.health_check_interval_seconds)
        ),
        "MCOP_PG_POOL_SIZE": str(postgres.pool_size),
        "MCOP_PG_MAX_OVERFLOW": str(postgres.max_overflow),
        "MCOP_PG_POOL_RECYCLE_SECONDS": repr(float(postgres.pool_recycle_seconds)),
        "MCOP_PG_PRE_PING": "true" if postgres.pre_ping else "false",
        "MCOP_PG_COMMAND_TIMEOUT_SECONDS": repr(float(postgres.command_timeout_seconds)),
    }


# --- redaction ---------------------------------------------------------------------------------

_KV_SECRET = re.compile(r"(?i)\b(password|sslpassword|passfile)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def redact(target: str) -> str:
    """A URL or DSN fit for a log line: the password (user-info, `password=` query or key=value
    parameter) replaced by `***`. Anything unparsable is hidden whole rather than risked."""
    if "://" not in target:
        return _KV_SECRET.sub(lambda m: f"{m.group(1)}=***", target)
    try:
        parts = urlsplit(target)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, hostinfo = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{hostinfo}" if ":" in userinfo else f"{user}@{hostinfo}"
        query = parts.query
        if query:
            pairs = [
                (key, "***" if key.lower() in _SECRET_QUERY_KEYS else value)
                for key, value in parse_qsl(query, keep_blank_values=True)
            ]
            query = urlencode(pairs, safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "<connection string hidden>"


def secrets_of(*targets: str) -> list[str]:
    """The passwords inside these URLs/DSNs, to scrub from third-party error messages."""
    found: list[str] = []
    for target in targets:
        if "://" in target:
            try:
                parts = urlsplit(target)
            except ValueError:
                continue
            if parts.password:
                found.append(parts.password)
            found.extend(
                value
                for key, value in parse_qsl(parts.query)
                if key.lower() in _SECRET_QUERY_KEYS and value
            )
        else:
            found.extend(m.group(2).strip("'") for m in _KV_SECRET.finditer(target))
    # URL-encoded and decoded forms may both appear in messages.
    variants = {v for s in found for v in (s, unquote(s), quote(s, safe="")) if len(v) >= 3}
    return sorted(variants, key=len, reverse=True)


def scrub(text: str, secret_values: list[str]) -> str:
    """`text` with every known secret value replaced by `***` (for messages of other libraries)."""
    for value in secret_values:
        text = text.replace(value, "***")
    return text
