"""simulate_block(spec, block) -> BlockStats: one block of a job, on its own random stream.

This is the whole engine API a worker needs: plan the blocks (`blocks.plan_blocks`), pick its
own (`blocks.shard_blocks`), simulate each and store the JSON of the result. The parts a job is
made of (sampler, model, payoff, estimator) come from `registry.compose`; `composition.run_block`
runs them chunk by chunk.
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from mcop_worker.engine.blocks import BlockPlan, plan_blocks
from mcop_worker.engine.composition import Composition, run_block
from mcop_worker.engine.greek_kernels import GreekSetup
from mcop_worker.engine.registry import compose, greek_part
from mcop_worker.engine.stats import BlockStats, Moments
from mcop_worker.model.spec import JobSpec

Array = npt.NDArray[np.float64]

# var: each block keeps its largest losses, enough that the job's order statistics are exact.
# The job needs about N (1 - lowest level) + 2 sqrt(N (1 - level)) of them; a block of n paths
# contributes n (1 - level) on average with a binomial spread of sqrt(n (1 - level)), so 25% and
# 8 standard deviations of headroom make a shortfall practically impossible, and the aggregator
# checks it anyway (it refuses to report a VaR it cannot prove exact).
TAIL_HEADROOM = 1.25
TAIL_SIGMAS = 8.0
TAIL_EXTRA = 16

_NO_VALUES = np.empty(0)


def simulate_block(spec: JobSpec, block: int) -> BlockStats:
    plan = plan_blocks_cached(spec)
    parts = compose(spec)
    units = plan.units_in_block(block)
    keep = parts.payoff.keeps_values
    values = np.empty(units) if keep else _NO_VALUES
    acc = np.zeros(6)
    greek_part = greeks_of(spec)
    gacc = np.zeros((greek_part.select.size, 3)) if greek_part is not None else None
    _run(parts, plan, spec, block, units, acc, values, greek_part, gacc)
    stats = BlockStats(
        block=block,
        paths=units * plan.paths_per_unit,
        moments=_moments(acc, parts.control),
        has_control=parts.control,
        greeks=tuple((float(m), float(m2)) for _, m, m2 in gacc) if gacc is not None else (),
    )
    if keep:
        return _with_tail(stats, spec, values)
    return stats


def _run(
    parts: Composition,
    plan: BlockPlan,
    spec: JobSpec,
    block: int,
    units: int,
    acc: Array,
    values: Array,
    greek_part: GreekSetup | None,
    gacc: Array | None,
) -> None:
    stream = parts.sampler.stream(spec.seed, block, plan.block_start(block))
    chunk = plan.chunk_units
    work = _work(parts.work_size(chunk))
    run_block(parts, stream, units, chunk, acc, work, values, greek_part, gacc)


def greeks_of(spec: JobSpec) -> GreekSetup | None:
    return greek_part(spec)


def tail_size(units: int, lowest_level: float) -> int:
    """How many of a block's largest losses it keeps (all of them for a small block)."""
    expected = units * (1.0 - lowest_level)
    keep = math.ceil(TAIL_HEADROOM * expected + TAIL_SIGMAS * math.sqrt(expected) + TAIL_EXTRA)
    return min(units, keep)


def _with_tail(stats: BlockStats, spec: JobSpec, losses: Array) -> BlockStats:
    """var: the block's largest losses, in descending order (see TAIL_HEADROOM)."""
    units = losses.size
    keep = tail_size(units, min(spec.instrument.confidence_levels))
    if keep < units:
        losses = np.partition(losses, units - keep)[units - keep :]
    tail = np.sort(losses)[::-1].astype("<f8")
    return BlockStats(
        block=stats.block,
        paths=stats.paths,
        moments=stats.moments,
        tail=tail.tobytes(),
        tail_complete=keep >= units,
    )


_scratch = threading.local()


def _work(size: int) -> Array:
    """A scratch buffer of at least `size` floats, kept per thread (fresh memory costs page
    faults on every block; the kernels release the GIL, so threads must not share it)."""
    buf: Array | None = getattr(_scratch, "buf", None)
    if buf is None or buf.size < size:
        buf = np.empty(size)
        _scratch.buf = buf
    return buf


@lru_cache(maxsize=64)
def plan_blocks_cached(spec: JobSpec) -> BlockPlan:
    return plan_blocks(spec)


def _moments(acc: Array, control: bool) -> Moments:
    return Moments(
        count=int(acc[0]),
        mean=float(acc[1]),
        m2=float(acc[2]),
        x_mean=float(acc[3]) if control else 0.0,
        x_m2=float(acc[4]) if control else 0.0,
        cov=float(acc[5]) if control else 0.0,
    )
