"""High availability: two `mcop operator --leader-elect` replicas against the real control plane,
PostgreSQL and Redis. Only the Lease's holder reconciles; killing or freezing it hands the work to
the other without a job lost, doubled or counted twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mcop_devcluster.ports import free_port
from operator_harness import (
    JobsHarness,
    OperatorProcess,
    job_manifest,
    mcop_run_json,
    secret_manifest,
    wait_for,
)
from test_operator_jobs import EUROPEAN, LONG_ASIAN, NUMBER_KEYS, spec

LEASE = "montecarlo-operator"


class Replicas:
    """Two operator replicas electing a leader in the test's namespace."""

    def __init__(
        self, cluster: Any, namespace: str, folder: Path, election: tuple[str, ...]
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.ops = [
            OperatorProcess(
                str(cluster.kubeconfig),
                namespace,
                folder / f"operator-{i}.log",
                args=("--leader-elect", f"--leader-election-namespace={namespace}", *election),
                MCOP_METRICS_PORT=str(free_port()),
                MCOP_METRICS_ADDRESS="127.0.0.1",
            )
            for i in range(2)
        ]

    def start(self) -> None:
        for op in self.ops:
            op.start()

    def stop(self) -> None:
        for op in self.ops:
            op.signal(signal.SIGCONT)
            op.stop()

    def holder_pid(self) -> int | None:
        out = self.cluster.kubectl(
            "-n", self.namespace, "get", "lease", LEASE, "-o", "json", check=False
        )
        if out.returncode != 0:
            return None
        holder = json.loads(out.stdout)["spec"].get("holderIdentity") or ""
        pid = holder.rpartition("_")[2]
        return int(pid) if pid.isdigit() else None

    def leader(self, timeout: float = 60) -> OperatorProcess:
        def find() -> OperatorProcess | None:
            pid = self.holder_pid()
            return next((op for op in self.ops if op.pid is not None and op.pid == pid), None)

        found: OperatorProcess = wait_for(find, timeout=timeout, what="a leader")
        return found

    def other(self, op: OperatorProcess) -> OperatorProcess:
        return self.ops[1 - self.ops.index(op)]


@contextlib.contextmanager
def replicas(
    jobs_ns: tuple[Any, str], tmp_path: Path, election: tuple[str, ...] = ()
) -> Iterator[Replicas]:
    cluster, namespace = jobs_ns
    group = Replicas(cluster, namespace, tmp_path, election)
    group.start()
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture
def jobs_ns(cluster_with_crds: Any, namespace: str, pg_dsn: str, redis_url: str) -> tuple[Any, str]:
    """A namespace with the Secrets the built-in PerfTuning defaults name (no operator yet)."""
    for doc in (
        secret_manifest(namespace, "montecarlo-redis", "url", redis_url),
        secret_manifest(namespace, "montecarlo-postgres", "dsn", pg_dsn),
    ):
        cluster_with_crds.kubectl("apply", "-f", "-", input=json.dumps(doc))
    return cluster_with_crds, namespace


def metric(op: OperatorProcess, name: str) -> float | None:
    try:
        text = op.metrics()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_only_the_leader_reconciles_and_a_stopped_leader_hands_over_at_once(
    jobs_ns: tuple[Any, str], tmp_path: Path
) -> None:
    cluster, namespace = jobs_ns
    with replicas(jobs_ns, tmp_path) as group:
        leader = group.leader()
        standby = group.other(leader)
        wait_for(lambda: metric(leader, "mcop_leader") == 1.0, timeout=30, what="mcop_leader 1")
        wait_for(lambda: metric(standby, "mcop_leader") == 0.0, timeout=30, what="mcop_leader 0")
        harness = JobsHarness(cluster, namespace, leader)
        harness.create_job("euro", spec(EUROPEAN, paths=200_000))
        assert harness.wait_phase("euro", "Succeeded", "Failed")["phase"] == "Succeeded"
        # The standby never touched anything: it does not even watch.
        assert "leading as" not in standby.log()
        assert "euro" not in standby.log()
        # A clean stop (a rolling update) gives the Lease up: the standby leads at once.
        stopped = time.monotonic()
        leader.stop()
        wait_for(lambda: group.holder_pid() == standby.pid, timeout=20, what="the standby leads")
        took = time.monotonic() - stopped
        # Well before the 15 s a standby waits for a Lease that was not given up.
        assert took < 10, f"a released Lease took {took:.1f} s to change hands"
        harness.create_job("after", spec(EUROPEAN, paths=200_000, seed=8))
        assert harness.wait_phase("after", "Succeeded", "Failed")["phase"] == "Succeeded"


def _worker_job_uids(cluster: Any, namespace: str, seen: dict[str, set[str]], stop: Any) -> None:
    """Every worker Job seen, by the MonteCarloJob it belongs to (a second one would show)."""
    while not stop.is_set():
        out = cluster.kubectl(
            "-n",
            namespace,
            "get",
            "jobs",
            "-l",
            "app.kubernetes.io/managed-by=montecarlo-operator",
            "-o",
            "json",
            check=False,
        )
        if out.returncode == 0:
            for item in json.loads(out.stdout)["items"]:
                owner = item["metadata"]["labels"].get("montecarlo.io/job", "")
                seen.setdefault(owner, set()).add(item["metadata"]["uid"])
        stop.wait(0.5)


async def _block_counts(dsn: str, uids: list[str]) -> dict[str, tuple[int, int]]:
    con = await asyncpg.connect(dsn)
    try:
        rows = await con.fetch(
            "SELECT job_uid, count(*) AS n, count(DISTINCT block_index) AS d FROM block_results "
            "WHERE job_uid = ANY($1::text[]) GROUP BY job_uid",
            uids,
        )
        return {r["job_uid"]: (int(r["n"]), int(r["d"])) for r in rows}
    finally:
        await con.close()


def test_chaos_the_leader_killed_five_times_and_frozen_once(
    jobs_ns: tuple[Any, str], tmp_path: Path, pg_dsn: str
) -> None:
    """20 jobs across two replicas with the default timings (lease 15 s, renew deadline 10 s,
    retry 2 s); the leader is SIGKILLed 5 times at random moments and SIGSTOPped once for longer
    than the lease. Every job Succeeds with the numbers of `mcop run`, no job ever has two worker
    Jobs, no block is stored twice, and every takeover happens within 20 s."""
    cluster, namespace = jobs_ns
    rng = random.Random(20261127)
    # Four computations, five jobs each (cache off: each computes), so `mcop run` runs 4 times.
    specs = [
        spec(LONG_ASIAN, paths=3_000_000, shards=2, seed=40 + k, cache=False) for k in range(4)
    ]
    names = [f"chaos-{i:02d}" for i in range(20)]
    seen: dict[str, set[str]] = {}
    stop_watch = threading.Event()
    watcher = threading.Thread(
        target=_worker_job_uids, args=(cluster, namespace, seen, stop_watch), daemon=True
    )
    takeovers: list[float] = []
    with replicas(jobs_ns, tmp_path) as group:
        leader = group.leader(timeout=60)
        harness = JobsHarness(cluster, namespace, leader)
        # At most 4 jobs at once: admissions (the leader's work) go on through the whole chaos.
        harness.apply(
            {
                "apiVersion": "montecarlo.io/v1alpha1",
                "kind": "PerfTuning",
                "metadata": {"name": "default"},
                "spec": {"workers": {"maxConcurrentJobs": 4}},
            }
        )
        watcher.start()
        for i, name in enumerate(names):
            harness.create_job(name, specs[i % 4])

        def takeover(victim: OperatorProcess, since: float, led_before: int) -> OperatorProcess:
            survivor = group.other(victim)
            wait_for(
                lambda: survivor.log().count("leading as") > led_before,
                timeout=40,
                interval=0.1,
                what="the survivor leading",
            )
            takeovers.append(time.monotonic() - since)
            assert group.holder_pid() == survivor.pid
            return survivor

        try:
            for _ in range(5):
                # A random moment of the run (the schedule of the chaos, not a wait for a state).
                time.sleep(rng.uniform(1.0, 8.0))
                leader = group.leader()
                led_before = group.other(leader).log().count("leading as")
                killed = time.monotonic()
                leader.kill()
                leader.start()  # Kubernetes restarts the container: it comes back as a standby
                leader = takeover(leader, killed, led_before)
            # Frozen for longer than the lease: the other takes over; the frozen one, thawed,
            # finds its renew deadline long past and exits before writing anything.
            leader = group.leader()
            frozen = leader
            led_before = group.other(frozen).log().count("leading as")
            frozen.signal(signal.SIGSTOP)
            stopped = time.monotonic()
            takeover(frozen, stopped, led_before)
            # The freeze lasts longer than the lease (15 s): the experiment's parameter.
            time.sleep(max(0.0, stopped + 17 - time.monotonic()))
            frozen.signal(signal.SIGCONT)
            wait_for(lambda: frozen.pid is None, timeout=15, what="the thawed replica exiting")
            assert "leadership lost" in frozen.log()
            frozen.start()
            finals = {
                name: harness.wait_phase(name, "Succeeded", "Failed", timeout=400) for name in names
            }
        finally:
            stop_watch.set()
            watcher.join(10)
    failed = {n: s for n, s in finals.items() if s["phase"] != "Succeeded"}
    assert not failed, json.dumps(failed, indent=1)[:3000]
    expected = [mcop_run_json(job_manifest(f"ref-{k}", specs[k]), tmp_path) for k in range(4)]
    for i, name in enumerate(names):
        for key in NUMBER_KEYS:
            assert finals[name]["result"][key] == expected[i % 4][key], (name, key)
    doubled = {job: uids for job, uids in seen.items() if len(uids) > 1}
    assert not doubled, f"more than one worker Job for a job: {doubled}"
    assert set(seen) == set(names), set(names) - set(seen)
    uids = [harness.job(n)["metadata"]["uid"] for n in names]
    counts = asyncio.run(_block_counts(pg_dsn, uids))
    assert all(n == d for n, d in counts.values()), counts  # no block stored twice
    assert len(takeovers) == 6
    print(f"takeover seconds: {[round(t, 1) for t in takeovers]}, max {max(takeovers):.1f}")
    assert max(takeovers) < 20, takeovers


# -- start-up: nothing goes unseen ---------------------------------------------------------------
def test_a_burst_of_jobs_created_while_the_operator_starts_is_seen_whole(
    jobs_ns: tuple[Any, str], tmp_path: Path, redis_url: str
) -> None:
    """40 jobs applied while the operator starts (its watches, indexes and daemons coming up):
    every one gets a status and finishes. Their result is cached beforehand, so the test measures
    what the operator sees, not how fast workers compute."""
    from mcop_operator import numbers
    from mcop_operator.storage.redis_bus import OperatorBus
    from mcop_worker.storage.settings import RedisPoolSettings

    cluster, namespace = jobs_ns
    s = spec(EUROPEAN, paths=100_000, shards=1)
    result = mcop_run_json(job_manifest("cached", s), tmp_path)
    _, spec_hash = numbers.parse({"spec": s})
    assert spec_hash == result["specHash"]

    async def cache() -> None:
        bus = OperatorBus(redis_url, RedisPoolSettings())
        try:
            assert await bus.cache_result(spec_hash, json.dumps(result), 600)
        finally:
            await bus.close()

    asyncio.run(cache())
    names = [f"burst-{i:02d}" for i in range(40)]
    listing = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [{**job_manifest(n, s), "metadata": {"name": n}} for n in names],
    }
    op = OperatorProcess(
        str(cluster.kubeconfig),
        namespace,
        tmp_path / "operator.log",
        MCOP_METRICS_PORT=str(free_port()),
        MCOP_METRICS_ADDRESS="127.0.0.1",
    )
    half = len(names) // 2
    first, second = (
        dict(listing, items=listing["items"][:half]),
        dict(listing, items=listing["items"][half:]),
    )
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(first))
    op.start()  # half present before the start, half arriving while it starts
    try:
        cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(second))
        harness = JobsHarness(cluster, namespace, op)

        def unseen() -> list[str]:
            items = json.loads(cluster.kubectl("-n", namespace, "get", "mcj", "-o", "json").stdout)
            return [
                i["metadata"]["name"]
                for i in items["items"]
                if (i.get("status") or {}).get("phase") != "Succeeded"
            ]

        wait_for(lambda: not unseen(), timeout=120, interval=1.0, what="every job Succeeded")
        for name in names[:: len(names) // 4]:
            status = harness.status(name)
            assert status["cacheHit"] is True and status["result"]["estimate"] == result["estimate"]
    finally:
        op.stop()
