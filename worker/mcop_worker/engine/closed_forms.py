"""Closed-form prices under geometric Brownian motion: the engine's control-variate means and the
references its tests compare against.

Conventions: continuously compounded `rate` and `dividend_yield`, `option_type` "call" or "put",
times in years. Discrete monitoring dates are T/steps, 2T/steps, ..., T (the start excluded).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

_STD_NORMAL = NormalDist()

# Broadie-Glasserman-Kou: beta = -zeta(1/2) / sqrt(2 pi).
BGK_BETA = 0.5825971579390106


def norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def norm_ppf(p: float) -> float:
    return float(_STD_NORMAL.inv_cdf(p))


def _phi(option_type: str) -> float:
    if option_type not in ("call", "put"):
        raise ValueError(f"option_type must be call or put, not {option_type!r}")
    return 1.0 if option_type == "call" else -1.0


def lognormal_option(
    mean_log: float, var_log: float, strike: float, discount: float, option_type: str
) -> float:
    """discount * E[(phi (X - K))+] for ln X ~ N(mean_log, var_log)."""
    phi = _phi(option_type)
    if var_log <= 0.0:
        return discount * max(phi * (math.exp(mean_log) - strike), 0.0)
    sd = math.sqrt(var_log)
    d2 = (mean_log - math.log(strike)) / sd
    d1 = d2 + sd
    forward = math.exp(mean_log + 0.5 * var_log)
    return discount * phi * (forward * norm_cdf(phi * d1) - strike * norm_cdf(phi * d2))


def black_scholes(
    spot: float,
    strike: float,
    rate: float,
    dividend_yield: float,
    volatility: float,
    maturity: float,
    option_type: str,
) -> float:
    mean_log = math.log(spot) + (rate - dividend_yield - 0.5 * volatility**2) * maturity
    return lognormal_option(
        mean_log, volatility**2 * maturity, strike, math.exp(-rate * maturity), option_type
    )


def geometric_asian(
    spot: float,
    strike: float,
    rate: float,
    dividend_yield: float,
    volatility: float,
    maturity: float,
    steps: int,
    option_type: str,
) -> float:
    """Geometric-average option on the dates kT/steps, k = 1..steps (Kemna-Vorst, discrete).

    ln G = mean of ln S(t_k) is normal with mean ln S + nu T (m+1)/(2m) and variance
    vol**2 T (m+1)(2m+1)/(6 m**2), nu = r - q - vol**2/2.
    """
    m = steps
    nu = rate - dividend_yield - 0.5 * volatility**2
    mean_log = math.log(spot) + nu * maturity * (m + 1) / (2 * m)
    var_log = volatility**2 * maturity * (m + 1) * (2 * m + 1) / (6 * m * m)
    return lognormal_option(mean_log, var_log, strike, math.exp(-rate * maturity), option_type)


def geometric_basket(
    spots: Sequence[float],
    weights: Sequence[float],
    volatilities: Sequence[float],
    dividend_yields: Sequence[float],
    correlation: Sequence[Sequence[float]],
    rate: float,
    maturity: float,
    strike: float,
    option_type: str,
) -> float:
    """Option on G = B0 * prod (S_j(T)/S_j)^a_j, a_j = w_j S_j / B0, B0 = sum w_j S_j (weights > 0).

    The engine's control variate for a basket of long positions: G is lognormal and close to the
    basket's value.
    """
    b0 = sum(w * s for w, s in zip(weights, spots, strict=True))
    a = [w * s / b0 for w, s in zip(weights, spots, strict=True)]
    n = len(spots)
    mean_log = math.log(b0) + maturity * sum(
        a[j] * (rate - dividend_yields[j] - 0.5 * volatilities[j] ** 2) for j in range(n)
    )
    var_log = maturity * sum(
        a[i] * a[j] * volatilities[i] * volatilities[j] * correlation[i][j]
        for i in range(n)
        for j in range(n)
    )
    return lognormal_option(mean_log, var_log, strike, math.exp(-rate * maturity), option_type)


def barrier_continuous(
    spot: float,
    strike: float,
    rate: float,
    dividend_yield: float,
    volatility: float,
    maturity: float,
    level: float,
    direction: str,
    knock: str,
    rebate: float,
    option_type: str,
) -> float:
    """Continuously monitored single barrier (Merton, Reiner-Rubinstein) with the rebate paid at
    maturity: to a knock-out option if knocked out, to a knock-in option if never knocked in."""
    if direction not in ("up", "down") or knock not in ("in", "out"):
        raise ValueError("direction must be up/down and knock in/out")
    phi = _phi(option_type)
    vanilla = black_scholes(spot, strike, rate, dividend_yield, volatility, maturity, option_type)
    discount = math.exp(-rate * maturity)
    already_hit = spot >= level if direction == "up" else spot <= level
    if already_hit:
        return vanilla if knock == "in" else rebate * discount
    eta = 1.0 if direction == "down" else -1.0
    sd = volatility * math.sqrt(maturity)
    b = rate - dividend_yield
    mu = (b - 0.5 * volatility**2) / volatility**2
    carry = math.exp((b - rate) * maturity)
    x1 = math.log(spot / strike) / sd + (1 + mu) * sd
    x2 = math.log(spot / level) / sd + (1 + mu) * sd
    y1 = math.log(level * level / (spot * strike)) / sd + (1 + mu) * sd
    y2 = math.log(level / spot) / sd + (1 + mu) * sd
    h_up = math.pow(level / spot, 2 * (mu + 1))
    h = math.pow(level / spot, 2 * mu)
    big_a = phi * spot * carry * norm_cdf(phi * x1) - phi * strike * discount * norm_cdf(
        phi * x1 - phi * sd
    )
    big_b = phi * spot * carry * norm_cdf(phi * x2) - phi * strike * discount * norm_cdf(
        phi * x2 - phi * sd
    )
    big_c = phi * spot * carry * h_up * norm_cdf(eta * y1) - phi * strike * discount * h * norm_cdf(
        eta * y1 - eta * sd
    )
    big_d = phi * spot * carry * h_up * norm_cdf(eta * y2) - phi * strike * discount * h * norm_cdf(
        eta * y2 - eta * sd
    )
    strike_above = strike > level
    if direction == "down" and phi > 0:
        knock_in = big_c if strike_above else big_a - big_b + big_d
    elif direction == "up" and phi > 0:
        knock_in = big_a if strike_above else big_b - big_c + big_d
    elif direction == "down":
        knock_in = big_b - big_c + big_d if strike_above else big_a
    else:
        knock_in = big_a - big_b + big_d if strike_above else big_c
    # Probability (risk-neutral) that the barrier is never reached before maturity.
    no_hit = norm_cdf(eta * x2 - eta * sd) - h * norm_cdf(eta * y2 - eta * sd)
    if knock == "in":
        return knock_in + rebate * discount * no_hit
    return vanilla - knock_in + rebate * discount * (1.0 - no_hit)


def bgk_level(
    level: float, volatility: float, maturity: float, steps: int, direction: str
) -> float:
    """Broadie-Glasserman-Kou: a barrier monitored on `steps` dates prices like a continuous one
    moved away from the spot by exp(beta vol sqrt(T/steps))."""
    shift = math.exp(BGK_BETA * volatility * math.sqrt(maturity / steps))
    return level * shift if direction == "up" else level / shift


def barrier_discrete(
    spot: float,
    strike: float,
    rate: float,
    dividend_yield: float,
    volatility: float,
    maturity: float,
    steps: int,
    level: float,
    direction: str,
    knock: str,
    rebate: float,
    option_type: str,
) -> float:
    """The continuous formula at the BGK-shifted level: the discrete-monitoring approximation."""
    shifted = bgk_level(level, volatility, maturity, steps, direction)
    return barrier_continuous(
        spot,
        strike,
        rate,
        dividend_yield,
        volatility,
        maturity,
        shifted,
        direction,
        knock,
        rebate,
        option_type,
    )


def lognormal_var(
    spot: float, units: float, volatility: float, drift: float, horizon: float, level: float
) -> float:
    """Value-at-Risk at `level` of holding `units` (negative: short) of a GBM asset over `horizon`,
    as a positive loss."""
    m = (drift - 0.5 * volatility**2) * horizon
    s = volatility * math.sqrt(horizon)
    z = norm_ppf(level)
    value = abs(units) * spot
    if units >= 0:
        return value * (1.0 - math.exp(m - s * z))
    return value * (math.exp(m + s * z) - 1.0)


def lognormal_es(
    spot: float, units: float, volatility: float, drift: float, horizon: float, level: float
) -> float:
    """Expected shortfall (mean loss beyond the VaR) at `level`, same position as lognormal_var."""
    s = volatility * math.sqrt(horizon)
    z = norm_ppf(level)
    growth = math.exp(drift * horizon)
    value = abs(units) * spot
    if units >= 0:
        return value * (1.0 - growth * norm_cdf(-z - s) / (1.0 - level))
    return value * (growth * norm_cdf(s - z) / (1.0 - level) - 1.0)


def norm_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def black_scholes_greeks(
    spot: float,
    strike: float,
    rate: float,
    dividend_yield: float,
    volatility: float,
    maturity: float,
    option_type: str,
) -> dict[str, float]:
    """The engine's Greek conventions for a European option, volatility > 0:
    delta dV/dS, gamma d2V/dS2, vega dV/dvol (per unit of volatility: 1.0 = 100 points), rho
    dV/dr (per unit of rate), theta dV/dt = -dV/dT (calendar time passing, per year: negative
    when the option loses value as time passes)."""
    phi = _phi(option_type)
    sd = volatility * math.sqrt(maturity)
    d1 = (math.log(spot / strike) + (rate - dividend_yield + 0.5 * volatility**2) * maturity) / sd
    d2 = d1 - sd
    carry = math.exp(-dividend_yield * maturity)
    discount = math.exp(-rate * maturity)
    density = norm_pdf(d1)
    return {
        "delta": phi * carry * norm_cdf(phi * d1),
        "gamma": carry * density / (spot * sd),
        "vega": spot * carry * density * math.sqrt(maturity),
        "rho": phi * strike * maturity * discount * norm_cdf(phi * d2),
        "theta": -spot * carry * density * volatility / (2.0 * math.sqrt(maturity))
        - phi * rate * strike * discount * norm_cdf(phi * d2)
        + phi * dividend_yield * spot * carry * norm_cdf(phi * d1),
    }
