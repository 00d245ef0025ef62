"""Seed scale-out end to end, against the real operator, control plane and servers: Redis Cluster
(PerfTuning spec.redis.mode: cluster) with a primary failing over mid-job, and a PostgreSQL
streaming replica (spec.postgres.readReplicaDsnSecretRef) that takes the reads, then lags and goes
away while the primary takes them back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import redis

from mcop_devcluster.services import PostgresReplica, PostgresServer, RedisClusterServer
from mcop_operator.storage.redis_bus import result_key
from mcop_worker.storage.progress_bus import progress_key
from operator_harness import JobsHarness, job_manifest, mcop_run_json, secret_manifest, wait_for
from test_operator_jobs import EUROPEAN, LONG_ASIAN, NUMBER_KEYS, spec
from test_operator_tuning import tuning, wait_tuning_named

FINISH = 300.0  # seconds: worker start-up (numba) is slow on a loaded machine


def _cluster_client(cluster: RedisClusterServer) -> Any:
    return redis.RedisCluster.from_url(cluster.url, decode_responses=True)


def test_a_job_on_a_redis_cluster_survives_a_primary_failing_over(
    jobs: JobsHarness, redis_cluster: RedisClusterServer, redis_cluster_url: str, tmp_path: Path
) -> None:
    jobs.apply(secret_manifest(jobs.namespace, "redis-cluster", "url", redis_cluster_url))
    jobs.apply(
        tuning(
            "cluster",
            redis={"mode": "cluster", "urlSecretRef": {"name": "redis-cluster", "key": "url"}},
            workers={"heartbeatIntervalSeconds": 1},
            metrics={"intervalSeconds": 1},
        )
    )
    wait_tuning_named(jobs, "cluster", lambda s: s.get("phase") == "Ready", "PerfTuning Ready")
    s = spec(LONG_ASIAN, paths=4_000_000, shards=2, tuningRef="cluster")
    jobs.create_job("clustered", s)
    uid = jobs.job("clustered")["metadata"]["uid"]
    client = _cluster_client(redis_cluster)
    try:
        # The workers' progress lives in the cluster, under the job's hash tag.
        wait_for(
            lambda: len(client.hgetall(progress_key(uid))) > 0 and jobs.status("clustered"),
            timeout=FINISH,
            what="progress in the cluster",
        )
        before = jobs.status("clustered").get("pathsDone", 0)
        old, new = redis_cluster.failover(progress_key(uid))
        assert old.port != new.port
        # Progress keeps flowing through the new primary.
        wait_for(
            lambda: (
                jobs.status("clustered").get("pathsDone", 0) > before
                or jobs.status("clustered").get("phase") == "Succeeded"
            ),
            timeout=FINISH,
            what="progress after the failover",
        )
        final = jobs.wait_phase("clustered", "Succeeded", "Failed", timeout=FINISH)
        assert final["phase"] == "Succeeded", final
        # The result cache is in the cluster too.
        assert client.get(result_key(final["specHash"])) is not None
    finally:
        client.close()
    expected = mcop_run_json(job_manifest("clustered", s), tmp_path)
    for key in NUMBER_KEYS:
        assert final["result"][key] == expected[key], key


# --- PostgreSQL read replica -------------------------------------------------------------------

BLOCK_READ = "AS stats FROM block_results"  # jobs_db.blocks_since: the operator's progress reads
CACHE_READ = "FROM jobs WHERE spec_hash"  # jobs_db.result_for_spec_hash: the cache look-up
WRITES = ("INSERT INTO block_results", "INSERT INTO jobs", "UPDATE jobs")


def _sql(dsn: str, query: str, *args: Any) -> list[Any]:
    async def go() -> list[Any]:
        con = await asyncpg.connect(dsn, timeout=10)
        try:
            return list(await con.fetch(query, *args))
        finally:
            await con.close()

    return asyncio.run(go())


def _statements(dsn: str) -> dict[str, int]:
    """pg_stat_statements of this database on this server: statement text -> calls."""
    rows = _sql(
        dsn,
        """SELECT query, calls FROM pg_stat_statements
           WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())""",
    )
    return {row["query"]: int(row["calls"]) for row in rows}


def _calls(statements: dict[str, int], fragment: str) -> int:
    return sum(calls for query, calls in statements.items() if fragment in query)


def _replicated_extension(dsn: str) -> bool:
    rows = _sql(dsn, "SELECT count(*) AS n FROM pg_extension WHERE extname = 'pg_stat_statements'")
    return bool(rows[0]["n"])


def _sessions(dsn: str) -> dict[str, int]:
    rows = _sql(
        dsn,
        """SELECT application_name, count(*) AS n FROM pg_stat_activity
           WHERE datname = current_database() GROUP BY application_name""",
    )
    return {row["application_name"]: int(row["n"]) for row in rows}


def _replica_condition(jobs: JobsHarness, name: str) -> dict[str, Any]:
    status = (jobs.get("perftuning", name) or {}).get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == "ReadReplica"), {})


def _wait_replica(jobs: JobsHarness, name: str, reason: str, timeout: float = 90) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: (c := _replica_condition(jobs, name)).get("reason") == reason and c,
            timeout=timeout,
            what=f"ReadReplica {reason}",
        )
    )


def test_reads_go_to_the_replica_writes_to_the_primary_and_a_lagging_or_down_replica_is_left(
    jobs: JobsHarness,
    pg_dsn: str,
    postgres_server: PostgresServer,
    postgres_replica: PostgresReplica,
    tmp_path: Path,
) -> None:
    database = urlsplit(pg_dsn).path.lstrip("/")
    replica_dsn = postgres_replica.dsn_for(database)
    _sql(pg_dsn, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")  # replicated to the replica
    jobs.apply(secret_manifest(jobs.namespace, "pg-replica", "dsn", replica_dsn))
    jobs.apply(
        tuning(
            "replicated",
            postgres={
                "readReplicaDsnSecretRef": {"name": "pg-replica", "key": "dsn"},
                "maxReplicaLagSeconds": 2,
            },
            metrics={"intervalSeconds": 1},
        )
    )
    _wait_replica(jobs, "replicated", "Replicating")
    wait_for(
        lambda: _replicated_extension(replica_dsn), timeout=30, what="the extension on the replica"
    )

    # 1. A job: progress reads and the cache look-up go to the replica, writes to the primary.
    first = spec(EUROPEAN, paths=200_000, seed=11, tuningRef="replicated")
    jobs.create_job("replicated", first)
    final = jobs.wait_phase("replicated", "Succeeded", "Failed", timeout=FINISH)
    assert final["phase"] == "Succeeded", final
    on_primary, on_replica = _statements(pg_dsn), _statements(replica_dsn)
    print("\nstatement calls (primary / replica):")
    for fragment in (BLOCK_READ, CACHE_READ, *WRITES):
        print(f"  {fragment!r}: {_calls(on_primary, fragment)} / {_calls(on_replica, fragment)}")
    print("sessions on the primary:", _sessions(pg_dsn))
    print("sessions on the replica:", _sessions(replica_dsn))
    assert _calls(on_replica, BLOCK_READ) > 0, on_replica
    assert _calls(on_replica, CACHE_READ) > 0, on_replica
    assert _calls(on_primary, BLOCK_READ) == 0, "progress reads stay off"
    assert _calls(on_primary, CACHE_READ) == 0, "cache look-ups stay off the primary"
    for fragment in WRITES:
        assert _calls(on_primary, fragment) > 0, fragment
        assert _calls(on_replica, fragment) == 0, fragment  # a hot standby refuses them anyway
    assert "mcop-operator-reads" in _sessions(replica_dsn)
    assert "mcop-operator-reads" not in _sessions(pg_dsn)
    expected = mcop_run_json(job_manifest("replicated", first), tmp_path)
    for key in NUMBER_KEYS:
        assert final["result"][key] == expected[key], key

    # 2. Replay paused while the primary writes: the replica lags, reads leave it.
    postgres_replica.pause_replay()
    try:
        _sql(pg_dsn, "CREATE TABLE lag_probe (at timestamptz)")
        wait_for(
            lambda: (
                _sql(pg_dsn, "INSERT INTO lag_probe VALUES (now())") is not None
                and _replica_condition(jobs, "replicated").get("reason") == "ReplicaLagging"
            ),
            timeout=90,
            interval=0.5,
            what="ReadReplica ReplicaLagging",
        )
        lagging = _replica_condition(jobs, "replicated")
        assert lagging["status"] == "False" and "behind the primary" in lagging["message"]
        assert (jobs.get("perftuning", "replicated") or {})["status"]["phase"] == "Ready"
    finally:
        postgres_replica.resume_replay()
    _wait_replica(jobs, "replicated", "Replicating")

    # 3. The replica down mid-job: the primary serves the reads, nothing is lost.
    second = spec(EUROPEAN, paths=200_000, seed=12, tuningRef="replicated")
    try:
        postgres_replica.stop()
        jobs.create_job("unreplicated", second)
        down = _wait_replica(jobs, "replicated", "ReplicaUnavailable")
        assert "reads go to the primary" in down["message"]
        assert postgres_replica.password not in down["message"]
        final = jobs.wait_phase("unreplicated", "Succeeded", "Failed", timeout=FINISH)
    finally:
        postgres_replica.start()
    assert final["phase"] == "Succeeded", final
    expected = mcop_run_json(job_manifest("unreplicated", second), tmp_path)
    for key in NUMBER_KEYS:
        assert final["result"][key] == expected[key], key
    _wait_replica(jobs, "replicated", "Replicating")


def test_a_missing_replica_secret_is_named_and_reads_stay_on_the_primary(
    jobs: JobsHarness,
) -> None:
    jobs.apply(
        tuning(
            "nosecret",
            postgres={"readReplicaDsnSecretRef": {"name": "absent-replica", "key": "dsn"}},
            metrics={"intervalSeconds": 1},
        )
    )
    condition = _wait_replica(jobs, "nosecret", "SecretNotFound")
    assert condition["status"] == "False"
    assert "absent-replica" in condition["message"]
    assert "readReplicaDsnSecretRef" in condition["message"]
    status = wait_tuning_named(jobs, "nosecret", lambda s: s.get("phase"), "a phase")
    assert status["phase"] == "Ready", status  # the primary serves: degraded it is not
