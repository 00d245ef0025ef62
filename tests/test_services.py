"""The PostgreSQL and Redis fixtures: real servers on 127.0.0.1 that stop and start again."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import asyncpg
import psutil
import pytest
import redis

from mcop_devcluster.services import PostgresServer, RedisServer

pytestmark = pytest.mark.services


async def _fetchval(dsn: str, query: str) -> object:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def _execute(dsn: str, script: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(script)
    finally:
        await conn.close()


def _listening_addresses(pid: int) -> set[str]:
    addresses = set()
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        for conn in proc.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                addresses.add(conn.laddr.ip)
    return addresses


def test_pg_dsn_is_a_fresh_empty_database(pg_dsn: str) -> None:
    tables = asyncio.run(
        _fetchval(pg_dsn, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    )
    assert tables == 0
    asyncio.run(_execute(pg_dsn, "CREATE TABLE marker (x int)"))


def test_each_test_gets_its_own_database(pg_dsn: str, postgres_server: PostgresServer) -> None:
    name = asyncio.run(_fetchval(pg_dsn, "SELECT current_database()"))
    assert name != "postgres"
    assert pg_dsn == postgres_server.dsn_for(str(name))
    tables = asyncio.run(
        _fetchval(pg_dsn, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    )
    assert tables == 0, "the database of the previous test leaked into this one"


def test_postgres_has_pg_stat_statements_preloaded(postgres_server: PostgresServer) -> None:
    libraries = asyncio.run(_fetchval(postgres_server.dsn, "SHOW shared_preload_libraries"))
    assert "pg_stat_statements" in str(libraries)


def test_postgres_refuses_a_wrong_password(postgres_server: PostgresServer) -> None:
    wrong = postgres_server.dsn.replace(postgres_server.password, "wrong")
    with pytest.raises(asyncpg.InvalidPasswordError):
        asyncio.run(_fetchval(wrong, "SELECT 1"))


def test_postgres_stop_and_start_keep_port_and_data(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.create_database("restart_check")
    asyncio.run(_execute(dsn, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)"))
    port = postgres_server.port

    postgres_server.stop()
    assert not postgres_server.running
    with pytest.raises(OSError):
        asyncio.run(_fetchval(dsn, "SELECT 1"))

    postgres_server.start()
    assert postgres_server.port == port
    assert asyncio.run(_fetchval(dsn, "SELECT x FROM kept")) == 7
    postgres_server.drop_database("restart_check")


def test_postgres_survives_a_crash(postgres_server: PostgresServer) -> None:
    postgres_server.kill()
    assert not postgres_server.running
    postgres_server.start()
    assert asyncio.run(_fetchval(postgres_server.dsn, "SELECT 1")) == 1


def test_postgres_listens_on_loopback_only(postgres_server: PostgresServer) -> None:
    assert postgres_server.pid is not None
    assert _listening_addresses(postgres_server.pid) == {"127.0.0.1"}


def test_redis_answers_and_restarts_on_the_same_port(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, socket_timeout=2)
    try:
        client.set("k", "v")
        assert client.get("k") == b"v"

        redis_server.stop()
        with pytest.raises(redis.ConnectionError):
            client.ping()

        redis_server.start()
        assert client.ping()
        assert client.get("k") is None, "Redis must start empty: it runs without persistence"
    finally:
        client.close()


def test_redis_url_fixture_starts_clean(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0
        client.set("leftover", "1")
    finally:
        client.close()


def test_redis_listens_on_loopback_only(redis_server: RedisServer) -> None:
    assert redis_server.pid is not None
    assert _listening_addresses(redis_server.pid) == {"127.0.0.1"}


def test_servers_of_a_killed_session_are_reaped_by_the_next(tmp_path: Path) -> None:
    script = (
        "import os, signal\n"
        "from mcop_devcluster.services import RedisServer\n"
        "server = RedisServer()\n"
        "server.start()\n"
        "print(server.pid, server.base_dir, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no cleanup\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    pid_text, folder = out.stdout.split()
    orphan = psutil.Process(int(pid_text))
    assert orphan.is_running(), "the killed session's Redis should have outlived it"

    RedisServer(base_dir=tmp_path).cleanup()  # an explicit folder: no reaping
    assert orphan.is_running()
    RedisServer().cleanup()  # a new session's server reaps what the dead one left

    assert not orphan.is_running() or orphan.status() == psutil.STATUS_ZOMBIE
    assert not Path(folder).exists()
