"""PostgreSQL and Redis from Debian's packages, on free 127.0.0.1 ports in a temporary folder.

Both can be stopped and started again on the same port and with the same data (PostgreSQL) so that
fault tests can take a server away and bring it back while clients keep their address.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mcop_devcluster.ports import LOOPBACK, free_port
from mcop_devcluster.processes import (
    ManagedProcess,
    ProcessStartError,
    claim_folder,
    reap_abandoned,
    wait_until,
)

POSTGRES_PREFIX = "mcop-postgres-"
REDIS_PREFIX = "mcop-redis-"

INSTALL_HINT = "run scripts/setup, or: apt-get install postgresql postgresql-contrib redis-server"


class MissingProgram(RuntimeError):
    """A server program is not installed; the message says how to install it."""


def postgres_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin with initdb and postgres (or $MCOP_PG_BIN)."""
    override = os.environ.get("MCOP_PG_BIN")
    candidates = [override] if override else glob.glob("/usr/lib/postgresql/*/bin")

    def major(path: str) -> int:
        found = re.search(r"/(\d+)/bin$", path)
        return int(found.group(1)) if found else 0

    for candidate in sorted(candidates, key=major, reverse=True):
        path = Path(candidate)
        if (path / "initdb").is_file() and (path / "postgres").is_file():
            return path
    raise MissingProgram(f"PostgreSQL server programs (initdb, postgres) not found: {INSTALL_HINT}")


def redis_server_program() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise MissingProgram(f"redis-server not found on PATH: {INSTALL_HINT}")
    return found


def _server_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: when we are root it runs as the `postgres` user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError as error:
        raise MissingProgram(
            f"running as root needs the `postgres` user: {INSTALL_HINT}"
        ) from error


