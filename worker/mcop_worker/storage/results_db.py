"""The results database's schema (versioned migrations) and the block store workers write to; the
operator's reads and writes of jobs and results are `mcop_operator.storage.jobs_db`. PostgreSQL is
the source of truth for finished work.

Tables (migration 1):
- ``users``          who submitted jobs (optional link from ``jobs.user_id``).
- ``jobs``           one row per MonteCarloJob (by UID): status, spec and spec hash, final result.
- ``block_results``  one row per finished block: the block's sufficient statistics (JSON), keyed by
                     (job_uid, spec_hash, block_index) so that a retried shard never counts twice;
                     ``seq`` orders rows by commit for the operator's incremental reads.

Why ``stats`` is ``json`` and not ``jsonb``: jsonb re-encodes numbers as ``numeric``, which has no
negative zero, so a -0.0 in a block's statistics would come back as 0.0 and the merged numbers
could differ in a bit from `mcop run`'s. ``json`` stores the engine's text verbatim (still valid,
queryable JSON), so a record read back is the record written.

Why inserts take a per-job lock: ``seq`` comes from a sequence, and two concurrent inserts may
commit in the opposite order of their ``seq``. A reader that saw 105 would then never see 104 with
``seq > 105``. Holding a transaction-scoped advisory lock on the job while the row gets its
``seq`` makes commit order equal ``seq`` order within a job, so ``blocks_since(after_seq)`` never
misses a block.
"""

from __future__ import annotations

from typing import Final

from mcop_worker.storage.pool import PgPool

# Advisory lock classes (two-key form), so our locks never collide with each other's keys.
LOCK_MIGRATIONS: Final = 0x6D636F70  # "mcop"
LOCK_JOB_BLOCKS: Final = 0x6D636F71

MIGRATIONS: Final[tuple[tuple[int, str, str], ...]] = (
    (
        1,
        "users, jobs and block_results",
        """
        CREATE TABLE users (
            id          bigserial PRIMARY KEY,
            email       text NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE jobs (
            id            bigserial PRIMARY KEY,
            uid           text NOT NULL UNIQUE,
            namespace     text NOT NULL,
            name          text NOT NULL,
            user_id       bigint REFERENCES users (id) ON DELETE SET NULL,
            status        text NOT NULL,
            spec_hash     text NOT NULL,
            spec          jsonb NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT now(),
            updated_at    timestamptz NOT NULL DEFAULT now(),
            completed_at  timestamptz,
            result        jsonb
        );
        CREATE TABLE block_results (
            job_uid      text NOT NULL,
            spec_hash    text NOT NULL,
            block_index  integer NOT NULL CHECK (block_index >= 0),
            stats        json NOT NULL,  -- json, not jsonb: kept byte for byte (see above)
            shard        integer NOT NULL,
            seq          bigserial NOT NULL,
            created_at   timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (job_uid, spec_hash, block_index)
        );
        -- blocks_since(): the operator's incremental read of a job's new blocks.
        CREATE INDEX block_results_job_seq ON block_results (job_uid, spec_hash, seq);
        -- result_for_spec_hash(): the database's answer when the Redis cache has none.
        CREATE INDEX jobs_spec_hash_completed ON jobs (spec_hash, completed_at)
            WHERE result IS NOT NULL;
        """,
    ),
    (
        2,
        "leader epoch of the jobs row",
        """
        -- The epoch (the Lease's leaseTransitions) of the operator replica that last wrote the
        -- row: a replica that lost its Lease and writes late has a smaller one and is refused.
        ALTER TABLE jobs ADD COLUMN leader_epoch bigint NOT NULL DEFAULT 0;
        """,
    ),
)

# --- schema ------------------------------------------------------------------------------------


async def migrate(pool: PgPool) -> list[int]:
    """Bring the schema to the newest version; returns the versions applied now (often none).

    Idempotent and safe when many workers and the operator run it at once: everything happens in
    one transaction holding an advisory lock, so one runner applies and the others find it done.
    """
    applied_now: list[int] = []
    async with pool.acquire() as con, con.transaction():
        await con.execute("SELECT pg_advisory_xact_lock($1, 0)", LOCK_MIGRATIONS)
        await con.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version     integer PRIMARY KEY,
                   name        text NOT NULL,
                   applied_at  timestamptz NOT NULL DEFAULT now()
               )"""
        )
        done = {row["version"] for row in await con.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in MIGRATIONS:
            if version in done:
                continue
            await con.execute(sql)
            await con.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
            )
            applied_now.append(version)
    return applied_now


async def schema_version(pool: PgPool) -> int:
    """The newest applied migration, 0 for an empty database."""
    exists = await pool.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await pool.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


# --- blocks ------------------------------------------------------------------------------------


async def insert_block(
    pool: PgPool, job_uid: str, spec_hash: str, block_index: int, stats_json: str, shard: int
) -> bool:
    """Store one finished block; False when it was already stored (a retried shard)."""
    status = await pool.execute(
        """WITH job_lock AS (SELECT pg_advisory_xact_lock($6, hashtext($1)))
           INSERT INTO block_results (job_uid, spec_hash, block_index, stats, shard)
           SELECT $1, $2, $3, $4::json, $5 FROM job_lock
           ON CONFLICT (job_uid, spec_hash, block_index) DO NOTHING""",
        job_uid,
        spec_hash,
        block_index,
        stats_json,
        shard,
        LOCK_JOB_BLOCKS,
    )
    return status == "INSERT 0 1"


async def done_blocks(pool: PgPool, job_uid: str, spec_hash: str) -> set[int]:
    """The indexes of the blocks already stored for this job and spec."""
    rows = await pool.fetch(
        "SELECT block_index FROM block_results WHERE job_uid = $1 AND spec_hash = $2",
        job_uid,
        spec_hash,
    )
    return {row["block_index"] for row in rows}
