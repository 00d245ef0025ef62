"""The per-path Greek estimators against oracles, on normals drawn here: Black-Scholes closed forms
for the European, finite differences with common random numbers (the same normals, bumped
parameters, per-path differences so the difference has its own standard error) for Asian,
barrier and basket."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from mcop_worker.engine import closed_forms as cf
from mcop_worker.engine import greek_kernels, greeks

R, Q, T = 0.05, 0.02, 1.0
F = np.ndarray


def _moments(values: F, antithetic_rows: int | None = None) -> tuple[F, F]:
    """Mean and stdErr of each row through the engine's accumulator (chunks of 4096)."""
    rows, n = values.shape
    gacc = np.zeros((rows, 3))
    select = np.arange(rows)
    for start in range(0, n, 4096):
        chunk = np.ascontiguousarray(values[:, start : start + 4096])
        greek_kernels.accumulate(gacc, chunk, select, chunk.shape[1])
    assert (gacc[:, 0] == n).all()
    return gacc[:, 1], np.sqrt(gacc[:, 2] / (n - 1) / n)


def _check(name: str, value: float, se: float, want: float, want_se: float = 0.0) -> None:
    tol = 4.0 * math.hypot(se, want_se)
    assert abs(value - want) <= tol, f"{name}: {value} +- {se}, expected {want} +- {want_se}"


def test_black_scholes_greeks_are_the_derivatives_of_the_price() -> None:
    for kind in ("call", "put"):
        args = (100.0, 95.0, 0.04, 0.01, 0.3, 0.8)
        g = cf.black_scholes_greeks(*args, kind)
        price = lambda s=100.0, r=0.04, v=0.3, t=0.8, k=kind: cf.black_scholes(  # noqa: E731
            s, 95.0, r, 0.01, v, t, k
        )
        h = 1e-4
        assert g["delta"] == pytest.approx((price(s=100 + h) - price(s=100 - h)) / (2 * h), 1e-7)
        assert g["gamma"] == pytest.approx(
            (price(s=100 + 1e-2) - 2 * price() + price(s=100 - 1e-2)) / 1e-4, rel=1e-5
        )
        assert g["vega"] == pytest.approx((price(v=0.3 + h) - price(v=0.3 - h)) / (2 * h), 1e-7)
        assert g["rho"] == pytest.approx((price(r=0.04 + h) - price(r=0.04 - h)) / (2 * h), 1e-7)
        assert g["theta"] == pytest.approx(-(price(t=0.8 + h) - price(t=0.8 - h)) / (2 * h), 1e-7)
    # Hull, example 19.1 (S=49, K=50, r=5%, vol=20%, T=20 weeks): delta 0.522, theta -4.31/year.
    hull = cf.black_scholes_greeks(49.0, 50.0, 0.05, 0.0, 0.2, 0.3846, "call")
    assert hull["delta"] == pytest.approx(0.522, abs=1e-3)
    assert hull["theta"] == pytest.approx(-4.31, abs=1e-2)
    assert hull["gamma"] == pytest.approx(0.066, abs=1e-3)
    assert hull["vega"] == pytest.approx(12.1, abs=0.05)
    assert hull["rho"] == pytest.approx(8.91, abs=0.01)


@pytest.mark.parametrize("kind", ["call", "put"])
@pytest.mark.parametrize("antithetic", [False, True])
def test_european_greeks_match_black_scholes(kind: str, antithetic: bool) -> None:
    n, vol, strike = 400_000, 0.25, 105.0
    z = np.random.default_rng(1).standard_normal(n)
    out = np.empty((5, n))
    phi = 1.0 if kind == "call" else -1.0
    drift = (R - Q - 0.5 * vol * vol) * T
    greek_kernels.european_greeks(z, n, 100.0, drift, vol, T, strike, phi, R, antithetic, out)
    mean, se = _moments(out)
    want = cf.black_scholes_greeks(100.0, strike, R, Q, vol, T, kind)
    for i, name in enumerate(greeks.GREEKS):
        _check(name, mean[i], se[i], want[name])


# -- finite differences with common random numbers ---------------------------------------------


def _fd(
    price: Callable[..., F], base: dict[str, float], key: str, h: float, second: bool = False
) -> tuple[float, float]:
    """Central (or second) difference of per-path prices with the same normals: mean, stdErr."""
    up = price(**dict(base, **{key: base[key] + h}))
    down = price(**dict(base, **{key: base[key] - h}))
    diff = (up - 2.0 * price(**base) + down) / (h * h) if second else (up - down) / (2.0 * h)
    return float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(diff.size))


def _single_paths(z: F, s: float, vol: float, r: float, t: float) -> F:
    """Log-prices on the dates kT/steps, one row per step (z: steps x paths)."""
    steps = z.shape[0]
    dt = t / steps
    return math.log(s) + np.cumsum((r - Q - 0.5 * vol * vol) * dt + vol * math.sqrt(dt) * z, 0)


def _greek_oracles(
    price: Callable[..., F], base: dict[str, float]
) -> dict[str, tuple[float, float]]:
    return {
        "delta": _fd(price, base, "s", 0.5),
        "gamma": _fd(price, base, "s", 4.0, second=True),
        "vega": _fd(price, base, "vol", 0.005),
        "rho": _fd(price, base, "r", 0.005),
        "theta": tuple(-x if i == 0 else x for i, x in enumerate(_fd(price, base, "t", 0.01))),  # type: ignore[misc]
    }


