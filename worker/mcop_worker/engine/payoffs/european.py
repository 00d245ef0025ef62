"""European call/put on one asset. Control variate: the discounted terminal price, E = S e^{-qT}."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from mcop_worker.engine.composition import Grid, PayoffSetup
from mcop_worker.engine.kernels import fexp
from mcop_worker.model.spec import JobSpec


@njit(cache=True, nogil=True)
def values(params: Any, paths: Any, c: int, y: Any, x: Any) -> None:
    """params = [strike, phi (+1 call, -1 put)]; paths: ln S(T)."""
    strike = params[0]
    phi = params[1]
    for p in range(c):
        s = fexp(paths[p])
        y[p] = max(phi * (s - strike), 0.0)
        x[p] = s


def grid(spec: JobSpec) -> Grid:
    assert spec.instrument.maturity is not None
    return Grid(spec.instrument.maturity, 1)


def setup(spec: JobSpec) -> PayoffSetup:
    inst = spec.instrument
    assert inst.maturity is not None and inst.strike is not None
    phi = 1.0 if inst.option_type == "call" else -1.0
    discount = math.exp(-spec.model.rate * inst.maturity)
    return PayoffSetup(values, np.array([inst.strike, phi]), scale=discount)


def control_mean(spec: JobSpec) -> float | None:
    a0 = spec.model.assets[0]
    assert spec.instrument.maturity is not None
    return a0.spot * math.exp(-a0.dividend_yield * spec.instrument.maturity)
