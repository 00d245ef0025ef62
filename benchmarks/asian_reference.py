"""High-precision reference prices of discretely monitored arithmetic Asian options, computed
independently of the engine: plain numpy, numpy's Philox generator (not PCG64), whole-path
cumulative sums, numpy's exp, and its own Kemna-Vorst formula for the geometric control variate.

tests/test_engine_pricing.py compares the engine with the numbers this prints (recorded there with
their standard errors). Run (about 10 minutes):
    .venv/bin/python benchmarks/asian_reference.py --paths 24000000
"""

from __future__ import annotations

import argparse
import math
from statistics import NormalDist

import numpy as np

CASES: list[tuple[float, float, float, float, float, float, int, str]] = [
    # spot, strike, rate, dividend yield, volatility, maturity, steps, option type
    (100.0, 100.0, 0.05, 0.0, 0.2, 1.0, 252, "call"),
    (100.0, 110.0, 0.03, 0.01, 0.3, 0.5, 126, "put"),
]


Case = tuple[float, float, float, float, float, float, int, str]


def geometric_price(
    s: float, k: float, r: float, q: float, vol: float, t: float, m: int, kind: str
) -> float:
    mean = math.log(s) + (r - q - vol * vol / 2) * t * (m + 1) / (2 * m)
    var = vol * vol * t * (m + 1) * (2 * m + 1) / (6 * m * m)
    sd = math.sqrt(var)
    d2 = (mean - math.log(k)) / sd
    fwd = math.exp(mean + var / 2)
    n = NormalDist().cdf
    if kind == "call":
        return math.exp(-r * t) * (fwd * n(d2 + sd) - k * n(d2))
    return math.exp(-r * t) * (k * n(-d2) - fwd * n(-d2 - sd))


def reference(
    case: Case, paths: int, batch: int = 20000, seed: int = 20240601
) -> tuple[float, float]:
    s, k, r, q, vol, t, m, kind = case
    rng = np.random.Generator(np.random.Philox(seed))
    dt = t / m
    sign = 1.0 if kind == "call" else -1.0
    disc = math.exp(-r * t)
    ys, xs = [], []
    done = 0
    while done < paths:
        n = min(batch, paths - done)
        logs = np.cumsum(
            (r - q - vol * vol / 2) * dt + vol * math.sqrt(dt) * rng.standard_normal((n, m)), axis=1
        )
        arith = s * np.exp(logs).mean(axis=1)
        geo = s * np.exp(logs.mean(axis=1))
        ys.append(disc * np.maximum(sign * (arith - k), 0.0))
        xs.append(disc * np.maximum(sign * (geo - k), 0.0))
        done += n
    y = np.concatenate(ys)
    x = np.concatenate(xs)
    cov = np.cov(y, x)
    beta = cov[0, 1] / cov[1, 1]
    mu = geometric_price(s, k, r, q, vol, t, m, kind)
    adjusted = y - beta * (x - mu)
    return float(adjusted.mean()), float(adjusted.std(ddof=1)) / math.sqrt(len(y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--paths", type=int, default=4_000_000)
    args = parser.parse_args()
    for case in CASES:
        value, se = reference(case, args.paths)
        print(f"{case}: {value:.7f} +- {se:.7f} ({args.paths} paths)")


if __name__ == "__main__":
    main()
