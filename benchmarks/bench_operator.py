"""The operator under load, against its own control plane, PostgreSQL and Redis on 127.0.0.1.

Measures, in one run (the targets are issue 4's):
  1. latency: time from `kubectl apply --server-side` of one List of N tiny MonteCarloJobs
     (default 100, a PerfTuning with workers.maxConcurrentJobs = N so every one is admitted at
     once) to each worker Job being first seen by a watch; median and p99 (target: p99 < 2 s).
     Also from each MonteCarloJob's own creation to its Job's creation, both from the API
     server's audit log (kubectl creates the List's objects one after the other). The pod runner
     is paused meanwhile (--pods-during-latency: not), as workers run on other nodes than the
     operator in a cluster.
  2. writes: the operator's Kubernetes API writes per job, counted in the API server's audit log
     (user agents `mcop-operator`: its kubernetes client, `kopf/<version>`: kopf), by kind, for
     the N tiny jobs run to Succeeded and for a few longer jobs; status patches are compared with
     one per MCOP_STATUS_INTERVAL_SECONDS of each job's life plus a handful for transitions.
  3. memory: the operator's peak RSS (process and children, sampled by psutil, and the kernel's
     high-water mark) with 500 MonteCarloJobs present: the N finished ones plus tiny suspended
     ones whose loops keep polling (target: < 200 MiB).

`--steady` measures instead the operator at rest with many jobs (issue 13's targets):
  4. 2,000 MonteCarloJobs present, 200 of them running (admitted, worker Jobs created; the pod
     runner is paused so their pods wait, as if they ran on other nodes, and the loops do their
     regular passes), the rest Succeeded (cache hits). Over a window (--window, 60 s): API
     requests per second by verb and user agent from the audit log (reads included), the
     operator's CPU and peak RSS, status writes per running job; the baseline, measured in the
     same run, is the same operator with the 1,800 finished jobs only (no running loop), so the
     cost per running job is (with - baseline) / 200. Targets: at most one API read per running
     job per 10 s, RSS < 300 MiB.

The operator runs with its built-in intervals (reconcile 1 s, status 2 s, waiting 5 s). Worker
pods are run by the pod runner on this machine's 2 cores; in a cluster they run on other nodes.
Not a timed test: the figures depend on the machine and its load.

Run: .venv/bin/python benchmarks/bench_operator.py [--jobs 100] [--present 500] [--latency-only]
[--keep] (about 2.5 minutes), or ... --steady [--present 2000] [--running 200] [--window 60].
Exit status 1 when a target is missed. Everything it starts
(servers, operator, worker processes) is stopped when it ends, also on Ctrl-C, SIGTERM or its own
time limit (--time-limit, default 30 min); if it is killed outright, the next devcluster session
reaps them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import psutil

from mcop_devcluster.controlplane import ControlPlane
from mcop_devcluster.processes import (
    REGISTRY_FILE,
    ProcessStartError,
    record,
    stop_servers_on_sigterm,
)
from mcop_devcluster.project_resources import create_connection_secrets
from mcop_devcluster.pytest_cluster import KubeCluster
from mcop_devcluster.rest import ApiError, RestClient
from mcop_devcluster.services import PostgresServer, RedisServer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from operator_harness import PRIORITY_CLASSES, OperatorProcess, job_manifest  # noqa: E402

NAMESPACE = "bench"
MIB = 1024 * 1024
STATUS_INTERVAL = 2.0  # the operator's default MCOP_STATUS_INTERVAL_SECONDS, set explicitly below
TRANSITIONS_HANDFUL = 5  # status writes a job may add for transitions (admitted, running, done...)
TARGET_P99_SECONDS = 2.0
TARGET_MEMORY_MIB = 200.0
GROUP_PATH = f"/apis/montecarlo.io/v1alpha1/namespaces/{NAMESPACE}"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- manifests ------------------------------------------------------------------------------------
def tiny_spec(seed: int, **extra: Any) -> dict[str, Any]:
    """A European call of 1,000 paths on one shard: one block, a worker's start-up dominates."""
    return {
        "model": {"type": "gbm", "spot": 100.0, "volatility": 0.2, "rate": 0.05},
        "instrument": {"type": "european", "optionType": "call", "strike": 100.0, "maturity": 1.0},
        "paths": 1000,
        "seed": seed,
        "shards": 1,
        **extra,
    }


