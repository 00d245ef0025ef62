"""One MonteCarloJob's reconciling loop: admit it, launch its workers, aggregate their blocks into
status, and finish it once its result is safely stored. Level-based: every step looks at the world
(status, worker Job, database) afresh, so an operator restart at any moment loses nothing."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from mcop_worker.model.errors import ManifestError
from mcop_worker.model.spec import JobSpec

from . import errors, job_status, metrics, naming, numbers
from .admission import QueueEntry, queue_report
from .builders import JobRef, build_connection_secret, build_worker_job, on_connection_secret
from .conditions import get_condition, now_rfc3339, set_condition
from .config import OperatorConfig
from .connections import ConnectionRegistry, Services
from .kube import Conflict, KubeApi, OwnedByAnother, Refused, SecretProblem
from .priority import priority_class_name

log = logging.getLogger(__name__)

# kopf.info/kopf.warn bound to the object: (type, reason, message)
EventFn = Callable[[str, str, str], None]
QueueFn = Callable[[str], list[QueueEntry]]
TuningFn = Callable[[str, str], Mapping[str, Any] | None]


@dataclasses.dataclass
class Outcome:
    finished: bool = False
    delay: float = 1.0


class JobReconciler:
    """Lives as long as the job's kopf daemon; holds only what can be rebuilt from the world."""

    def __init__(
        self,
        ref: JobRef,
        config: OperatorConfig,
        kube: KubeApi,
        connections: ConnectionRegistry,
        queue: QueueFn,
        tuning_spec: TuningFn,
        event: EventFn,
        admit_lock: Callable[[str], Any],
        admitted_here: set[str] | None = None,
        worker_job: WorkerJobFn | None = None,
    ) -> None:
        self.ref = ref
        self.config = config
        self.kube = kube
        self.connections = connections
        self.queue = queue
        self.tuning_spec = tuning_spec
        self.event = event
        self.admit_lock = admit_lock
        self.admitted_here = admitted_here if admitted_here is not None else set()
        self.aggregator: numbers.Aggregator | None = None
        self.rate = numbers.RateMeter()
        self.written: dict[str, Any] = {}
        self.last_progress_write = 0.0
        self.warned: set[str] = set()
        self.relaunches = 0
        self.counted_paths: int | None = None  # paths already added to mcop_paths_simulated_total
        self._parsed: tuple[str, tuple[JobSpec, str]] | None = None
        self.resource_version: str | None = None  # of this loop's last write (or read)
        self.just_admitted = False  # admitted by the last pass: its worker Job is not there yet
        # The worker Job as the operator's watch last saw it (None: ask the API server).
        self.worker_job = worker_job
        # PostgreSQL is read when the shards report new blocks through Redis, at least every
        # DB_POLL_SECONDS, and on every pass while Redis is away.
        self.created: Mapping[str, Any] | None = None  # the worker Job this loop created
        self.created_at = float("-inf")
        self.blocks_reported: int | None = None
        self.last_pull = float("-inf")
        self.db_ok = True

    def parse(self, body: Mapping[str, Any]) -> tuple[JobSpec, str]:
        """numbers.parse, redone only when the spec changes: validating a spec (the CRD's CEL
        rules) costs ~20 ms of CPU, and every unfinished job's loop steps once a second or so."""
        key = json.dumps(body.get("spec") or {}, sort_keys=True)
        if self._parsed is None or self._parsed[0] != key:
            self._parsed = (key, numbers.parse(body))
        return self._parsed[1]

    # -- entry point ---------------------------------------------------------------------------
    async def step(self, body: Mapping[str, Any]) -> Outcome:
        spec: Mapping[str, Any] = body.get("spec") or {}
        # This loop is the only writer of status, so what it wrote last is never older than the
        # body kopf hands over (which can lag under load and would re-admit a job).
        status: dict[str, Any] = {**(body.get("status") or {}), **self.written}
        metadata = body.get("metadata") or {}
        generation = int(metadata.get("generation") or 1)
        if self.resource_version is None:
            self.resource_version = metadata.get("resourceVersion") or None
        if status.get("phase") in job_status.TERMINAL_PHASES:
            self.admitted_here.discard(self.ref.uid)
            return Outcome(finished=True)
        ctx = _Step(self, body, spec, status, generation)
        try:
            outcome = await ctx.run()
        except Exception as exc:
            if errors.is_transient(exc):
                raise  # the loop retries with backoff; nothing of this pass is written
            outcome = self._broken(ctx, exc)
        # The one place status is written: what this pass decided, or nothing at all.
        try:
            await self._write(ctx)
        except Conflict:
            # Someone else wrote since (a user's spec change, kopf's finalizer, a replica that
            # lost its Lease): look again from the object as it is now.
            self._forget_admission(ctx)
            return self._reread()
        except BaseException:
            self._forget_admission(ctx)
            raise
        if ctx.admitting:
            self.just_admitted = True
            ctx.observe_admission()
        if outcome.finished:
            self.admitted_here.discard(self.ref.uid)
        return outcome

    def _broken(self, ctx: _Step, exc: Exception) -> Outcome:
        """A deterministic error (a bug, a request the API server will always refuse): retrying
        cannot help, so the job fails with the reason; the traceback is logged once."""
        log.error(
            "job %s/%s: %s; the job fails",
            self.ref.namespace,
            self.ref.name,
            exc,
            exc_info=exc,
        )
        metrics.count_error(exc)
        return ctx.fail("ReconcileError", f"{type(exc).__name__}: {exc}")

    def _forget_admission(self, ctx: _Step) -> None:
        if ctx.admitting:
            self.admitted_here.discard(self.ref.uid)  # not admitted after all: the slot is free

    def _reread(self) -> Outcome:
        """Start again from kopf's body: its status and resourceVersion. While the body still lags
        behind the change, the next write meets another Conflict and this repeats; no GET."""
        self.written = {}
        self.resource_version = None
        self.just_admitted = False
        return Outcome(delay=self.config.reconcile_interval_seconds)

    async def _write(self, ctx: _Step) -> None:
        """Write status when it changed: transitions at once, progress at a bounded rate. The
        patch is conditioned on the resourceVersion this loop last saw (Conflict otherwise)."""
        patch = {k: v for k, v in ctx.status.items() if self.written.get(k, _MISSING) != v}
        if not patch:
            return
        transition = ctx.transition or any(k not in _PROGRESS_KEYS for k in patch)
        now = time.monotonic()
        if not transition and now - self.last_progress_write < self.config.status_interval_seconds:
            return
        # The convergence point rides on this write: status.history never costs a write of its own.
        ctx.status["history"] = job_status.extend_history(
            ctx.status.get("history"),
            ctx.status.get("pathsDone"),
            ctx.status.get("estimate"),
            ctx.status.get("stdErr"),
        )
        written = await self.kube.patch_job_status(
            self.ref.namespace, self.ref.name, ctx.status, self.resource_version
        )
        self.resource_version = (written.get("metadata") or {}).get("resourceVersion")
        self.written = dict(ctx.status)
        self.last_progress_write = now


