"""The closed forms against published values and identities (the references of the MC tests)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mcop_worker.engine import closed_forms as cf
from mcop_worker.engine.kernels import fexp_array


def test_black_scholes_textbook_values_and_parity() -> None:
    call = cf.black_scholes(100, 100, 0.05, 0.0, 0.2, 1.0, "call")
    put = cf.black_scholes(100, 100, 0.05, 0.0, 0.2, 1.0, "put")
    assert call == pytest.approx(10.450583572185565, abs=1e-12)
    assert put == pytest.approx(5.573526022256971, abs=1e-12)
    # Hull's example 15.6: S=42, K=40, r=10%, vol=20%, T=0.5.
    assert cf.black_scholes(42, 40, 0.1, 0.0, 0.2, 0.5, "call") == pytest.approx(4.76, abs=5e-3)
    assert cf.black_scholes(42, 40, 0.1, 0.0, 0.2, 0.5, "put") == pytest.approx(0.81, abs=5e-3)
    for q in (0.0, 0.03):
        c = cf.black_scholes(90, 100, 0.04, q, 0.3, 2.0, "call")
        p = cf.black_scholes(90, 100, 0.04, q, 0.3, 2.0, "put")
        assert c - p == pytest.approx(90 * math.exp(-q * 2) - 100 * math.exp(-0.08), abs=1e-12)


def test_discrete_geometric_asian_matches_quantlib() -> None:
    # QuantLib test-suite (asianoptions.cpp, analytic discrete geometric average price): 10 fixings
    # every 36 days over 360 days (Actual/360), S=100, K=100, q=3%, r=6%, vol=20%.
    value = cf.geometric_asian(100, 100, 0.06, 0.03, 0.2, 1.0, 10, "call")
    assert value == pytest.approx(5.3425606635, abs=1e-9)


def test_geometric_asian_with_one_date_is_black_scholes() -> None:
    for kind in ("call", "put"):
        assert cf.geometric_asian(100, 95, 0.05, 0.01, 0.25, 0.7, 1, kind) == pytest.approx(
            cf.black_scholes(100, 95, 0.05, 0.01, 0.25, 0.7, kind), abs=1e-12
        )


# Haug, The Complete Guide to Option Pricing Formulas, table of standard barrier options:
# S=100, T=0.5, r=8%, cost of carry 4% (q=4%), vol=25%, rebate 3. Knock-in options pay their rebate
# at expiry when never knocked in: the convention of the engine.
HAUG_KNOCK_IN = [
    ("down", "call", 90, 95, 7.7627),
    ("down", "call", 100, 95, 4.0109),
    ("down", "call", 110, 95, 2.0576),
    ("up", "call", 90, 105, 14.1112),
    ("up", "call", 100, 105, 8.4482),
    ("up", "call", 110, 105, 4.5910),
    ("down", "put", 90, 95, 2.9586),
    ("down", "put", 100, 95, 6.5677),
    ("down", "put", 110, 95, 11.9752),
    ("up", "put", 90, 105, 1.4653),
    ("up", "put", 100, 105, 3.3721),
    ("up", "put", 110, 105, 7.0846),
]


@pytest.mark.parametrize(("direction", "kind", "strike", "level", "expected"), HAUG_KNOCK_IN)
def test_barrier_knock_in_matches_haug(
    direction: str, kind: str, strike: float, level: float, expected: float
) -> None:
    value = cf.barrier_continuous(
        100, strike, 0.08, 0.04, 0.25, 0.5, level, direction, "in", 3.0, kind
    )
    assert value == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("direction", ["up", "down"])
@pytest.mark.parametrize("kind", ["call", "put"])
def test_barrier_in_plus_out_is_vanilla_plus_rebate(direction: str, kind: str) -> None:
    level = 120.0 if direction == "up" else 85.0
    args = (100, 100, 0.05, 0.01, 0.2, 1.0, level, direction)
    vanilla = cf.black_scholes(100, 100, 0.05, 0.01, 0.2, 1.0, kind)
    rebate = 2.5
    knock_in = cf.barrier_continuous(*args, "in", rebate, kind)
    knock_out = cf.barrier_continuous(*args, "out", rebate, kind)
    # Exactly one of the two gets the option, the other the rebate, always at maturity.
    assert knock_in + knock_out == pytest.approx(vanilla + rebate * math.exp(-0.05), abs=1e-12)
    assert 0.0 <= cf.barrier_continuous(*args, "out", 0.0, kind) <= vanilla


def test_barrier_far_away_is_vanilla_or_nothing() -> None:
    vanilla = cf.black_scholes(100, 100, 0.05, 0.0, 0.2, 1.0, "call")
    out = cf.barrier_continuous(100, 100, 0.05, 0.0, 0.2, 1.0, 1e4, "up", "out", 0.0, "call")
    knock_in = cf.barrier_continuous(100, 100, 0.05, 0.0, 0.2, 1.0, 1e4, "up", "in", 0.0, "call")
    assert out == pytest.approx(vanilla, abs=1e-9)
    assert knock_in == pytest.approx(0.0, abs=1e-9)


def test_bgk_moves_the_barrier_away_from_the_spot() -> None:
    up = cf.bgk_level(120, 0.2, 1.0, 252, "up")
    down = cf.bgk_level(80, 0.2, 1.0, 252, "down")
    assert up == pytest.approx(120 * math.exp(0.5826 * 0.2 / math.sqrt(252)), rel=1e-4)
    assert down == pytest.approx(80 * math.exp(-0.5826 * 0.2 / math.sqrt(252)), rel=1e-4)
    # Discrete monitoring knocks out less often: the discrete up-and-out is worth more.
    cont = cf.barrier_continuous(100, 100, 0.05, 0, 0.2, 1.0, 120, "up", "out", 0, "call")
    disc = cf.barrier_discrete(100, 100, 0.05, 0, 0.2, 1.0, 12, 120, "up", "out", 0, "call")
    assert disc > cont


def test_lognormal_var_and_es() -> None:
    spot, vol, mu, h = 100.0, 0.2, 0.05, 10 / 252
    for level in (0.95, 0.99):
        var = cf.lognormal_var(spot, 1, vol, mu, h, level)
        es = cf.lognormal_es(spot, 1, vol, mu, h, level)
        # The loss at the level's quantile of the normal log-return.
        z = cf.norm_ppf(level)
        assert var == pytest.approx(spot * (1 - math.exp((mu - vol**2 / 2) * h - vol * z * h**0.5)))
        assert es > var > 0
        # Short positions lose on the way up; twice the units, twice the loss.
        assert cf.lognormal_var(spot, -2, vol, mu, h, level) > 2 * var
        assert cf.lognormal_es(spot, 2, vol, mu, h, level) == pytest.approx(2 * es)
    # ES by numerical integration of the tail of the loss distribution.
    level = 0.975
    u = np.linspace(level, 1, 2_000_001)[:-1] + 0.5 * (1 - level) / 2_000_000
    quantiles = np.array([cf.norm_ppf(float(p)) for p in u[::1000]])
    losses = spot * (1 - np.exp((mu - vol**2 / 2) * h - vol * quantiles * h**0.5))
    assert cf.lognormal_es(spot, 1, vol, mu, h, level) == pytest.approx(losses.mean(), rel=1e-3)


def test_fexp_is_accurate() -> None:
    x = np.concatenate([np.linspace(-700, 700, 100_001), np.linspace(-1, 1, 100_001)])
    out = np.empty_like(x)
    fexp_array(x, out)
    rel = np.abs(out / np.exp(x) - 1.0)
    assert rel.max() < 5e-16
