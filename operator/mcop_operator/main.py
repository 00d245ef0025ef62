"""kopf entry point: every decorator of the operator lives here, each a few lines that hand over to
a module of its own (reconcile_job, tuning, connections). `mcop operator` runs this."""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from . import deletion, errors, leader, metrics, naming, numbers
from .admission import QueueEntry, merge_local
from .builders import JobRef
from .config import OperatorConfig
from .connections import ConnectionRegistry
from .job_status import TERMINAL_PHASES
from .kube import USER_AGENT, KubeApi, import_api_classes, load_config
from .leader import Fence, LeaderElector, LeaseConfig
from .priority import priority_rank
from .reconcile_job import JobReconciler
from .reconcile_tuning import TuningReconciler
from .tuning import tuning_from_spec

log = logging.getLogger("mcop.operator")
IDLE_POOL_SECONDS = 600.0


class _NoDiffBase(kopf.DiffBaseStorage):
    """No handler reacts to spec changes (each job's loop reads its spec afresh), so kopf keeps
    no copy of the last handled spec: one API write less per job created and per spec change."""

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = OperatorConfig.from_env()
    load_config()
    settings.posting.level = logging.INFO
    settings.persistence.finalizer = f"{naming.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=naming.GROUP)
    settings.persistence.diffbase_storage = _NoDiffBase()
    settings.watching.server_timeout = 300
    memo.fence = memo.get("fence") or Fence()  # the Lease, or no election at all
    kube = KubeApi(fence=memo.fence)
    memo.config = config
    memo.kube = kube
    memo.connections = ConnectionRegistry(kube, config.default_connection, memo.fence)
    memo.admit_locks = collections.defaultdict(asyncio.Lock)
    memo.admitted_here = set()  # uids admitted by this process, until the index shows them
    memo.wakers = {}  # (namespace, job name) -> the Event that wakes the job's loop
    memo.acted = []  # [True] once a pass is done (the log line that ends a takeover)
    # Only the worker Jobs the operator made, selected by the API server (not every Job).
    settings.watching.label_selectors["batch", "jobs"] = (
        f"{naming.MANAGED_BY_LABEL}={naming.MANAGED_BY_VALUE}"
    )
    # Pools of PerfTunings no loop used for this long are closed (reopened lazily on demand).
    memo.idle_closer = asyncio.create_task(memo.connections.close_idle_forever(IDLE_POOL_SECONDS))
    log.info("montecarlo-operator started; worker image %s", config.worker_image)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.idle_closer.cancel()
    await memo.connections.close()


# -- indexes: what the loops need to know about other objects, without asking the API ----------
@kopf.index(naming.GROUP, naming.VERSION, naming.JOB_PLURAL)
def job_queue(
    namespace: str | None,
    name: str,
    uid: str,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    **_: Any,
) -> dict[str, QueueEntry]:
    phase = status.get("phase")
    if phase in TERMINAL_PHASES or namespace is None or spec.get("queueName"):
        # An empty mapping drops the job from the index (None would keep its old entry). Jobs
        # with a queueName are Kueue's to admit: they neither wait for nor hold a slot here.
        return {}
    admitted = bool(status.get("workerJob"))
    return {
        namespace: QueueEntry(
            uid=uid,
            name=name,
            rank=priority_rank(spec),
            created=str(meta.get("creationTimestamp") or ""),
            admitted=admitted,
            suspended=bool(spec.get("suspend", False)),
        )
    }


@kopf.index("batch", "v1", "jobs", labels={naming.MANAGED_BY_LABEL: naming.MANAGED_BY_VALUE})
async def worker_jobs(
    namespace: str | None,
    name: str,
    body: kopf.Body,
    labels: kopf.Labels,
    memo: kopf.Memo,
    **_: Any,
) -> dict[tuple[str, str], dict[str, Any]]:
    """The worker Jobs, from the watch (no GET per job and pass); a change wakes the job's loop
    (a shard failed, the Job completed). Only what the loops read is kept."""
    waker = (memo.get("wakers") or {}).get((namespace, labels.get(naming.JOB_LABEL)))
    if waker is not None:
        waker.set()
    meta = body.get("metadata") or {}
    return {
        (namespace or "", name): {
            "metadata": {
                "name": name,
                "uid": meta.get("uid"),
                "ownerReferences": list(meta.get("ownerReferences") or []),
            },
            "spec": {"suspend": bool((body.get("spec") or {}).get("suspend"))},
            "status": dict(body.get("status") or {}),
        }
    }


@kopf.index(naming.GROUP, naming.VERSION, naming.TUNING_PLURAL)
def tunings(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str], Any]:
    return {(namespace or "", name): dict(spec)}


