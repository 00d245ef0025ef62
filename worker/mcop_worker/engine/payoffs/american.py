"""American (Bermudan) put or call on one asset, exercisable on `steps` equally spaced dates
(the last at maturity), priced by Longstaff-Schwartz.

The exercise rule is fitted once per job, before any block, on REGRESSION_PATHS paths of their own
(`composition.regression_paths`: streams no pricing block uses, derived from the seed), by every
worker and by `mcop run` alike, so all shards price with the very same rule whatever their count.
Fitting: backward from the last date, on the paths in the money at date k, least squares of the
discounted cash flow of following the rule from k + 1 on against the basis 1, m, m^2, m^3 in
moneyness m = S / strike (normal equations summed in path order, solved by Gaussian elimination:
the same bits everywhere). A date with fewer than MIN_IN_THE_MONEY such paths: no early exercise.

Pricing: each pricing path is exercised at the first date where the option is in the money and
the discounted exercise value is at least the fitted continuation value (always at maturity if in
the money). The rule is fixed, so the price is an honest low-biased estimate whose standard error is
that of the pricing paths. Control variate: the European option with the same strike and maturity
on the same path (its closed form under the job's model).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from mcop_worker.engine.composition import Grid, PayoffSetup
from mcop_worker.engine.kernels import fexp
from mcop_worker.engine.model_closed_forms import vanilla
from mcop_worker.model.spec import JobSpec

Array = npt.NDArray[np.float64]

REGRESSION_PATHS = 1 << 15
BASIS = 4  # 1, m, m^2, m^3
MIN_IN_THE_MONEY = 64
_HEAD = 4  # params: [dates n, strike, phi, basis], then disc[n], then coef[n * BASIS]


@njit(inline="always", cache=True)
def _continuation(coef: Any, k: int, m: float) -> float:
    o = k * BASIS
    value: float = coef[o] + m * (coef[o + 1] + m * (coef[o + 2] + m * coef[o + 3]))
    return value


@njit(cache=True, nogil=True)
def values(params: Any, paths: Any, c: int, y: Any, x: Any) -> None:
    n = int(params[0])
    strike = params[1]
    phi = params[2]
    disc = params[_HEAD : _HEAD + n]
    coef = params[_HEAD + n : _HEAD + n + n * BASIS]
    last = (n - 1) * c
    for p in range(c):
        x[p] = disc[n - 1] * max(phi * (fexp(paths[last + p]) - strike), 0.0)
        y[p] = 0.0
        for k in range(n):
            s = fexp(paths[k * c + p])
            intrinsic = max(phi * (s - strike), 0.0)
            if intrinsic > 0.0:
                value = disc[k] * intrinsic
                if k == n - 1 or value >= _continuation(coef, k, s / strike):
                    y[p] = value
                    break


@njit(cache=True)
def _normal_equations(
    paths: Any, r: int, k: int, strike: float, phi: float, cash: Any, xtx: Any, xty: Any
) -> int:
    """Sums over the paths in the money at date k of b b^T and b cash (b the basis), in path
    order; returns how many paths were in the money."""
    xtx[:] = 0.0
    xty[:] = 0.0
    b = np.empty(BASIS)
    used = 0
    for q in range(r):
        s = fexp(paths[k * r + q])
        if phi * (s - strike) > 0.0:
            m = s / strike
            b[0] = 1.0
            for i in range(1, BASIS):
                b[i] = b[i - 1] * m
            for i in range(BASIS):
                xty[i] += b[i] * cash[q]
                for j in range(BASIS):
                    xtx[i * BASIS + j] += b[i] * b[j]
            used += 1
    return used


@njit(cache=True)
def _exercise(
    paths: Any, r: int, k: int, strike: float, phi: float, disc_k: float, coef: Any, cash: Any
) -> None:
    """Where the fitted rule exercises at date k, the cash flow becomes the exercise value."""
    for q in range(r):
        s = fexp(paths[k * r + q])
        intrinsic = max(phi * (s - strike), 0.0)
        if intrinsic > 0.0:
            value = disc_k * intrinsic
            if value >= _continuation(coef, k, s / strike):
                cash[q] = value


def _solve(a: list[float], b: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting on a BASIS x BASIS system (None: singular)."""
    n = BASIS
    m = [[a[i * n + j] for j in range(n)] + [b[i]] for i in range(n)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda i: abs(m[i][col]))
        if abs(m[pivot][col]) < 1e-300:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for i in range(col + 1, n):
            f = m[i][col] / m[col][col]
            for j in range(col, n + 1):
                m[i][j] -= f * m[col][j]
    out = [0.0] * n
    for i in range(n - 1, -1, -1):
        out[i] = (m[i][n] - sum(m[i][j] * out[j] for j in range(i + 1, n))) / m[i][i]
    return out


def _terms(spec: JobSpec) -> tuple[int, float, float, Array]:
    inst = spec.instrument
    assert inst.steps is not None and inst.strike is not None and inst.maturity is not None
    n = inst.steps
    phi = 1.0 if inst.option_type == "call" else -1.0
    dt = inst.maturity / n
    disc = np.array([math.exp(-spec.model.rate * dt * (k + 1)) for k in range(n)])
    return n, inst.strike, phi, disc


def fit(spec: JobSpec, paths: Array, r: int) -> PayoffSetup:
    """The payoff with its exercise rule fitted on `r` regression paths (`paths[k * r + q]`)."""
    n, strike, phi, disc = _terms(spec)
    coef = np.zeros(n * BASIS)
    coef[(n - 1) * BASIS] = -math.inf  # maturity: exercise whenever in the money
    cash = np.zeros(r)
    _exercise(paths, r, n - 1, strike, phi, float(disc[n - 1]), coef, cash)
    xtx = np.empty(BASIS * BASIS)
    xty = np.empty(BASIS)
    for k in range(n - 2, -1, -1):
        used = _normal_equations(paths, r, k, strike, phi, cash, xtx, xty)
        beta = _solve(xtx.tolist(), xty.tolist()) if used >= MIN_IN_THE_MONEY else None
        if beta is None:
            coef[k * BASIS] = math.inf  # no early exercise at this date
            continue
        coef[k * BASIS : (k + 1) * BASIS] = beta
        _exercise(paths, r, k, strike, phi, float(disc[k]), coef, cash)
    return _setup(spec, coef)


def _setup(spec: JobSpec, coef: Array) -> PayoffSetup:
    n, strike, phi, disc = _terms(spec)
    params = np.concatenate([[n, strike, phi, BASIS], disc, coef])
    return PayoffSetup(values, params, scale=1.0, fit=fit, regression_paths=REGRESSION_PATHS)


def grid(spec: JobSpec) -> Grid:
    inst = spec.instrument
    assert inst.maturity is not None and inst.steps is not None
    return Grid(inst.maturity, inst.steps)


def setup(spec: JobSpec) -> PayoffSetup:
    """Without its rule yet (no early exercise): `registry.compose` fits it (see `fit`)."""
    n = spec.instrument.steps
    assert n is not None
    return _setup(spec, np.full(n * BASIS, math.inf))


def control_mean(spec: JobSpec) -> float | None:
    return vanilla(spec)
