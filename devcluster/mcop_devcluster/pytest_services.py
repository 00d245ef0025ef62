"""pytest fixtures: real PostgreSQL and Redis servers on 127.0.0.1 (loaded with -p in pyproject).

- ``postgres_server`` (session): a :class:`~mcop_devcluster.services.PostgresServer` with ``.dsn``,
  ``.dsn_for(db)``, ``.port``, ``.stop()``, ``.start()`` (same port, same data) and ``.kill()``.
- ``pg_dsn`` (function): the DSN of a fresh, empty database, dropped after the test.
- ``redis_server`` (session): a :class:`~mcop_devcluster.services.RedisServer` with ``.url``,
  ``.port``, ``.stop()``, ``.start()`` and ``.kill()``.
- ``redis_url`` (function): ``redis_server.url`` after flushing every key, so tests start clean.
- ``postgres_replica`` (session): a :class:`~mcop_devcluster.services.PostgresReplica`, a streaming
  hot standby of ``postgres_server`` (``pg_basebackup``), with ``.dsn_for(db)``, ``.stop()``,
  ``.start()``, ``.pause_replay()`` and ``.resume_replay()``.
- ``redis_cluster`` (session): a :class:`~mcop_devcluster.services.RedisClusterServer`, three
  primaries with a replica each, with ``.url`` (one node), ``.failover(key)`` and ``.nodes``.
- ``redis_cluster_url`` (function): ``redis_cluster.url`` once healthy, every primary flushed.

A test that stops a server does not need to restart it: the fixtures start it again for the next
test. A missing program fails the test with how to install it (never a silent skip).
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from mcop_devcluster.processes import stop_servers_on_sigterm
from mcop_devcluster.services import (
    MissingProgram,
    PostgresReplica,
    PostgresServer,
    RedisClusterServer,
    RedisServer,
)


def pytest_configure(config: pytest.Config) -> None:
    stop_servers_on_sigterm()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
    except MissingProgram as error:
        pytest.fail(str(error), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    postgres_server.start()  # a previous test may have stopped it
    dsn = postgres_server.create_database()
    yield dsn
    postgres_server.start()
    postgres_server.drop_database(urlsplit(dsn).path.lstrip("/"))


@pytest.fixture(scope="session")
def postgres_replica(postgres_server: PostgresServer) -> Iterator[PostgresReplica]:
    postgres_server.start()
    try:
        replica = PostgresReplica(postgres_server)
    except MissingProgram as error:
        pytest.fail(str(error), pytrace=False)
    try:
        replica.start()
        yield replica
    finally:
        replica.cleanup()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer()
    except MissingProgram as error:
        pytest.fail(str(error), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    import redis

    redis_server.start()  # a previous test may have stopped it
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    yield redis_server.url
    redis_server.start()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServer]:
    try:
        cluster = RedisClusterServer(masters=3, replicas=1)
    except MissingProgram as error:
        pytest.fail(str(error), pytrace=False)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisClusterServer) -> str:
    import redis

    redis_cluster.wait_healthy()  # a previous test may have failed a primary over
    for node in redis_cluster.nodes:
        client = redis.Redis(host="127.0.0.1", port=node.port)
        try:
            if client.info("replication").get("role") == "master":
                client.flushall()
        finally:
            client.close()
    return redis_cluster.url
