"""Merton jump-diffusion: GBM plus compound-Poisson jumps in the log-price, simulated exactly
between the payoff's dates (no discretisation error).

Over an interval dt: ln S' = ln S + (r - q - lambda k - vol^2 / 2) dt + vol sqrt(dt) Z_1
+ N mu_J + sqrt(N) s_J Z_3, with N ~ Poisson(lambda dt) drawn by inversion of U = Phi(Z_2) and
k = E[e^J] - 1 = e^{mu_J + s_J^2 / 2} - 1 (the compensator: E[S'] = S e^{(r - q) dt}). Given N,
the sum of N normal log jumps is exactly N(N mu_J, N s_J^2). Three normals per date (antithetic:
all negated, so U becomes 1 - U).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from mcop_worker.engine.composition import Grid, ModelSetup
from mcop_worker.engine.special import norm_cdf
from mcop_worker.model.spec import JobSpec

MAX_JUMPS = 1000  # per interval; P(N > 1000) is nil for the intensities a year can hold


@njit(cache=True, nogil=True)
def paths(params: Any, z: Any, c: int, signs: Any, out: Any) -> None:
    """params = [dates n, ln_spot, drift, diffusion, lambda dt, e^{-lambda dt}, mu_J, s_J]."""
    n = int(params[0])
    drift = params[2]
    diffusion = params[3]
    mean_jumps = params[4]
    p0 = params[5]
    jump_mean = params[6]
    jump_std = params[7]
    w = signs.size * c  # path units: mirror i of unit p is i * c + p
    ln = np.empty(c)
    for i in range(signs.size):
        sign = signs[i]
        for p in range(c):
            ln[p] = params[1]
        for k in range(n):
            base = 3 * k * c
            o = k * w + i * c
            for p in range(c):
                z1 = sign * z[base + p]
                u = norm_cdf(sign * z[base + c + p])
                z3 = sign * z[base + 2 * c + p]
                jumps = 0
                pmf = p0
                cdf = p0
                while u > cdf and jumps < MAX_JUMPS:
                    jumps += 1
                    pmf = pmf * mean_jumps / jumps
                    cdf += pmf
                    if pmf == 0.0 and cdf < u:  # rounding left u above the reachable cdf
                        break
                jump = jumps * jump_mean + math.sqrt(float(jumps)) * jump_std * z3
                v = ln[p] + (drift + diffusion * z1) + jump
                ln[p] = v
                out[o + p] = v


def setup(spec: JobSpec, grid: Grid) -> ModelSetup:
    model = spec.model
    jp = model.merton
    assert jp is not None
    a0 = model.assets[0]
    dt = grid.dt
    k = math.exp(jp.jump_mean + 0.5 * jp.jump_std**2) - 1.0
    nu = model.rate - a0.dividend_yield - jp.jump_intensity * k - 0.5 * a0.volatility**2
    params = [
        grid.steps,
        math.log(a0.spot),
        nu * dt,
        a0.volatility * math.sqrt(dt),
        jp.jump_intensity * dt,
        math.exp(-jp.jump_intensity * dt),
        jp.jump_mean,
        jp.jump_std,
    ]
    return ModelSetup(paths, np.array(params, dtype=np.float64), dims=3 * grid.steps, assets=1)
