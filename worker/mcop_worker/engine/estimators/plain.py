"""Plain Monte Carlo: a sample unit is one path."""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from mcop_worker.engine.composition import EstimatorSetup
from mcop_worker.engine.kernels import accumulate

PATHS_PER_UNIT = 1


@njit(cache=True, nogil=True)
def merge(acc: Any, scale: float, ys: Any, xs: Any, c: int, control: bool, y: Any, x: Any) -> None:
    for p in range(c):
        y[p] = scale * ys[p]
        x[p] = scale * xs[p]
    accumulate(acc, y, x, c, control)


def setup() -> EstimatorSetup:
    return EstimatorSetup(merge, np.array([1.0]))
