"""Heston stochastic volatility by Andersen's quadratic-exponential (QE) scheme (Andersen 2008,
"Simple and efficient simulation of the Heston stochastic volatility model").

Each interval between the payoff's dates is cut into m = ceil(stepsPerYear * dt) equal steps
(so no step exceeds 1 / stepsPerYear). Per step of length h, from v to v':

* variance: with e = exp(-kappa h), mean m = theta + (v - theta) e and variance
  s2 = v xi^2 e (1 - e) / kappa + theta xi^2 (1 - e)^2 / (2 kappa), psi = s2 / m^2;
  psi <= 1.5: v' = a (b + Z_v)^2, b^2 = 2/psi - 1 + sqrt(2/psi) sqrt(2/psi - 1), a = m / (1 + b^2);
  psi > 1.5: v' = 0 with probability p = (psi - 1) / (psi + 1), else ln((1 - p) / (1 - U)) / beta,
  beta = (1 - p) / m, U = Phi(Z_v). v' >= 0 always, whether or not the Feller condition holds.
* log-price (central discretisation, gamma1 = gamma2 = 1/2):
  ln S' = ln S + (r - q) h + K0* + K1 v + K2 v' + sqrt(K3 v + K4 v') Z_x, with
  K1 = h/2 (kappa rho / xi - 1/2) - rho / xi, K2 = h/2 (kappa rho / xi - 1/2) + rho / xi,
  K3 = K4 = h/2 (1 - rho^2), and the martingale correction K0* = -ln E[exp(A v') | v]
  - (K1 + K3/2) v, A = K2 + K4/2, so that E[S' | S, v] = S e^{(r - q) h} exactly. Where that
  expectation does not exist (A >= 1 / (2a), or A >= beta: strongly positive rho with a large
  step), K0 = -rho kappa theta h / xi is used, as in Andersen's paper.
* xi = 0: deterministic variance v' = m, ln S' = ln S + (r - q) h - (v + v') h / 4
  + sqrt((v + v') h / 2) Z_x.

Two normals per step: dimension 2 s is Z_v and 2 s + 1 is Z_x of step s (antithetic: both
negated, so U becomes 1 - U). log and Phi are our own (`special.py`): platform-independent bits.
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
from mcop_worker.engine.special import flog, norm_cdf
from mcop_worker.model.spec import JobSpec

Array = npt.NDArray[np.float64]
PSI_C = 1.5
_P_DATES, _P_STEPS, _P_LN_SPOT, _P_V0, _P_THETA = 0, 1, 2, 3, 4
_P_E, _P_C1, _P_C2, _P_DRIFT = 5, 6, 7, 8
_P_K0, _P_K1, _P_K2, _P_K3, _P_K4, _P_A, _P_XI0, _P_H = 9, 10, 11, 12, 13, 14, 15, 16


@njit(cache=True, nogil=True)
def paths(params: Any, z: Any, c: int, signs: Any, out: Any) -> None:
    n = int(params[_P_DATES])
    m = int(params[_P_STEPS])
    theta = params[_P_THETA]
    e = params[_P_E]
    c1 = params[_P_C1]
    c2 = params[_P_C2]
    drift = params[_P_DRIFT]
    k0 = params[_P_K0]
    k1 = params[_P_K1]
    k2 = params[_P_K2]
    k3 = params[_P_K3]
    k4 = params[_P_K4]
    big_a = params[_P_A]
    no_xi = params[_P_XI0] != 0.0
    h = params[_P_H]
    w = signs.size * c  # path units: mirror i of unit p is i * c + p
    v = np.empty(c)
    ln = np.empty(c)
    for i in range(signs.size):
        sign = signs[i]
        for p in range(c):
            v[p] = params[_P_V0]
            ln[p] = params[_P_LN_SPOT]
        for k in range(n):
            for s in range(m):
                base = 2 * (k * m + s) * c
                for p in range(c):
                    zv = sign * z[base + p]
                    zx = sign * z[base + c + p]
                    vp = v[p]
                    mean = theta + (vp - theta) * e
                    if no_xi:
                        vn = mean
                        ln[p] += drift - 0.25 * (vp + vn) * h + math.sqrt(0.5 * (vp + vn) * h) * zx
                        v[p] = vn
                        continue
                    s2 = vp * c1 + c2
                    psi = s2 / (mean * mean)
                    corr = k0
                    if psi <= PSI_C:
                        inv = 2.0 / psi
                        b2 = inv - 1.0 + math.sqrt(inv) * math.sqrt(inv - 1.0)
                        a = mean / (1.0 + b2)
                        b = math.sqrt(b2)
                        vn = a * (b + zv) * (b + zv)
                        if big_a < 0.5 / a:
                            one = 1.0 - 2.0 * big_a * a
                            corr = -big_a * b2 * a / one + 0.5 * flog(one) - (k1 + 0.5 * k3) * vp
                    else:
                        prob = (psi - 1.0) / (psi + 1.0)
                        beta = (1.0 - prob) / mean
                        tail = norm_cdf(-zv)  # 1 - U
                        vn = 0.0 if 1.0 - tail <= prob else flog((1.0 - prob) / tail) / beta
                        if big_a < beta:
                            corr = (
                                -flog(prob + beta * (1.0 - prob) / (beta - big_a))
                                - (k1 + 0.5 * k3) * vp
                            )
                    ln[p] += drift + corr + k1 * vp + k2 * vn + math.sqrt(k3 * vp + k4 * vn) * zx
                    v[p] = vn
            o = k * w + i * c
            for p in range(c):
                out[o + p] = ln[p]


@njit(cache=True, nogil=True)
def greek_values(
    params: Any,
    z: Any,
    c: int,
    barrier: bool,  # False: the average of the dates' prices (european: one date; asian)
    spot: float,
    strike: float,
    phi: float,
    discount: float,
    ln_level: float,
    up: bool,
    knock_in: bool,
    rebate: float,
    antithetic: bool,
    out: Any,  # (5, >= c): delta, gamma, vega (not offered: 0), rho, theta (not offered: 0)
) -> None:
    """Per-unit Greeks from the very paths `paths` simulates (the same arithmetic, step for
    step). S0 and r scale every price (S_t / S0, dS_t/dr = t S_t): delta and rho are pathwise
    for the average; gamma, and the barrier's delta, are a likelihood ratio through the price
    normals Z_x of the steps up to the first date: given the variance path those log-increments
    are independent normals of variance s2_i = K3 v + K4 v', and shifting their means by
    s2_i / sum(s2) moves ln S0 by 1, so the score of ln S0 is U = sum(Z_x,i s_i) / sum(s2)
    (>= K3 v0 > 0 in the denominator: v0 is given, so every moment is finite)."""
    n = int(params[_P_DATES])
    m = int(params[_P_STEPS])
    theta = params[_P_THETA]
    e = params[_P_E]
    c1 = params[_P_C1]
    c2 = params[_P_C2]
    drift = params[_P_DRIFT]
    k0 = params[_P_K0]
    k1 = params[_P_K1]
    k2 = params[_P_K2]
    k3 = params[_P_K3]
    k4 = params[_P_K4]
    big_a = params[_P_A]
    no_xi = params[_P_XI0] != 0.0
    h = params[_P_H]
    dt = m * h
    maturity = n * dt
    half = 0.5 if antithetic else 1.0
    for p in range(c):
        for g in range(5):
            out[g, p] = 0.0
        for side in range(2 if antithetic else 1):
            sign = 1.0 if side == 0 else -1.0
            v = params[_P_V0]
            ln = params[_P_LN_SPOT]
            num = 0.0  # sum of Z_x s over the steps before the first date
            den = 0.0  # sum of s2 over them
            total = 0.0
            s_t = 0.0
            hi = -np.inf
            lo = np.inf
            for k in range(n):
                for s in range(m):
                    base = 2 * (k * m + s) * c
                    zv = sign * z[base + p]
                    zx = sign * z[base + c + p]
                    vp = v
                    mean = theta + (vp - theta) * e
                    if no_xi:
                        vn = mean
                        var = 0.5 * (vp + vn) * h
                        ln += drift - 0.25 * (vp + vn) * h + math.sqrt(var) * zx
                    else:
                        s2 = vp * c1 + c2
                        psi = s2 / (mean * mean)
                        corr = k0
                        if psi <= PSI_C:
                            inv = 2.0 / psi
                            b2 = inv - 1.0 + math.sqrt(inv) * math.sqrt(inv - 1.0)
                            a = mean / (1.0 + b2)
                            b = math.sqrt(b2)
                            vn = a * (b + zv) * (b + zv)
                            if big_a < 0.5 / a:
                                one = 1.0 - 2.0 * big_a * a
                                corr = (
                                    -big_a * b2 * a / one + 0.5 * flog(one) - (k1 + 0.5 * k3) * vp
                                )
                        else:
                            prob = (psi - 1.0) / (psi + 1.0)
                            beta = (1.0 - prob) / mean
                            tail = norm_cdf(-zv)
                            vn = 0.0 if 1.0 - tail <= prob else flog((1.0 - prob) / tail) / beta
                            if big_a < beta:
                                corr = (
                                    -flog(prob + beta * (1.0 - prob) / (beta - big_a))
                                    - (k1 + 0.5 * k3) * vp
                                )
                        var = k3 * vp + k4 * vn
                        ln += drift + corr + k1 * vp + k2 * vn + math.sqrt(var) * zx
                    v = vn
                    if k == 0:
                        num += zx * math.sqrt(var)
                        den += var
                price = fexp(ln)
                total += price
                s_t += price * ((k + 1) * dt)
                hi = max(hi, ln)
                lo = min(lo, ln)
            score = num / den
            if not barrier:
                avg = total / n
                pay = max(phi * (avg - strike), 0.0)
                ind = phi if pay > 0.0 else 0.0
                out[0, p] += half * discount * ind * avg / spot
                out[1, p] += half * discount * ind * avg / (spot * spot) * (score - 1.0)
                out[3, p] += half * discount * (ind * s_t / n - maturity * pay)
            else:
                vanilla = max(phi * (fexp(ln) - strike), 0.0)
                hit = hi >= ln_level if up else lo <= ln_level
                alive = hit if knock_in else not hit
                y = half * discount * (vanilla if alive else rebate)
                out[0, p] += y * score / spot
                out[1, p] += y * (score * score - 1.0 / den - score) / (spot * spot)


def greeks(spec: JobSpec, grid: Grid, model: ModelSetup) -> GreekSetup:
    """delta, gamma, rho (not for a barrier) of a european, asian or barrier option, fed each
    chunk's normals (`greek_values`)."""
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
    s0, k, params = spec.model.assets[0].spot, inst.strike, model.params

    def compute(z: Array, c: int, out: Array) -> None:
        greek_values(
            params,
            z,
            c,
            is_barrier,
            s0,
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


def steps_per_date(spec: JobSpec, grid: Grid) -> int:
    return spec.model.steps_per_date(grid.dt)


def setup(spec: JobSpec, grid: Grid) -> ModelSetup:
    model = spec.model
    hp = model.heston
    assert hp is not None
    a0 = model.assets[0]
    m = steps_per_date(spec, grid)
    h = grid.dt / m
    kappa, theta, xi, rho = hp.mean_reversion, hp.long_run_variance, hp.vol_of_vol, hp.correlation
    e = math.exp(-kappa * h)
    c1 = xi * xi * e * (1.0 - e) / kappa
    c2 = theta * xi * xi * (1.0 - e) ** 2 / (2.0 * kappa)
    if xi > 0.0:
        k0 = -rho * kappa * theta * h / xi
        k1 = 0.5 * h * (kappa * rho / xi - 0.5) - rho / xi
        k2 = 0.5 * h * (kappa * rho / xi - 0.5) + rho / xi
    else:
        k0 = k1 = k2 = 0.0
    k3 = k4 = 0.5 * h * (1.0 - rho * rho)
    params = np.zeros(17)
    params[_P_DATES] = grid.steps
    params[_P_STEPS] = m
    params[_P_LN_SPOT] = math.log(a0.spot)
    params[_P_V0] = hp.initial_variance
    params[_P_THETA] = theta
    params[_P_E] = e
    params[_P_C1] = c1
    params[_P_C2] = c2
    params[_P_DRIFT] = (model.rate - a0.dividend_yield) * h
    params[_P_K0] = k0
    params[_P_K1] = k1
    params[_P_K2] = k2
    params[_P_K3] = k3
    params[_P_K4] = k4
    params[_P_A] = k2 + 0.5 * k4
    params[_P_XI0] = float(xi == 0.0)
    params[_P_H] = h
    return ModelSetup(paths, params, dims=2 * grid.steps * m, assets=1)
