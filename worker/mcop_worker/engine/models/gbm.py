"""Geometric Brownian motion, one asset or several correlated (exact log-normal steps).

On a grid of steps dt: ln S_j(t + dt) = ln S_j(t) + (mu_j - vol_j**2 / 2) dt + vol_j sqrt(dt) W_j,
with W = L z (L the lower Cholesky factor of the correlation matrix), mu_j = rate - dividendYield
(pricing) or the asset's real-world drift (var). One normal per asset and date.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from mcop_worker.engine.composition import Grid, ModelSetup
from mcop_worker.model.spec import JobSpec, cholesky


@njit(cache=True, nogil=True)
def paths(params: Any, z: Any, c: int, signs: Any, out: Any) -> None:
    """params = [assets d, dates n, ln_spot[d], drift[d], diffusion[d], chol[d * d]] (per step)."""
    d = int(params[0])
    n = int(params[1])
    m = signs.size
    w = m * c  # path units: mirror i of unit p is path unit i * c + p
    if d == 1:
        ln_spot = params[2]
        drift = params[3]
        diffusion = params[4]
        # the running log-price in a row of its own: reading the previous date back from `out`
        # keeps LLVM from vectorising (it cannot prove the rows apart), 3x slower
        ln = np.empty(c)
        for i in range(m):
            sign = signs[i]
            for p in range(c):
                ln[p] = ln_spot
            for k in range(n):
                zk = z[k * c : (k + 1) * c]
                row = out[k * w + i * c : k * w + (i + 1) * c]
                for p in range(c):
                    v = ln[p] + (drift + diffusion * (sign * zk[p]))
                    ln[p] = v
                    row[p] = v
        return
    ln_spot = params[2 : 2 + d]
    drift = params[2 + d : 2 + 2 * d]
    diffusion = params[2 + 2 * d : 2 + 3 * d]
    chol = params[2 + 3 * d : 2 + 3 * d + d * d]
    for k in range(n):
        for j in range(d):
            for i in range(m):
                sign = signs[i]
                o = (k * d + j) * w + i * c
                for p in range(c):
                    out[o + p] = 0.0
                for h in range(j + 1):
                    ljh = chol[j * d + h]
                    zh = z[(k * d + h) * c : (k * d + h + 1) * c]
                    for p in range(c):
                        out[o + p] += ljh * zh[p]
                if k == 0:
                    for p in range(c):
                        out[o + p] = ln_spot[j] + (drift[j] + diffusion[j] * (sign * out[o + p]))
                else:
                    prev = o - d * w
                    for p in range(c):
                        out[o + p] = out[prev + p] + (drift[j] + diffusion[j] * (sign * out[o + p]))


def setup(spec: JobSpec, grid: Grid) -> ModelSetup:
    assets = spec.model.assets
    dt = grid.dt
    d = len(assets)
    params = [float(d), float(grid.steps)]
    params += [math.log(a.spot) for a in assets]
    params += [(a.drift - 0.5 * a.volatility**2) * dt for a in assets]
    params += [a.volatility * math.sqrt(dt) for a in assets]
    params += [v for row in cholesky(spec.model.correlation) for v in row]
    return ModelSetup(paths, np.array(params), dims=grid.steps * d, assets=d)
