"""Option on a weighted basket sum_j w_j S_j(T) of correlated assets.

Control variate: with all weights > 0, the same option on the geometric basket
B0 prod_j (S_j(T) / S_j)^a_j, a_j = w_j S_j / B0 (log-normal, closed form); otherwise the
discounted basket value itself, E = sum_j w_j S_j e^{-q_j T}.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from mcop_worker.engine import closed_forms
from mcop_worker.engine.composition import Grid, PayoffSetup
from mcop_worker.engine.kernels import fexp
from mcop_worker.model.spec import JobSpec


@njit(cache=True, nogil=True)
def values(params: Any, paths: Any, c: int, y: Any, x: Any) -> None:
    """params = [assets d, strike, phi, geometric, geo_ln_base, weights[d], geo_coef[d]]."""
    d = int(params[0])
    strike = params[1]
    phi = params[2]
    geometric = params[3] != 0.0
    geo_ln_base = params[4]
    weights = params[5 : 5 + d]
    geo_coef = params[5 + d : 5 + 2 * d]
    for p in range(c):
        y[p] = 0.0  # basket value
        x[p] = geo_ln_base  # log of the geometric basket
    for j in range(d):
        w = weights[j]
        a = geo_coef[j]
        base = j * c
        for p in range(c):
            y[p] += w * fexp(paths[base + p])
            x[p] += a * paths[base + p]
    for p in range(c):
        x[p] = fexp(x[p])
    for p in range(c):
        b = y[p]
        y[p] = max(phi * (b - strike), 0.0)
        x[p] = max(phi * (x[p] - strike), 0.0) if geometric else b


def geometric_control(spec: JobSpec) -> bool:
    return all(a.weight > 0 for a in spec.model.assets)


def grid(spec: JobSpec) -> Grid:
    assert spec.instrument.maturity is not None
    return Grid(spec.instrument.maturity, 1)


def setup(spec: JobSpec) -> PayoffSetup:
    inst = spec.instrument
    assets = spec.model.assets
    assert inst.maturity is not None and inst.strike is not None
    phi = 1.0 if inst.option_type == "call" else -1.0
    geometric = geometric_control(spec)
    b0 = math.fsum(a.weight * a.spot for a in assets)
    coef = [a.weight * a.spot / b0 if geometric else 0.0 for a in assets]
    # math.fsum, not np.dot: BLAS picks its kernel per CPU (OPENBLAS_CORETYPE), and with it the
    # summation order, which would make the result depend on the machine.
    weighted_ln = math.fsum(c * math.log(a.spot) for c, a in zip(coef, assets, strict=True))
    ln_base = math.log(b0) - weighted_ln if geometric else 0.0
    params = [len(assets), inst.strike, phi, float(geometric), ln_base]
    params += [a.weight for a in assets] + coef
    discount = math.exp(-spec.model.rate * inst.maturity)
    return PayoffSetup(values, np.array(params), scale=discount)


def control_mean(spec: JobSpec) -> float | None:
    inst = spec.instrument
    model = spec.model
    assets = model.assets
    assert inst.maturity is not None and inst.strike is not None and inst.option_type is not None
    if geometric_control(spec):
        return closed_forms.geometric_basket(
            [a.spot for a in assets],
            [a.weight for a in assets],
            [a.volatility for a in assets],
            [a.dividend_yield for a in assets],
            model.correlation,
            model.rate,
            inst.maturity,
            inst.strike,
            inst.option_type,
        )
    return math.fsum(
        a.weight * a.spot * math.exp(-a.dividend_yield * inst.maturity) for a in assets
    )