# -- the loops ----------------------------------------------------------------------------------
async def _loop(
    stopped: kopf.DaemonStopped,
    what: str,
    step: Callable[[], Awaitable[float | None]],
    wake: asyncio.Event | None = None,
) -> None:
    """Run `step` until it returns None (finished) or the daemon stops, waiting the seconds it
    returns between passes (or until `wake` is set: something the pass looks at changed); a
    failing pass is retried with exponential backoff (at most 60 s) instead of crashing the
    operator."""
    failures = 0
    while not stopped:
        if wake is not None:
            wake.clear()  # what changes from now on wakes the next wait
        try:
            delay = await step()
            failures = 0
        except Exception as exc:  # a dependency hiccup: log, back off, never crash the operator
            metrics.count_error(exc)
            failures += 1
            delay = min(60.0, 2.0**failures)
            if not errors.is_transient(exc) and failures == 1:
                log.error("%s: %s (retrying in %.0fs)", what, exc, delay, exc_info=exc)
            else:
                log.warning("%s: %s (retrying in %.0fs)", what, exc, delay)
        if delay is None:
            return
        await _pause(stopped, delay, wake if failures == 0 else None)  # backoff is not cut short


async def _pause(stopped: kopf.DaemonStopped, delay: float, wake: asyncio.Event | None) -> None:
    if wake is None:
        await stopped.wait(delay)
        return
    waits = [asyncio.ensure_future(stopped.wait(delay)), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


# -- MonteCarloJob -------------------------------------------------------------------------------
def _unfinished(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in TERMINAL_PHASES


@kopf.daemon(
    naming.GROUP,
    naming.VERSION,
    naming.JOB_PLURAL,
    id="reconcile",
    when=_unfinished,
    cancellation_timeout=10,
)
async def run_job(
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    name: str,
    namespace: str | None,
    uid: str,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    assert namespace is not None  # MonteCarloJob is namespaced
    job_queue: kopf.Index[str, QueueEntry] = kwargs["job_queue"]
    tunings: kopf.Index[tuple[str, str], Any] = kwargs["tunings"]
    workers: kopf.Index[tuple[str, str], dict[str, Any]] = kwargs["worker_jobs"]
    wake = memo.wakers.setdefault((namespace, name), asyncio.Event())
    reconciler = JobReconciler(
        ref=JobRef(name=name, namespace=namespace, uid=uid),
        config=memo.config,
        kube=memo.kube,
        connections=memo.connections,
        queue=lambda ns: merge_local(job_queue.get(ns, []), memo.admitted_here),
        tuning_spec=lambda ns, tname: next(iter(tunings.get((ns, tname), [])), None),
        event=lambda type_, reason, message: kopf.event(
            body, type=type_, reason=reason, message=message
        ),
        admit_lock=lambda ns: memo.admit_locks[ns],
        admitted_here=memo.admitted_here,
        worker_job=lambda ns, wname: next(iter(workers.get((ns, wname), [])), None),
    )

    async def step() -> float | None:
        outcome = await reconciler.step(body)
        _first_pass(memo)
        return None if outcome.finished else outcome.delay

    try:
        await _loop(stopped, f"job {namespace}/{name}", step, wake)
    finally:
        memo.wakers.pop((namespace, name), None)


def _first_pass(memo: kopf.Memo) -> None:
    """Log once when this replica first acted (a job's or a PerfTuning's pass done): the end of
    a takeover."""
    if memo.acted:  # shared: each object's memo is a shallow copy of the operator's
        return
    memo.acted.append(True)
    taken = memo.fence.acquired_at
    since = f"{time.monotonic() - taken:.1f} s after taking the Lease" if taken else "at start"
    log.info("first reconcile pass done, %s", since)


@kopf.on.delete(naming.GROUP, naming.VERSION, naming.JOB_PLURAL, retries=30, backoff=2)
async def forget_job(
    name: str,
    namespace: str | None,
    uid: str,
    spec: kopf.Spec,
    status: kopf.Status,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """Stop the workers, then drop the job's blocks and live keys (bounded retries)."""
    assert namespace is not None
    tunings: kopf.Index[tuple[str, str], Any] = kwargs["tunings"]
    tuning_name = str(spec.get("tuningRef") or "default")
    tuning_spec = next(iter(tunings.get((namespace, tuning_name), [])), None)
    ref = JobRef(name=name, namespace=namespace, uid=uid)
    worker_job = str(status.get("workerJob") or "")
    await deletion.forget_job(
        memo.kube, memo.connections, ref, tuning_name, tuning_spec, worker_job
    )


# -- `mcop operator` -----------------------------------------------------------------------------
def run(argv: list[str] | None = None) -> int:
    """Run the operator until SIGTERM: `mcop operator [--namespace NS ...] [--liveness URL]
    [--leader-elect ...]`."""
    args = _parser().parse_args(argv)
    kopf.configure(verbose=args.verbose)
    config = OperatorConfig.from_env()
    metrics.serve(config.metrics_port, config.metrics_address)
    fence: Fence = Fence()
    if args.leader_elect:
        fence = _lead(args)
    else:
        metrics.set_leader(True)  # without election every replica acts (and says so)
    try:
        kopf.run(
            standalone=not args.peering,
            namespaces=list(args.namespace),
            clusterwide=not args.namespace,
            liveness_endpoint=args.liveness or None,
            memo=kopf.Memo(fence=fence),
        )
    finally:
        if isinstance(fence, LeaderElector):
            fence.release()
    return 0


def _lead(args: Any) -> LeaderElector:
    """Block until this replica holds the Lease (answering liveness probes meanwhile), then keep
    renewing it in a thread; losing it ends the process."""
    import kubernetes

    load_config()
    lease = LeaseConfig(
        namespace=args.leader_election_namespace or leader.default_namespace(),
        name=args.leader_election_id,
        identity=leader.default_identity(),
        lease_seconds=args.leader_election_lease_duration,
        renew_deadline_seconds=args.leader_election_renew_deadline,
        retry_seconds=args.leader_election_retry_period,
    )
    api_client = kubernetes.client.ApiClient()
    api_client.user_agent = f"{USER_AGENT}/leader-election"
    elector = LeaderElector(lease, kubernetes.client.CoordinationV1Api(api_client))
    # Warmed up beside the wait, not before it: a replica that just started watches the Lease
    # at once (its lease duration counts from its first look), and one that wins before it is
    # warm leads at once and finishes the warm-up first.
    warming = threading.Thread(target=_warm_up, name="warm-up", daemon=True)
    with leader.standby_liveness(args.liveness):
        warming.start()
        elector.acquire()
        elector.start_renewing()  # before the join: a leader that waits still renews
        warming.join()
    return elector


# A job spec every operator can parse: parsing it once loads what the first real pass would.
_WARM_UP_JOB = {
    "spec": {
        "model": {"type": "gbm", "spot": 100.0, "volatility": 0.2, "rate": 0.05},
        "instrument": {"type": "european", "optionType": "call", "strike": 100.0, "maturity": 1.0},
        "paths": 10_000,
        "seed": 1,
    }
}


def _warm_up() -> None:
    """Pay before leading what the first pass after a takeover would pay: the Kubernetes client's
    API classes, the CRDs' schemas and rules, the versions in the spec hash (seconds on a busy
    node: the takeover measured 13-18 s from the Lease to the first pass without this)."""
    started = time.monotonic()
    try:
        import_api_classes()
        numbers.parse(_WARM_UP_JOB)
        tuning_from_spec("default", None)
    except Exception as exc:  # only a head start: the first pass would meet the same
        log.warning("warm-up: %s", exc)
        return
    log.info("ready to lead in %.1f s", time.monotonic() - started)


def _parser() -> Any:
    import argparse

    parser = argparse.ArgumentParser(prog="mcop operator", description=run.__doc__)
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    parser.add_argument(
        "--liveness",
        default="http://0.0.0.0:8081/healthz",
        help="kopf's liveness endpoint (default %(default)s)",
    )
    parser.add_argument(
        "--peering",
        action="store_true",
        help="coordinate with other operator replicas through kopf peering (default: standalone)",
    )
    parser.add_argument(
        "--leader-elect",
        action="store_true",
        help="reconcile only while holding a coordination.k8s.io Lease (run several replicas)",
    )
    parser.add_argument(
        "--leader-election-namespace",
        default="",
        help="the Lease's namespace (default: the pod's namespace)",
    )
    parser.add_argument(
        "--leader-election-id",
        default="montecarlo-operator",
        help="the Lease's name (default %(default)s)",
    )
    parser.add_argument(
        "--leader-election-lease-duration",
        type=float,
        default=15.0,
        help="seconds a standby waits after the last renewal it saw before taking over "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--leader-election-renew-deadline",
        type=float,
        default=10.0,
        help="seconds the leader keeps acting without a renewal before it exits "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--leader-election-retry-period",
        type=float,
        default=2.0,
        help="seconds between two tries to take or renew the Lease (default %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


# -- PerfTuning ----------------------------------------------------------------------------------
@kopf.daemon(naming.GROUP, naming.VERSION, naming.TUNING_PLURAL, id="tune", cancellation_timeout=10)
async def run_tuning(
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    name: str,
    namespace: str | None,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """Apply the settings live and refresh the metrics every spec.metrics.intervalSeconds."""
    assert namespace is not None
    job_queue: kopf.Index[str, QueueEntry] = kwargs["job_queue"]
    reconciler = TuningReconciler(namespace, name, memo.kube, memo.connections)

    async def step() -> float:
        queue = merge_local(job_queue.get(namespace, []), memo.admitted_here)
        delay = await reconciler.step(body, queue)
        _first_pass(memo)
        return delay

    await _loop(stopped, f"perftuning {namespace}/{name}", step)
    if stopped.reason and kopf.DaemonStoppingReason.RESOURCE_DELETED in stopped.reason:
        await memo.connections.forget(namespace, name)
