"""High availability: two `mcop operator --leader-elect` replicas against the real control plane,
PostgreSQL and Redis. Only the Lease's holder reconciles; killing or freezing it hands the work to
the other without a job lost, doubled or counted twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mcop_devcluster.ports import free_port
from mcop_worker.engine.blocks import plan_blocks
from mcop_worker.model.spec import parse_spec
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
        # The standby never touched anything: it watches nothing but the Lease.
        assert "leading as" not in standby.log()
        assert "euro" not in standby.log()
        # A clean stop (a rolling update) gives the Lease up: the standby, watching it, leads at
        # once (timed from the logs: a kubectl call takes seconds on a busy machine).
        stopped = time.monotonic()
        leader.stop()
        wait_for(lambda: "leading as" in standby.log(), timeout=20, interval=0.1, what="a leader")
        took = time.monotonic() - stopped
        assert group.holder_pid() == standby.pid
        # Well before the 15 s a standby waits for a Lease that was not given up.
        assert took < 10, f"a released Lease took {took:.1f} s to change hands"
        harness.create_job("after", spec(EUROPEAN, paths=200_000, seed=8))
        assert harness.wait_phase("after", "Succeeded", "Failed")["phase"] == "Succeeded"


class WorkerJobWatch:
    """Every worker Job the API server ever held for this namespace, from a watch (not polling:
    a Job that lived for a moment shows too), by the MonteCarloJob it belongs to."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.uids: dict[str, set[str]] = {}
        self._proc = subprocess.Popen(
            [
                str(cluster.control_plane.binaries.kubectl),
                "-n",
                namespace,
                "get",
                "jobs",
                "-l",
                "app.kubernetes.io/managed-by=montecarlo-operator",
                "--watch",
                "--output-watch-events",
                "-o",
                "json",
            ],
            env=cluster.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        decoder, buffer = json.JSONDecoder(), ""
        for line in self._proc.stdout:
            buffer += line
            while buffer.strip():
                try:
                    event, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    break  # an object not complete yet
                buffer = buffer.lstrip()[end:]
                meta = event["object"]["metadata"]
                owner = meta.get("labels", {}).get("montecarlo.io/job", "")
                self.uids.setdefault(owner, set()).add(meta["uid"])

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)
        self._thread.join(10)


async def _block_counts(dsn: str, uids: list[str]) -> dict[str, tuple[int, int]]:
    """Per job: (rows of block_results, distinct blocks among them)."""
    con = await asyncpg.connect(dsn)
    try:
        rows = await con.fetch(
            "SELECT job_uid, count(*) AS n, count(DISTINCT block_index) AS d FROM block_results "
            "WHERE job_uid = ANY($1::text[]) GROUP BY job_uid",
            uids,
        )
        return {r["job_uid"]: (int(r["n"]), int(r["d"])) for r in rows}
    except asyncpg.UndefinedTableError:
        # The schema is made by the first worker or operator pass that opens the database.
        return {}
    finally:
        await con.close()


def _blocks_stored(dsn: str, uids: list[str]) -> int:
    return sum(n for n, _ in asyncio.run(_block_counts(dsn, uids)).values())


class Takeover:
    """Times from a leader's end to the survivor holding the Lease and to its first action."""

    LEADS, ACTS = "leading as", "first reconcile pass done"
    WAITS, READY = "waiting for Lease", "ready to lead"

    def __init__(self, group: Replicas) -> None:
        self.group = group
        self.lease: list[float] = []
        self.acts: list[float] = []
        self.starts = {id(op): 1 for op in group.ops}

    def restart(self, op: OperatorProcess) -> None:
        """Kubernetes restarts the container: it comes back as a standby."""
        op.start()
        self.starts[id(op)] += 1

    def standing_by(self, op: OperatorProcess) -> bool:
        """The replica's current process looks at the Lease and is warm (a process that just
        started counts a full lease duration from its first look, and warms up meanwhile: two
        replicas means two that are up)."""
        log = op.log()
        return min(log.count(self.WAITS), log.count(self.READY)) >= self.starts[id(op)]

    def standby(self) -> tuple[OperatorProcess, OperatorProcess]:
        """(leader, standby) once the standby stands by."""
        leader = self.group.leader()
        standby = self.group.other(leader)
        wait_for(lambda: self.standing_by(standby), timeout=180, what="a warm standby")
        return leader, standby

    def end(self, victim: OperatorProcess, how: Any) -> OperatorProcess:
        """End the leader with `how(victim)`; wait for the survivor to lead and to act."""
        survivor = self.group.other(victim)
        assert self.standing_by(survivor)
        led, acted = survivor.log().count(self.LEADS), survivor.log().count(self.ACTS)
        since = time.monotonic()
        how(victim)
        wait_for(
            lambda: survivor.log().count(self.LEADS) > led,
            timeout=60,
            interval=0.1,
            what="the survivor leading",
        )
        self.lease.append(time.monotonic() - since)
        wait_for(
            lambda: survivor.log().count(self.ACTS) > acted,
            timeout=60,
            interval=0.1,
            what="the survivor acting",
        )
        self.acts.append(time.monotonic() - since)
        assert self.group.holder_pid() == survivor.pid
        return survivor


