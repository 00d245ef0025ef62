"""PerfTuning end to end: live pool settings, the job queue, heartbeats, health and metrics in
status, against the real operator, control plane, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from operator_harness import UNSCHEDULABLE, JobsHarness, job_manifest, mcop_run_json, wait_for
from test_operator_jobs import LONG_ASIAN, NUMBER_KEYS, spec


def tuning(name: str = "default", **sections: Any) -> dict[str, Any]:
    return {
        "apiVersion": "montecarlo.io/v1alpha1",
        "kind": "PerfTuning",
        "metadata": {"name": name},
        "spec": sections,
    }


def tuning_status(jobs: JobsHarness, name: str = "default") -> dict[str, Any]:
    doc = jobs.get("perftuning", name)
    return dict((doc or {}).get("status") or {})


def wait_tuning(jobs: JobsHarness, check: Any, what: str, timeout: float = 60) -> dict[str, Any]:
    return dict(
        wait_for(lambda: (s := tuning_status(jobs)) and check(s) and s, timeout=timeout, what=what)
    )


def wait_tuning_named(
    jobs: JobsHarness, name: str, check: Any, what: str, timeout: float = 60
) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: (s := tuning_status(jobs, name)) and check(s) and s, timeout=timeout, what=what
        )
    )


def wait_for_next_second(timestamp: str) -> None:
    """Until the clock (the API server's: same machine) reads a later second than `timestamp`."""
    wait_for(
        lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) > timestamp,
        timeout=5,
        interval=0.05,
        what=f"a second later than {timestamp}",
    )


def pod_logs(jobs: JobsHarness, pod_prefix: str = "") -> str:
    """What the pod runner's worker processes of this namespace printed (pods named so)."""
    folders = (jobs.cluster.base_dir / "pods").glob(f"{jobs.namespace}_{pod_prefix}*")
    return "".join(p.read_text(errors="replace") for f in folders for p in f.rglob("*.log"))


def operator_sessions(dsn: str) -> set[int]:
    """The server processes of the operator's connections (pg_stat_activity)."""

    async def pids() -> set[int]:
        con = await asyncpg.connect(dsn)
        try:
            rows = await con.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'mcop-operator'"
            )
            return {int(r["pid"]) for r in rows}
        finally:
            await con.close()

    return asyncio.run(pids())


def test_pool_size_changes_live_and_metrics_fill_the_status(jobs: JobsHarness, pg_dsn: str) -> None:
    jobs.apply(tuning(postgres={"poolSize": 2, "maxOverflow": 1}, metrics={"intervalSeconds": 1}))
    status = wait_tuning(jobs, lambda s: s.get("phase") == "Ready", "PerfTuning Ready")
    # Connections open on demand (SQLAlchemy's QueuePool): the operator at rest uses fewer than
    # poolSize + maxOverflow, and keeps them.
    first: set[int] = wait_for(
        lambda: (s := operator_sessions(pg_dsn)) and len(s) <= 3 and s, timeout=30, what="sessions"
    )
    assert status["redis"]["connected"] is True and status["postgres"]["connected"] is True
    assert {"cpuPercent", "memoryPercent", "diskPercent"} <= set(status["system"])
    assert status["jobs"] == {"running": 0, "queued": 0}
    applied = status["appliedAt"]
    # The recommended indexes exist, and ones nobody used yet are reported as unused.
    names = {i["name"] for i in status["postgres"]["indexes"]}
    assert {"ix_jobs_status", "ix_jobs_created_at", "ix_jobs_user_id", "ix_users_email"} <= names
    assert "ix_users_email" in status["postgres"]["unusedIndexes"]
    assert "block_results" in status["postgres"]["tableSizesBytes"]
    # A new spec is applied to the running operator: its pool is replaced (the old sessions end,
    # the new pool's open as it is used), and still only on demand: fewer than the new poolSize.
    jobs.apply(tuning(postgres={"poolSize": 5, "maxOverflow": 1}, metrics={"intervalSeconds": 1}))
    second: set[int] = wait_for(
        lambda: (s := operator_sessions(pg_dsn)) and not s & first and s,
        timeout=30,
        what="the new pool's sessions only",
    )
    assert len(second) < 5, f"{len(second)} sessions: opened eagerly, not on demand"
    wait_tuning(
        jobs,
        lambda s: s.get("appliedAt") != applied or s["observedGeneration"] == 2,
        "the new generation applied",
    )
    # The same figures on the operator's Prometheus endpoint.
    labels = f'namespace="{jobs.namespace}",perftuning="default"'
    exported = jobs.operator.metrics()
    assert f"mcop_postgres_up{{{labels}}} 1.0" in exported
    assert f"mcop_redis_up{{{labels}}} 1.0" in exported
    assert f"mcop_postgres_pool_size{{{labels}}}" in exported
    table = jobs.kubectl("get", "perftunings").stdout.splitlines()[0].split()
    assert table == ["NAME", "PHASE", "HIT-RATE", "DB-CONNECTIONS", "RUNNING", "QUEUED", "AGE"]


