"""Arithmetic-average Asian call/put over `steps` equally spaced dates (the last at maturity).

Control variate: the geometric-average option on the same dates (Kemna-Vorst, discrete). Each path
is discounted here (scale 1): the numbers of engine version 1 discount before averaging a pair.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from mcop_worker.engine import closed_forms
from mcop_worker.engine.composition import Grid, PayoffSetup
from mcop_worker.engine.kernels import fexp
from mcop_worker.model.spec import JobSpec


@njit(cache=True, nogil=True)
def values(params: Any, paths: Any, c: int, y: Any, x: Any) -> None:
    """params = [steps, strike, phi, discount]; paths: ln S on the dates, date-major."""
    steps = int(params[0])
    strike = params[1]
    phi = params[2]
    discount = params[3]
    for p in range(c):
        y[p] = 0.0  # sum of prices
        x[p] = 0.0  # sum of log-prices
    for k in range(steps):
        base = k * c
        for p in range(c):
            v = paths[base + p]
            y[p] += fexp(v)
            x[p] += v
    for p in range(c):
        y[p] = discount * max(phi * (y[p] / steps - strike), 0.0)
        x[p] = discount * max(phi * (fexp(x[p] / steps) - strike), 0.0)


def grid(spec: JobSpec) -> Grid:
    inst = spec.instrument
    assert inst.maturity is not None and inst.steps is not None
    return Grid(inst.maturity, inst.steps)


def setup(spec: JobSpec) -> PayoffSetup:
    inst = spec.instrument
    assert inst.maturity is not None and inst.strike is not None and inst.steps is not None
    phi = 1.0 if inst.option_type == "call" else -1.0
    discount = math.exp(-spec.model.rate * inst.maturity)
    return PayoffSetup(values, np.array([inst.steps, inst.strike, phi, discount]), scale=1.0)


def control_mean(spec: JobSpec) -> float | None:
    """Kemna-Vorst holds under GBM only: other models have no control variate here."""
    if spec.model.type != "gbm":
        return None
    inst = spec.instrument
    a0 = spec.model.assets[0]
    assert inst.maturity is not None and inst.strike is not None and inst.steps is not None
    assert inst.option_type is not None
    return closed_forms.geometric_asian(
        a0.spot,
        inst.strike,
        spec.model.rate,
        a0.dividend_yield,
        a0.volatility,
        inst.maturity,
        inst.steps,
        inst.option_type,
    )
