"""`mcop worker`: the entrypoint of a worker pod (one shard of an Indexed Job).

The shard simulates the blocks it owns (`blocks.shard_blocks`) that PostgreSQL does not hold yet,
stores each block's statistics there (idempotently), and reports progress and a heartbeat to
Redis, until its blocks are done, the operator asks it to stop, or it receives SIGTERM.

Exit codes (the Job's podFailurePolicy can tell them apart):
  0    all owned blocks are stored, or the operator said the rest is not needed
  1    PostgreSQL unreachable after bounded retries, or an unexpected failure: a retry may help
  2    bad configuration (environment, spec, spec hash): no retry will help
  143  SIGTERM (suspend, deletion, eviction): the shard is unfinished; a retry resumes it
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from mcop_worker.engine.blocks import BlockPlan, plan_blocks, shard_blocks
from mcop_worker.engine.simulate import simulate_block
from mcop_worker.engine.stats import BlockStats
from mcop_worker.model.errors import ManifestError
from mcop_worker.model.spec import JobSpec, parse_spec
from mcop_worker.model.spec_hash import spec_hash
from mcop_worker.numba_cache import engine_key
from mcop_worker.programs.kernel_cache import install_shipped_cache
from mcop_worker.storage import results_db
from mcop_worker.storage.pool import CONNECTION_ERRORS, PgPool
from mcop_worker.storage.progress_bus import ProgressBus, ShardProgress, ShardState
from mcop_worker.storage.settings import (
    SettingsError,
    WorkerSettings,
    redact,
    scrub,
    secrets_of,
    worker_settings_from_env,
)

log = logging.getLogger("mcop_worker.worker")
T = TypeVar("T")

EXIT_OK, EXIT_RETRYABLE, EXIT_CONFIG, EXIT_SIGTERM = 0, 1, 2, 128 + signal.SIGTERM


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL stayed unreachable for the whole retry budget."""


class Terminated(Exception):
    """SIGTERM (or SIGINT) arrived: stop now, the shard is unfinished."""


@dataclass
class _Counters:
    blocks_total: int
    blocks_done: int
    paths_done: int
    state: ShardState = "running"

    def report(self) -> ShardProgress:
        return ShardProgress(
            blocks_done=self.blocks_done,
            blocks_total=self.blocks_total,
            paths_done=self.paths_done,
            heartbeat=time.time(),
            state=self.state,
        )


