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
import numpy.typing as npt
from numba import njit

from mcop_worker.engine.composition import Grid, ModelSetup
from mcop_worker.engine.greek_kernels import GreekSetup
from mcop_worker.engine.greeks import selection as greek_selection
from mcop_worker.engine.kernels import fexp
from mcop_worker.engine.special import norm_cdf
from mcop_worker.model.spec import JobSpec

Array = npt.NDArray[np.float64]
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


@njit(cache=True, nogil=True)
def greek_values(
    params: Any,
    z: Any,
    c: int,
    barrier: bool,  # False: the average of the dates' prices (european: one date; asian)
    spot: float,
    vol: float,
    dt: float,  # between two dates
    strike: float,
    phi: float,
    discount: float,
    ln_level: float,
    up: bool,
    knock_in: bool,
    rebate: float,
    antithetic: bool,
    out: Any,  # (5, >= c): delta, gamma, vega, rho, theta (not offered: 0)
) -> None:
    """Per-unit Greeks from the very paths `paths` simulates. The jumps depend on none of S0,
    the diffusion's volatility or r (the compensator lambda k neither), so GBM's estimators hold
    with the jumps added to the path: pathwise for the average (dS_t/dS0 = S_t / S0,
    dS_t/dvol = S_t (W_t - vol t), dS_t/dr = t S_t; gamma by likelihood ratio through the first
    date's diffusion normal), likelihood ratio through every date's diffusion normal for the
    barrier (given the jumps, each log-increment is N(nu dt + jumps, vol^2 dt))."""
    n = int(params[0])
    drift = params[2]
    diffusion = params[3]
    mean_jumps = params[4]
    p0 = params[5]
    jump_mean = params[6]
    jump_std = params[7]
    sqrt_dt = math.sqrt(dt)
    maturity = n * dt
    half = 0.5 if antithetic else 1.0
    for p in range(c):
        for g in range(5):
            out[g, p] = 0.0
        for side in range(2 if antithetic else 1):
            sign = 1.0 if side == 0 else -1.0
            ln = params[1]
            w = 0.0
            total = 0.0
            s_w = 0.0
            s_t = 0.0
            z_sum = 0.0
            z2_sum = 0.0
            hi = -np.inf
            lo = np.inf
            for k in range(n):
                base = 3 * k * c
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
                    if pmf == 0.0 and cdf < u:
                        break
                jump = jumps * jump_mean + math.sqrt(float(jumps)) * jump_std * z3
                ln = ln + (drift + diffusion * z1) + jump
                w += sqrt_dt * z1
                price = fexp(ln)
                total += price
                s_w += price * w
                s_t += price * ((k + 1) * dt)
                z_sum += z1
                z2_sum += z1 * z1
                hi = max(hi, ln)
                lo = min(lo, ln)
            first = sign * z[p]
            if not barrier:
                avg = total / n
                pay = max(phi * (avg - strike), 0.0)
                ind = phi if pay > 0.0 else 0.0
                out[0, p] += half * discount * ind * avg / spot
                out[1, p] += half * discount * ind * avg / (spot * spot) * (first / diffusion - 1.0)
                out[2, p] += half * discount * ind * (s_w - vol * s_t) / n
                out[3, p] += half * discount * (ind * s_t / n - maturity * pay)
            else:
                vanilla = max(phi * (fexp(ln) - strike), 0.0)
                hit = hi >= ln_level if up else lo <= ln_level
                alive = hit if knock_in else not hit
                y = half * discount * (vanilla if alive else rebate)
                out[0, p] += y * first / (spot * diffusion)
                out[1, p] += (
                    y
                    * ((first * first - 1.0) / (diffusion * diffusion) - first / diffusion)
                    / (spot * spot)
                )
                out[2, p] += y * ((z2_sum - n) / vol - sqrt_dt * z_sum)
                out[3, p] += y * (sqrt_dt * z_sum / vol - maturity)


def greeks(spec: JobSpec, grid: Grid, model: ModelSetup) -> GreekSetup:
    """delta, gamma, vega (of the diffusion's volatility), rho of a european, asian or barrier
    option, fed each chunk's normals (`greek_values`)."""
    inst = spec.instrument
    assert inst.strike is not None and inst.maturity is not None
    phi = 1.0 if inst.option_type == "call" else -1.0
    discount = math.exp(-spec.model.rate * inst.maturity)
    b = inst.barrier
    is_barrier = b is not None
    ln_level = math.log(b.level) if b is not None else 0.0
    up = b is not None and b.direction == "up"
    knock_in = b is not None and b.knock == "in"
    rebate = b.rebate if b is not None else 0.0
    anti = spec.variance_reduction.antithetic
    a0 = spec.model.assets[0]
    s0, vol, dt, k, params = a0.spot, a0.volatility, grid.dt, inst.strike, model.params

    def compute(z: Array, c: int, out: Array) -> None:
        greek_values(
            params,
            z,
            c,
            is_barrier,
            s0,
            vol,
            dt,
            k,
            phi,
            discount,
            ln_level,
            up,
            knock_in,
            rebate,
            anti,
            out,
        )

    return GreekSetup(compute, 5, greek_selection(spec))


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
