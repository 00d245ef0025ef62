"""The operator's side of the results database: the recommended indexes (PerfTuning
`ensureIndexes`), the incremental read of a job's blocks, and the jobs table with final results.
The schema and the block writes workers make are `mcop_worker.storage.results_db`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from mcop_worker.storage.pool import PgPool
from mcop_worker.storage.results_db import LOCK_MIGRATIONS

# PerfTuning `ensureIndexes`: the performance guide's recommended indexes, by predictable name.
RECOMMENDED_INDEXES: Final[Mapping[str, str]] = {
    "ix_jobs_status": "jobs (status)",
    "ix_jobs_created_at": "jobs (created_at)",
    "ix_jobs_user_id": "jobs (user_id)",
    "ix_users_email": "users (email)",
}


async def ensure_indexes(pool: PgPool) -> list[str]:
    """Create the recommended indexes that are missing; returns the names created now."""
    created: list[str] = []
    async with pool.acquire() as con, con.transaction():
        await con.execute("SELECT pg_advisory_xact_lock($1, 1)", LOCK_MIGRATIONS)
        for name, target in RECOMMENDED_INDEXES.items():
            if await con.fetchval("SELECT to_regclass($1) IS NULL", name):
                await con.execute(f"CREATE INDEX {name} ON {target}")
                created.append(name)
    return created


# --- blocks ------------------------------------------------------------------------------------


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


class Fenced(Exception):
    """A newer leader (a larger epoch) wrote the job's row: this replica must stop acting."""


# Epoch 0 is an operator without leader election: not fenced (and it keeps the row's epoch).
_EPOCH_OK = "($7::bigint = 0 OR jobs.leader_epoch <= $7::bigint)"


async def upsert_job(
    pool: PgPool,
    *,
    uid: str,
    namespace: str,
    name: str,
    status: str,
    spec_hash: str,
    spec: Mapping[str, Any],
    epoch: int = 0,
) -> int | None:
    """Record a job (or update its status, spec and hash); returns its row id, or None when the
    row is final (its result is stored) or was written by a newer leader (a larger epoch)."""
    row_id = await pool.fetchval(
        f"""INSERT INTO jobs (uid, namespace, name, status, spec_hash, spec, leader_epoch)
            VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)
            ON CONFLICT (uid) DO UPDATE SET
                namespace = EXCLUDED.namespace, name = EXCLUDED.name,
                status = EXCLUDED.status, spec_hash = EXCLUDED.spec_hash,
                spec = EXCLUDED.spec, updated_at = now(),
                leader_epoch = greatest(jobs.leader_epoch, EXCLUDED.leader_epoch)
            WHERE jobs.result IS NULL AND {_EPOCH_OK}
            RETURNING id""",
        uid,
        namespace,
        name,
        status,
        spec_hash,
        json.dumps(spec, sort_keys=True),
        epoch,
    )
    return None if row_id is None else int(row_id)


async def store_result(
    pool: PgPool, uid: str, result: Mapping[str, Any], *, status: str = "Succeeded", epoch: int = 0
) -> bool:
    """Store a job's final result (and status) once: True when stored now, False when a result
    was already there (its numbers are the same: they depend on the blocks only). Raises
    LookupError when upsert_job never ran, Fenced when a newer leader owns the row."""
    outcome = await pool.execute(
        """UPDATE jobs SET result = $2::jsonb, status = $3, completed_at = now(),
               updated_at = now(), leader_epoch = greatest(jobs.leader_epoch, $4::bigint)
           WHERE uid = $1 AND result IS NULL
             AND ($4::bigint = 0 OR jobs.leader_epoch <= $4::bigint)""",
        uid,
        json.dumps(result, sort_keys=True),
        status,
        epoch,
    )
    if outcome == "UPDATE 1":
        return True
    row = await pool.fetchrow(
        "SELECT leader_epoch, result IS NOT NULL AS stored FROM jobs WHERE uid = $1", uid
    )
    if row is None:
        raise LookupError(f"job {uid} is not in the results database; call upsert_job first")
    if row["stored"]:
        return False
    raise Fenced(f"job {uid} belongs to leader epoch {row['leader_epoch']}, not {epoch}")


async def get_result(pool: PgPool, uid: str) -> dict[str, Any] | None:
    """A job's stored result, None when it has none (yet)."""
    raw = await pool.fetchval("SELECT result::text FROM jobs WHERE uid = $1", uid)
    return None if raw is None else dict(json.loads(raw))


async def result_for_spec_hash(
    pool: PgPool, spec_hash: str, max_age_seconds: float | None = None
) -> dict[str, Any] | None:
    """The newest result of a Succeeded job with this spec hash (the cache's durable fallback),
    completed within `max_age_seconds` when given (the cache's ttlSeconds)."""
    raw = await pool.fetchval(
        """SELECT result::text FROM jobs WHERE spec_hash = $1 AND result IS NOT NULL
             AND status = 'Succeeded'
             AND ($2::float8 IS NULL OR completed_at > now() - make_interval(secs => $2))
           ORDER BY completed_at DESC LIMIT 1""",
        spec_hash,
        max_age_seconds,
    )
    return None if raw is None else dict(json.loads(raw))
