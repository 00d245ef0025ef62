"""simulate_block(spec, block) -> BlockStats: one block of a job, on its own random stream.

This is the whole engine API a worker needs: plan the blocks (`blocks.plan_blocks`), pick its
own (`blocks.shard_blocks`), simulate each and store the JSON of the result.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from mcop_worker.engine import kernels
from mcop_worker.engine.blocks import BlockPlan, block_generator, plan_blocks
from mcop_worker.engine.controls import geometric_basket_control, uses_control
from mcop_worker.engine.stats import BlockStats, Moments
from mcop_worker.model.spec import JobSpec, cholesky

Array = npt.NDArray[np.float64]

# var: each block keeps its largest losses, enough that the job's order statistics are exact.
# The job needs about N (1 - lowest level) + 2 sqrt(N (1 - level)) of them; a block of n paths
# contributes n (1 - level) on average with a binomial spread of sqrt(n (1 - level)), so 25% and
# 8 standard deviations of headroom make a shortfall practically impossible, and the aggregator
# checks it anyway (it refuses to report a VaR it cannot prove exact).
TAIL_HEADROOM = 1.25
TAIL_SIGMAS = 8.0
TAIL_EXTRA = 16


def simulate_block(spec: JobSpec, block: int) -> BlockStats:
    plan = plan_blocks_cached(spec)
    units = plan.units_in_block(block)
    gen = block_generator(spec.seed, block)
    acc = np.zeros(6)
    if spec.instrument.type == "var":
        return _var_block(spec, plan, block, units, gen, acc)
    _run_pricing_kernel(spec, plan, units, gen, acc)
    control = uses_control(spec)
    return BlockStats(
        block=block,
        paths=units * plan.paths_per_unit,
        moments=_moments(acc, control),
        has_control=control,
    )


def tail_size(units: int, lowest_level: float) -> int:
    """How many of a block's largest losses it keeps (all of them for a small block)."""
    expected = units * (1.0 - lowest_level)
    keep = math.ceil(TAIL_HEADROOM * expected + TAIL_SIGMAS * math.sqrt(expected) + TAIL_EXTRA)
    return min(units, keep)


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


@dataclass(frozen=True)
class _MultiAsset:
    ln_spot: Array
    drift: Array
    diffusion: Array
    chol: Array
    weights: Array


@lru_cache(maxsize=64)
def _multi_asset(spec: JobSpec) -> _MultiAsset:
    assets = spec.model.assets
    inst = spec.instrument
    if inst.type == "var":
        assert inst.horizon is not None
        t = inst.horizon
        mus = [a.drift for a in assets]
    else:
        assert inst.maturity is not None
        t = inst.maturity
        mus = [spec.model.rate - a.dividend_yield for a in assets]
    return _MultiAsset(
        ln_spot=np.array([math.log(a.spot) for a in assets]),
        drift=np.array(
            [(mu - 0.5 * a.volatility**2) * t for mu, a in zip(mus, assets, strict=True)]
        ),
        diffusion=np.array([a.volatility * math.sqrt(t) for a in assets]),
        chol=np.array(cholesky(spec.model.correlation)),
        weights=np.array([a.weight for a in assets]),
    )


def _run_pricing_kernel(
    spec: JobSpec, plan: BlockPlan, units: int, gen: np.random.Generator, acc: Array
) -> None:
    inst = spec.instrument
    assert inst.maturity is not None and inst.strike is not None
    rate = spec.model.rate
    t = inst.maturity
    phi = 1.0 if inst.option_type == "call" else -1.0
    discount = math.exp(-rate * t)
    anti = spec.variance_reduction.antithetic
    control = uses_control(spec)
    chunk = plan.chunk_units
    if inst.type == "basket":
        m = _multi_asset(spec)
        geometric = geometric_basket_control(spec)
        spots = [a.spot for a in spec.model.assets]
        b0 = math.fsum(w * s for w, s in zip(m.weights, spots, strict=True))
        coef = np.array([w * s / b0 for w, s in zip(m.weights, spots, strict=True)])
        if not geometric:
            coef = np.zeros_like(coef)
        # math.fsum, not np.dot: BLAS picks its kernel per CPU (OPENBLAS_CORETYPE), and with it
        # the summation order, which would make the result depend on the machine.
        weighted_ln = math.fsum(float(c) * float(x) for c, x in zip(coef, m.ln_spot, strict=True))
        ln_base = math.log(b0) - weighted_ln if geometric else 0.0
        kernels.basket_block(
            gen,
            units,
            chunk,
            m.ln_spot,
            m.drift,
            m.diffusion,
            m.chol,
            m.weights,
            inst.strike,
            phi,
            discount,
            anti,
            control,
            geometric,
            coef,
            ln_base,
            acc,
            _work(kernels.multi_asset_work(chunk, m.ln_spot.size)),
        )
        return
    a = spec.model.assets[0]
    ln_spot = math.log(a.spot)
    nu = rate - a.dividend_yield - 0.5 * a.volatility**2
    if inst.type == "european":
        kernels.european_block(
            gen,
            units,
            chunk,
            ln_spot,
            nu * t,
            a.volatility * math.sqrt(t),
            inst.strike,
            phi,
            discount,
            anti,
            control,
            acc,
            _work(kernels.european_work(chunk)),
        )
        return
    assert inst.steps is not None
    dt = t / inst.steps
    drift = nu * dt
    diffusion = a.volatility * math.sqrt(dt)
    work = _work(kernels.path_work(chunk, inst.steps))
    if inst.type == "asian":
        kernels.asian_block(
            gen,
            units,
            chunk,
            inst.steps,
            ln_spot,
            drift,
            diffusion,
            inst.strike,
            phi,
            discount,
            anti,
            control,
            acc,
            work,
        )
        return
    if inst.type == "barrier":
        b = inst.barrier
        assert b is not None
        kernels.barrier_block(
            gen,
            units,
            chunk,
            inst.steps,
            ln_spot,
            drift,
            diffusion,
            inst.strike,
            phi,
            discount,
            math.log(b.level),
            b.direction == "up",
            b.knock == "in",
            b.rebate,
            anti,
            control,
            acc,
            work,
        )
        return
    raise ValueError(f"unknown instrument type {inst.type!r}")


def _var_block(
    spec: JobSpec, plan: BlockPlan, block: int, units: int, gen: np.random.Generator, acc: Array
) -> BlockStats:
    m = _multi_asset(spec)
    value0 = math.fsum(a.weight * a.spot for a in spec.model.assets)
    losses = np.empty(units)
    kernels.portfolio_losses_block(
        gen,
        units,
        plan.chunk_units,
        m.ln_spot,
        m.drift,
        m.diffusion,
        m.chol,
        m.weights,
        value0,
        losses,
        acc,
        _work(kernels.multi_asset_work(plan.chunk_units, m.ln_spot.size)),
    )
    keep = tail_size(units, min(spec.instrument.confidence_levels))
    if keep < units:
        losses = np.partition(losses, units - keep)[units - keep :]
    tail = np.sort(losses)[::-1].astype("<f8")
    return BlockStats(
        block=block,
        paths=units,
        moments=_moments(acc, False),
        tail=tail.tobytes(),
        tail_complete=keep >= units,
    )
