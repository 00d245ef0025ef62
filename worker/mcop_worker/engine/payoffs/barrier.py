"""Barrier call/put on one asset, monitored on `steps` equally spaced dates; rebate at maturity.

Knock-out pays the vanilla unless the level was reached on a date (then the rebate); knock-in
pays it only if reached (else the rebate). Control variate: the vanilla option (Black-Scholes).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from mcop_worker.engine import closed_forms
from mcop_worker.engine.composition import Grid, PayoffSetup
from mcop_worker.engine.kernels import fexp
from mcop_worker.engine.model_closed_forms import vanilla
from mcop_worker.model.spec import JobSpec


@njit(cache=True, nogil=True)
def values(params: Any, paths: Any, c: int, y: Any, x: Any) -> None:
    """params = [steps, strike, phi, ln_level, up, knock_in, rebate]; paths date-major."""
    steps = int(params[0])
    strike = params[1]
    phi = params[2]
    ln_level = params[3]
    up = params[4] != 0.0
    knock_in = params[5] != 0.0
    rebate = params[6]
    # y: the highest (up) or lowest (down) log-price on the dates
    for p in range(c):
        y[p] = -np.inf if up else np.inf
    for k in range(steps):
        base = k * c
        if up:
            for p in range(c):
                y[p] = max(y[p], paths[base + p])
        else:
            for p in range(c):
                y[p] = min(y[p], paths[base + p])
    last = (steps - 1) * c
    for p in range(c):
        vanilla = max(phi * (fexp(paths[last + p]) - strike), 0.0)
        hit = y[p] >= ln_level if up else y[p] <= ln_level
        alive = hit if knock_in else not hit
        y[p] = vanilla if alive else rebate
        x[p] = vanilla


def grid(spec: JobSpec) -> Grid:
    inst = spec.instrument
    assert inst.maturity is not None and inst.steps is not None
    return Grid(inst.maturity, inst.steps)


def setup(spec: JobSpec) -> PayoffSetup:
    inst = spec.instrument
    b = inst.barrier
    assert inst.maturity is not None and inst.strike is not None and inst.steps is not None
    assert b is not None
    phi = 1.0 if inst.option_type == "call" else -1.0
    params = [
        inst.steps,
        inst.strike,
        phi,
        math.log(b.level),
        float(b.direction == "up"),
        float(b.knock == "in"),
        b.rebate,
    ]
    discount = math.exp(-spec.model.rate * inst.maturity)
    return PayoffSetup(values, np.array(params), scale=discount)


def control_mean(spec: JobSpec) -> float | None:
    if spec.model.type != "gbm":
        return vanilla(spec)  # the vanilla option under the job's model
    inst = spec.instrument
    a0 = spec.model.assets[0]
    assert inst.maturity is not None and inst.strike is not None and inst.option_type is not None
    return closed_forms.black_scholes(
        a0.spot,
        inst.strike,
        spec.model.rate,
        a0.dividend_yield,
        a0.volatility,
        inst.maturity,
        inst.option_type,
    )