async def _execute(dsn: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


class PostgresServer:
    """A throw-away PostgreSQL cluster; superuser `postgres` with a random password over TCP."""

    def __init__(self, base_dir: Path | None = None, port: int | None = None) -> None:
        if base_dir is None:
            reap_abandoned(POSTGRES_PREFIX)  # servers of sessions that were killed outright
            base_dir = Path(tempfile.mkdtemp(prefix=POSTGRES_PREFIX))
        self.base_dir = base_dir
        self._registry = claim_folder(self.base_dir)
        self.port = port or free_port()
        self.user = "postgres"
        self.password = secrets.token_hex(16)
        self.bin_dir = postgres_bin_dir()
        self.data_dir = self.base_dir / "data"
        self._os_user = _server_user()
        self._process: ManagedProcess | None = None

    @property
    def dsn(self) -> str:
        """DSN of the `postgres` maintenance database."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return (
            f"postgresql://{self.user}:{quote(self.password)}@{LOOPBACK}:{self.port}/"
            f"{quote(database)}"
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _has_pg_stat_statements(self) -> bool:
        libdir = subprocess.run(
            [str(self.bin_dir / "pg_config"), "--pkglibdir"], capture_output=True, text=True
        ).stdout.strip()
        return bool(libdir) and Path(libdir, "pg_stat_statements.so").is_file()

    def _check_reachable(self) -> None:
        """The `postgres` user must be able to walk down to the folder (not under /root, say)."""
        if self._os_user is None:
            return
        for parent in self.base_dir.resolve().parents:
            mode = parent.stat()
            if not mode.st_mode & stat.S_IXOTH and mode.st_uid != self._os_user.pw_uid:
                raise ValueError(
                    f"PostgreSQL runs as user postgres, which cannot enter {parent}: "
                    f"put its folder elsewhere (the default is under {tempfile.gettempdir()})"
                )

    def _initdb(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._check_reachable()
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._os_user is not None:
            os.chown(self.base_dir, self._os_user.pw_uid, self._os_user.pw_gid)
            os.chown(pwfile, self._os_user.pw_uid, self._os_user.pw_gid)
        result = subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                f"--pgdata={self.data_dir}",
                f"--username={self.user}",
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            user=self._os_user.pw_uid if self._os_user else None,
            group=self._os_user.pw_gid if self._os_user else None,
            cwd=self.base_dir,
        )
        pwfile.unlink()
        if result.returncode != 0:
            raise ProcessStartError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    def start(self, timeout: float = 60.0) -> None:
        """Starts the server (initdb the first time) and waits until it accepts SQL."""
        if self.running:
            return
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        settings = {
            "listen_addresses": LOOPBACK,
            "port": str(self.port),
            "unix_socket_directories": str(self.base_dir),
            # Throw-away test data: durability costs time and buys nothing here.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        if self._has_pg_stat_statements():
            settings["shared_preload_libraries"] = "pg_stat_statements"
        argv = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        self._process = ManagedProcess(
            "postgres",
            argv,
            log_path=self.base_dir / "postgres.log",
            cwd=self.base_dir,
            user=self._os_user.pw_name if self._os_user else None,
            # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM would wait for clients to leave.
            stop_signal=signal.SIGINT,
            registry=self._registry,
        )
        self._process.start()
        wait_until(
            lambda: asyncio.run(_execute(self.dsn, "SELECT 1")) is None,
            timeout=timeout,
            what=f"PostgreSQL on {LOOPBACK}:{self.port}",
            alive=self._process,
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Fast shutdown (clients are disconnected); the data stays for a later start()."""
        if self._process is not None:
            self._process.stop(timeout)

    def kill(self) -> None:
        """Simulates a crash: SIGKILL to the server's process group (postmaster and backends)."""
        if self._process is not None and self._process.pid is not None and self.running:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.stop(timeout=5.0)

    def create_database(self, name: str | None = None) -> str:
        """Creates an empty database and returns its DSN."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"database name {name!r}: use lower-case letters, digits and _")
        asyncio.run(_execute(self.dsn, f'CREATE DATABASE "{name}"'))
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        asyncio.run(_execute(self.dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def cleanup(self) -> None:
        """Stops the server and deletes its folder."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


class PostgresReplica(PostgresServer):
    """A streaming replica (hot standby) of ``primary``: ``pg_basebackup -R`` of it on a free port,
    same superuser and password. ``pause_replay()`` / ``resume_replay()`` make it lag on purpose."""

    def __init__(self, primary: PostgresServer) -> None:
        super().__init__()
        self.primary = primary
        self.password = primary.password

    def _initdb(self) -> None:  # a copy of the primary instead of an empty cluster
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._check_reachable()
        if self._os_user is not None:
            os.chown(self.base_dir, self._os_user.pw_uid, self._os_user.pw_gid)
        result = subprocess.run(
            [
                str(self.bin_dir / "pg_basebackup"),
                f"--pgdata={self.data_dir}",
                f"--host={LOOPBACK}",
                f"--port={self.primary.port}",
                f"--username={self.primary.user}",
                "--wal-method=stream",
                "--write-recovery-conf",  # standby.signal and primary_conninfo
                "--checkpoint=fast",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": self.primary.password},
            user=self._os_user.pw_uid if self._os_user else None,
            group=self._os_user.pw_gid if self._os_user else None,
            cwd=self.base_dir,
        )
        if result.returncode != 0:
            raise ProcessStartError(f"pg_basebackup failed:\n{result.stdout}\n{result.stderr}")

    def pause_replay(self) -> None:
        asyncio.run(_execute(self.dsn, "SELECT pg_wal_replay_pause()"))

    def resume_replay(self) -> None:
        asyncio.run(_execute(self.dsn, "SELECT pg_wal_replay_resume()"))


class RedisServer:
    """A throw-away Redis without persistence (``extra_args``: more redis-server options)."""

    def __init__(
        self,
        base_dir: Path | None = None,
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.program = redis_server_program()
        self.extra_args = extra_args
        if base_dir is None:
            reap_abandoned(REDIS_PREFIX)  # servers of sessions that were killed outright
            base_dir = Path(tempfile.mkdtemp(prefix=REDIS_PREFIX))
        self.base_dir = base_dir
        self._registry = claim_folder(self.base_dir)
        self.port = port or free_port()
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _ping(self) -> bool:
        import redis

        client = redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()

    def start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        argv = [
            self.program,
            "--bind", LOOPBACK,
            "--port", str(self.port),
            "--dir", str(self.base_dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "yes",
            *self.extra_args,
        ]  # fmt: skip
        self._process = ManagedProcess(
            "redis-server",
            argv,
            log_path=self.base_dir / "redis.log",
            cwd=self.base_dir,
            registry=self._registry,
        )
        self._process.start()
        wait_until(
            self._ping,
            timeout=timeout,
            what=f"Redis on {LOOPBACK}:{self.port}",
            alive=self._process,
        )

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is not None:
            self._process.stop(timeout)

    def kill(self) -> None:
        """Simulates a crash (SIGKILL)."""
        if self._process is not None and self._process.pid is not None and self.running:
            os.kill(self._process.pid, signal.SIGKILL)
            self._process.stop(timeout=5.0)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


class RedisClusterServer:
    """A throw-away Redis Cluster: ``masters`` primaries, each with ``replicas`` replicas, made by
    ``redis-cli --cluster create`` in one temporary folder (a sub-folder per node). A short
    ``cluster-node-timeout`` so that a killed primary is replaced within seconds."""

    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1500) -> None:
        redis_server_program()
        if shutil.which("redis-cli") is None:
            raise MissingProgram(f"redis-cli not found on PATH: {INSTALL_HINT}")
        reap_abandoned(REDIS_PREFIX)
        self.base_dir = Path(tempfile.mkdtemp(prefix=REDIS_PREFIX + "cluster-"))
        claim_folder(self.base_dir)  # its nodes' registries are reaped with it
        self.masters, self.replicas = masters, replicas
        self.nodes: list[RedisServer] = []
        for index in range(masters * (1 + replicas)):
            folder = self.base_dir / f"node{index}"
            folder.mkdir()
            self.nodes.append(
                RedisServer(
                    base_dir=folder,
                    extra_args=(
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", str(folder / "nodes.conf"),
                        # The bus port is otherwise port + 10000, past 65535 for high ports.
                        "--cluster-port", str(free_port()),
                        "--cluster-node-timeout", str(node_timeout_ms),
                        # Replicas take over whatever their primary's last contact was.
                        "--cluster-replica-validity-factor", "0",
                    ),
                )
            )  # fmt: skip

    @property
    def url(self) -> str:
        """One node's URL: the clients discover the others (CLUSTER SLOTS)."""
        return self.nodes[0].url

    def start(self, timeout: float = 60.0) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"{LOOPBACK}:{node.port}" for node in self.nodes]
        result = subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses,
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if result.returncode != 0:
            raise ProcessStartError(f"redis-cli --cluster create failed:\n{result.stdout}")
        self.wait_healthy(timeout)

    def _client(self, node: RedisServer) -> Any:
        import redis

        return redis.Redis(host=LOOPBACK, port=node.port, socket_timeout=1, decode_responses=True)

    def _ask(self, node: RedisServer, *command: str) -> Any:
        client = self._client(node)
        try:
            return client.execute_command(*command)
        finally:
            client.close()

    def _role(self, node: RedisServer) -> dict[str, Any]:
        return dict(self._ask(node, "INFO", "replication"))

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until every running node says cluster_state:ok and every slot has a primary."""

        def healthy() -> bool:
            running = [node for node in self.nodes if node.running]
            for node in running:
                if dict(self._ask(node, "CLUSTER INFO")).get("cluster_state") != "ok":
                    return False
            primaries = sum(self._role(node).get("role") == "master" for node in running)
            return bool(primaries == self.masters)

        wait_until(healthy, timeout=timeout, what="the Redis Cluster to be healthy", interval=0.2)

    def primary_for(self, key: str) -> RedisServer:
        """The running node that serves ``key``'s slot as primary now (by its own account)."""
        slot = int(self._ask(self.nodes[0], "CLUSTER", "KEYSLOT", key))
        for node in self.nodes:
            if not node.running or self._role(node).get("role") != "master":
                continue
            for entry in dict(self._ask(node, "CLUSTER NODES")).values():
                if "myself" not in entry["flags"]:
                    continue
                for span in entry["slots"]:
                    low, high = int(span[0]), int(span[-1])
                    if low <= slot <= high:
                        return node
        raise LookupError(f"no running primary serves the slot of {key!r}")

    def replica_of(self, primary: RedisServer) -> RedisServer:
        for node in self.nodes:
            if node is not primary and node.running:
                role = self._role(node)
                if role.get("role") == "slave" and int(role.get("master_port", 0)) == primary.port:
                    return node
        raise LookupError(f"no running replica follows the primary on port {primary.port}")

    def failover(self, key: str, timeout: float = 60.0) -> tuple[RedisServer, RedisServer]:
        """A coordinated failover (CLUSTER FAILOVER on the replica) of ``key``'s primary; returns
        (old primary, new primary) once the replica has taken over."""
        old = self.primary_for(key)
        new = self.replica_of(old)
        self._ask(new, "CLUSTER", "FAILOVER")
        wait_until(
            lambda: self.primary_for(key) is new,
            timeout=timeout,
            what=f"the replica on port {new.port} to take over",
            interval=0.1,
        )
        return old, new

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)