_MISSING = object()
# The least often a running job's loop reads PostgreSQL while Redis reports nothing new.
DB_POLL_SECONDS = 10.0
# How long a worker Job this loop created stands in for the watch's copy not yet arrived.
WATCH_LAG_SECONDS = 30.0
# (namespace, name) -> the worker Job as the operator's watch last saw it.
WorkerJobFn = Callable[[str, str], Mapping[str, Any] | None]


def _any_silent(reports: Mapping[int, Any], now: float, interval: float) -> bool:
    """Some running shard has not reported for three heartbeat intervals."""
    return any(
        getattr(r, "state", "running") == "running" and now - float(r.heartbeat) > 3 * interval
        for r in reports.values()
    )


# Workers that keep ending "successfully" without storing their blocks are not retried forever.
MAX_RELAUNCHES = 3
_PROGRESS_KEYS = frozenset(
    {
        "progress",
        "pathsDone",
        "estimate",
        "stdErr",
        "confidenceInterval",
        "pathsPerSecond",
        "etaSeconds",
        "shards",
        "conditions",
    }
)


class _Step:
    """One pass of the loop over one snapshot of the object."""

    def __init__(
        self,
        owner: JobReconciler,
        body: Mapping[str, Any],
        spec: Mapping[str, Any],
        status: dict[str, Any],
        generation: int,
    ) -> None:
        self.o = owner
        self.body = body
        self.spec = spec
        self.status = status
        self.generation = generation
        self.transition = False
        self.admitting = False  # this pass took a queue slot: its status write records it
        self.status["observedGeneration"] = generation
        self.status.setdefault("conditions", [])

    # -- helpers -------------------------------------------------------------------------------
    def condition(self, type_: str, ok: bool, reason: str, message: str) -> None:
        old = get_condition(self.status["conditions"], type_)
        if (
            old is None
            or old.get("status") != ("True" if ok else "False")
            or old.get("reason") != reason
        ):
            self.transition = True
        self.status["conditions"] = set_condition(
            self.status["conditions"], type_, ok, reason, message, self.generation
        )

    def phase(self, phase: str) -> None:
        if self.status.get("phase") != phase:
            self.transition = True
        self.status["phase"] = phase

    def warn_once(self, key: str, reason: str, message: str) -> None:
        if key not in self.o.warned:
            self.o.warned.add(key)
            self.o.event("Warning", reason, message)

    def fail(self, reason: str, message: str) -> Outcome:
        self.phase("Failed")
        self.condition("Failed", True, reason, message)
        self.condition("Succeeded", False, reason, message)
        self.condition("Running", False, reason, message)
        self.status["completionTime"] = now_rfc3339()
        self.o.event("Warning", reason, message)
        metrics.JOBS_FINISHED.labels("Failed", reason).inc()
        self.observe_end("Failed")
        return Outcome(finished=True)

    def age(self) -> float:
        created = (self.body.get("metadata") or {}).get("creationTimestamp")
        return numbers.seconds_since(str(created)) if created else 0.0

    def observe_admission(self) -> None:
        priority = str(self.spec.get("priority") or "normal")
        metrics.ADMISSION_WAIT.labels(self.o.ref.namespace, priority).observe(self.age())

    def observe_end(self, phase: str) -> None:
        metrics.JOB_DURATION.labels(self.o.ref.namespace, phase).observe(self.age())

    def count_paths(self, paths_done: int) -> None:
        """Adds the paths finished since the last pass; an operator that starts in the middle
        of a job counts from there (the paths before were counted by the one before it)."""
        o = self.o
        if o.counted_paths is not None and paths_done > o.counted_paths:
            metrics.PATHS_SIMULATED.labels(o.ref.namespace).inc(paths_done - o.counted_paths)
        o.counted_paths = max(paths_done, o.counted_paths or 0)

    # -- the pass ------------------------------------------------------------------------------
    async def run(self) -> Outcome:
        o = self.o
        try:
            job_spec, spec_hash = o.parse(self.body)
        except ManifestError as exc:
            return self.fail("InvalidSpec", f"{exc.field}: {exc.message}")
        self.status["specHash"] = spec_hash
        self.status.setdefault("pathsTotal", numbers.paths_total(job_spec))
        self.status.setdefault("pathsDone", 0)
        self.status.setdefault("progress", "0%")
        pc_name = priority_class_name(self.spec)
        self.status["priorityClassName"] = pc_name

        # Where results go: the PerfTuning the job names (or the built-in defaults) and its Secrets.
        started = bool(self.status.get("workerJob"))
        on_default = get_condition(self.status["conditions"], "DefaultConnection")
        try:
            tuning_name = str(self.spec.get("tuningRef") or "default")
            services = await o.connections.for_tuning(
                o.ref.namespace,
                tuning_name,
                o.tuning_spec(o.ref.namespace, tuning_name),
                # A started job stays on the connection it started with: its blocks are there.
                shared=(on_default is not None) if started else None,
            )
        except SecretProblem as exc:
            self.phase(self.status.get("phase") or "Pending")
            self.condition("Admitted", False, "SecretNotFound", str(exc))
            self.warn_once(f"secret:{exc}", "SecretNotFound", str(exc))
            return Outcome(delay=o.config.waiting_interval_seconds)
        self.warned_clear("secret:")
        if services.shared:
            d = services.tuning
            self.condition(
                "DefaultConnection",
                True,
                "OperatorDefault",
                "no PerfTuning or Secrets of this namespace: results go to the operator's default "
                f"Redis and PostgreSQL (Secrets {d.redis.url_secret.name} and "
                f"{d.postgres.dsn_secret.name} in namespace {services.namespace})",
            )

        if not started:
            outcome = await self.before_start(services, spec_hash, pc_name)
            if outcome is not None:
                return outcome
        return await self.follow(services, job_spec, spec_hash, pc_name)

    def warned_clear(self, prefix: str) -> None:
        self.o.warned = {w for w in self.o.warned if not w.startswith(prefix)}

    async def before_start(
        self, services: Services, spec_hash: str, pc_name: str
    ) -> Outcome | None:
        """Cache lookup, PriorityClass check and the concurrency queue; None means go ahead
        (admitted earlier), an Outcome ends this pass (finished, queued, or admitted now)."""
        o = self.o
        if self.spec.get("cache", True):
            cached = await services.cached_result(spec_hash)
            if cached is not None:
                self.status.update(numbers.status_from_result(cached))
                self.status["cacheHit"] = True
                self.status.setdefault("startTime", now_rfc3339())
                self.status["completionTime"] = now_rfc3339()
                self.phase("Succeeded")
                self.condition("Admitted", True, "CacheHit", "result taken from the cache")
                self.condition("Succeeded", True, "CacheHit", f"cached result for {spec_hash}")
                await services.record_job(o.ref, self.spec, spec_hash, "Succeeded", cached)
                o.event("Normal", "CacheHit", f"reused the cached result of {spec_hash}")
                self.observe_admission()
                self.observe_end("Succeeded")
                return Outcome(finished=True)
        self.status["cacheHit"] = False
        if not await o.kube.priority_class_exists(pc_name):
            return self.fail(
                "PriorityClassNotFound",
                f"PriorityClass {pc_name!r} does not exist: install the chart's PriorityClasses "
                "or set spec.priorityClassName to an existing one",
            )
        if self.spec.get("queueName"):
            # Kueue admits it: the worker Job is created suspended in its LocalQueue at once and
            # follow() says Queued (WaitingForKueue) until Kueue unsuspends it.
            return await self.hand_to_kueue()
        async with o.admit_lock(o.ref.namespace):
            limit = services.tuning.workers.max_concurrent_jobs
            report = queue_report(o.ref.uid, o.queue(o.ref.namespace), limit)
            if not report.admitted:
                # Written only when it changes (an admission, a job finishing or arriving ahead):
                # an unchanged status makes no API call.
                self.phase("Queued")
                self.status["queuePosition"] = report.position
                self.condition("Admitted", False, "QueuedByConcurrencyLimit", report.message())
                return Outcome(delay=o.config.waiting_interval_seconds)
            # The slot is taken in memory at once, so the jobs deciding next count it, and the
            # status write is made after the lock: admissions do not queue behind each other's
            # API calls (100 jobs applied at once waited up to 40 s for the lock).
            o.admitted_here.add(o.ref.uid)
        self.condition("Admitted", True, "Admitted", "the job may start")
        if self.status.get("queuePosition") is not None:
            self.status["queuePosition"] = None  # merge patch: removes the field
        # Written (by this pass's status write) before the worker Job exists, so a restart never
        # loses the slot; the next pass creates the Job.
        self.status["workerJob"] = naming.worker_job_name(o.ref.name)
        self.admitting = True
        return Outcome(delay=0.0)

    async def hand_to_kueue(self) -> Outcome | None:
        """Recorded (by this pass's one status write) before the worker Job exists; the next pass
        creates it, suspended, for Kueue (not a slot of the operator's own queue)."""
        o = self.o
        self.waiting_for_kueue()
        self.status["workerJob"] = naming.worker_job_name(o.ref.name)
        return Outcome(delay=0.0)

    def waiting_for_kueue(self) -> Outcome:
        queue = self.spec.get("queueName")
        self.phase("Queued")
        self.condition(
            "Admitted",
            False,
            "WaitingForKueue",
            f"the worker Job waits for Kueue's admission in LocalQueue {queue!r} "
            "(kubectl get workloads shows its place; its PriorityClass is its priority there)",
        )
        return Outcome(delay=self.o.config.waiting_interval_seconds)

    async def follow(
        self, services: Services, job_spec: Any, spec_hash: str, pc_name: str
    ) -> Outcome:
        """A started job: merge its blocks, finish it once decided, else keep its workers going."""
        o = self.o
        if not self.spec.get("queueName"):  # Kueue's jobs start when Kueue admits them (below)
            self.status.setdefault("startTime", now_rfc3339())
        await services.record_job(o.ref, self.spec, spec_hash, "Running", None)
        redis_ok, reports = await services.shard_progress(o.ref.uid)
        summary, db_ok = await self.aggregate(services, job_spec, spec_hash, redis_ok, reports)
        if summary.final is not None:
            return await self.finish(services, summary, spec_hash)
        worker = await self.ensure_workers(services, spec_hash, pc_name)
        if isinstance(worker, Outcome):
            return worker
        self.status["shards"] = job_status.shard_counts(worker, int(self.spec.get("shards", 1)))
        failed = await self.worker_failure(worker)
        if failed is not None:
            return failed
        suspended = bool(self.spec.get("suspend", False))
        if self.spec.get("queueName") and not suspended:
            if (worker.get("spec") or {}).get("suspend"):
                return self.waiting_for_kueue()
            admitted = get_condition(self.status["conditions"], "Admitted") or {}
            if admitted.get("reason") == "WaitingForKueue":
                self.condition("Admitted", True, "AdmittedByKueue", "Kueue unsuspended the Job")
                self.observe_admission()
            self.status.setdefault("startTime", now_rfc3339())
        await self.watch_shards(services, suspended, redis_ok, reports)
        if suspended:
            return self.suspended()
        self.running(summary)
        return await self.relaunch_if_incomplete(worker, summary, db_ok)

    async def aggregate(
        self,
        services: Services,
        job_spec: Any,
        spec_hash: str,
        redis_ok: bool,
        reports: Mapping[int, Any],
    ) -> tuple[numbers.Summary, bool]:
        """All finished blocks from PostgreSQL, merged in block order; (summary, database up?).
        The database is read only when it has something new: the shards' reports in Redis count
        their stored blocks (a worker reports a block after storing it)."""
        o = self.o
        if o.aggregator is None or o.aggregator.spec_hash != spec_hash:
            o.aggregator = numbers.Aggregator(job_spec, spec_hash)
            o.blocks_reported, o.last_pull = None, float("-inf")
        reported = sum(int(r.blocks_done) for r in reports.values()) if redis_ok else None
        now = time.monotonic()
        if (
            reported is None
            or reported != o.blocks_reported
            or now - o.last_pull >= DB_POLL_SECONDS
        ):
            o.db_ok = await services.pull_blocks(o.ref.uid, o.aggregator)
            if o.db_ok:
                o.blocks_reported, o.last_pull = reported, now
        db_ok = o.db_ok
        self.condition(
            "DatabaseAvailable",
            db_ok,
            "Connected" if db_ok else "PostgresUnavailable",
            "PostgreSQL answers"
            if db_ok
            else "PostgreSQL does not answer: progress is paused, nothing is lost, retrying",
        )
        summary = o.aggregator.summary()
        o.rate.observe(summary.numbers.paths_done)
        self.count_paths(summary.numbers.paths_done)
        self.status.update(job_status.progress_fields(summary.numbers, o.rate.per_second()))
        return summary, db_ok

    async def ensure_workers(
        self, services: Services, spec_hash: str, pc_name: str
    ) -> Mapping[str, Any] | Outcome:
        """The worker Job, created when missing, its `suspend` following the spec's."""
        o = self.o
        ns, worker_name = o.ref.namespace, self.worker_name()
        # A job admitted a moment ago goes straight to the create (a 409 still finds an existing
        # Job): one read less per job when many arrive at once. Otherwise the operator's watch of
        # its worker Jobs answers, without a request.
        if o.just_admitted:
            worker = None
        elif o.worker_job is not None:
            worker = o.worker_job(ns, worker_name)
            if worker is None and time.monotonic() - o.created_at < WATCH_LAG_SECONDS:
                worker = o.created  # made a moment ago; the watch has not shown it yet
        else:
            worker = await o.kube.get_job(ns, worker_name)
        o.just_admitted = False
        suspended = bool(self.spec.get("suspend", False))
        if worker is None:
            tuning = services.tuning
            if services.shared:  # the workers read a copy in their own namespace
                secret = build_connection_secret(o.ref, services.connection())
                try:
                    await o.kube.ensure_secret(secret, o.ref.uid)
                except OwnedByAnother as exc:
                    return self.fail("WorkerJobConflict", str(exc))
                tuning = on_connection_secret(tuning, o.ref)
            body = build_worker_job(
                o.ref,
                self.spec,
                spec_hash,
                tuning,
                pc_name,
                o.config.worker_image,
                o.config.worker_image_pull_policy,
                o.config.shard_retries,
            )
            # The name admission recorded (an older operator cut long names differently).
            body["metadata"]["name"] = worker_name
            try:
                worker = await o.kube.ensure_job(body, o.ref.uid)
            except OwnedByAnother as exc:
                return self.fail("WorkerJobConflict", str(exc))
            except Refused as exc:
                return self.fail(
                    "WorkerJobInvalid",
                    f"the API server refused the worker Job ({exc}): check spec.workerTemplate "
                    "and the PerfTuning's spec.workers.template",
                )
            o.created, o.created_at = worker, time.monotonic()
            o.event(
                "Normal",
                "WorkersCreated",
                f"admitted; created Job {worker_name} with {self.spec.get('shards', 1)} shard(s)",
            )
        # With a queueName only Kueue unsuspends the Job (it admits it); the operator still
        # suspends it for spec.suspend, and Kueue admits it again on resume.
        elif bool((worker.get("spec") or {}).get("suspend")) != suspended and (
            suspended or not self.spec.get("queueName")
        ):
            await o.kube.set_job_suspend(ns, worker_name, suspended)
        return worker

    async def worker_failure(self, worker: Mapping[str, Any]) -> Outcome | None:
        """The worker Job failed (deadline, a shard out of retries): Failed, with the pod's why."""
        failure = job_status.worker_job_failure(worker)
        if failure is None:
            return None
        reason, message = failure
        pods = await self.o.kube.list_pods(
            self.o.ref.namespace, f"{naming.JOB_LABEL}={self.o.ref.name[:63]}"
        )
        detail = job_status.pod_failure_summary(pods)
        return self.fail(reason, f"{message}; {detail}" if detail else message)

    async def watch_shards(
        self, services: Services, suspended: bool, redis_ok: bool, reports: dict[int, Any]
    ) -> None:
        """Heartbeats through Redis: replace silent shards, say whether Redis answers."""
        if redis_ok and not suspended:
            await self.replace_silent_shards(services, reports)
        self.condition(
            "RedisAvailable",
            redis_ok,
            "Connected" if redis_ok else "RedisUnavailable",
            "heartbeats and live progress through Redis"
            if redis_ok
            else "Redis does not answer: progress is read from PostgreSQL; jobs still finish",
        )

    def suspended(self) -> Outcome:
        self.phase("Suspended")
        self.condition(
            "Suspended", True, "Suspended", "spec.suspend is true; finished blocks are kept"
        )
        self.condition("Running", False, "Suspended", "suspended by spec.suspend")
        self.o.rate.reset()
        return Outcome(delay=self.o.config.waiting_interval_seconds)

    def running(self, summary: numbers.Summary) -> None:
        self.condition(
            "Suspended",
            False,
            "Resumed" if self.status.get("phase") == "Suspended" else "NotSuspended",
            "",
        )
        self.phase("Running")
        self.condition(
            "Running",
            True,
            "WorkersRunning",
            f"{summary.numbers.paths_done} of {summary.numbers.paths_total} paths simulated",
        )

    async def relaunch_if_incomplete(
        self, worker: Mapping[str, Any], summary: numbers.Summary, db_ok: bool
    ) -> Outcome:
        """Every shard exited 0 but blocks are missing: the database lost writes, or the workers
        were stopped early. Relaunch (finished blocks are skipped), at most MAX_RELAUNCHES times.
        While the operator cannot read PostgreSQL, nothing is known to be missing: wait."""
        o = self.o
        if db_ok and job_status.worker_job_finished_ok(worker) and not summary.complete_on_record:
            o.relaunches += 1
            missing = summary.numbers.paths_total - summary.numbers.paths_done
            if o.relaunches > MAX_RELAUNCHES:
                return self.fail(
                    "WorkerFailed",
                    f"the workers ended successfully {o.relaunches} times with {missing} paths "
                    "still missing from the results database: check that workers and operator "
                    "use the same PostgreSQL",
                )
            self.warn_once(
                "relaunch", "WorkersRelaunched", "workers ended with blocks missing; relaunching"
            )
            await o.kube.delete_job(o.ref.namespace, self.worker_name())
            o.created = None
        return Outcome(delay=o.config.reconcile_interval_seconds)

    async def finish(self, services: Services, summary: numbers.Summary, spec_hash: str) -> Outcome:
        """Store, then cache, then and only then say Succeeded."""
        o = self.o
        assert summary.final is not None
        result = numbers.result_dict(summary.final, elapsed_seconds=self.elapsed())
        stored = await services.store_result(o.ref, self.spec, spec_hash, result)
        if not stored:
            self.condition(
                "DatabaseAvailable",
                False,
                "PostgresUnavailable",
                "the result is ready but PostgreSQL does not answer: retrying before Succeeded",
            )
            return Outcome(delay=o.config.waiting_interval_seconds)
        await services.cache_result(spec_hash, result)
        if summary.stopped_early:
            await self.stop_workers(services, summary.final.blocks)
        reason = "TargetPrecisionReached" if summary.stopped_early else "AllPathsSimulated"
        self.status["result"] = result
        self.status.update(numbers.status_from_result(result))
        self.status["progress"] = "100%" if not summary.stopped_early else self.status["progress"]
        self.status.pop("etaSeconds", None)
        self.status["completionTime"] = now_rfc3339()
        self.phase("Succeeded")
        self.condition("Running", False, reason, "finished")
        self.condition("Succeeded", True, reason, _success_message(result, summary.stopped_early))
        o.event("Normal", reason, _success_message(result, summary.stopped_early))
        metrics.JOBS_FINISHED.labels("Succeeded", reason).inc()
        self.observe_end("Succeeded")
        return Outcome(finished=True)

    async def replace_silent_shards(self, services: Services, reports: dict[int, Any]) -> None:
        """A shard silent for three heartbeat intervals is lost: delete its pod so the Job
        controller starts a new one, which skips the blocks already stored."""
        o = self.o
        interval = services.tuning.workers.heartbeat_interval_seconds
        if not reports or not _any_silent(reports, time.time(), interval):
            if any(c.get("type") == "ShardsHealthy" for c in self.status["conditions"]):
                self.condition("ShardsHealthy", True, "Heartbeating", "every shard reports")
            return  # the pods are listed only when a shard has gone quiet
        pods = await o.kube.list_pods(o.ref.namespace, f"{naming.JOB_LABEL}={o.ref.name[:63]}")
        lost = job_status.silent_pods(reports, pods, time.time(), interval)
        for shard, pod, silent in lost:
            message = (
                f"shard {shard} sent no heartbeat for {silent:.0f}s (3 x {interval}s): "
                f"deleted pod {pod} so the Job retries it"
            )
            await o.kube.delete_pod(o.ref.namespace, pod)
            self.condition("ShardsHealthy", False, "HeartbeatLost", message)
            o.event("Warning", "HeartbeatLost", message)
        if not lost and any(c.get("type") == "ShardsHealthy" for c in self.status["conditions"]):
            self.condition("ShardsHealthy", True, "Heartbeating", "every shard reports")

    async def stop_workers(self, services: Services, block_limit: int) -> None:
        """Blocks past the decided prefix are not needed: workers that hear it through Redis
        exit 0 and the Job completes; without Redis the worker Job is deleted instead."""
        o = self.o
        stopped = await services.request_stop(o.ref.uid, block_limit)
        if not stopped:
            await o.kube.delete_job(o.ref.namespace, self.worker_name())
            o.created = None

    def worker_name(self) -> str:
        """The worker Job's name as admission recorded it in status."""
        return str(self.status.get("workerJob") or naming.worker_job_name(self.o.ref.name))

    def elapsed(self) -> float:
        start = self.status.get("startTime")
        return numbers.seconds_since(start) if start else 0.0


def _success_message(result: Mapping[str, Any], early: bool) -> str:
    how = "target standard error reached" if early else "all paths simulated"
    return (
        f"estimate {result.get('estimate')} ± {result.get('stdErr')} "
        f"over {result.get('paths')} paths ({how})"
    )