def test_queue_admits_at_most_the_limit_highest_priority_then_oldest(jobs: JobsHarness) -> None:
    jobs.apply(tuning(workers={"maxConcurrentJobs": 2}, metrics={"intervalSeconds": 1}))
    wait_tuning(jobs, lambda s: s.get("phase") == "Ready", "PerfTuning Ready")
    # Two blockers whose pods no node takes: admitted (each holds a slot) and never finishing, so
    # they cost no CPU. Deleting block-a frees one slot; block-b keeps the other until the queue
    # has drained, so slots free one at a time and the admission order is observable.
    blocker = spec(LONG_ASIAN, paths=200_000, cache=False, workerTemplate=UNSCHEDULABLE)
    jobs.create_job("block-a", spec(blocker, seed=1))
    jobs.create_job("block-b", spec(blocker, seed=2))
    wait_for(
        lambda: all(jobs.status(n).get("workerJob") for n in ("block-a", "block-b")),
        timeout=60,
        what="two blockers admitted",
    )
    queued = [
        ("q-low", "low"),
        ("q-high-old", "high"),
        ("q-normal", "normal"),
        ("q-high-new", "high"),
        ("q-critical", "critical"),
    ]
    small = spec(LONG_ASIAN, paths=200_000, cache=False)
    for i, (name, prio) in enumerate(queued):
        jobs.create_job(name, spec(small, seed=10 + i, priority=prio))
        # Distinct creation times (whole seconds), so "then oldest" is observable.
        wait_for_next_second(jobs.job(name)["metadata"]["creationTimestamp"])
    wait_for(lambda: jobs.status("q-critical").get("phase") == "Queued", timeout=30, what="Queued")
    assert all(jobs.status(n).get("phase") == "Queued" for n, _ in queued)
    cond = jobs.condition("q-critical", "Admitted")
    assert cond and cond["status"] == "False" and cond["reason"] == "QueuedByConcurrencyLimit"
    assert tuning_status(jobs)["jobs"]["queued"] >= 1
    jobs.kubectl("delete", "mcj", "block-a", "--wait=false")

    names = ["block-b"] + [n for n, _ in queued]
    admitted_at: dict[str, int] = {}  # job -> the poll that first saw it admitted
    most_running = 0
    poll = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        by_name = {i["metadata"]["name"]: i.get("status") or {} for i in jobs.list_jobs()}
        running = [
            n
            for n in names
            if by_name[n].get("workerJob")
            and by_name[n].get("phase") not in ("Succeeded", "Failed")
        ]
        most_running = max(most_running, len(running))
        poll += 1
        for n in names:
            if by_name[n].get("workerJob") and n.startswith("q-"):
                admitted_at.setdefault(n, poll)
        if all(by_name[n].get("phase") == "Succeeded" for n in names if n != "block-b"):
            break
        time.sleep(0.1)
    assert most_running <= 2
    jobs.kubectl("delete", "mcj", "block-b", "--wait=false")
    expected = ["q-critical", "q-high-old", "q-high-new", "q-normal", "q-low"]
    assert sorted(admitted_at, key=admitted_at.__getitem__) == expected, admitted_at
    assert len(set(admitted_at.values())) == len(expected), admitted_at  # one at a time


def test_a_silent_shard_is_replaced_and_the_job_finishes(jobs: JobsHarness, tmp_path: Path) -> None:
    jobs.apply(tuning(workers={"heartbeatIntervalSeconds": 1}, metrics={"intervalSeconds": 1}))
    wait_tuning(jobs, lambda s: s.get("phase") == "Ready", "PerfTuning Ready")
    s = spec(LONG_ASIAN, paths=4_000_000, shards=2, cache=False)
    jobs.create_job("frozen", s)
    wait_for(
        lambda: (st := jobs.status("frozen")).get("pathsDone", 0) > 0 and st,
        timeout=120,
        what="progress",
    )
    uid = jobs.job("frozen")["metadata"]["uid"]
    # Freeze one worker process: it neither computes nor heartbeats, like a hung node.
    victims = [
        p
        for p in psutil.process_iter(["environ"])
        if (p.info.get("environ") or {}).get("MCOP_JOB_UID") == uid
        and (p.info.get("environ") or {}).get("JOB_COMPLETION_INDEX") == "0"
    ]
    assert victims, "worker process of shard 0 not found"
    for p in victims:
        os.kill(p.pid, signal.SIGSTOP)
    try:
        wait_for(
            lambda: (
                (c := jobs.condition("frozen", "ShardsHealthy")) and c["reason"] == "HeartbeatLost"
            ),
            timeout=60,
            what="HeartbeatLost condition",
        )
    finally:
        for p in victims:
            if p.is_running():
                os.kill(p.pid, signal.SIGCONT)
    final = jobs.wait_phase("frozen", "Succeeded", "Failed", timeout=240)
    assert final["phase"] == "Succeeded"
    assert "HeartbeatLost" in {e["reason"] for e in jobs.events("frozen")}
    expected = mcop_run_json(job_manifest("frozen", s), tmp_path)
    for key in NUMBER_KEYS:
        assert final["result"][key] == expected[key], key


