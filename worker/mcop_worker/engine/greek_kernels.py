"""numba kernels of the Greek estimators (conventions and formulas: `greeks.py`).

Each takes a chunk's standard normals laid out as the price kernels use them and writes one value
per sample unit and Greek component (rows: `greeks.component_index`); `accumulate` merges the
selected rows into the block's accumulator as the price's moments are merged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from mcop_worker.engine import greeks
from mcop_worker.engine.kernels import fexp
from mcop_worker.model.spec import JobSpec, cholesky

Array = npt.NDArray[np.float64]

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


# -- a job's Greek part -------------------------------------------------------------------------


@dataclass(frozen=True)
class GreekSetup:
    """compute(z, c, out): every component's per-unit values of a chunk into out (rows, >= c);
    `select` the rows the block accumulates (`greeks.selection`)."""

    compute: Callable[[Array, int, Array], None]
    rows: int
    select: npt.NDArray[np.int64]


def setup(spec: JobSpec) -> GreekSetup | None:
    """The Greek estimators of `spec` (GBM), or None when it asks for none."""
    if not spec.greeks:
        return None
    inst, model = spec.instrument, spec.model
    assert inst.maturity is not None and inst.strike is not None
    t, k, r = inst.maturity, inst.strike, model.rate
    phi = 1.0 if inst.option_type == "call" else -1.0
    anti = spec.variance_reduction.antithetic
    select = greeks.selection(spec)
    if inst.type == "basket":
        assets = model.assets
        spots = np.array([a.spot for a in assets])
        vols = np.array([a.volatility for a in assets])
        drifts = np.array([(r - a.dividend_yield - 0.5 * a.volatility**2) * t for a in assets])
        chol = np.array(cholesky(model.correlation))
        weights = np.array([a.weight for a in assets])

        def basket(z: Array, c: int, out: Array) -> None:
            basket_greeks(z, c, spots, drifts, vols, chol, weights, t, k, phi, r, anti, out)

        return GreekSetup(basket, greeks.component_count(len(assets)), select)
    a = model.assets[0]
    nu = r - a.dividend_yield - 0.5 * a.volatility**2
    s0, vol = a.spot, a.volatility
    if inst.type == "european":

        def european(z: Array, c: int, out: Array) -> None:
            european_greeks(z, c, s0, nu * t, vol, t, k, phi, r, anti, out)

        return GreekSetup(european, 5, select)
    assert inst.steps is not None
    steps = inst.steps
    drift = nu * (t / steps)
    if inst.type == "asian":

        def asian(z: Array, c: int, out: Array) -> None:
            asian_greeks(z, c, steps, s0, drift, vol, t, k, phi, r, anti, out)

        return GreekSetup(asian, 5, select)
    if inst.type == "barrier":
        b = inst.barrier
        assert b is not None
        ln_level, up, knock_in, rebate = (
            math.log(b.level),
            b.direction == "up",
            b.knock == "in",
            b.rebate,
        )

        def barrier(z: Array, c: int, out: Array) -> None:
            barrier_greeks(
                z, c, steps, s0, drift, vol, t, k, phi, r, ln_level, up, knock_in, rebate, anti, out
            )

        return GreekSetup(barrier, 5, select)
    raise ValueError(f"{inst.type} has no Greeks")
