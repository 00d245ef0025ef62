"""The results database against a real PostgreSQL: schema, blocks, jobs, indexes and metrics."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from mcop_operator.storage import db_metrics, jobs_db
from mcop_worker.storage import results_db
from mcop_worker.storage.pool import PgPool
from mcop_worker.storage.settings import PgPoolSettings

pytestmark = pytest.mark.services
T = TypeVar("T")
SMALL = PgPoolSettings(pool_size=1, max_overflow=4)


def with_db(dsn: str, body: Callable[[PgPool], Awaitable[T]], *, migrated: bool = True) -> T:
    async def scenario() -> T:
        pool = await PgPool.open(dsn, SMALL)
        try:
            if migrated:
                await results_db.migrate(pool)
            return await body(pool)
        finally:
            await pool.close()

    return asyncio.run(scenario())


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def _poll(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


def test_migrations_apply_once_and_are_idempotent(pg_dsn: str) -> None:
    async def body(pool: PgPool) -> tuple[int, list[int], list[int], int, set[str]]:
        before = await results_db.schema_version(pool)
        first = await results_db.migrate(pool)
        second = await results_db.migrate(pool)
        rows = await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return (
            before,
            first,
            second,
            await results_db.schema_version(pool),
            {r["tablename"] for r in rows},
        )

    before, first, second, version, tables = with_db(pg_dsn, body, migrated=False)
    newest = results_db.MIGRATIONS[-1][0]
    assert before == 0
    assert first == [v for v, _, _ in results_db.MIGRATIONS]
    assert second == []
    assert version == newest
    assert {"users", "jobs", "block_results", "schema_migrations"} <= tables


def test_concurrent_migrations_apply_each_version_exactly_once(pg_dsn: str) -> None:
    async def scenario() -> tuple[list[list[int]], int]:
        pools = [await PgPool.open(pg_dsn, PgPoolSettings(pool_size=1, max_overflow=0))]
        pools += await asyncio.gather(
            *(PgPool.open(pg_dsn, PgPoolSettings(pool_size=1, max_overflow=0)) for _ in range(7))
        )
        try:
            outcomes = await asyncio.gather(*(results_db.migrate(p) for p in pools))
            count = await pools[0].fetchval("SELECT count(*) FROM schema_migrations")
            return list(outcomes), int(count)
        finally:
            await asyncio.gather(*(p.close() for p in pools))

    outcomes, count = run(scenario())
    all_versions = [v for v, _, _ in results_db.MIGRATIONS]
    assert sorted(outcomes) == [[]] * 7 + [all_versions], "one runner applied, seven found it done"
    assert count == len(all_versions)


def test_insert_block_is_idempotent(pg_dsn: str) -> None:
    async def body(pool: PgPool) -> tuple[bool, bool, int, set[int], str]:
        stats = json.dumps({"count": 10, "mean": 1.25})
        first = await results_db.insert_block(pool, "uid-1", "sha256:a", 3, stats, shard=0)
        again = await results_db.insert_block(pool, "uid-1", "sha256:a", 3, stats, shard=1)
        rows = await pool.fetchval("SELECT count(*) FROM block_results")
        shard = await pool.fetchval("SELECT shard FROM block_results")
        done = await results_db.done_blocks(pool, "uid-1", "sha256:a")
        return first, again, int(rows), done, str(shard)

    first, again, rows, done, shard = with_db(pg_dsn, body)
    assert (first, again, rows) == (True, False, 1)
    assert done == {3}
    assert shard == "0", "the first writer's row is kept"


def test_block_statistics_come_back_byte_for_byte(pg_dsn: str) -> None:
    text = '{"v":1,"mean":-0.0,"m2":1.2345678901234567e-300,"count":7,"tail":null}'

    async def body(pool: PgPool) -> str:
        await results_db.insert_block(pool, "u", "h", 0, text, shard=0)
        return (await jobs_db.blocks_since(pool, "u", "h", 0))[0][2]

    assert with_db(pg_dsn, body) == text


def test_blocks_are_keyed_by_job_and_spec_hash(pg_dsn: str) -> None:
    async def body(pool: PgPool) -> tuple[set[int], set[int], set[int], int, set[int]]:
        for uid, spec_hash, index in [
            ("a", "h1", 0),
            ("a", "h1", 1),
            ("a", "h2", 0),
            ("b", "h1", 5),
        ]:
            await results_db.insert_block(pool, uid, spec_hash, index, "{}", shard=0)
        a1 = await results_db.done_blocks(pool, "a", "h1")
        a2 = await results_db.done_blocks(pool, "a", "h2")
        b1 = await results_db.done_blocks(pool, "b", "h1")
        deleted = await jobs_db.delete_job_blocks(pool, "a")
        return a1, a2, b1, deleted, await results_db.done_blocks(pool, "b", "h1")

    a1, a2, b1, deleted, b_after = with_db(pg_dsn, body)
    assert (a1, a2, b1) == ({0, 1}, {0}, {5})
    assert deleted == 3
    assert b_after == {5}, "deleting one job's blocks leaves other jobs alone"


def test_blocks_since_reads_incrementally(pg_dsn: str) -> None:
    async def body(pool: PgPool) -> tuple[list[int], list[int], list[int], str]:
        for b in (2, 0, 1):
            await results_db.insert_block(pool, "u", "h", b, json.dumps({"b": b}), shard=b % 2)
        first = await jobs_db.blocks_since(pool, "u", "h", 0)
        cursor = first[-1][0]
        await results_db.insert_block(pool, "u", "h", 1, "{}", shard=1)  # a retry: no new row
        await results_db.insert_block(pool, "u", "h", 3, json.dumps({"b": 3}), shard=1)
        second = await jobs_db.blocks_since(pool, "u", "h", cursor)
        third = await jobs_db.blocks_since(pool, "u", "h", second[-1][0])
        return (
            [b for _, b, _ in first],
            [b for _, b, _ in second],
            [b for _, b, _ in third],
            (second[0][2]),
        )

    first, second, third, stats = with_db(pg_dsn, body)
    assert first == [2, 0, 1], "in commit order"
    assert second == [3]
    assert third == []
    assert json.loads(stats) == {"b": 3}


def test_incremental_reads_never_miss_a_block_under_concurrent_writers(pg_dsn: str) -> None:
    """Four writers insert 400 blocks at random while a reader follows with blocks_since: the
    reader ends with every block exactly once (the per-job lock keeps seq in commit order)."""

    async def scenario() -> tuple[list[int], int]:
        pool = await PgPool.open(pg_dsn, PgPoolSettings(pool_size=6, max_overflow=0))
        try:
            await results_db.migrate(pool)
            blocks = list(range(400))
            random.Random(7).shuffle(blocks)

            async def writer(mine: list[int]) -> None:
                for b in mine:
                    await results_db.insert_block(pool, "u", "h", b, "{}", shard=b % 4)

            writers = asyncio.gather(*(writer(blocks[i::4]) for i in range(4)))
            seen: list[int] = []
            cursor, reads = 0, 0
            while True:
                finished = writers.done()
                rows = await jobs_db.blocks_since(pool, "u", "h", cursor)
                reads += 1
                if rows:
                    cursor = rows[-1][0]
                    seen.extend(b for _, b, _ in rows)
                if finished and not rows:
                    break
                await asyncio.sleep(0)
            await writers
            return seen, reads
        finally:
            await pool.close()

    seen, reads = run(scenario())
    assert sorted(seen) == list(range(400)), "every block once, none missed, none repeated"
    assert reads > 2, "the reader really read while the writers wrote"


def test_jobs_and_results(pg_dsn: str) -> None:
    async def body(pool: PgPool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        spec = {"paths": 1000, "seed": 1}
        await jobs_db.upsert_job(
            pool, uid="u1", namespace="ns", name="j", status="Running", spec_hash="h", spec=spec
        )
        out["none_yet"] = await jobs_db.get_result(pool, "u1")
        result = {"estimate": 10.450583572185565, "stdErr": 0.01, "paths": 1000}
        await jobs_db.store_result(pool, "u1", result)
        out["result"] = await jobs_db.get_result(pool, "u1")
        out["by_hash"] = await jobs_db.result_for_spec_hash(pool, "h")
        out["other_hash"] = await jobs_db.result_for_spec_hash(pool, "other")
        row = await pool.fetchrow("SELECT status, completed_at, spec FROM jobs")
        assert row is not None
        out["row"] = (row["status"], row["completed_at"] is not None)
        out["spec"] = json.loads(row["spec"])
        # An update keeps the row (uid unique).
        await jobs_db.upsert_job(
            pool, uid="u1", namespace="ns", name="j", status="Succeeded", spec_hash="h", spec=spec
        )
        out["rows"] = await pool.fetchval("SELECT count(*) FROM jobs")
        with pytest.raises(LookupError, match="upsert_job"):
            await jobs_db.store_result(pool, "missing", result)
        return out

    out = with_db(pg_dsn, body)
    assert out["none_yet"] is None
    assert out["result"] == {"estimate": 10.450583572185565, "stdErr": 0.01, "paths": 1000}
    assert out["by_hash"] == out["result"]
    assert out["other_hash"] is None
    assert out["row"] == ("Succeeded", True)
    assert out["spec"] == {"paths": 1000, "seed": 1}
    assert out["rows"] == 1


def test_recommended_indexes_are_created_and_unused_ones_reported(pg_dsn: str) -> None:
    async def body(pool: PgPool) -> dict[str, Any]:
        out: dict[str, Any] = {"created": await jobs_db.ensure_indexes(pool)}
        out["again"] = await jobs_db.ensure_indexes(pool)
        await jobs_db.upsert_job(
            pool, uid="u", namespace="n", name="j", status="Running", spec_hash="h", spec={}
        )
        # Tiny tables are scanned sequentially; forbid that so the planner uses ix_jobs_status.
        async with pool.acquire() as con, con.transaction():
            await con.execute("SET LOCAL enable_seqscan = off")
            plan = await con.fetchval(
                "EXPLAIN (FORMAT JSON) SELECT id FROM jobs WHERE status = 'Running'"
            )
            out["plan_uses_index"] = "ix_jobs_status" in plan
            await con.fetch("SELECT id FROM jobs WHERE status = 'Running'")

        async def status_index_counted() -> bool:
            usage = await db_metrics.index_usage(pool)
            out["usage"] = usage
            return any(i.name == "ix_jobs_status" and i.scans > 0 for i in usage.indexes)

        out["counted"] = await _poll(status_index_counted)
        return out

    out = with_db(pg_dsn, body)
    assert sorted(out["created"]) == sorted(jobs_db.RECOMMENDED_INDEXES)
    assert out["again"] == []
    assert out["plan_uses_index"]
    assert out["counted"], "the scan of ix_jobs_status shows in pg_stat_user_indexes"
    usage: db_metrics.IndexUsage = out["usage"]
    names = {i.name for i in usage.indexes}
    assert set(jobs_db.RECOMMENDED_INDEXES) <= names
    assert "ix_users_email" in usage.unused
    assert "ix_jobs_status" not in usage.unused
    assert "jobs_pkey" not in usage.unused, "constraint indexes are needed even when unscanned"


def test_table_sizes_and_active_connections(pg_dsn: str) -> None:
    async def body(pool: PgPool) -> tuple[dict[str, int], int]:
        await results_db.insert_block(pool, "u", "h", 0, json.dumps({"x": "y" * 5000}), shard=0)
        return await db_metrics.table_sizes(pool), await db_metrics.active_connections(pool)

    sizes, active = with_db(pg_dsn, body)
    assert {"users", "jobs", "block_results", "schema_migrations"} <= set(sizes)
    assert sizes["block_results"] > sizes["users"] > 0
    assert active >= 1


def test_slow_queries_say_plainly_when_pg_stat_statements_is_missing(pg_dsn: str) -> None:
    slow = with_db(pg_dsn, lambda pool: db_metrics.slow_queries(pool, 100))
    assert not slow.available
    assert "pg_stat_statements is not installed" in slow.reason
    assert slow.queries == []


def test_slow_queries_come_from_pg_stat_statements(pg_dsn: str) -> None:
    async def body(
        pool: PgPool,
    ) -> tuple[str | None, db_metrics.SlowQueries, db_metrics.SlowQueries]:
        problem = await db_metrics.enable_pg_stat_statements(pool)
        await pool.execute("SELECT pg_sleep(0.25)")
        await pool.execute("SELECT 1")
        return (
            problem,
            await db_metrics.slow_queries(pool, threshold_ms=100),
            await db_metrics.slow_queries(pool, threshold_ms=10_000),
        )

    problem, slow, none_that_slow = with_db(pg_dsn, body)
    assert problem is None, f"the test server preloads pg_stat_statements: {problem}"
    assert slow.available and slow.reason == ""
    sleepy = [q for q in slow.queries if "pg_sleep" in q.query]
    assert sleepy and sleepy[0].mean_ms >= 200
    assert all(q.mean_ms > 100 for q in slow.queries)
    assert not any(q.query.strip() == "SELECT 1" for q in slow.queries)
    assert none_that_slow.available and none_that_slow.queries == []