def test_outages_degrade_then_recover_and_jobs_keep_their_promises(
    jobs: JobsHarness, redis_server: Any, postgres_server: Any, tmp_path: Path
) -> None:
    jobs.apply(tuning(metrics={"intervalSeconds": 1}, postgres={"commandTimeoutSeconds": 5}))
    wait_tuning(jobs, lambda s: s.get("phase") == "Ready", "PerfTuning Ready")
    s = spec(LONG_ASIAN, paths=6_000_000, shards=2, cache=False)
    jobs.create_job("weather", s)
    wait_for(lambda: jobs.status("weather").get("pathsDone", 0) > 0, timeout=120, what="progress")
    try:
        redis_server.stop()
        st = wait_tuning(jobs, lambda s: s.get("phase") == "Degraded", "Degraded without Redis")
        conds = {c["type"]: c for c in st["conditions"]}
        assert conds["RedisReady"]["status"] == "False"
        assert conds["PostgresReady"]["status"] == "True"
        postgres_server.stop()
        st = wait_tuning(
            jobs,
            lambda s: (
                {c["type"]: c["status"] for c in s["conditions"]}.get("PostgresReady") == "False"
            ),
            "PostgresReady=False",
        )
        assert st["phase"] == "Degraded"
        # The job's loop meets the outage too, and never says Succeeded before it is stored.
        wait_for(
            lambda: (
                (c := jobs.condition("weather", "DatabaseAvailable")) and c["status"] == "False"
            ),
            timeout=60,
            what="the job's DatabaseAvailable=False",
        )
        assert jobs.status("weather").get("phase") != "Succeeded"
    finally:
        postgres_server.start()
        redis_server.start()
    wait_tuning(jobs, lambda s: s.get("phase") == "Ready", "Ready again", timeout=90)
    final = jobs.wait_phase("weather", "Succeeded", "Failed", timeout=300)
    assert final["phase"] == "Succeeded", final
    expected = mcop_run_json(job_manifest("weather", s), tmp_path)
    for key in NUMBER_KEYS:
        assert final["result"][key] == expected[key], key


def test_no_secret_value_in_status_events_or_logs(jobs: JobsHarness, postgres_server: Any) -> None:
    jobs.apply(tuning(metrics={"intervalSeconds": 1}))
    wait_tuning(jobs, lambda s: s.get("phase") == "Ready", "PerfTuning Ready")
    jobs.create_job("quiet", spec(paths=200_000, shards=2))
    jobs.wait_phase("quiet", "Succeeded")
    # And a job whose database is unreachable: its error paths must not leak either.
    from operator_harness import secret_manifest

    leaked = "hunter2-" + os.urandom(4).hex()
    jobs.apply(
        secret_manifest(
            jobs.namespace, "bad-pg", "dsn", f"postgresql://mcop:{leaked}@127.0.0.1:9/none"
        )
    )
    jobs.apply(
        tuning(
            "badpg",
            postgres={"dsnSecretRef": {"name": "bad-pg", "key": "dsn"}, "commandTimeoutSeconds": 1},
        )
    )
    jobs.create_job("leaky", spec(paths=200_000, seed=99, tuningRef="badpg"))
    # Wait until every error path has run: the PerfTuning's, the job loop's and the workers'.
    wait_tuning_named(
        jobs,
        "badpg",
        lambda s: (
            {c["type"]: c["status"] for c in s.get("conditions") or []}.get("PostgresReady")
            == "False"
        ),
        "badpg PostgresReady=False",
    )
    wait_for(
        lambda: (c := jobs.condition("leaky", "DatabaseAvailable")) and c["status"] == "False",
        timeout=60,
        what="leaky's DatabaseAvailable=False",
    )
    wait_for(
        lambda: "PostgreSQL unavailable" in pod_logs(jobs, "leaky-"),
        timeout=60,
        what="a worker of leaky meeting the unreachable database",
    )
    secrets = [postgres_server.password, leaked]
    texts = {
        "statuses": jobs.kubectl("get", "mcj,ptune", "-o", "json").stdout,
        "events": jobs.kubectl("get", "events", "-o", "json").stdout,
        "operator log": jobs.operator.log(),
        "pod logs": "".join(
            p.read_text(errors="replace") for p in (jobs.cluster.base_dir / "pods").rglob("*.log")
        ),
    }
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret value appears in the {where}"