def long_spec(seed: int, paths: int) -> dict[str, Any]:
    """A 252-step Asian on one shard: many blocks over many seconds, so progress is written."""
    return {
        "model": {"type": "gbm", "spot": 100.0, "volatility": 0.2, "rate": 0.05},
        "instrument": {
            "type": "asian", "optionType": "call", "strike": 100.0, "maturity": 1.0, "steps": 252,
        },
        "paths": paths,
        "seed": seed,
        "shards": 1,
    }  # fmt: skip


def job_list(names_specs: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    items = [job_manifest(name, spec) for name, spec in names_specs]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def perf_tuning(max_concurrent_jobs: int) -> dict[str, Any]:
    return {
        "apiVersion": "montecarlo.io/v1alpha1",
        "kind": "PerfTuning",
        "metadata": {"name": "default", "namespace": NAMESPACE},
        "spec": {"workers": {"maxConcurrentJobs": max_concurrent_jobs}},
    }


# -- the audit log -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Write:
    """One write request as the API server's audit log records it (ResponseComplete stage)."""

    at: float  # unix seconds: when the response was complete
    agent: str
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int

    @property
    def by_operator(self) -> bool:
        return self.agent.startswith(("mcop-operator", "kopf/"))

    @property
    def kind(self) -> str:
        if self.code >= 400:  # e.g. kopf's finalizer JSON patch losing a race to a status write
            return f"refused ({self.code}, retried)"
        if self.resource == "montecarlojobs":
            return "status patches" if self.subresource == "status" else "finalizer/annotation"
        if self.resource == "events":
            return "events"
        if self.resource == "jobs" and self.verb == "create":
            return "worker Job creations"
        if self.resource == "perftunings":
            return "PerfTuning status"
        sub = f"/{self.subresource}" if self.subresource else ""
        return f"other ({self.verb} {self.resource}{sub})"


def _unix(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def read_audit(path: Path) -> list[Write]:
    writes = []
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        ref = entry.get("objectRef") or {}
        writes.append(
            Write(
                at=_unix(entry["stageTimestamp"]),
                agent=str(entry.get("userAgent", "")),
                verb=str(entry["verb"]),
                resource=str(ref.get("resource", "")),
                subresource=str(ref.get("subresource", "")),
                namespace=str(ref.get("namespace", "")),
                name=str(ref.get("name", "")),
                code=int((entry.get("responseStatus") or {}).get("code", 0)),
            )
        )
    return writes


def created_at(writes: Sequence[Write], resource: str) -> dict[str, float]:
    """When each object of ``resource`` in the namespace was created: a create, or a server-side
    apply (a patch) answered 201 Created."""
    return {
        w.name: w.at
        for w in writes
        if w.resource == resource and w.verb in ("create", "patch") and w.code == 201
        and w.namespace == NAMESPACE and not w.subresource
    }  # fmt: skip


# -- observers ------------------------------------------------------------------------------------
class JobWatcher(threading.Thread):
    """Notes when each batch/v1 Job of the namespace is first seen (ADDED) by a watch."""

    def __init__(self, rest: RestClient) -> None:
        super().__init__(daemon=True, name="job-watcher")
        self.rest = rest
        self.seen: dict[str, float] = {}
        self.ready = threading.Event()
        self._stop = threading.Event()

    def run(self) -> None:
        path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
        rv = str(self.rest.get(path)["metadata"]["resourceVersion"])
        while not self._stop.is_set():
            self.ready.set()
            try:
                for event in self.rest.watch(path, resource_version=rv, timeout_seconds=10):
                    now = time.time()
                    obj = event.get("object") or {}
                    rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                    if event.get("type") == "ADDED":
                        self.seen.setdefault(str(obj["metadata"]["name"]), now)
                    if self._stop.is_set():
                        return
            except (OSError, ApiError) as error:  # a dropped watch: pick it up again
                if isinstance(error, ApiError) and error.status == 410:
                    rv = str(self.rest.get(path)["metadata"]["resourceVersion"])
                time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()


class MemorySampler(threading.Thread):
    """RSS of a process and its children, every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True, name="memory-sampler")
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()

    def rss(self) -> int:
        total = 0
        for proc in (self.process, *self.process.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(psutil.Error):
                self.samples.append((time.time(), self.rss()))

    def peak(self, since: float = 0.0, until: float = math.inf) -> int:
        return max((rss for at, rss in self.samples if since <= at <= until), default=0)

    def high_water_mark(self) -> int:
        """The kernel's peak RSS of the main process (VmHWM): no sample can miss it."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        self._stop.set()


# -- helpers --------------------------------------------------------------------------------------
_operator: OperatorProcess | None = None  # set once started: every wait fails if it exits


def wait_for(probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        proc = _operator.proc if _operator is not None else None
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the operator exited ({proc.returncode}) while waiting for {what}")
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def phases(rest: RestClient, names: Iterable[str]) -> Counter[str]:
    wanted = set(names)
    items = rest.get(f"{GROUP_PATH}/montecarlojobs")["items"]
    return Counter(
        str((item.get("status") or {}).get("phase") or "-")
        for item in items
        if item["metadata"]["name"] in wanted
    )


def wait_phase(rest: RestClient, names: Sequence[str], phase: str, timeout: float) -> None:
    def done() -> bool:
        counts = phases(rest, names)
        if counts.get("Failed"):
            raise RuntimeError(f"jobs failed: {dict(counts)}")
        return counts.get(phase, 0) == len(names)

    wait_for(done, timeout, f"{len(names)} jobs {phase} ({dict(phases(rest, names))})", 1.0)


def cpu_by_process(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) each process and its children have used so far."""
    used = {}
    for name, pid in pids.items():
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            total = 0.0
            for p in (proc, *proc.children(recursive=True)):
                with contextlib.suppress(psutil.Error):
                    times = p.cpu_times()
                    total += times.user + times.system
            used[name] = total
    return used


def signal_pod_runner(control_plane: ControlPlane, signum: signal.Signals) -> None:
    """SIGSTOP/SIGCONT the pod runner (the stand-in for the worker nodes' kubelets): paused, it
    starts no worker process, so pods wait Pending and take none of the operator's CPU."""
    runner = next(p for p in control_plane.processes if p.name == "pod-runner")
    if runner.pid is not None and runner.running:
        os.kill(runner.pid, signum)


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The q-quantile by nearest rank: p99 of 100 values is the 99th smallest."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def apply(
    cluster: KubeCluster, doc: dict[str, Any], timeout: float = 300, server_side: bool = False
) -> None:
    """`kubectl apply` of ``doc``; server-side: one request per object instead of a GET and a
    create, so the 100 objects of a List reach the API server as close together as kubectl can."""
    flags = ["--server-side"] if server_side else []
    cluster.kubectl(
        "apply", *flags, "-n", NAMESPACE, "-f", "-", input=json.dumps(doc), timeout=timeout
    )


def writes_in(writes: Sequence[Write], since: float, until: float) -> list[Write]:
    return [w for w in writes if w.by_operator and since <= w.at <= until]


@dataclasses.dataclass
class WriteReport:
    title: str
    jobs: int
    by_kind: Counter[str]
    status_excess: list[float]  # per job: status patches - (lifetime / interval + 1)
    status_counts: list[int]
    lifetimes: list[float]


def write_report(
    title: str, writes: Sequence[Write], names: Sequence[str], since: float, until: float
) -> WriteReport:
    """The operator's writes between ``since`` and ``until``, and each job's status patches
    against its life (from its creation to the operator's last status patch)."""
    window = writes_in(writes, since, until)
    created = created_at(writes, "montecarlojobs")
    excess, counts, lives = [], [], []
    for name in names:
        patches = sorted(
            w.at for w in window
            if w.resource == "montecarlojobs" and w.subresource == "status" and w.name == name
        )  # fmt: skip
        life = (patches[-1] - created[name]) if patches else 0.0
        counts.append(len(patches))
        lives.append(life)
        excess.append(len(patches) - (life / STATUS_INTERVAL + 1))
    return WriteReport(title, len(names), Counter(w.kind for w in window), excess, counts, lives)


# -- the benchmark ---------------------------------------------------------------------------------
@dataclasses.dataclass
class Results:
    latency_from_apply: list[float] = dataclasses.field(default_factory=list)
    latency_from_creation: list[float] = dataclasses.field(default_factory=list)
    apply_seconds: float = 0.0
    all_admitted_seconds: float = 0.0
    reports: list[WriteReport] = dataclasses.field(default_factory=list)
    agents: Counter[str] = dataclasses.field(default_factory=Counter)
    load_average: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at start and end
    memory_idle: int = 0
    memory_peak_present: int = 0
    memory_peak_run: int = 0
    memory_hwm: int = 0
    present: Counter[str] = dataclasses.field(default_factory=Counter)
    cpu: dict[str, float] = dataclasses.field(default_factory=dict)
    burst_cpu: dict[str, float] = dataclasses.field(default_factory=dict)


def run(args: argparse.Namespace, workdir: Path) -> Results:
    res = Results()
    audit_log = workdir / "audit.log"
    postgres, redis = PostgresServer(), RedisServer()
    control_plane = ControlPlane(audit_log=audit_log)
    operator: OperatorProcess | None = None
    watcher: JobWatcher | None = None
    sampler: MemorySampler | None = None
    load_at_start = os.getloadavg()[0]
    try:
        say("starting PostgreSQL, Redis and the control plane")
        postgres.start()
        redis.start()
        dsn = postgres.create_database("mcop_bench")
        try:
            control_plane.start()
        except ProcessStartError as error:  # most often a free port taken meanwhile: once more
            say(f"the control plane did not start, trying again: {str(error).splitlines()[0]}")
            control_plane.cleanup()
            control_plane = ControlPlane(audit_log=audit_log)
            control_plane.start()
        cluster = KubeCluster(control_plane)
        rest = cluster.rest()
        cluster.install_crds()
        cluster.kubectl("apply", "-f", str(PRIORITY_CLASSES))
        rest.create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
        wait_for(
            lambda: rest.get_or_none(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"),
            60, "the namespace's default ServiceAccount",
        )  # fmt: skip
        create_connection_secrets(rest, NAMESPACE, redis_url=redis.url, postgres_dsn=dsn)
        apply(cluster, perf_tuning(max(args.jobs, 10)))

        say("starting the operator")
        operator = OperatorProcess(
            str(cluster.kubeconfig), NAMESPACE, workdir / "operator.log",
            MCOP_RECONCILE_INTERVAL_SECONDS="1", MCOP_STATUS_INTERVAL_SECONDS=str(STATUS_INTERVAL),
            MCOP_WAITING_INTERVAL_SECONDS="5", MCOP_METRICS_PORT="0",
            MCOP_METRICS_ADDRESS="127.0.0.1",
        )  # fmt: skip
        operator.start()
        assert operator.proc is not None
        global _operator
        _operator = operator
        # Recorded with the control plane's processes: if this script is killed outright, the
        # next devcluster session reaps the operator with them.
        with open(control_plane.base_dir / REGISTRY_FILE, "a") as registry:
            registry.write(f"{record(operator.proc.pid)} mcop-operator\n")
        sampler = MemorySampler(operator.proc.pid)
        sampler.start()
        # The PerfTuning's loop has run once: the operator knows maxConcurrentJobs.
        wait_for(
            lambda: (rest.get(f"{GROUP_PATH}/perftunings/default").get("status") or {}).get(
                "phase"
            ) == "Ready",
            120, "PerfTuning default Ready",
        )  # fmt: skip
        time.sleep(2)
        res.memory_idle = sampler.rss()
        cpu0 = sampler.cpu_seconds()

        # 1. latency: one List of N tiny jobs, applied at once.
        watcher = JobWatcher(rest)
        watcher.start()
        watcher.ready.wait(30)
        names = [f"a-{i:03d}" for i in range(args.jobs)]
        if not args.pods_during_latency:
            signal_pod_runner(control_plane, signal.SIGSTOP)
        say(f"applying {len(names)} MonteCarloJobs in one List")
        procs = {p.name: p.pid for p in control_plane.processes if p.pid is not None}
        procs["operator"] = operator.proc.pid
        cpu_before = cpu_by_process(procs)
        t0 = time.time()
        specs = ((name, tiny_spec(seed=i + 1)) for i, name in enumerate(names))
        apply(cluster, job_list(specs), server_side=True)
        res.apply_seconds = time.time() - t0
        workers = [f"{name}-workers" for name in names]
        wait_for(lambda: all(w in watcher.seen for w in workers), 300, "every worker Job")
        res.latency_from_apply = [watcher.seen[w] - t0 for w in workers]
        res.all_admitted_seconds = max(res.latency_from_apply)
        cpu_after = cpu_by_process(procs)
        res.burst_cpu = {k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after}
        res.cpu[f"admitting {len(names)}"] = sampler.cpu_seconds() - cpu0
        say(f"all {len(names)} worker Jobs seen after {res.all_admitted_seconds:.2f}s")
        signal_pod_runner(control_plane, signal.SIGCONT)
        writes = read_audit(audit_log)
        mcj_created, job_created = (
            created_at(writes, "montecarlojobs"), created_at(writes, "jobs"),
        )  # fmt: skip
        res.latency_from_creation = [job_created[f"{n}-workers"] - mcj_created[n] for n in names]
        if args.latency_only:
            return res
        wait_phase(rest, names, "Succeeded", timeout=args.run_timeout)
        time.sleep(3)  # kopf posts events in the background
        t_a = time.time()
        res.cpu[f"admitting and running {len(names)} to Succeeded"] = sampler.cpu_seconds() - cpu0
        writes = read_audit(audit_log)
        res.reports.append(write_report(f"{len(names)} tiny jobs", writes, names, t0, t_a))

        # 2. longer jobs: status written at a bounded rate while progress moves.
        long_names = [f"b-{i}" for i in range(args.long_jobs)]
        if long_names:
            say(f"running {len(long_names)} longer jobs ({args.long_paths:,} Asian paths each)")
            t1 = time.time()
            specs = ((n, long_spec(1000 + i, args.long_paths)) for i, n in enumerate(long_names))
            apply(cluster, job_list(specs))
            wait_phase(rest, long_names, "Succeeded", timeout=args.run_timeout)
            time.sleep(3)
            t_b = time.time()
            writes = read_audit(audit_log)
            res.reports.append(
                write_report(f"{len(long_names)} longer jobs", writes, long_names, t1, t_b)
            )

        # 3. memory with `present` jobs: the finished ones plus suspended ones that keep polling.
        more = max(args.present - len(names) - len(long_names), 0)
        c_names = [f"c-{i:03d}" for i in range(more)]
        say(f"applying {more} suspended jobs: {args.present} MonteCarloJobs present")
        t2 = time.time()
        if c_names:
            specs = ((n, tiny_spec(seed=10_000 + i, suspend=True)) for i, n in enumerate(c_names))
            apply(cluster, job_list(specs), timeout=600)
            wait_phase(rest, c_names, "Suspended", timeout=args.run_timeout)
        say(f"all {more} Suspended; sampling memory for {args.settle:.0f}s more")
        cpu_settle = sampler.cpu_seconds()
        time.sleep(args.settle)
        res.cpu[f"{args.settle:.0f} s with all present"] = sampler.cpu_seconds() - cpu_settle
        t_c = time.time()
        res.present = phases(rest, [*names, *long_names, *c_names])
        res.memory_peak_present = sampler.peak(t2, t_c)
        writes = read_audit(audit_log)
        if c_names:
            res.reports.append(write_report(f"{more} suspended jobs", writes, c_names, t2, t_c))
        res.agents = Counter(w.agent.split(" ")[0] for w in writes if w.namespace == NAMESPACE)
        return res
    except BaseException:
        for path in (workdir / "operator.log",):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-30:]
                say("operator log (tail):\n" + "\n".join(tail))
        raise
    finally:
        say("stopping everything")
        with contextlib.suppress(OSError, StopIteration):
            signal_pod_runner(control_plane, signal.SIGCONT)
        for thread in (watcher, sampler):
            if thread is not None:
                thread.stop()
        if sampler is not None:  # the RSS timeline, for a look at what grew when
            res.memory_peak_run = sampler.peak()
            with contextlib.suppress(OSError):
                res.memory_hwm = sampler.high_water_mark()
            (workdir / "rss.csv").write_text(
                "".join(f"{at:.2f},{rss / MIB:.1f}\n" for at, rss in sampler.samples)
            )
        if operator is not None:
            operator.stop()
        res.load_average = (load_at_start, os.getloadavg()[0])
        if args.keep:
            control_plane.stop()
            postgres.stop()
            redis.stop()
            say(f"kept: {control_plane.base_dir}, {workdir}")
        else:
            control_plane.cleanup()
            postgres.cleanup()
            redis.cleanup()


# -- steady state: many jobs present, many running ------------------------------------------------
# Every request of the admin user (the operator runs with the admin kubeconfig; the analysis
# keeps the operator's user agents), reads included.
STEADY_AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  users: [admin]
- level: None
"""
TARGET_READS_PER_RUNNING_JOB = 0.1  # per second: one per 10 s
TARGET_STEADY_MIB = 300.0
READ_VERBS = ("get", "list", "watch")


@dataclasses.dataclass
class Window:
    seconds: float
    requests: Counter[tuple[str, str]]  # (user agent, verb) -> requests in the window
    status_writes: int
    cpu_seconds: float
    peak_rss: int

    def operator_reads(self) -> int:
        return sum(
            n
            for (agent, verb), n in self.requests.items()
            if verb in READ_VERBS and agent.startswith(("mcop-operator", "kopf/"))
        )


def requests_in(path: Path, since: float, until: float) -> Counter[tuple[str, str]]:
    """Requests completed in [since, until] by user agent (first word) and verb; a watch counts
    once, when it starts."""
    counts: Counter[tuple[str, str]] = Counter()
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        verb, stage = str(entry["verb"]), entry.get("stage")
        if (verb == "watch") != (stage == "ResponseStarted"):
            continue
        if since <= _unix(entry["stageTimestamp"]) <= until:
            counts[(str(entry.get("userAgent", "")).split(" ")[0], verb)] += 1
    return counts


def measure_window(
    audit_log: Path, sampler: MemorySampler, names: Sequence[str], seconds: float
) -> Window:
    t0, cpu0 = time.time(), sampler.cpu_seconds()
    time.sleep(seconds)  # the window measured: the operator at rest, not a wait for a state
    t1 = time.time()
    wanted = set(names)
    status = sum(
        1
        for w in read_audit(audit_log)
        if w.by_operator and w.subresource == "status" and w.name in wanted and t0 <= w.at <= t1
    )
    return Window(
        seconds=t1 - t0,
        requests=requests_in(audit_log, t0, t1),
        status_writes=status,
        cpu_seconds=sampler.cpu_seconds() - cpu0,
        peak_rss=sampler.peak(t0, t1),
    )


@dataclasses.dataclass
class Steady:
    present: Counter[str] = dataclasses.field(default_factory=Counter)
    running: int = 0
    baseline: Window | None = None
    loaded: Window | None = None
    memory_hwm: int = 0
    load_average: tuple[float, float] = (0.0, 0.0)


def run_steady(args: argparse.Namespace, workdir: Path) -> Steady:
    res = Steady()
    audit_log = workdir / "audit.log"
    postgres, redis = PostgresServer(), RedisServer()
    control_plane = ControlPlane(audit_log=audit_log, audit_policy=STEADY_AUDIT_POLICY)
    operator: OperatorProcess | None = None
    sampler: MemorySampler | None = None
    load_at_start = os.getloadavg()[0]
    try:
        say("starting PostgreSQL, Redis and the control plane")
        postgres.start()
        redis.start()
        dsn = postgres.create_database("mcop_bench")
        control_plane.start()
        cluster = KubeCluster(control_plane)
        rest = cluster.rest()
        cluster.install_crds()
        cluster.kubectl("apply", "-f", str(PRIORITY_CLASSES))
        rest.create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
        wait_for(
            lambda: rest.get_or_none(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"),
            60, "the namespace's default ServiceAccount",
        )  # fmt: skip
        create_connection_secrets(rest, NAMESPACE, redis_url=redis.url, postgres_dsn=dsn)
        apply(cluster, perf_tuning(args.running + 10))
        operator = OperatorProcess(
            str(cluster.kubeconfig), NAMESPACE, workdir / "operator.log",
            MCOP_METRICS_PORT="0", MCOP_METRICS_ADDRESS="127.0.0.1",
        )  # fmt: skip
        operator.start()
        assert operator.proc is not None
        global _operator
        _operator = operator
        with open(control_plane.base_dir / REGISTRY_FILE, "a") as registry:
            registry.write(f"{record(operator.proc.pid)} mcop-operator\n")
        sampler = MemorySampler(operator.proc.pid)
        sampler.start()

        # The finished ones: one job computes, the others hit its cached result (no pods).
        apply(cluster, job_list([("done-0000", tiny_spec(seed=1))]))
        wait_phase(rest, ["done-0000"], "Succeeded", timeout=args.run_timeout)
        finished = [f"done-{i:04d}" for i in range(args.present - args.running)]
        say(f"applying {len(finished) - 1} jobs that finish from the cache")
        for start in range(1, len(finished), 200):
            chunk = finished[start : start + 200]
            apply(cluster, job_list((n, tiny_spec(seed=1)) for n in chunk), timeout=600)
        wait_phase(rest, finished, "Succeeded", timeout=args.run_timeout)
        say(f"baseline: {len(finished)} finished jobs, {args.window:.0f} s window")
        time.sleep(5)  # kopf posts the last events in the background
        res.baseline = measure_window(audit_log, sampler, finished, args.window)

        # The running ones: admitted, worker Jobs made, pods waiting (the pod runner paused).
        signal_pod_runner(control_plane, signal.SIGSTOP)
        running = [f"run-{i:04d}" for i in range(args.running)]
        say(f"applying {len(running)} jobs that stay running")
        apply(cluster, job_list((n, tiny_spec(seed=100 + i)) for i, n in enumerate(running)))
        wait_phase(rest, running, "Running", timeout=args.run_timeout)
        res.running = len(running)
        time.sleep(5)
        say(f"{len(running)} running, {args.present} present: {args.window:.0f} s window")
        res.loaded = measure_window(audit_log, sampler, running, args.window)
        res.present = phases(rest, [*finished, *running])
        with contextlib.suppress(OSError):
            res.memory_hwm = sampler.high_water_mark()
        return res
    except BaseException:
        if (workdir / "operator.log").exists():
            tail = (workdir / "operator.log").read_text(errors="replace").splitlines()[-30:]
            say("operator log (tail):\n" + "\n".join(tail))
        raise
    finally:
        say("stopping everything")
        with contextlib.suppress(OSError, StopIteration):
            signal_pod_runner(control_plane, signal.SIGCONT)
        if sampler is not None:
            sampler.stop()
        if operator is not None:
            operator.stop()
        res.load_average = (load_at_start, os.getloadavg()[0])
        if args.keep:
            control_plane.stop()
            postgres.stop()
            redis.stop()
            say(f"kept: {control_plane.base_dir}, {workdir}")
        else:
            control_plane.cleanup()
            postgres.cleanup()
            redis.cleanup()


def print_steady(res: Steady) -> bool:
    assert res.baseline is not None and res.loaded is not None
    base, load = res.baseline, res.loaded
    n = max(res.running, 1)
    print(
        f"\n{sum(res.present.values())} jobs present ({dict(res.present)}), {res.running} running"
    )
    print("\n| user agent | verb | baseline req/s | with running req/s | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for agent, verb in sorted(set(base.requests) | set(load.requests)):
        b = base.requests.get((agent, verb), 0) / base.seconds
        w = load.requests.get((agent, verb), 0) / load.seconds
        ratio = f"{w / b:.2f}" if b else "-"
        print(f"| {agent} | {verb} | {b:.3f} | {w:.3f} | {ratio} |")
    reads = (load.operator_reads() / load.seconds - base.operator_reads() / base.seconds) / n
    ok_reads = reads <= TARGET_READS_PER_RUNNING_JOB
    peak = max(load.peak_rss, res.memory_hwm) / MIB
    ok_rss = peak < TARGET_STEADY_MIB
    print("\n| measure | value | target | |")
    print("| --- | --- | --- | --- |")
    print(
        f"| operator API reads per running job per second (with - baseline) / {n} | "
        f"{reads:.4f} | <= {TARGET_READS_PER_RUNNING_JOB} | {'met' if ok_reads else 'MISSED'} |"
    )
    print(
        f"| operator peak RSS with {sum(res.present.values())} jobs (kernel high-water mark) | "
        f"{peak:.0f} MiB | < {TARGET_STEADY_MIB:.0f} MiB | {'met' if ok_rss else 'MISSED'} |"
    )
    print(
        f"| operator CPU, baseline / with running | {base.cpu_seconds / base.seconds:.3f} / "
        f"{load.cpu_seconds / load.seconds:.3f} cores | | |"
    )
    print(
        f"| status writes per running job per minute | "
        f"{load.status_writes / n / load.seconds * 60:.2f} | | |"
    )
    print(f"| machine load average, start / end | {res.load_average[0]:.1f} / "
          f"{res.load_average[1]:.1f} | | |")  # fmt: skip
    return ok_reads and ok_rss


# -- the table ----------------------------------------------------------------------------------
def print_results(res: Results) -> bool:
    """Prints the figures and targets; True when every target is met."""
    ok_all = True

    def row(what: str, value: str, target: str = "", ok: bool | None = None) -> None:
        nonlocal ok_all
        mark = "" if ok is None else ("met" if ok else "MISSED")
        ok_all = ok_all and ok is not False
        print(f"| {what} | {value} | {target} | {mark} |")

    n = len(res.latency_from_apply)
    print("\n| measure | value | target | |")
    print("| --- | --- | --- | --- |")
    med, p99 = statistics.median(res.latency_from_apply), nearest_rank(res.latency_from_apply, 0.99)
    row(f"`kubectl apply --server-side` of {n} jobs (one List) took", f"{res.apply_seconds:.2f} s")
    row("apply -> worker Job seen, median", f"{med:.2f} s")
    row("apply -> worker Job seen, p99", f"{p99:.2f} s", f"< {TARGET_P99_SECONDS:.0f} s",
        p99 < TARGET_P99_SECONDS)  # fmt: skip
    own = res.latency_from_creation
    row("job's own creation -> its Job created (audit), median / p99",
        f"{statistics.median(own):.2f} s / {nearest_rank(own, 0.99):.2f} s")  # fmt: skip
    for rep in res.reports:
        total = sum(rep.by_kind.values())
        kinds = ", ".join(f"{k} {v / rep.jobs:.2f}" for k, v in sorted(rep.by_kind.items()))
        row(f"API writes per job, {rep.title}", f"{total / rep.jobs:.2f} ({kinds})")
        worst = max(rep.status_excess)
        life = statistics.mean(rep.lifetimes)
        row(
            f"status patches per job, {rep.title}: mean / max (mean life {life:.1f} s)",
            f"{statistics.mean(rep.status_counts):.1f} / {max(rep.status_counts)}; "
            f"max over 1 per {STATUS_INTERVAL:.0f} s of life: {worst:+.1f}",
            f"<= 1 per {STATUS_INTERVAL:.0f} s + {TRANSITIONS_HANDFUL}",
            worst <= TRANSITIONS_HANDFUL,
        )  # fmt: skip
    present = ", ".join(f"{v} {k}" for k, v in sorted(res.present.items()))
    if res.present:
        row(f"operator RSS with {sum(res.present.values())} jobs present ({present}), peak",
            f"{res.memory_peak_present / MIB:.0f} MiB", f"< {TARGET_MEMORY_MIB:.0f} MiB",
            res.memory_peak_present / MIB < TARGET_MEMORY_MIB)  # fmt: skip
    row("operator RSS: idle / peak of the whole run / kernel high-water mark",
        f"{res.memory_idle / MIB:.0f} / {res.memory_peak_run / MIB:.0f} / "
        f"{res.memory_hwm / MIB:.0f} MiB", f"< {TARGET_MEMORY_MIB:.0f} MiB",
        max(res.memory_peak_run, res.memory_hwm) / MIB < TARGET_MEMORY_MIB)  # fmt: skip
    burst = ", ".join(
        f"{k} {v:.1f}" for k, v in sorted(res.burst_cpu.items(), key=lambda kv: -kv[1])
    )
    row("CPU seconds by process from the apply to the last worker Job", burst)
    cpu = ", ".join(f"{k}: {v:.1f} s" for k, v in res.cpu.items())
    row("operator CPU time, cumulative", cpu)
    row("machine load average (1 min), start / end (2 cores, shared)",
        f"{res.load_average[0]:.1f} / {res.load_average[1]:.1f}")  # fmt: skip
    agents = ", ".join(f"{k} {v}" for k, v in res.agents.most_common())
    print(f"\nwrite requests in namespace {NAMESPACE} by user agent: {agents}")
    return ok_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100, help="jobs applied at once (%(default)s)")
    parser.add_argument("--present", type=int, default=500, help="jobs present for the memory "
                        "figure (%(default)s)")  # fmt: skip
    parser.add_argument("--long-jobs", type=int, default=2, help="longer jobs (%(default)s)")
    parser.add_argument("--long-paths", type=int, default=24_000_000,
                        help="Asian paths of each longer job (%(default)s)")  # fmt: skip
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds of sampling with all jobs present (%(default)s)")  # fmt: skip
    parser.add_argument("--run-timeout", type=float, default=600.0,
                        help="longest wait for a phase (%(default)s s)")  # fmt: skip
    parser.add_argument("--time-limit", type=int, default=1800,
                        help="stop everything after this many seconds (%(default)s)")  # fmt: skip
    parser.add_argument("--pods-during-latency", action="store_true",
                        help="let worker processes start while the latency is measured (default: "
                        "the pod runner waits until every worker Job exists, as workers run on "
                        "other nodes than the operator in a cluster)")  # fmt: skip
    parser.add_argument("--latency-only", action="store_true",
                        help="stop after the latency figures (no writes, no memory)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the folders (logs, audit log)")
    parser.add_argument("--steady", action="store_true",
                        help="the operator at rest: --present jobs, --running of them running "
                        "(reads per running job, RSS, CPU) instead of the burst")  # fmt: skip
    parser.add_argument("--running", type=int, default=200,
                        help="--steady: jobs running (%(default)s)")  # fmt: skip
    parser.add_argument("--window", type=float, default=60.0,
                        help="--steady: seconds of each measured window (%(default)s)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.steady and "--present" not in " ".join(argv or sys.argv):
        args.present = 2000

    stop_servers_on_sigterm()  # SIGTERM unwinds like Ctrl-C: the finally clauses stop everything

    def out_of_time(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"time limit of {args.time_limit}s reached")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(args.time_limit)
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="mcop-bench-operator-"))
    started = time.monotonic()
    try:
        if args.steady:
            steady = run_steady(args, workdir)
        else:
            res = run(args, workdir)
    finally:
        signal.alarm(0)
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    say(f"done in {time.monotonic() - started:.0f}s")
    if args.steady:
        return 0 if print_steady(steady) else 1
    return 0 if print_results(res) else 1


if __name__ == "__main__":
    sys.exit(main())
