"""Antithetic variates: a sample unit is a path and its mirror (the same normals negated), and its
value is the pair's mean. The unit count halves (an odd path count is rounded up)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from mcop_worker.engine.composition import EstimatorSetup
from mcop_worker.engine.kernels import accumulate

PATHS_PER_UNIT = 2


@njit(cache=True, nogil=True)
def merge(acc: Any, scale: float, ys: Any, xs: Any, c: int, control: bool, y: Any, x: Any) -> None:
    for p in range(c):
        y[p] = 0.5 * scale * (ys[p] + ys[c + p])
        x[p] = 0.5 * scale * (xs[p] + xs[c + p])
    accumulate(acc, y, x, c, control)


def setup() -> EstimatorSetup:
    return EstimatorSetup(merge, np.array([1.0, -1.0]))