def test_asian_greeks_match_finite_differences() -> None:
    steps, n, vol, strike = 12, 200_000, 0.3, 100.0
    z = np.random.default_rng(2).standard_normal((steps, n))
    out = np.empty((5, n))
    drift = (R - Q - 0.5 * vol * vol) * T / steps
    greek_kernels.asian_greeks(
        z.reshape(-1), n, steps, 100.0, drift, vol, T, strike, 1.0, R, False, out
    )
    mean, se = _moments(out)

    def price(s: float, vol: float, r: float, t: float) -> F:
        avg = np.exp(_single_paths(z, s, vol, r, t)).mean(axis=0)
        return np.exp(-r * t) * np.maximum(avg - strike, 0.0)

    oracle = _greek_oracles(price, {"s": 100.0, "vol": vol, "r": R, "t": T})
    for i, name in enumerate(greeks.GREEKS):
        _check(name, mean[i], se[i], *oracle[name])


@pytest.mark.parametrize(
    ("direction", "knock", "level", "kind"),
    [("up", "out", 130.0, "call"), ("down", "in", 85.0, "put")],
)
def test_barrier_greeks_match_finite_differences(
    direction: str, knock: str, level: float, kind: str
) -> None:
    steps, n, vol, strike, rebate = 10, 400_000, 0.25, 100.0, 1.5
    z = np.random.default_rng(3).standard_normal((steps, n))
    out = np.empty((5, n))
    phi = 1.0 if kind == "call" else -1.0
    drift = (R - Q - 0.5 * vol * vol) * T / steps
    greek_kernels.barrier_greeks(
        z.reshape(-1), n, steps, 100.0, drift, vol, T, strike, phi, R,
        math.log(level), direction == "up", knock == "in", rebate, True, out,
    )  # fmt: skip
    mean, se = _moments(out)

    def price(s: float, vol: float, r: float, t: float) -> F:
        values = []
        for sign in (1.0, -1.0):
            ln = _single_paths(sign * z, s, vol, r, t)
            hit = (
                (ln.max(0) >= math.log(level))
                if direction == "up"
                else (ln.min(0) <= math.log(level))
            )
            alive = hit if knock == "in" else ~hit
            vanilla = np.maximum(phi * (np.exp(ln[-1]) - strike), 0.0)
            values.append(np.where(alive, vanilla, rebate))
        return np.exp(-r * t) * 0.5 * (values[0] + values[1])

    oracle = _greek_oracles(price, {"s": 100.0, "vol": vol, "r": R, "t": T})
    for i, name in enumerate(greeks.GREEKS):
        _check(name, mean[i], se[i], *oracle[name])


def test_basket_greeks_match_finite_differences_per_asset() -> None:
    spots = np.array([100.0, 40.0, 70.0])
    vols = np.array([0.3, 0.5, 0.25])
    weights = np.array([1.0, 2.0, -0.5])
    corr = np.array([[1, 0.4, 0.2], [0.4, 1, -0.3], [0.2, -0.3, 1.0]])
    chol = np.linalg.cholesky(corr)
    n, strike, d = 400_000, 140.0, 3
    z = np.random.default_rng(4).standard_normal((d, n))
    out = np.empty((3 * d + 2, n))
    drift = (R - 0.5 * vols * vols) * T
    greek_kernels.basket_greeks(
        z.reshape(-1), n, spots, drift, vols, chol, weights, T, strike, 1.0, R, False, out
    )
    mean, se = _moments(out)
    x = chol @ z

    def price(**p: float) -> F:
        s = np.array([p["s0"], p["s1"], p["s2"]])
        v = np.array([p["v0"], p["v1"], p["v2"]])
        r, t = p["r"], p["t"]
        ln = np.log(s)[:, None] + ((r - 0.5 * v * v) * t)[:, None] + (v * math.sqrt(t))[:, None] * x
        basket = weights @ np.exp(ln)
        return np.exp(-r * t) * np.maximum(basket - strike, 0.0)

    base: dict[str, float] = {"r": R, "t": T}
    base.update({f"s{j}": float(spots[j]) for j in range(d)})
    base.update({f"v{j}": float(vols[j]) for j in range(d)})
    for j in range(d):
        checks: dict[str, tuple[float, float]] = {
            "delta": _fd(price, base, f"s{j}", 0.005 * spots[j]),
            "gamma": _fd(price, base, f"s{j}", 0.04 * spots[j], second=True),
            "vega": _fd(price, base, f"v{j}", 0.005),
        }
        for name, (want, want_se) in checks.items():
            i = greeks.component_index(name, j, d)
            _check(f"{name}[{j}]", mean[i], se[i], want, want_se)
    rho, rho_se = _fd(price, base, "r", 0.005)
    theta, theta_se = _fd(price, base, "t", 0.01)
    _check("rho", mean[3 * d], se[3 * d], rho, rho_se)
    _check("theta", mean[3 * d + 1], se[3 * d + 1], -theta, theta_se)


def test_component_index_layout() -> None:
    assert [greeks.component_index(g, 0, 1) for g in greeks.GREEKS] == [0, 1, 2, 3, 4]
    assert greeks.component_index("gamma", 2, 3) == 5
    assert greeks.component_index("vega", 0, 3) == 6
    assert greeks.component_index("rho", 0, 3) == 9
    assert greeks.component_index("theta", 1, 3) == 10
    assert greeks.component_count(3) == 11
