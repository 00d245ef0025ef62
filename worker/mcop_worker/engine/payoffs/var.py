"""Value at risk and expected shortfall of a portfolio of correlated assets over a horizon.

The value of a path is its loss value(0) - sum_j w_j S_j(horizon), under each asset's real-world
drift. Every loss is kept (`keeps_values`) for exact order statistics; no control variate.
"""

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
    """params = [assets d, value0, weights[d]]; x is left alone (no control)."""
    d = int(params[0])
    value0 = params[1]
    for p in range(c):
        y[p] = 0.0
    for j in range(d):
        w = params[2 + j]
        base = j * c
        for p in range(c):
            y[p] += w * fexp(paths[base + p])
    for p in range(c):
        y[p] = value0 - y[p]


def grid(spec: JobSpec) -> Grid:
    assert spec.instrument.horizon is not None
    return Grid(spec.instrument.horizon, 1)


def setup(spec: JobSpec) -> PayoffSetup:
    assets = spec.model.assets
    value0 = math.fsum(a.weight * a.spot for a in assets)
    params = [len(assets), value0] + [a.weight for a in assets]
    return PayoffSetup(values, np.array(params), scale=1.0, keeps_values=True)


def control_mean(spec: JobSpec) -> float | None:
    return None
