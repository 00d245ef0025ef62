"""Reference prices written for the tests (not the engine's): a Cox-Ross-Rubinstein tree for
Bermudan options with the engine's exercise dates."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def crr_bermudan(
    spot: float,
    strike: float,
    rate: float,
    dividend_yield: float,
    vol: float,
    maturity: float,
    dates: int,
    option_type: str,
    steps_per_date: int = 200,
) -> float:
    """Bermudan option exercisable at maturity * k / dates, k = 1..dates, on a CRR tree with
    `steps_per_date` tree steps between two dates (so every date is a tree level)."""
    n = dates * steps_per_date
    dt = maturity / n
    u = math.exp(vol * math.sqrt(dt))
    d = 1.0 / u
    p = (math.exp((rate - dividend_yield) * dt) - d) / (u - d)
    disc = math.exp(-rate * dt)
    phi = 1.0 if option_type == "call" else -1.0
    prices = spot * u ** np.arange(n, -n - 1, -2, dtype=np.float64)
    values = np.maximum(phi * (prices - strike), 0.0)
    for level in range(n - 1, -1, -1):
        values = disc * (p * values[:-1] + (1.0 - p) * values[1:])
        if level > 0 and level % steps_per_date == 0:
            prices = spot * u ** np.arange(level, -level - 1, -2, dtype=np.float64)
            values = np.maximum(values, phi * (prices - strike))
    return float(values[0])


# The Merton jump-diffusion parameters of the model and Greek tests (no "type": the tests add it).
MERTON_PARAMS: dict[str, float] = {
    "spot": 100.0,
    "rate": 0.04,
    "dividendYield": 0.01,
    "volatility": 0.2,
    "jumpIntensity": 0.8,
    "jumpMean": -0.15,
    "jumpStdDev": 0.2,
}

# The two Heston parameter sets of the tests and benchmarks: the Feller condition
# 2 kappa theta >= volOfVol^2 met (0.12 >= 0.09), and violated (0.04 < 1.0).
HESTON_SETS: dict[str, dict[str, float]] = {
    "feller-met": {
        "spot": 100.0,
        "rate": 0.03,
        "dividendYield": 0.01,
        "initialVariance": 0.04,
        "meanReversion": 1.5,
        "longRunVariance": 0.04,
        "volOfVol": 0.3,
        "spotVarianceCorrelation": -0.7,
    },
    "feller-violated": {
        "spot": 100.0,
        "rate": 0.03,
        "dividendYield": 0.01,
        "initialVariance": 0.04,
        "meanReversion": 0.5,
        "longRunVariance": 0.04,
        "volOfVol": 1.0,
        "spotVarianceCorrelation": -0.9,
    },
}


def _ql_setup(rate: float, dividend_yield: float, maturity: float) -> tuple[Any, Any, Any, Any]:
    import QuantLib as ql

    today = ql.Date(2, 1, 2025)
    ql.Settings.instance().evaluationDate = today
    # Actual/365 with a whole number of days: maturity 1.0 is 365 days exactly
    day_count = ql.Actual365Fixed()
    expiry = today + round(maturity * 365)
    rates = ql.YieldTermStructureHandle(ql.FlatForward(today, rate, day_count))
    dividends = ql.YieldTermStructureHandle(ql.FlatForward(today, dividend_yield, day_count))
    return today, expiry, rates, dividends


def quantlib_heston(params: dict[str, float], strike: float, maturity: float, kind: str) -> float:
    """QuantLib's AnalyticHestonEngine (Gauss-Lobatto to 1e-12 relative)."""
    import QuantLib as ql

    _, expiry, rates, dividends = _ql_setup(params["rate"], params["dividendYield"], maturity)
    process = ql.HestonProcess(
        rates,
        dividends,
        ql.QuoteHandle(ql.SimpleQuote(params["spot"])),
        params["initialVariance"],
        params["meanReversion"],
        params["longRunVariance"],
        params["volOfVol"],
        params["spotVarianceCorrelation"],
    )
    option = ql.VanillaOption(
        ql.PlainVanillaPayoff(ql.Option.Call if kind == "call" else ql.Option.Put, strike),
        ql.EuropeanExercise(expiry),
    )
    option.setPricingEngine(ql.AnalyticHestonEngine(ql.HestonModel(process), 1e-12, 1_000_000))
    return float(option.NPV())


