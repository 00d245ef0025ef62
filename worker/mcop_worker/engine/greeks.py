"""Greeks from the same paths as the price: per-path estimators, accumulated like the price.

Each kernel takes a chunk's standard normals exactly as the price kernels use them (normal
(k, j, p) at (k * assets + j) * c + p, an antithetic partner the same normals negated), rebuilds
the paths with the same arithmetic, and writes one value per sample unit and Greek component;
`accumulate` merges the selected components' chunk moments into the block's `(components, 3)`
accumulator [count, mean, m2] with the same two-pass + Chan-Golub-LeVeque update as the price,
so a Greek's mean and standard error follow the price's reproducibility promise.

Conventions (GBM, D = e^{-rT}, nu = r - q - vol^2/2, W the Brownian motion driving the asset):

* delta dV/dS0, gamma d2V/dS0^2, vega dV/dvol per unit of volatility, rho dV/dr per unit of rate,
  theta dV/dt = -dV/dT: the change as calendar time passes, per year (negative when the option
  loses value with time); path-dependent instruments keep their dates at kT/steps, so a shorter
  maturity moves them proportionally.
* European, Asian, basket (Lipschitz payoffs): pathwise. With ind = phi 1{phi (X - K) > 0} and X
  the terminal price, average or basket: delta = D ind dX/dS0, vega = D ind dX/dvol,
  rho = -T D f + D ind dX/dr, theta = r D f - D ind dX/dT; dS_t/dvol = S_t (W_t - vol t),
  dS_t/dr = S_t t, dS_t/dT = S_t (nu t + vol W_t / 2) / T.
* gamma: pathwise delta differentiated by likelihood ratio through the first normal that carries
  S0 (European: W_T; Asian: the first step; basket: asset j's own score (L^-T z)_j):
  gamma = E[D ind X / S0^2 (score - 1)].
* Barrier (an indicator of the path: not Lipschitz): likelihood ratio for every Greek, from the
  log-density of the steps' increments x_k ~ N(nu dt, vol^2 dt): scores z_1 / (S0 vol sqrt(dt))
  (delta), ((z_1^2 - 1) / (vol^2 dt) - z_1 / (vol sqrt(dt))) / S0^2 (gamma), sum((z^2 - 1) / vol -
  z sqrt(dt)) (vega), sqrt(dt) sum(z) / vol (rho), sum((z^2 - 1) / (2T) + nu z sqrt(dt) /
  (vol T)) (dT, for theta), each times the discounted payoff.

Every estimator divides by the volatility: Greeks need volatility > 0 (the spec refuses 0).
Component order: single asset [delta, gamma, vega, rho, theta]; basket of d assets
[delta_0..d-1, gamma_0..d-1, vega_0..d-1, rho, theta].
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from mcop_worker.engine.kernels import fexp

GREEKS = ("delta", "gamma", "vega", "rho", "theta")
PER_ASSET = ("delta", "gamma", "vega")  # keyed by asset name for a basket


def component_count(assets: int) -> int:
    return 5 if assets == 1 else 3 * assets + 2


def component_index(greek: str, asset: int, assets: int) -> int:
    """Where `greek` (of asset `asset` for a basket) sits in a kernel's output rows."""
    g = GREEKS.index(greek)
    if assets == 1:
        return g
    if greek in PER_ASSET:
        return g * assets + asset
    return 3 * assets + (0 if greek == "rho" else 1)


# -- accumulation -------------------------------------------------------------------------------


@njit(cache=True)
def accumulate(gacc: Any, values: Any, select: Any, c: int) -> None:
    """gacc[i] (count, mean, m2) absorbs values[select[i], :c]: two-pass chunk moments (8 lanes,
    fixed order) merged with the Chan-Golub-LeVeque update, as the price's accumulator."""
    body = c - c % 8
    s = np.zeros(8)
    for i in range(select.size):
        row = values[select[i]]
        for j in range(8):
            s[j] = 0.0
        for p in range(0, body, 8):
            for j in range(8):
                s[j] += row[p + j]
        total = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))
        for p in range(body, c):
            total += row[p]
        mean = total / c
        for j in range(8):
            s[j] = 0.0
        for p in range(0, body, 8):
            for j in range(8):
                d = row[p + j] - mean
                s[j] += d * d
        m2 = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))
        for p in range(body, c):
            d = row[p] - mean
            m2 += d * d
        na = gacc[i, 0]
        if na == 0.0:
            gacc[i, 0] = c
            gacc[i, 1] = mean
            gacc[i, 2] = m2
            continue
        n = na + c
        dm = mean - gacc[i, 1]
        gacc[i, 0] = n
        gacc[i, 1] = gacc[i, 1] + dm * (c / n)
        gacc[i, 2] = gacc[i, 2] + m2 + dm * dm * (na * c / n)


