"""`mcop worker` as the pods run it: a subprocess configured by environment variables, against real
PostgreSQL and Redis. The test plays the Job controller (it starts the shards and retries them)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from mcop_devcluster.services import PostgresServer, RedisServer
from mcop_operator.storage.redis_bus import OperatorBus
from mcop_worker.engine.aggregate import aggregate
from mcop_worker.engine.blocks import plan_blocks
from mcop_worker.engine.simulate import simulate_block
from mcop_worker.engine.stats import BlockStats
from mcop_worker.model import validation
from mcop_worker.model.spec import JobSpec, parse_spec
from mcop_worker.model.spec_hash import spec_hash
from mcop_worker.storage import results_db
from mcop_worker.storage.pool import PgPool
from mcop_worker.storage.progress_bus import ShardProgress
from mcop_worker.storage.settings import PgPoolSettings, RedisPoolSettings
from pg_relay import SlowCloseRelay

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[1]
MCOP_WORKER = [str(Path(sys.executable).with_name("mcop")), "worker"]  # the pods' command


def manifest_spec(instrument: dict[str, Any], paths: int, **extra: Any) -> dict[str, Any]:
    """A MonteCarloJob spec with the CRD's defaults applied, as the API server stores it."""
    doc = {
        "apiVersion": "montecarlo.io/v1alpha1",
        "kind": "MonteCarloJob",
        "metadata": {"name": "e2e"},
        "spec": {
            "model": {"type": "gbm", "spot": 100.0, "volatility": 0.2, "rate": 0.05},
            "instrument": instrument,
            "paths": paths,
            "seed": 42,
            "varianceReduction": {"antithetic": True, "controlVariate": True},
            **extra,
        },
    }
    return dict(validation.validate_manifest(doc)["spec"])


EUROPEAN = {"type": "european", "optionType": "call", "strike": 100.0, "maturity": 1.0}
# Long enough (a few seconds) to do something to the servers while it runs.
SLOW_ASIAN = {"type": "asian", "optionType": "call", "strike": 100.0, "maturity": 1.0, "steps": 252}