def quantlib_merton(
    spot: float,
    strike: float,
    rate: float,
    dividend_yield: float,
    vol: float,
    intensity: float,
    jump_mean: float,
    jump_std: float,
    maturity: float,
    kind: str,
) -> float:
    """Merton (1976) by QuantLib's BatesEngine (its Python bindings have no JumpDiffusionEngine):
    Bates is Heston plus log-normal jumps N(jump_mean, jump_std^2); with the variance held at
    vol^2 (v0 = theta, a vol-of-vol of 1e-4) it is Merton's model."""
    import QuantLib as ql

    _, expiry, rates, dividends = _ql_setup(rate, dividend_yield, maturity)
    var = vol * vol
    process = ql.BatesProcess(
        rates,
        dividends,
        ql.QuoteHandle(ql.SimpleQuote(spot)),
        var,
        1.0,
        var,
        1e-4,
        0.0,
        intensity,
        jump_mean,
        jump_std,
    )
    option = ql.VanillaOption(
        ql.PlainVanillaPayoff(ql.Option.Call if kind == "call" else ql.Option.Put, strike),
        ql.EuropeanExercise(expiry),
    )
    option.setPricingEngine(ql.BatesEngine(ql.BatesModel(process), 1e-12, 1_000_000))
    return float(option.NPV())


def quantlib_bermudan_fd(
    spot: float,
    strike: float,
    rate: float,
    dividend_yield: float,
    vol: float,
    maturity: float,
    dates: int,
    kind: str,
) -> float:
    """QuantLib's finite-difference Black-Scholes engine with Bermudan exercise on
    maturity * k / dates, k = 1..dates (days of an Actual/365 year: dates must divide 365 * T)."""
    import QuantLib as ql

    today, expiry, rates, dividends = _ql_setup(rate, dividend_yield, maturity)
    days = expiry - today
    if days % dates:
        raise ValueError("the exercise dates must fall on whole days")
    exercise_dates = [today + days * (k + 1) // dates for k in range(dates)]
    day_count = ql.Actual365Fixed()
    vol_ts = ql.BlackVolTermStructureHandle(
        ql.BlackConstantVol(today, ql.NullCalendar(), vol, day_count)
    )
    process = ql.BlackScholesMertonProcess(
        ql.QuoteHandle(ql.SimpleQuote(spot)), dividends, rates, vol_ts
    )
    option = ql.VanillaOption(
        ql.PlainVanillaPayoff(ql.Option.Call if kind == "call" else ql.Option.Put, strike),
        ql.BermudanExercise(exercise_dates),
    )
    option.setPricingEngine(ql.FdBlackScholesVanillaEngine(process, 2000, 2000))
    return float(option.NPV())


# Heston Asian and barrier options on 12 monthly dates of a 1-year maturity, for the high-path
# references of benchmarks/heston_path_reference.py (recorded in tests/test_engine_models.py).
HESTON_PATH_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "asian-call-met": (
        "feller-met",
        {"type": "asian", "optionType": "call", "strike": 100.0, "maturity": 1.0, "steps": 12},
    ),
    "asian-put-violated": (
        "feller-violated",
        {"type": "asian", "optionType": "put", "strike": 100.0, "maturity": 1.0, "steps": 12},
    ),
    "up-and-out-call-met": (
        "feller-met",
        {
            "type": "barrier",
            "optionType": "call",
            "strike": 100.0,
            "maturity": 1.0,
            "steps": 12,
            "barrier": {"level": 130.0, "direction": "up", "knock": "out"},
        },
    ),
    "down-and-in-put-violated": (
        "feller-violated",
        {
            "type": "barrier",
            "optionType": "put",
            "strike": 100.0,
            "maturity": 1.0,
            "steps": 12,
            "barrier": {"level": 85.0, "direction": "down", "knock": "in"},
        },
    ),
}
