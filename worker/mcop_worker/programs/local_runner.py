"""Run a whole job on this machine: `shards` processes, each simulating its strided blocks exactly
as a worker pod would, the parent folding the blocks into the result as they arrive.

One shard runs in this process; more run in `spawn`ed processes (no fork: numba and threads do not
survive it well) that send each block's BlockStats JSON back on a queue. The result is the same bits
for any shard count (see `aggregate.py`); with a target standard error the parent stops the
processes as soon as the prefix of finished blocks reaches it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import signal
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from typing import Any

from mcop_worker.engine.aggregate import Estimate, JobAggregator, Progress
from mcop_worker.engine.blocks import shard_blocks
from mcop_worker.engine.stats import BlockStats
from mcop_worker.model.spec import JobSpec
from mcop_worker.model.spec_hash import spec_hash

ProgressCallback = Callable[[Progress, float], None]

_POLL_SECONDS = 0.1
_STOP_GRACE_SECONDS = 5.0


class ShardFailed(RuntimeError):
    """A shard process raised or died; the message carries its traceback or exit code."""


@dataclass(frozen=True)
class RunResult:
    estimate: Estimate
    elapsed_seconds: float
    spec_hash: str
    # The finished blocks (for plots of var's loss tail); not part of the result.
    blocks: Mapping[int, BlockStats] = field(default_factory=dict, repr=False, compare=False)

    @property
    def paths_per_second(self) -> float:
        return self.estimate.paths / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The object `mcop run --json` prints (SPEC, Command line)."""
        doc = self.estimate.to_result()
        doc["elapsedSeconds"] = round(self.elapsed_seconds, 6)
        doc["pathsPerSecond"] = round(self.paths_per_second, 1)
        doc["specHash"] = self.spec_hash
        return doc


def run_job(
    spec: JobSpec, shards: int = 1, on_progress: ProgressCallback | None = None
) -> RunResult:
    """Simulate the job in `shards` processes (1: in this one) and return its final result."""
    if not 1 <= shards <= 64:
        raise ValueError("shards must be between 1 and 64")
    digest = spec_hash(spec)
    agg = JobAggregator(spec)
    start = time.monotonic()
    if shards == 1:
        _run_here(spec, agg, start, on_progress)
    else:
        _run_processes(spec, shards, agg, start, on_progress)
    final = agg.final
    assert final is not None
    elapsed = time.monotonic() - start
    if on_progress is not None:
        on_progress(agg.progress(), elapsed)
    return RunResult(estimate=final, elapsed_seconds=elapsed, spec_hash=digest, blocks=agg.blocks)


def _run_here(
    spec: JobSpec, agg: JobAggregator, start: float, on_progress: ProgressCallback | None
) -> None:
    from mcop_worker.engine.simulate import simulate_block  # numba: imported only where it runs

    for block in range(agg.plan.n_blocks):
        agg.add(simulate_block(spec, block))
        if on_progress is not None:
            on_progress(agg.progress(), time.monotonic() - start)
        if agg.done:
            return


def _run_processes(
    spec: JobSpec,
    shards: int,
    agg: JobAggregator,
    start: float,
    on_progress: ProgressCallback | None,
) -> None:
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[tuple[str, int, str]] = ctx.Queue()
    stop = ctx.Event()
    procs = [
        ctx.Process(
            target=_shard_main,
            args=(spec, shards, i, results, stop),
            name=f"mcop-shard-{i}",
            daemon=True,
        )
        for i in range(shards)
    ]
    for p in procs:
        p.start()
    finished: set[int] = set()
    try:
        while not agg.done:
            try:
                kind, index, payload = results.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                _check_alive(procs, finished)
            else:
                if kind == "block":
                    agg.add(BlockStats.from_json(payload))
                elif kind == "done":
                    finished.add(index)
                else:
                    raise ShardFailed(f"shard {index} failed:\n{payload}")
            if on_progress is not None:
                on_progress(agg.progress(), time.monotonic() - start)
            if len(finished) == shards and not agg.done:
                raise ShardFailed(
                    f"every shard finished but blocks {agg.missing_blocks()} are missing"
                )
    finally:
        stop.set()
        _wind_down(procs, results)


def _check_alive(procs: list[Any], finished: set[int]) -> None:
    for i, p in enumerate(procs):
        if i not in finished and not p.is_alive() and p.exitcode not in (None, 0):
            raise ShardFailed(f"shard {i} died with exit code {p.exitcode}")


def _wind_down(procs: list[Any], results: multiprocessing.Queue[Any]) -> None:
    """Let shards finish their current block (draining the queue so none blocks on a full
    pipe), then terminate whatever is left."""
    deadline = time.monotonic() + _STOP_GRACE_SECONDS
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            results.get(timeout=_POLL_SECONDS)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=_STOP_GRACE_SECONDS)
    results.close()


def _shard_main(
    spec: JobSpec,
    shards: int,
    index: int,
    results: multiprocessing.Queue[tuple[str, int, str]],
    stop: Event,
) -> None:
    """A shard process: simulate blocks index, index + shards, ... until done or told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        from mcop_worker.engine.blocks import plan_blocks
        from mcop_worker.engine.simulate import simulate_block

        for block in shard_blocks(plan_blocks(spec).n_blocks, shards, index):
            if stop.is_set():
                break
            results.put(("block", index, simulate_block(spec, block).to_json()))
        results.put(("done", index, ""))
    except BaseException:
        results.put(("error", index, traceback.format_exc()))
