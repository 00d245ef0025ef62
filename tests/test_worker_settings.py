"""Worker settings from the environment, and redaction of connection strings (pure tests)."""

from __future__ import annotations

import json

import pytest

from mcop_worker.storage.settings import (
    PgPoolSettings,
    RedisPoolSettings,
    SettingsError,
    WorkerSettings,
    pg_pool_settings_from_env,
    pool_env,
    redact,
    redis_pool_settings_from_env,
    scrub,
    secrets_of,
    worker_settings_from_env,
)

DSN = "postgresql://mcop:s3cr%40t-pw@db.internal:5432/results?sslmode=require"
REDIS = "redis://:r3dis-pw@cache.internal:6379/0"
BASE = {
    "MCOP_JOB_UID": "0b1c",
    "MCOP_JOB_NAMESPACE": "quants",
    "MCOP_JOB_NAME": "spx-asian",
    "MCOP_SPEC": json.dumps({"paths": 1000, "seed": 1}),
    "MCOP_SHARDS": "4",
    "JOB_COMPLETION_INDEX": "3",
    "MCOP_REDIS_URL": REDIS,
    "MCOP_POSTGRES_DSN": DSN,
}


def test_minimal_environment_gets_the_perftuning_defaults() -> None:
    s = worker_settings_from_env(BASE)
    assert (s.job_uid, s.job_namespace, s.job_name) == ("0b1c", "quants", "spx-asian")
    assert s.spec == {"paths": 1000, "seed": 1}
    assert (s.shards, s.shard_index) == (4, 3)
    assert s.heartbeat_seconds == 30.0
    assert s.redis == RedisPoolSettings(100, True, 5.0, 30.0)
    assert s.postgres == PgPoolSettings(20, 30, 3600.0, True, 30.0)
    assert s.postgres.max_size == 50
    assert s.expected_spec_hash is None


def test_every_pool_variable_is_read() -> None:
    env = {
        **BASE,
        "MCOP_HEARTBEAT_SECONDS": "2.5",
        "MCOP_REDIS_MAX_CONNECTIONS": "7",
        "MCOP_REDIS_SOCKET_KEEPALIVE": "false",
        "MCOP_REDIS_SOCKET_TIMEOUT_SECONDS": "1.5",
        "MCOP_REDIS_HEALTH_CHECK_INTERVAL_SECONDS": "0",
        "MCOP_PG_POOL_SIZE": "3",
        "MCOP_PG_MAX_OVERFLOW": "0",
        "MCOP_PG_POOL_RECYCLE_SECONDS": "60",
        "MCOP_PG_PRE_PING": "False",
        "MCOP_PG_COMMAND_TIMEOUT_SECONDS": "9",
        "MCOP_SPEC_HASH": "sha256:ab",
    }
    s = worker_settings_from_env(env)
    assert s.heartbeat_seconds == 2.5
    assert s.redis == RedisPoolSettings(7, False, 1.5, 0.0)
    assert s.postgres == PgPoolSettings(3, 0, 60.0, False, 9.0)
    assert s.expected_spec_hash == "sha256:ab"


def test_pool_env_round_trips_through_the_readers() -> None:
    pg = PgPoolSettings(4, 6, 120.0, False, 12.5)
    rd = RedisPoolSettings(9, False, 2.0, 15.0)
    env = pool_env(pg, rd)
    assert pg_pool_settings_from_env(env) == pg
    assert redis_pool_settings_from_env(env) == rd


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MCOP_JOB_UID", None, "MCOP_JOB_UID: is not set"),
        ("MCOP_SPEC", None, "MCOP_SPEC: is not set"),
        ("MCOP_SPEC", "{bad", "MCOP_SPEC: is not valid JSON"),
        ("MCOP_SPEC", "[1, 2]", "MCOP_SPEC: must be a JSON object"),
        ("MCOP_SHARDS", "four", "MCOP_SHARDS: must be an integer, got 'four'"),
        ("MCOP_SHARDS", "0", "MCOP_SHARDS: must be at least 1, got 0"),
        ("JOB_COMPLETION_INDEX", "4", "JOB_COMPLETION_INDEX: must be below MCOP_SHARDS (4)"),
        ("JOB_COMPLETION_INDEX", "-1", "JOB_COMPLETION_INDEX: must be at least 0"),
        ("MCOP_HEARTBEAT_SECONDS", "0", "MCOP_HEARTBEAT_SECONDS: must be positive"),
        ("MCOP_HEARTBEAT_SECONDS", "nan", "MCOP_HEARTBEAT_SECONDS: must be a finite number"),
        ("MCOP_PG_POOL_SIZE", "0", "MCOP_PG_POOL_SIZE: must be at least 1"),
        ("MCOP_PG_MAX_OVERFLOW", "-1", "MCOP_PG_MAX_OVERFLOW: must be at least 0"),
        ("MCOP_PG_PRE_PING", "maybe", "MCOP_PG_PRE_PING: must be true or false, got 'maybe'"),
        ("MCOP_REDIS_MAX_CONNECTIONS", "1.5", "MCOP_REDIS_MAX_CONNECTIONS: must be an integer"),
        ("MCOP_POSTGRES_DSN", None, "MCOP_POSTGRES_DSN: is not set"),
        ("MCOP_POSTGRES_DSN", "mysql://u:pw@h/d", "MCOP_POSTGRES_DSN: must be a URL like"),
        ("MCOP_REDIS_URL", "cache.internal:6379", "MCOP_REDIS_URL: must be a URL like"),
    ],
)
def test_bad_variables_are_named(variable: str, value: str | None, message: str) -> None:
    env = dict(BASE)
    if value is None:
        env.pop(variable, None)
    else:
        env[variable] = value
    with pytest.raises(SettingsError) as raised:
        worker_settings_from_env(env)
    assert str(raised.value).startswith(message)
    assert raised.value.variable == variable


def test_connection_string_values_never_appear_in_errors() -> None:
    for variable, value in [
        ("MCOP_POSTGRES_DSN", "mysql://u:topsecret@h/d"),
        ("MCOP_REDIS_URL", "topsecret@cache"),
    ]:
        with pytest.raises(SettingsError) as raised:
            worker_settings_from_env({**BASE, variable: value})
        assert "topsecret" not in str(raised.value)


def test_repr_hides_passwords() -> None:
    s: WorkerSettings = worker_settings_from_env(BASE)
    text = repr(s) + str(s)
    assert "s3cr" not in text and "r3dis-pw" not in text
    assert "db.internal" in text and "cache.internal" in text


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        (DSN, "postgresql://mcop:***@db.internal:5432/results?sslmode=require"),
        (REDIS, "redis://:***@cache.internal:6379/0"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("postgresql://mcop@db/results", "postgresql://mcop@db/results"),
        ("postgresql://db/r?user=u&password=pw1", "postgresql://db/r?user=u&password=***"),
        ("host=db user=u password='a b' dbname=r", "host=db user=u password=*** dbname=r"),
    ],
)
def test_redact(target: str, shown: str) -> None:
    assert redact(target) == shown


def test_scrub_removes_passwords_in_every_spelling() -> None:
    secrets = secrets_of(DSN, REDIS)
    message = "auth failed for s3cr@t-pw (s3cr%40t-pw) and r3dis-pw"
    assert scrub(message, secrets) == "auth failed for *** (***) and ***"