@dataclass
class Job:
    uid: str
    spec: dict[str, Any]
    parsed: JobSpec
    hash: str
    shards: int

    @classmethod
    def new(cls, spec: dict[str, Any], shards: int) -> Job:
        parsed = parse_spec(spec)
        return cls(str(uuid.uuid4()), spec, parsed, spec_hash(parsed), shards)

    @property
    def n_blocks(self) -> int:
        return plan_blocks(self.parsed).n_blocks

    def env(self, index: int, pg_dsn: str, redis_url: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MCOP_", "JOB_"))}
        env.update(
            MCOP_JOB_UID=self.uid,
            MCOP_JOB_NAMESPACE="tests",
            MCOP_JOB_NAME="e2e",
            MCOP_SPEC=json.dumps(self.spec),
            MCOP_SPEC_HASH=self.hash,
            MCOP_SHARDS=str(self.shards),
            JOB_COMPLETION_INDEX=str(index),
            MCOP_REDIS_URL=redis_url,
            MCOP_POSTGRES_DSN=pg_dsn,
            MCOP_HEARTBEAT_SECONDS="1",
            MCOP_PG_POOL_SIZE="2",
            MCOP_PG_MAX_OVERFLOW="1",
            MCOP_REDIS_MAX_CONNECTIONS="4",
            MCOP_REDIS_SOCKET_TIMEOUT_SECONDS="2",
        )
        env.update(extra)
        return env

    def start(self, index: int, pg_dsn: str, redis_url: str, **extra: str) -> Worker:
        process = subprocess.Popen(
            MCOP_WORKER,
            env=self.env(index, pg_dsn, redis_url, **extra),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return Worker(process)


class Worker:
    """A running `mcop worker`; its output is read as it comes, so tests can wait on it."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)

    def output(self) -> str:
        return "".join(list(self._lines))

    def wait_output(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if time.monotonic() > deadline or self.process.poll() is not None:
                pytest.fail(f"the worker never printed {text!r}:\n{self.output()}")
            time.sleep(0.05)

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)


def finish(worker: Worker, timeout: float = 180) -> tuple[int, str]:
    try:
        worker.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        worker.process.kill()
        worker.process.wait()
        worker._reader.join(10)
        pytest.fail(f"worker still running after {timeout} s:\n{worker.output()}")
    worker._reader.join(10)
    return worker.process.returncode, worker.output()


async def _rows(pg_dsn: str, uid: str) -> list[tuple[int, int, int, str]]:
    """(block_index, shard, seq, stats) of every stored block of a job, in block order."""
    pool = await PgPool.open(pg_dsn, PgPoolSettings(pool_size=1, max_overflow=0))
    try:
        if await results_db.schema_version(pool) == 0:
            return []
        rows = await pool.fetch(
            "SELECT block_index, shard, seq, stats::text AS stats FROM block_results "
            "WHERE job_uid = $1 ORDER BY block_index",
            uid,
        )
        return [(r["block_index"], r["shard"], r["seq"], r["stats"]) for r in rows]
    finally:
        await pool.close()


def stored(pg_dsn: str, uid: str) -> list[tuple[int, int, int, str]]:
    return asyncio.run(_rows(pg_dsn, uid))


def progress(redis_url: str, uid: str) -> dict[int, ShardProgress]:
    async def read() -> dict[int, ShardProgress]:
        bus = OperatorBus(redis_url, RedisPoolSettings())
        try:
            return await bus.read_progress(uid)
        finally:
            await bus.close()

    return asyncio.run(read())


def wait_for_progress(
    redis_url: str, uid: str, check: Any, what: str, timeout: float = 60
) -> ShardProgress:
    """Shard 0's progress report once `check(report)` holds."""
    deadline = time.monotonic() + timeout
    while not ((report := progress(redis_url, uid).get(0)) and check(report)):
        if time.monotonic() > deadline:
            pytest.fail(f"shard 0's progress never showed {what}: {report}")
        time.sleep(0.1)
    return report


def wait_for_blocks(pg_dsn: str, uid: str, at_least: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while (count := len(stored(pg_dsn, uid))) < at_least:
        if time.monotonic() > deadline:
            pytest.fail(f"only {count} blocks stored after {timeout} s")
        time.sleep(0.1)
    return count


def test_two_shards_store_every_block_once_and_match_the_in_process_engine(
    pg_dsn: str, redis_url: str
) -> None:
    job = Job.new(manifest_spec(EUROPEAN, paths=120_000), shards=2)
    shards = [job.start(i, pg_dsn, redis_url) for i in range(2)]
    outcomes = [finish(p) for p in shards]
    assert [code for code, _ in outcomes] == [0, 0], outcomes

    rows = stored(pg_dsn, job.uid)
    n = job.n_blocks
    assert n >= 50, "a job big enough to have many blocks per shard"
    assert [b for b, *_ in rows] == list(range(n)), "every block stored exactly once"
    assert all(shard == b % 2 for b, shard, _, _ in rows), "strided ownership"

    # Bit for bit: each stored record is the in-process engine's, and so is the aggregate.
    for b, _, _, text in rows:
        assert text == simulate_block(job.parsed, b).to_json(), f"block {b}"
    from_db = aggregate([BlockStats.from_json(text) for *_, text in rows], job.parsed)
    in_process = aggregate([simulate_block(job.parsed, b) for b in range(n)], job.parsed)
    assert from_db == in_process
    assert from_db.to_result() == in_process.to_result()

    reports = progress(redis_url, job.uid)
    assert sorted(reports) == [0, 1]
    assert all(
        r.state == "done" and r.blocks_done == r.blocks_total for r in reports.values()
    ), (reports, outcomes)
    assert sum(r.paths_done for r in reports.values()) == plan_blocks(job.parsed).paths
    assert all(time.time() - r.heartbeat < 60 for r in reports.values())

    # The Job controller retries a shard (say its pod was lost after finishing): nothing new.
    max_seq = max(seq for _, _, seq, _ in rows)
    code, output = finish(job.start(0, pg_dsn, redis_url))
    assert code == 0, output
    again = stored(pg_dsn, job.uid)
    assert again == rows, "a retried shard inserts nothing"
    assert max(seq for _, _, seq, _ in again) == max_seq
    assert "were stored earlier; skipping them" in output


def test_worker_finishes_when_redis_goes_away_mid_run(
    pg_dsn: str, redis_url: str, redis_server: RedisServer
) -> None:
    job = Job.new(manifest_spec(SLOW_ASIAN, paths=1_000_000), shards=1)
    worker = job.start(0, pg_dsn, redis_url)
    try:
        wait_for_blocks(pg_dsn, job.uid, 1)
        redis_server.stop()
        code, output = finish(worker)
    finally:
        redis_server.start()
    assert code == 0, output
    rows = stored(pg_dsn, job.uid)
    assert [b for b, *_ in rows] == list(range(job.n_blocks))
    warnings = [
        line for line in output.splitlines() if "Redis at" in line and "unavailable" in line
    ]
    assert len(warnings) == 1, output


def test_worker_exits_nonzero_with_one_clear_line_when_postgres_is_down(
    pg_dsn: str, redis_url: str, postgres_server: PostgresServer
) -> None:
    job = Job.new(manifest_spec(EUROPEAN, paths=20_000), shards=1)
    password = urlsplit(pg_dsn).password
    assert password
    postgres_server.stop()
    try:
        started = time.monotonic()
        code, output = finish(job.start(0, pg_dsn, redis_url, MCOP_DB_RETRY_SECONDS="3"), 60)
        elapsed = time.monotonic() - started
    finally:
        postgres_server.start()
    assert code == 1, output
    assert elapsed < 30, "bounded retries"
    last = output.strip().splitlines()[-1]
    assert last.startswith("mcop worker: error: PostgreSQL unreachable (connect) after"), output
    assert f"127.0.0.1:{postgres_server.port}" in output or str(postgres_server.port) in output
    assert password not in output, "no secret in the output"
    assert "Traceback" not in output


def test_worker_rides_out_a_short_postgres_outage(
    pg_dsn: str, redis_url: str, postgres_server: PostgresServer
) -> None:
    job = Job.new(manifest_spec(SLOW_ASIAN, paths=1_000_000), shards=1)
    worker = job.start(0, pg_dsn, redis_url, MCOP_DB_RETRY_SECONDS="60")
    try:
        wait_for_blocks(pg_dsn, job.uid, 1)
        postgres_server.stop()
        worker.wait_output("PostgreSQL unavailable")  # it finished a block and waits to store it
        before = progress(redis_url, job.uid)[0]
        during = wait_for_progress(
            redis_url, job.uid, lambda p: p.heartbeat - before.heartbeat >= 1.5, "heartbeats"
        )
    finally:
        postgres_server.start()
    code, output = finish(worker)
    assert code == 0, output
    assert [b for b, *_ in stored(pg_dsn, job.uid)] == list(range(job.n_blocks))
    assert "PostgreSQL unavailable" in output
    # While it waits for PostgreSQL the shard still heartbeats (every MCOP_HEARTBEAT_SECONDS=1),
    # so the operator does not take it for lost; its block count does not move.
    assert during.heartbeat - before.heartbeat >= 1.5
    assert during.blocks_done == before.blocks_done
    assert during.state == "running"


def wait_until_computing(pg_dsn: str, idle_for: float = 0.02, timeout: float = 60) -> None:
    """Return once the worker's session has been idle for `idle_for` s: it is inside a block, so a
    server goodbye now reaches an idle connection (not a statement in flight)."""

    async def poll() -> bool:
        con = await asyncpg.connect(pg_dsn)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if await con.fetchval(
                    """SELECT count(*) > 0 FROM pg_stat_activity
                       WHERE application_name = 'mcop-worker' AND datname = current_database()
                         AND state = 'idle'
                         AND clock_timestamp() - state_change > make_interval(secs => $1)""",
                    idle_for,
                ):
                    return True
                await asyncio.sleep(0.005)
            return False
        finally:
            await con.close()

    if not asyncio.run(poll()):
        pytest.fail(f"the worker's PostgreSQL session was never idle for {idle_for} s")


def test_worker_rides_out_an_outage_whose_goodbye_arrives_before_the_close(
    pg_dsn: str, redis_url: str, postgres_server: PostgresServer
) -> None:
    # PostgreSQL's fast shutdown sends each session a FATAL message, and the socket closes when
    # the backend exits. A worker that took its idle connection between the two exited 1 with
    # asyncpg's InternalClientError "cannot switch to state 12" (seen once in CI). The relay holds
    # that window open for 3 s; blocks of ~0.1 s let the server stop while the worker computes.
    job = Job.new(manifest_spec({**SLOW_ASIAN, "steps": 10_000}, paths=1_000_000), shards=1)
    limit = 25  # blocks: enough to span the outage, few enough to keep the test short

    async def ask() -> None:
        bus = OperatorBus(redis_url, RedisPoolSettings())
        try:
            assert await bus.request_stop(job.uid, block_limit=limit)
        finally:
            await bus.close()

    asyncio.run(ask())
    with SlowCloseRelay(postgres_server.port, close_delay=3.0) as relay:
        worker = job.start(0, relay.dsn(pg_dsn), redis_url, MCOP_DB_RETRY_SECONDS="60")
        try:
            wait_for_blocks(pg_dsn, job.uid, 1)
            wait_until_computing(pg_dsn)
            postgres_server.stop()
            relay.wait_for_goodbyes(1)
            # The worker meets the goodbye, then the close, then refusals: it says it waits.
            worker.wait_output("PostgreSQL unavailable")
        finally:
            postgres_server.start()
        code, output = finish(worker)
    assert code == 0, output
    assert [b for b, *_ in stored(pg_dsn, job.uid)] == list(range(limit))
    assert "PostgreSQL unavailable" in output
    assert "InternalClientError" not in output


def test_sigterm_stops_promptly_and_a_retry_completes_the_shard(
    pg_dsn: str, redis_url: str
) -> None:
    job = Job.new(manifest_spec(SLOW_ASIAN, paths=1_000_000), shards=1)
    worker = job.start(0, pg_dsn, redis_url)
    wait_for_blocks(pg_dsn, job.uid, 2)
    worker.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    code, output = finish(worker, timeout=30)
    took = time.monotonic() - sent
    assert code == 128 + signal.SIGTERM, output
    assert took < 5, f"exited {took:.1f} s after SIGTERM"
    partial = [b for b, *_ in stored(pg_dsn, job.uid)]
    assert 2 <= len(partial) < job.n_blocks

    code, output = finish(job.start(0, pg_dsn, redis_url))
    assert code == 0, output
    assert [b for b, *_ in stored(pg_dsn, job.uid)] == list(range(job.n_blocks))


def test_stop_request_limits_the_blocks_computed(pg_dsn: str, redis_url: str) -> None:
    job = Job.new(manifest_spec(EUROPEAN, paths=120_000), shards=2)

    async def ask() -> None:
        bus = OperatorBus(redis_url, RedisPoolSettings())
        try:
            assert await bus.request_stop(job.uid, block_limit=10)
        finally:
            await bus.close()

    asyncio.run(ask())
    outcomes = [finish(p) for p in [job.start(i, pg_dsn, redis_url) for i in range(2)]]
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    assert [b for b, *_ in stored(pg_dsn, job.uid)] == list(range(10))
    assert {r.state for r in progress(redis_url, job.uid).values()} == {"stopped"}


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"MCOP_SHARDS": ""}, "MCOP_SHARDS"),
        ({"JOB_COMPLETION_INDEX": "2"}, "JOB_COMPLETION_INDEX"),
        ({"MCOP_SPEC": "{not json"}, "MCOP_SPEC"),
        ({"MCOP_PG_POOL_SIZE": "0"}, "MCOP_PG_POOL_SIZE"),
        ({"MCOP_POSTGRES_DSN": "mysql://root:hunter2@db/x"}, "MCOP_POSTGRES_DSN"),
        ({"MCOP_SPEC_HASH": "sha256:0000"}, "MCOP_SPEC_HASH"),
    ],
)
def test_bad_configuration_exits_2_naming_the_variable(
    change: Mapping[str, str], variable: str
) -> None:
    job = Job.new(manifest_spec(EUROPEAN, paths=20_000), shards=2)
    env = job.env(0, "postgresql://u:hunter2@127.0.0.1:1/db", "redis://127.0.0.1:1/0")
    env.update(change)
    if change.get(variable) == "":
        del env[variable]
    result = subprocess.run(
        MCOP_WORKER,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert variable in result.stderr
    assert "hunter2" not in result.stdout + result.stderr
