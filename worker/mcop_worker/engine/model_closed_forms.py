"""European prices under the Heston and Merton models: the oracles of the tests and the means of
control variates under those models.

* Heston (1993): the characteristic function of ln S(T) in the "little Heston trap" form
  (Albrecher et al. 2007, no branch-cut discontinuity) and the two probabilities P1, P2 by
  Gauss-Legendre quadrature on [0, U] in panels, numpy only; accurate to about 1e-9 of the spot for
  the parameters the CRD allows (checked against the Black-Scholes limit volOfVol -> 0).
* Merton (1976): the Poisson-weighted series of Black-Scholes prices, summed until the weights
  are below 1e-17.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from mcop_worker.engine.closed_forms import black_scholes
from mcop_worker.model.spec import JobSpec

_PANELS = 200
_PANEL_WIDTH = 5.0  # u over [0, 1000]: [0, 200] left 4e-4 at volOfVol 1, kappa 0.5 (vs QuantLib)
_NODES = 64


@lru_cache(maxsize=1)
def _quadrature() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    x, w = np.polynomial.legendre.leggauss(_NODES)
    us = []
    ws = []
    for k in range(_PANELS):
        a = k * _PANEL_WIDTH
        us.append(a + 0.5 * _PANEL_WIDTH * (x + 1.0))
        ws.append(0.5 * _PANEL_WIDTH * w)
    return np.concatenate(us), np.concatenate(ws)


def heston_char(
    u: Any,
    spot: float,
    rate: float,
    dividend_yield: float,
    v0: float,
    kappa: float,
    theta: float,
    xi: float,
    rho: float,
    t: float,
) -> npt.NDArray[np.complex128]:
    """E[exp(i u ln S(T))] under Heston (risk-neutral), u complex."""
    iu: Any = 1j * u
    drift = iu * (math.log(spot) + (rate - dividend_yield) * t)
    if xi < 1e-6:  # (numerically) deterministic variance: ln S(T) is normal
        e = math.exp(-kappa * t)
        var = theta * t + (v0 - theta) * (1.0 - e) / kappa
        result: npt.NDArray[np.complex128] = np.exp(drift - 0.5 * var * (iu + u * u))
        return result
    b = kappa - rho * xi * iu
    d = np.sqrt(b * b + xi * xi * (iu + u * u))
    g = (b - d) / (b + d)
    e = np.exp(-d * t)
    c = kappa * theta / (xi * xi) * ((b - d) * t - 2.0 * np.log((1.0 - g * e) / (1.0 - g)))
    dd = (b - d) / (xi * xi) * (1.0 - e) / (1.0 - g * e)
    result = np.exp(drift + c + dd * v0)
    return result


def heston(
    spot: float,
    strike: float,
    rate: float,
    dividend_yield: float,
    v0: float,
    kappa: float,
    theta: float,
    xi: float,
    rho: float,
    t: float,
    option_type: str,
) -> float:
    """Heston European call or put (semi-analytic)."""
    nodes, w = _quadrature()
    u: Any = np.where(nodes == 0.0, 1e-12, nodes)
    args = (spot, rate, dividend_yield, v0, kappa, theta, xi, rho, t)
    lnk = math.log(strike)
    forward = spot * math.exp((rate - dividend_yield) * t)
    k_iu = np.exp(-1j * u * lnk) / (1j * u)
    # math.fsum: exactly rounded, so the sum does not depend on numpy's SIMD order on this CPU
    p1 = 0.5 + math.fsum(w * np.real(k_iu * heston_char(u - 1j, *args))) / forward / math.pi
    p2 = 0.5 + math.fsum(w * np.real(k_iu * heston_char(u + 0j, *args))) / math.pi
    df_q = math.exp(-dividend_yield * t)
    df_r = math.exp(-rate * t)
    call = spot * df_q * p1 - strike * df_r * p2
    if option_type == "call":
        return call
    if option_type == "put":
        return call - spot * df_q + strike * df_r
    raise ValueError(f"option_type must be call or put, not {option_type!r}")


def merton(
    spot: float,
    strike: float,
    rate: float,
    dividend_yield: float,
    vol: float,
    intensity: float,
    jump_mean: float,
    jump_std: float,
    t: float,
    option_type: str,
) -> float:
    """Merton jump-diffusion European: log jumps N(jump_mean, jump_std**2), `intensity` per year.

    sum_n e^{-l' T} (l' T)^n / n! BS(S, K, r_n, q, sigma_n, T), l' = l (1 + k),
    k = E[J] - 1, sigma_n^2 = sigma^2 + n s^2 / T, r_n = r - l k + n ln(1 + k) / T.
    """
    k = math.exp(jump_mean + 0.5 * jump_std**2) - 1.0
    lam = intensity * (1.0 + k)
    total = 0.0
    n = 0
    log_weight = -lam * t  # log of the Poisson weight of n jumps
    while True:
        weight = math.exp(log_weight)
        sigma_n = math.sqrt(vol**2 + n * jump_std**2 / t)
        r_n = rate - intensity * k + n * math.log(1.0 + k) / t
        # (the Poisson weights at l' absorb the discounting at r_n instead of r)
        total += weight * black_scholes(spot, strike, r_n, dividend_yield, sigma_n, t, option_type)
        n += 1
        log_weight += math.log(lam * t) - math.log(n) if lam > 0.0 else -math.inf
        if n > lam * t + 10 and math.exp(log_weight) < 1e-17:
            return total
        if lam == 0.0:
            return total


def vanilla(spec: JobSpec) -> float:
    """The European option of the spec's strike, maturity and type under the spec's model."""
    inst = spec.instrument
    model = spec.model
    a0 = model.assets[0]
    assert inst.strike is not None and inst.maturity is not None and inst.option_type is not None
    k, t, kind, r, q = inst.strike, inst.maturity, inst.option_type, model.rate, a0.dividend_yield
    if model.heston is not None:
        h = model.heston
        return heston(
            a0.spot,
            k,
            r,
            q,
            h.initial_variance,
            h.mean_reversion,
            h.long_run_variance,
            h.vol_of_vol,
            h.correlation,
            t,
            kind,
        )
    if model.merton is not None:
        m = model.merton
        return merton(
            a0.spot, k, r, q, a0.volatility, m.jump_intensity, m.jump_mean, m.jump_std, t, kind
        )
    return black_scholes(a0.spot, k, r, q, a0.volatility, t, kind)