# -- per-path estimators ------------------------------------------------------------------------


@njit(cache=True)
def european_greeks(
    z: Any,
    c: int,
    spot: float,
    drift: float,  # (r - q - vol^2 / 2) T
    vol: float,
    maturity: float,
    strike: float,
    phi: float,
    rate: float,
    antithetic: bool,
    out: Any,  # (5, >= c)
) -> None:
    t = maturity
    sqrt_t = math.sqrt(t)
    diffusion = vol * sqrt_t
    nu = drift / t
    ln_spot = math.log(spot)
    disc = math.exp(-rate * t)
    half = 0.5 if antithetic else 1.0
    for p in range(c):
        for g in range(5):
            out[g, p] = 0.0
        for side in range(2 if antithetic else 1):
            sign = 1.0 if side == 0 else -1.0
            d = diffusion * (sign * z[p])
            s = fexp(ln_spot + (drift + d))
            w = sqrt_t * (sign * z[p])
            pay = max(phi * (s - strike), 0.0)
            ind = phi if pay > 0.0 else 0.0
            out[0, p] += half * disc * ind * s / spot
            out[1, p] += half * disc * ind * s / (spot * spot) * (w / (vol * t) - 1.0)
            out[2, p] += half * disc * ind * s * (w - vol * t)
            out[3, p] += half * disc * (ind * s * t - t * pay)
            out[4, p] += half * disc * (rate * pay - ind * s * (nu + 0.5 * vol * w / t))


@njit(cache=True)
def asian_greeks(
    z: Any,
    c: int,
    steps: int,
    spot: float,
    drift: float,  # per step: (r - q - vol^2 / 2) dt
    vol: float,
    maturity: float,
    strike: float,
    phi: float,
    rate: float,
    antithetic: bool,
    out: Any,  # (5, >= c)
) -> None:
    t = maturity
    dt = t / steps
    sqrt_dt = math.sqrt(dt)
    diffusion = vol * sqrt_dt
    nu = drift / dt
    ln_spot = math.log(spot)
    disc = math.exp(-rate * t)
    half = 0.5 if antithetic else 1.0
    for p in range(c):
        for g in range(5):
            out[g, p] = 0.0
        for side in range(2 if antithetic else 1):
            sign = 1.0 if side == 0 else -1.0
            ln = ln_spot
            w = 0.0
            total = 0.0
            s_w = 0.0
            s_t = 0.0
            for k in range(steps):
                zk = sign * z[k * c + p]
                ln = ln + (drift + diffusion * zk)
                w += sqrt_dt * zk
                s = fexp(ln)
                total += s
                s_w += s * w
                s_t += s * ((k + 1) * dt)
            avg = total / steps
            s_w /= steps
            s_t /= steps
            pay = max(phi * (avg - strike), 0.0)
            ind = phi if pay > 0.0 else 0.0
            z1 = sign * z[p]
            out[0, p] += half * disc * ind * avg / spot
            out[1, p] += half * disc * ind * avg / (spot * spot) * (z1 / diffusion - 1.0)
            out[2, p] += half * disc * ind * (s_w - vol * s_t)
            out[3, p] += half * disc * (ind * s_t - t * pay)
            out[4, p] += half * disc * (rate * pay - ind * (nu * s_t + 0.5 * vol * s_w) / t)


