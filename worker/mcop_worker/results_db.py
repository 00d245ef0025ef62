"""The results database: versioned schema, the recommended indexes, and the operations workers and
the operator run on it. PostgreSQL is the source of truth for finished work.

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

import json
from collections.abc import Mapping
from typing import Any, Final

from mcop_worker.pool import PgPool

# Advisory lock classes (two-key form), so our locks never collide with each other's keys.
_LOCK_MIGRATIONS: Final = 0x6D636F70  # "mcop"
_LOCK_JOB_BLOCKS: Final = 0x6D636F71

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
)

# PerfTuning `ensureIndexes`: the performance guide's recommended indexes, by predictable name.
RECOMMENDED_INDEXES: Final[Mapping[str, str]] = {
    "ix_jobs_status": "jobs (status)",
    "ix_jobs_created_at": "jobs (created_at)",
    "ix_jobs_user_id": "jobs (user_id)",
    "ix_users_email": "users (email)",
}


# --- schema ------------------------------------------------------------------------------------


async def migrate(pool: PgPool) -> list[int]:
    """Bring the schema to the newest version; returns the versions applied now (often none).

    Idempotent and safe when many workers and the operator run it at once: everything happens in
    one transaction holding an advisory lock, so one runner applies and the others find it done.
    """
    applied_now: list[int] = []
    async with pool.acquire() as con, con.transaction():
        await con.execute("SELECT pg_advisory_xact_lock($1, 0)", _LOCK_MIGRATIONS)
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


async def ensure_indexes(pool: PgPool) -> list[str]:
    """Create the recommended indexes that are missing; returns the names created now."""
    created: list[str] = []
    async with pool.acquire() as con, con.transaction():
        await con.execute("SELECT pg_advisory_xact_lock($1, 1)", _LOCK_MIGRATIONS)
        for name, target in RECOMMENDED_INDEXES.items():
            if await con.fetchval("SELECT to_regclass($1) IS NULL", name):
                await con.execute(f"CREATE INDEX {name} ON {target}")
                created.append(name)
    return created


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
        _LOCK_JOB_BLOCKS,
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


async def blocks_since(
    pool: PgPool, job_uid: str, spec_hash: str, after_seq: int = 0, limit: int | None = None
) -> list[tuple[int, int, str]]:
    """Blocks stored after `after_seq`, as (seq, block_index, stats JSON), oldest first.

    Pass the last seq you received as the next `after_seq`: no block is ever skipped or repeated.
    """
    rows = await pool.fetch(
        """SELECT seq, block_index, stats::text AS stats FROM block_results
           WHERE job_uid = $1 AND spec_hash = $2 AND seq > $3
           ORDER BY seq LIMIT $4""",
        job_uid,
        spec_hash,
        after_seq,
        limit,
    )
    return [(row["seq"], row["block_index"], row["stats"]) for row in rows]


async def delete_job_blocks(pool: PgPool, job_uid: str, spec_hash: str | None = None) -> int:
    """Forget a job's blocks (of every spec hash unless one is given); returns how many."""
    if spec_hash is None:
        status = await pool.execute("DELETE FROM block_results WHERE job_uid = $1", job_uid)
    else:
        status = await pool.execute(
            "DELETE FROM block_results WHERE job_uid = $1 AND spec_hash = $2", job_uid, spec_hash
        )
    return int(status.rsplit(" ", 1)[1])


# --- jobs and results --------------------------------------------------------------------------


async def ensure_user(pool: PgPool, email: str) -> int:
    """The id of the user with this email, created when unknown."""
    async with pool.acquire() as con, con.transaction():
        await con.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_MIGRATIONS, email)
        found = await con.fetchval(
            "SELECT id FROM users WHERE email = $1 ORDER BY id LIMIT 1", email
        )
        if found is not None:
            return int(found)
        return int(await con.fetchval("INSERT INTO users (email) VALUES ($1) RETURNING id", email))


async def upsert_job(
    pool: PgPool,
    *,
    uid: str,
    namespace: str,
    name: str,
    status: str,
    spec_hash: str,
    spec: Mapping[str, Any],
    user_id: int | None = None,
) -> int:
    """Record a job (or update its status, spec and hash); returns its row id."""
    return int(
        await pool.fetchval(
            """INSERT INTO jobs (uid, namespace, name, status, spec_hash, spec, user_id)
               VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)
               ON CONFLICT (uid) DO UPDATE SET
                   namespace = EXCLUDED.namespace, name = EXCLUDED.name,
                   status = EXCLUDED.status, spec_hash = EXCLUDED.spec_hash,
                   spec = EXCLUDED.spec, user_id = coalesce(EXCLUDED.user_id, jobs.user_id),
                   updated_at = now()
               RETURNING id""",
            uid,
            namespace,
            name,
            status,
            spec_hash,
            json.dumps(spec, sort_keys=True),
            user_id,
        )
    )


async def set_job_status(pool: PgPool, uid: str, status: str) -> bool:
    """Change a job's status; False when the job is unknown."""
    result = await pool.execute(
        "UPDATE jobs SET status = $2, updated_at = now() WHERE uid = $1", uid, status
    )
    return result == "UPDATE 1"


async def store_result(
    pool: PgPool, uid: str, result: Mapping[str, Any], *, status: str = "Succeeded"
) -> None:
    """Store a job's final result (and status); raises LookupError when upsert_job never ran."""
    outcome = await pool.execute(
        """UPDATE jobs SET result = $2::jsonb, status = $3, completed_at = now(), updated_at = now()
           WHERE uid = $1""",
        uid,
        json.dumps(result, sort_keys=True),
        status,
    )
    if outcome != "UPDATE 1":
        raise LookupError(f"job {uid} is not in the results database; call upsert_job first")


async def get_result(pool: PgPool, uid: str) -> dict[str, Any] | None:
    """A job's stored result, None when it has none (yet)."""
    raw = await pool.fetchval("SELECT result::text FROM jobs WHERE uid = $1", uid)
    return None if raw is None else dict(json.loads(raw))


async def result_for_spec_hash(pool: PgPool, spec_hash: str) -> dict[str, Any] | None:
    """The newest result of a Succeeded job with this spec hash (the cache's durable fallback)."""
    raw = await pool.fetchval(
        """SELECT result::text FROM jobs WHERE spec_hash = $1 AND result IS NOT NULL
             AND status = 'Succeeded'
           ORDER BY completed_at DESC LIMIT 1""",
        spec_hash,
    )
    return None if raw is None else dict(json.loads(raw))