def run(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """The `mcop worker` command; its configuration comes from the environment only."""
    parser = argparse.ArgumentParser(
        prog="mcop worker",
        description="Run one shard of a MonteCarloJob (the entrypoint of the worker pods). "
        "Configured by environment variables: MCOP_JOB_UID, MCOP_JOB_NAMESPACE, MCOP_JOB_NAME, "
        "MCOP_SPEC, MCOP_SHARDS, JOB_COMPLETION_INDEX, MCOP_REDIS_URL, MCOP_POSTGRES_DSN, "
        "MCOP_HEARTBEAT_SECONDS and the MCOP_PG_* / MCOP_REDIS_* pool settings "
        "(see docs/architecture.md).",
    )
    parser.parse_args(list(argv) if argv is not None else None)
    _configure_logging()
    environment = os.environ if env is None else env
    if install_shipped_cache(environment):  # before the first kernel runs
        log.info("numba kernels: the image's, compiled for engine sources %s", engine_key())
    try:
        settings = worker_settings_from_env(environment)
    except SettingsError as error:
        return _fail(EXIT_CONFIG, f"bad environment: {error}")
    try:
        spec = parse_spec(settings.spec)
    except ManifestError as error:
        return _fail(EXIT_CONFIG, f"MCOP_SPEC is not a valid MonteCarloJob spec: {error}")
    digest = spec_hash(spec)
    if settings.expected_spec_hash is not None and settings.expected_spec_hash != digest:
        return _fail(
            EXIT_CONFIG,
            f"MCOP_SPEC_HASH is {settings.expected_spec_hash} but this worker computes {digest} "
            "for MCOP_SPEC: the operator and the worker image run different engine versions",
        )
    secrets = secrets_of(settings.postgres_dsn, settings.redis_url)
    try:
        return asyncio.run(_work(settings, spec, digest))
    except DatabaseUnavailable as error:
        return _fail(EXIT_RETRYABLE, scrub(str(error), secrets))
    except Exception as error:  # one clean line instead of a traceback that may hold a DSN
        log.debug("worker failed", exc_info=True)
        return _fail(EXIT_RETRYABLE, scrub(f"{type(error).__name__}: {error}", secrets))


def _fail(code: int, message: str) -> int:
    print(f"mcop worker: error: {message}", file=sys.stderr, flush=True)
    return code


def _configure_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(os.environ.get("MCOP_LOG_LEVEL", "INFO").upper())


async def _work(settings: WorkerSettings, spec: JobSpec, digest: str) -> int:
    terminated = _terminated_on_signals()
    plan = plan_blocks(spec)
    mine = list(shard_blocks(plan.n_blocks, settings.shards, settings.shard_index))
    _log_start(settings, len(mine), plan.n_blocks)
    bus = ProgressBus(settings.redis_url, settings.redis, client_name="mcop-worker")

    def retry(what: str, attempt: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        return _with_db_retries(what, attempt, terminated, settings.db_retry_seconds)

    pool: PgPool | None = None
    heartbeat: asyncio.Task[None] | None = None
    uid, shard = settings.job_uid, settings.shard_index
    try:
        pool = await retry("connect", functools.partial(_open_pool, settings))
        todo, counters = await _resume(pool, retry, settings, digest, plan, mine)
        await bus.publish_progress(uid, shard, counters.report())
        heartbeat = asyncio.create_task(
            _heartbeat(bus, uid, shard, counters, settings.heartbeat_seconds)
        )
        shard_run = _ShardRun(settings, spec, digest, pool, bus, retry, terminated, counters)
        await shard_run.blocks(todo)
        return EXIT_OK
    except Terminated:
        log.info("SIGTERM: leaving the current block unfinished; a retried shard resumes here")
        return EXIT_SIGTERM
    finally:
        if heartbeat is not None:
            heartbeat.cancel()
        await bus.close()
        if pool is not None:
            await pool.close(timeout=2.0)


def _terminated_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT."""
    terminated = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, terminated.set)
    return terminated


def _log_start(settings: WorkerSettings, mine: int, n_blocks: int) -> None:
    log.info(
        "job %s/%s (uid %s) shard %d of %d: %d of %d blocks; PostgreSQL %s, Redis %s",
        settings.job_namespace,
        settings.job_name,
        settings.job_uid,
        settings.shard_index,
        settings.shards,
        mine,
        n_blocks,
        redact(settings.postgres_dsn),
        redact(settings.redis_url),
    )


RetryFn = Callable[[str, Callable[[], Awaitable[T]]], Awaitable[T]]


async def _resume(
    db: PgPool,
    retry: RetryFn[Any],
    settings: WorkerSettings,
    digest: str,
    plan: BlockPlan,
    mine: list[int],
) -> tuple[list[int], _Counters]:
    """Migrate the schema, then the shard's blocks still to do and its counters so far (a retried
    shard skips what its predecessors stored)."""
    await retry("migrate", functools.partial(results_db.migrate, db))
    done = await retry(
        "read finished blocks",
        functools.partial(results_db.done_blocks, db, settings.job_uid, digest),
    )
    todo = [b for b in mine if b not in done]
    counters = _Counters(
        blocks_total=len(mine),
        blocks_done=len(mine) - len(todo),
        paths_done=sum(plan.paths_in_block(b) for b in mine if b in done),
    )
    if len(todo) < len(mine):
        log.info(
            "%d of this shard's blocks were stored earlier; skipping them", len(mine) - len(todo)
        )
    return todo, counters


@dataclass
class _ShardRun:
    """What simulating and storing this shard's blocks needs."""

    settings: WorkerSettings
    spec: JobSpec
    digest: str
    db: PgPool
    bus: ProgressBus
    retry: RetryFn[Any]
    terminated: asyncio.Event
    counters: _Counters

    async def blocks(self, todo: list[int]) -> None:
        """Simulate and store each block in order, until done or the operator says stop."""
        uid, shard, counters = self.settings.job_uid, self.settings.shard_index, self.counters
        for block in todo:
            limit = await self.bus.stop_requested(uid)
            if limit is not None and block >= limit:
                log.info("the operator needs no block from %d on; stopping", limit)
                counters.state = "stopped"
                break
            await self.block(block)
            await self.bus.publish_progress(uid, shard, counters.report())
        else:
            counters.state = "done"
        await self.bus.publish_progress(uid, shard, counters.report(), final=True)
        log.info(
            "shard %d %s: %d of %d blocks stored, %d paths",
            shard,
            counters.state,
            counters.blocks_done,
            counters.blocks_total,
            counters.paths_done,
        )

    async def block(self, block: int) -> None:
        stats = await _simulate(self.spec, block, self.terminated)
        store = functools.partial(
            results_db.insert_block,
            self.db,
            self.settings.job_uid,
            self.digest,
            block,
            stats.to_json(),
            self.settings.shard_index,
        )
        if not await self.retry(f"store block {block}", store):
            log.info("block %d was already stored by another attempt", block)
        self.counters.blocks_done += 1
        self.counters.paths_done += stats.paths


async def _open_pool(settings: WorkerSettings) -> PgPool:
    # A worker uses one connection at a time: it opens them on demand (like SQLAlchemy's
    # QueuePool) within the PerfTuning's limits instead of holding poolSize of them.
    pool = await PgPool.open(
        settings.postgres_dsn,
        settings.postgres,
        application_name="mcop-worker",
        eager=False,
        connect_timeout=min(10.0, settings.postgres.command_timeout_seconds),
    )
    try:
        await pool.fetchval("SELECT 1")  # lazy pools connect on first use: check now
    except BaseException:
        await pool.close(timeout=1.0)
        raise
    return pool


async def _heartbeat(
    bus: ProgressBus, uid: str, shard: int, counters: _Counters, every: float
) -> None:
    """Publish progress on a clock, so a long block still shows the shard is alive."""
    while True:
        await asyncio.sleep(every)
        await bus.publish_progress(uid, shard, counters.report())


async def _simulate(spec: JobSpec, block: int, terminated: asyncio.Event) -> BlockStats:
    """Run one block in a daemon thread (the event loop keeps heartbeating); on SIGTERM the
    block is abandoned, and the thread cannot keep the process alive."""
    if terminated.is_set():
        raise Terminated
    loop = asyncio.get_running_loop()
    future: asyncio.Future[BlockStats] = loop.create_future()

    def target() -> None:
        try:
            result = simulate_block(spec, block)
        except BaseException as error:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(_settle, future, None, error)
        else:
            loop.call_soon_threadsafe(_settle, future, result, None)

    threading.Thread(target=target, name=f"block-{block}", daemon=True).start()
    stop: asyncio.Future[bool] = asyncio.ensure_future(terminated.wait())
    try:
        waiters: list[asyncio.Future[Any]] = [future, stop]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if not future.done():
        raise Terminated
    return future.result()


def _settle(
    future: asyncio.Future[BlockStats], result: BlockStats | None, error: BaseException | None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    elif result is not None:
        future.set_result(result)


async def _with_db_retries(
    what: str, attempt: Callable[[], Awaitable[T]], terminated: asyncio.Event, budget: float
) -> T:
    """Retry a PostgreSQL step through connection errors for `budget` seconds
    (MCOP_DB_RETRY_SECONDS) with exponential backoff, then raise DatabaseUnavailable: the pod
    fails and the Job retries it; the retried pod skips every block already stored."""
    deadline = time.monotonic() + budget
    delay = 0.5
    attempts = 0
    while True:
        if terminated.is_set():
            raise Terminated
        attempts += 1
        try:
            return await attempt()
        except CONNECTION_ERRORS as error:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DatabaseUnavailable(
                    f"PostgreSQL unreachable ({what}) after {attempts} attempts over "
                    f"{budget:.0f} s: {type(error).__name__}: {error}"
                ) from None
            log.warning(
                "PostgreSQL unavailable during %s (%s); retrying in %.1f s",
                what,
                type(error).__name__,
                min(delay, remaining),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(terminated.wait(), min(delay, remaining))
            delay = min(delay * 2, 8.0)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
