"""kopf entry point: every decorator of the operator lives here, each a few lines that hand over to
a module of its own (reconcile_job, tuning, connections). `mcop operator` runs this."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from . import deletion, metrics, naming
from .admission import QueueEntry, merge_local
from .builders import JobRef
from .config import OperatorConfig
from .connections import ConnectionRegistry
from .job_status import TERMINAL_PHASES
from .kube import KubeApi, load_config
from .priority import priority_rank
from .reconcile_job import JobReconciler
from .reconcile_tuning import TuningReconciler

log = logging.getLogger("mcop.operator")


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
    kube = KubeApi()
    memo.config = config
    memo.kube = kube
    memo.connections = ConnectionRegistry(kube, config.default_connection)
    memo.admit_locks = collections.defaultdict(asyncio.Lock)
    memo.admitted_here = set()  # uids admitted by this process, until the index shows them
    metrics.serve(config.metrics_port, config.metrics_address)
    log.info("montecarlo-operator started; worker image %s", config.worker_image)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
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


@kopf.index(naming.GROUP, naming.VERSION, naming.TUNING_PLURAL)
def tunings(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str], Any]:
    return {(namespace or "", name): dict(spec)}


# -- the loops ----------------------------------------------------------------------------------
async def _loop(
    stopped: kopf.DaemonStopped, what: str, step: Callable[[], Awaitable[float | None]]
) -> None:
    """Run `step` until it returns None (finished) or the daemon stops, waiting the seconds it
    returns between passes; a failing pass is retried with exponential backoff (at most 60 s)
    instead of crashing the operator."""
    failures = 0
    while not stopped:
        try:
            delay = await step()
            failures = 0
        except Exception as exc:  # a dependency hiccup: log, back off, never crash the operator
            metrics.count_error(exc)
            failures += 1
            delay = min(60.0, 2.0**failures)
            log.warning("%s: %s (retrying in %.0fs)", what, exc, delay)
        if delay is None:
            return
        await stopped.wait(delay)


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
    )

    async def step() -> float | None:
        outcome = await reconciler.step(body)
        return None if outcome.finished else outcome.delay

    await _loop(stopped, f"job {namespace}/{name}", step)


@kopf.on.delete(naming.GROUP, naming.VERSION, naming.JOB_PLURAL, retries=30, backoff=2)
async def forget_job(
    name: str,
    namespace: str | None,
    uid: str,
    spec: kopf.Spec,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """Stop the workers, then drop the job's blocks and live keys (bounded retries)."""
    assert namespace is not None
    tunings: kopf.Index[tuple[str, str], Any] = kwargs["tunings"]
    tuning_name = str(spec.get("tuningRef") or "default")
    tuning_spec = next(iter(tunings.get((namespace, tuning_name), [])), None)
    ref = JobRef(name=name, namespace=namespace, uid=uid)
    await deletion.forget_job(memo.kube, memo.connections, ref, tuning_name, tuning_spec)


# -- `mcop operator` -----------------------------------------------------------------------------
def run(argv: list[str] | None = None) -> int:
    """Run the operator until SIGTERM: `mcop operator [--namespace NS ...] [--liveness URL]`."""
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
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    kopf.configure(verbose=args.verbose)
    kopf.run(
        standalone=not args.peering,
        namespaces=list(args.namespace),
        clusterwide=not args.namespace,
        liveness_endpoint=args.liveness or None,
    )
    return 0


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
        return await reconciler.step(body, queue)

    await _loop(stopped, f"perftuning {namespace}/{name}", step)
