"""What PostgreSQL says about itself, for the PerfTuning status: index use, table sizes, slow
queries and connections. Read-only; everything is scoped to the current database and schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from mcop_worker.storage.pool import PgPool


@dataclass(frozen=True)
class IndexStat:
    name: str
    table: str
    scans: int  # pg_stat_user_indexes.idx_scan: how often the planner used it
    size_bytes: int
    enforces_constraint: bool  # primary key or unique: needed even when never scanned


@dataclass(frozen=True)
class IndexUsage:
    indexes: list[IndexStat]
    unused: list[str]  # never scanned and not enforcing a constraint: candidates to drop


@dataclass(frozen=True)
class SlowQuery:
    query: str
    calls: int
    mean_ms: float
    max_ms: float
    total_ms: float

    def to_status(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "calls": self.calls,
            "meanMs": round(self.mean_ms, 3),
            "maxMs": round(self.max_ms, 3),
            "totalMs": round(self.total_ms, 3),
        }


@dataclass(frozen=True)
class SlowQueries:
    available: bool
    reason: str  # why not, when not available; "" otherwise
    threshold_ms: float
    queries: list[SlowQuery] = field(default_factory=list)


def _safe_query_text(query: str) -> str:
    # pg_stat_statements keeps utility statements verbatim: ALTER ROLE ... PASSWORD '...' included.
    if "password" in query.lower():
        return "<statement hidden: it mentions a password>"
    return query


async def index_usage(pool: PgPool) -> IndexUsage:
    """Every index of the current schema with its scan count; the never-used ones listed apart.

    Counts come from PostgreSQL's cumulative statistics, which a backend flushes about once a
    second, so a scan shows up shortly after the query that made it.
    """
    rows = await pool.fetch(
        """SELECT s.indexrelname AS name, s.relname AS tbl, s.idx_scan AS scans,
                  pg_relation_size(s.indexrelid) AS size,
                  (i.indisprimary OR i.indisunique) AS enforces
           FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
           WHERE s.schemaname = current_schema()
           ORDER BY s.relname, s.indexrelname"""
    )
    stats = [
        IndexStat(
            name=row["name"],
            table=row["tbl"],
            scans=int(row["scans"] or 0),
            size_bytes=int(row["size"]),
            enforces_constraint=bool(row["enforces"]),
        )
        for row in rows
    ]
    unused = [s.name for s in stats if s.scans == 0 and not s.enforces_constraint]
    return IndexUsage(indexes=stats, unused=unused)


async def table_sizes(pool: PgPool) -> dict[str, int]:
    """Bytes on disk of each table of the current schema, indexes and TOAST included."""
    rows = await pool.fetch(
        """SELECT c.relname AS name, pg_total_relation_size(c.oid) AS size
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
           ORDER BY c.relname"""
    )
    return {row["name"]: int(row["size"]) for row in rows}


async def active_connections(pool: PgPool) -> int:
    """Server-side sessions on the current database (all clients, not only this pool)."""
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        )
    )


async def enable_pg_stat_statements(pool: PgPool) -> str | None:
    """Try to install pg_stat_statements in this database; None on success, else why not."""
    try:
        await pool.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await pool.fetchval("SELECT count(*) FROM pg_stat_statements")
    except asyncpg.PostgresError as error:
        return f"{type(error).__name__}: {error}"
    return None


async def slow_queries(pool: PgPool, threshold_ms: float, limit: int = 10) -> SlowQueries:
    """Statements of this database whose mean time exceeds `threshold_ms`, slowest first, from
    pg_stat_statements; says plainly why not when the extension is not there."""
    installed = await pool.fetchval(
        "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"
    )
    if not installed:
        return SlowQueries(
            available=False,
            reason=(
                "pg_stat_statements is not installed in this database "
                "(CREATE EXTENSION pg_stat_statements; the server also needs "
                "shared_preload_libraries = 'pg_stat_statements')"
            ),
            threshold_ms=threshold_ms,
        )
    try:
        rows = await pool.fetch(
            """SELECT query, calls, mean_exec_time, max_exec_time, total_exec_time
               FROM pg_stat_statements
               WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                 AND mean_exec_time > $1
               ORDER BY mean_exec_time DESC LIMIT $2""",
            float(threshold_ms),
            limit,
        )
    except asyncpg.ObjectNotInPrerequisiteStateError:
        return SlowQueries(
            available=False,
            reason=(
                "pg_stat_statements is installed but not loaded "
                "(the server needs shared_preload_libraries = 'pg_stat_statements')"
            ),
            threshold_ms=threshold_ms,
        )
    except asyncpg.InsufficientPrivilegeError as error:
        return SlowQueries(
            available=False,
            reason=f"not allowed to read pg_stat_statements: {error}",
            threshold_ms=threshold_ms,
        )
    return SlowQueries(
        available=True,
        reason="",
        threshold_ms=threshold_ms,
        queries=[
            SlowQuery(
                query=_safe_query_text(row["query"]),
                calls=int(row["calls"]),
                mean_ms=float(row["mean_exec_time"]),
                max_ms=float(row["max_exec_time"]),
                total_ms=float(row["total_exec_time"]),
            )
            for row in rows
        ],
    )