@njit(cache=True)
def barrier_greeks(
    z: Any,
    c: int,
    steps: int,
    spot: float,
    drift: float,  # per step
    vol: float,
    maturity: float,
    strike: float,
    phi: float,
    rate: float,
    ln_level: float,
    up: bool,
    knock_in: bool,
    rebate: float,
    antithetic: bool,
    out: Any,  # (5, >= c)
) -> None:
    t = maturity
    dt = t / steps
    sqrt_dt = math.sqrt(dt)
    diffusion = vol * sqrt_dt
    nu = drift / dt
    ln_spot = math.log(spot)
    disc = math.exp(-rate * t)
    half = 0.5 if antithetic else 1.0
    for p in range(c):
        for g in range(5):
            out[g, p] = 0.0
        for side in range(2 if antithetic else 1):
            sign = 1.0 if side == 0 else -1.0
            ln = ln_spot
            hi = -np.inf
            lo = np.inf
            z_sum = 0.0
            z2_sum = 0.0
            for k in range(steps):
                zk = sign * z[k * c + p]
                ln = ln + (drift + diffusion * zk)
                hi = max(hi, ln)
                lo = min(lo, ln)
                z_sum += zk
                z2_sum += zk * zk
            vanilla = max(phi * (fexp(ln) - strike), 0.0)
            hit = hi >= ln_level if up else lo <= ln_level
            alive = hit if knock_in else not hit
            y = half * disc * (vanilla if alive else rebate)
            z1 = sign * z[p]
            out[0, p] += y * z1 / (spot * diffusion)
            out[1, p] += (
                y * ((z1 * z1 - 1.0) / (diffusion * diffusion) - z1 / diffusion) / (spot * spot)
            )
            out[2, p] += y * ((z2_sum - steps) / vol - sqrt_dt * z_sum)
            out[3, p] += y * (sqrt_dt * z_sum / vol - t)
            out[4, p] += y * (
                rate - ((z2_sum - steps) / (2.0 * t) + nu * sqrt_dt * z_sum / (vol * t))
            )


@njit(cache=True)
def basket_greeks(
    z: Any,
    c: int,
    spots: Any,
    drift: Any,  # per asset: (r - q_j - vol_j^2 / 2) T
    vols: Any,
    chol: Any,  # lower Cholesky factor of the correlation matrix
    weights: Any,
    maturity: float,
    strike: float,
    phi: float,
    rate: float,
    antithetic: bool,
    out: Any,  # (3 d + 2, >= c)
) -> None:
    d = spots.size
    t = maturity
    sqrt_t = math.sqrt(t)
    disc = math.exp(-rate * t)
    half = 0.5 if antithetic else 1.0
    x = np.empty(d)
    u = np.empty(d)
    s = np.empty(d)
    ln_spot = np.empty(d)
    for j in range(d):
        ln_spot[j] = math.log(spots[j])
    for p in range(c):
        for g in range(3 * d + 2):
            out[g, p] = 0.0
        # x = L z (correlated normals), u = L^-T z (each asset's likelihood-ratio score).
        for j in range(d):
            acc = 0.0
            for i in range(j + 1):
                acc += chol[j, i] * z[i * c + p]
            x[j] = acc
        for j in range(d - 1, -1, -1):
            acc = z[j * c + p]
            for i in range(j + 1, d):
                acc -= chol[i, j] * u[i]
            u[j] = acc / chol[j, j]
        for side in range(2 if antithetic else 1):
            sign = 1.0 if side == 0 else -1.0
            basket = 0.0
            for j in range(d):
                s[j] = fexp(ln_spot[j] + (drift[j] + vols[j] * sqrt_t * (sign * x[j])))
                basket += weights[j] * s[j]
            pay = max(phi * (basket - strike), 0.0)
            ind = phi if pay > 0.0 else 0.0
            dt_sum = 0.0
            for j in range(d):
                w = sqrt_t * sign * x[j]
                ws = weights[j] * s[j]
                nu = drift[j] / t
                out[j, p] += half * disc * ind * ws / spots[j]
                score = sign * u[j] / (vols[j] * sqrt_t)
                out[d + j, p] += half * disc * ind * ws / (spots[j] * spots[j]) * (score - 1.0)
                out[2 * d + j, p] += half * disc * ind * ws * (w - vols[j] * t)
                dt_sum += ws * (nu + 0.5 * vols[j] * w / t)
            out[3 * d, p] += half * disc * (ind * basket * t - t * pay)
            out[3 * d + 1, p] += half * disc * (rate * pay - ind * dt_sum)