def test_chaos_the_leader_killed_five_times_and_frozen_once(
    jobs_ns: tuple[Any, str], tmp_path: Path, pg_dsn: str
) -> None:
    """20 jobs across two replicas with the default timings (lease 15 s, renew deadline 10 s,
    retry 2 s), admitted one at a time; the leader is SIGKILLed 5 times at random moments of the
    jobs' progress and SIGSTOPped once for longer than the lease. Every job Succeeds with the
    numbers of `mcop run`, no job ever has two worker Jobs, no block is stored twice; each takeover
    is timed (to the Lease and to the survivor's first action; target 20 s)."""
    cluster, namespace = jobs_ns
    rng = random.Random(20261127)
    # Four computations, five jobs each (cache off: each computes), so `mcop run` runs 4 times.
    # One job at a time, and only the leader admits: while nobody leads, the worker of the one
    # running job finishes and nothing else computes. So each of the six takeovers uses up at most
    # the blocks it waits for (under one job) plus the job then running: at most 12 of the 20 jobs,
    # however fast the CPU, and the chaos always falls on jobs in progress. (It once needed 20
    # jobs of 6M paths on two shards, four at once, to outlast the takeovers: both cores busy.)
    specs = [
        spec(LONG_ASIAN, paths=1_000_000, shards=1, seed=40 + k, cache=False) for k in range(4)
    ]
    per_job = plan_blocks(parse_spec(specs[0])).n_blocks
    names = [f"chaos-{i:02d}" for i in range(20)]
    watch = WorkerJobWatch(cluster, namespace)
    with replicas(jobs_ns, tmp_path) as group:
        leader = group.leader(timeout=60)
        harness = JobsHarness(cluster, namespace, leader)
        # One job at a time: admissions (the leader's work) go on through the whole chaos.
        harness.apply(
            {
                "apiVersion": "montecarlo.io/v1alpha1",
                "kind": "PerfTuning",
                "metadata": {"name": "default"},
                "spec": {"workers": {"maxConcurrentJobs": 1}},
            }
        )
        for i, name in enumerate(names):
            harness.create_job(name, specs[i % 4])
        uids = [harness.job(n)["metadata"]["uid"] for n in names]
        takeover = Takeover(group)

        def killed(victim: OperatorProcess) -> None:
            victim.kill()
            takeover.restart(victim)

        try:
            for _ in range(5):
                leader, _standby = takeover.standby()
                # A random moment: after 1 to (a job's blocks - 1) more blocks stored (the
                # workers' pace, not a sleep), so each kill falls at a different point of a job.
                target = _blocks_stored(pg_dsn, uids) + rng.randint(1, per_job - 1)
                wait_for(
                    lambda t=target: _blocks_stored(pg_dsn, uids) >= t,
                    timeout=180,
                    interval=0.2,
                    what=f"{target} blocks stored",
                )
                takeover.end(leader, killed)
            # Frozen for longer than the lease: the other takes over and acts; the frozen one,
            # thawed, finds its renew deadline long past and exits before writing anything.
            frozen, _standby = takeover.standby()
            stopped = time.monotonic()
            takeover.end(frozen, lambda v: v.signal(signal.SIGSTOP))
            lease = 15.0
            wait_for(lambda: time.monotonic() - stopped > lease + 1, timeout=lease + 2)
            frozen.signal(signal.SIGCONT)
            wait_for(lambda: frozen.pid is None, timeout=30, what="the thawed replica exiting")
            assert "leadership lost" in frozen.log()
            takeover.restart(frozen)
            finals = {
                name: harness.wait_phase(name, "Succeeded", "Failed", timeout=600) for name in names
            }
        finally:
            watch.stop()
    print(
        "takeover seconds (kill/freeze -> Lease; -> first action):",
        [round(t, 1) for t in takeover.lease],
        [round(t, 1) for t in takeover.acts],
    )
    failed = {n: s for n, s in finals.items() if s["phase"] != "Succeeded"}
    assert not failed, json.dumps(failed, indent=1)[:3000]
    expected = [mcop_run_json(job_manifest(f"ref-{k}", specs[k]), tmp_path) for k in range(4)]
    for i, name in enumerate(names):
        for key in NUMBER_KEYS:
            assert finals[name]["result"][key] == expected[i % 4][key], (name, key)
    doubled = {job: u for job, u in watch.uids.items() if len(u) > 1}
    assert not doubled, f"more than one worker Job for a job: {doubled}"
    assert set(watch.uids) == set(names), set(names) ^ set(watch.uids)
    counts = asyncio.run(_block_counts(pg_dsn, uids))
    assert len(counts) == len(names) and all(n == d for n, d in counts.values()), counts
    assert len(takeover.acts) == 6
    # The protocol's bound: a lease duration (15 s) after the last renewal the standby saw, plus
    # its poll (2 s) should the watch miss it. The first action after it depends on the machine's
    # load; the target (20 s in all) is reported, not asserted (not a timed test).
    assert max(takeover.lease) < 15 + 2 + 1, takeover.lease
    worst = max(takeover.acts)
    verdict = "met" if worst < 20 else "MISSED"
    print(f"worst takeover to the first action {worst:.1f} s: target 20 s {verdict}")


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
