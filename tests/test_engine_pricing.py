"""The engine against closed forms and independent references, within four standard errors."""

from __future__ import annotations

import math
from typing import Any

import pytest

from engine_helpers import (
    RATE,
    SPOT,
    VOL,
    asian,
    blocks_of,
    european,
    merged_moments,
    multi_asset,
    run,
    single_asset,
    within,
)
from mcop_worker.engine import closed_forms as cf
from mcop_worker.engine import simulate
from mcop_worker.engine.aggregate import aggregate
from mcop_worker.model.spec import parse_spec

VR = [(False, False), (True, False), (False, True), (True, True)]


@pytest.mark.parametrize(("antithetic", "control"), VR)
@pytest.mark.parametrize("kind", ["call", "put"])
def test_european_matches_black_scholes(kind: str, antithetic: bool, control: bool) -> None:
    spec = european(kind, strike=105.0, antithetic=antithetic, control=control, dividend_yield=0.02)
    est = run(spec)
    expected = cf.black_scholes(SPOT, 105.0, RATE, 0.02, VOL, 1.0, kind)
    assert within(est.estimate, est.std_err, expected), (est, expected)
    assert est.ci_lower < est.estimate < est.ci_upper
    assert est.paths == 200_000


@pytest.mark.parametrize("antithetic", [False, True])
def test_geometric_asian_paths_match_kemna_vorst(antithetic: bool) -> None:
    """The control variate the Asian kernel simulates is the discrete geometric Asian: its sample
    mean checks the path construction (dates T/steps ... T) against the closed form."""
    for kind, strike, steps in (("call", 100.0, 252), ("put", 105.0, 12)):
        spec = parse_spec(asian(kind, strike, steps, antithetic=antithetic, control=True))
        m = merged_moments(blocks_of(spec))
        std_err = math.sqrt(m.x_m2 / (m.count - 1) / m.count)
        expected = cf.geometric_asian(SPOT, strike, RATE, 0.0, VOL, 1.0, steps, kind)
        assert within(m.x_mean, std_err, expected), (kind, m.x_mean, std_err, expected)


# Arithmetic Asians: independent high-precision references from benchmarks/asian_reference.py
# (numpy, Philox, 24,000,000 paths, geometric control variate): (value, its standard error).
ASIAN_REFERENCES = [
    # spot, strike, rate, dividend yield, volatility, maturity, steps, option type
    ((100.0, 100.0, 0.05, 0.0, 0.2, 1.0, 252, "call"), 5.7818821, 0.0000450),
    ((100.0, 110.0, 0.03, 0.01, 0.3, 0.5, 126, "put"), 11.1127652, 0.0000431),
]


@pytest.mark.parametrize(("case", "reference", "reference_se"), ASIAN_REFERENCES)
@pytest.mark.parametrize(("antithetic", "control"), [(True, True), (False, True), (True, False)])
def test_arithmetic_asian_matches_reference(
    case: tuple[float, float, float, float, float, float, int, str],
    reference: float,
    reference_se: float,
    antithetic: bool,
    control: bool,
) -> None:
    spot, strike, rate, q, vol, maturity, steps, kind = case
    inst = {
        "type": "asian",
        "optionType": kind,
        "strike": strike,
        "maturity": maturity,
        "steps": steps,
    }
    spec = single_asset(
        inst,
        paths=200_000 if control else 100_000,
        antithetic=antithetic,
        control=control,
        spot=spot,
        rate=rate,
        dividendYield=q,
        volatility=vol,
    )
    est = run(spec)
    combined = math.hypot(est.std_err, reference_se)
    assert within(est.estimate, combined, reference), (est, reference)


BARRIERS = [
    # direction, knock, option type, strike, level, rebate
    ("up", "out", "call", 100.0, 120.0, 0.0),
    ("up", "in", "call", 100.0, 120.0, 2.0),
    ("down", "out", "put", 100.0, 85.0, 1.0),
    ("down", "in", "put", 95.0, 85.0, 0.0),
    ("down", "out", "call", 90.0, 80.0, 0.0),
    ("up", "out", "put", 105.0, 125.0, 0.5),
]


@pytest.mark.parametrize(("direction", "knock", "kind", "strike", "level", "rebate"), BARRIERS)
@pytest.mark.parametrize(("antithetic", "control"), [(False, False), (True, True)])
def test_barrier_matches_bgk_corrected_formula(
    direction: str,
    knock: str,
    kind: str,
    strike: float,
    level: float,
    rebate: float,
    antithetic: bool,
    control: bool,
) -> None:
    inst = {
        "type": "barrier",
        "optionType": kind,
        "strike": strike,
        "maturity": 1.0,
        "steps": 252,
        "barrier": {"level": level, "direction": direction, "knock": knock, "rebate": rebate},
    }
    est = run(single_asset(inst, paths=100_000, antithetic=antithetic, control=control, seed=5))
    expected = cf.barrier_discrete(
        SPOT, strike, RATE, 0.0, VOL, 1.0, 252, level, direction, knock, rebate, kind
    )
    assert within(est.estimate, est.std_err, expected), (est, expected)


def test_barrier_discrete_monitoring_differs_from_continuous() -> None:
    """With 12 monitoring dates the continuous formula is far off; BGK's correction (an
    approximation, less accurate with few dates) brings it much closer."""
    inst = {
        "type": "barrier",
        "optionType": "call",
        "strike": 100.0,
        "maturity": 1.0,
        "steps": 12,
        "barrier": {"level": 125.0, "direction": "up", "knock": "out", "rebate": 0.0},
    }
    est = run(single_asset(inst, paths=200_000))
    continuous = cf.barrier_continuous(SPOT, 100, RATE, 0, VOL, 1.0, 125, "up", "out", 0, "call")
    assert not within(est.estimate, est.std_err, continuous, sigmas=10)
    shifted = cf.barrier_discrete(SPOT, 100, RATE, 0, VOL, 1.0, 12, 125, "up", "out", 0, "call")
    assert abs(est.estimate - shifted) < 0.2 * abs(est.estimate - continuous)


BASKET_ASSETS: list[dict[str, Any]] = [
    {"name": "a", "spot": 100.0, "volatility": 0.25, "dividendYield": 0.01, "weight": 1.0},
    {"name": "b", "spot": 50.0, "volatility": 0.35, "dividendYield": 0.0, "weight": 2.0},
    {"name": "c", "spot": 80.0, "volatility": 0.15, "dividendYield": 0.03, "weight": 0.5},
]
BASKET_CORRELATION = [[1.0, 0.6, 0.3], [0.6, 1.0, 0.2], [0.3, 0.2, 1.0]]


@pytest.mark.parametrize("short_leg", [False, True])
@pytest.mark.parametrize(("antithetic", "control"), VR)
def test_basket_put_call_parity(antithetic: bool, control: bool, short_leg: bool) -> None:
    """C - P = sum w_j S_j e^{-q_j T} - K e^{-rT}. With a short leg the control variate is the
    basket's value instead of the geometric basket option."""
    assets = [dict(a) for a in BASKET_ASSETS]
    if short_leg:
        assets[2]["weight"] = -0.5
    strike = 200.0 if not short_leg else 120.0
    prices = {}
    for kind in ("call", "put"):
        inst = {"type": "basket", "optionType": kind, "strike": strike, "maturity": 1.0}
        spec = multi_asset(inst, assets, BASKET_CORRELATION, antithetic=antithetic, control=control)
        prices[kind] = run(spec)
    forward_value = sum(a["weight"] * a["spot"] * math.exp(-a["dividendYield"]) for a in assets)
    parity = forward_value - strike * math.exp(-RATE)
    diff = prices["call"].estimate - prices["put"].estimate
    # sd(C - P) <= sd(C) + sd(P) whatever their correlation.
    bound = prices["call"].std_err + prices["put"].std_err
    assert within(diff, bound, parity), (prices, parity)


@pytest.mark.parametrize("control", [False, True])
def test_basket_of_one_asset_is_black_scholes(control: bool) -> None:
    assets = [{"name": "x", "spot": 100.0, "volatility": 0.3, "dividendYield": 0.02, "weight": 2.0}]
    inst = {"type": "basket", "optionType": "call", "strike": 190.0, "maturity": 1.0}
    est = run(multi_asset(inst, assets, control=control))
    expected = 2 * cf.black_scholes(100, 95, RATE, 0.02, 0.3, 1.0, "call")
    if control:
        # One asset: the geometric basket is the basket, the control variate is perfect.
        assert est.std_err < 1e-9
        assert est.estimate == pytest.approx(expected, rel=1e-12)
    else:
        assert within(est.estimate, est.std_err, expected), (est, expected)


def _var_spec(weight: float, paths: int = 400_000) -> dict[str, object]:
    assets = [{"name": "x", "spot": 100.0, "volatility": 0.3, "weight": weight, "drift": 0.07}]
    inst = {"type": "var", "horizon": 10 / 252, "confidenceLevels": [0.99, 0.975, 0.95]}
    return multi_asset(inst, assets, paths=paths, antithetic=False, control=False)


@pytest.mark.parametrize("weight", [1.0, 250.0, -40.0])
def test_var_and_es_match_lognormal(weight: float) -> None:
    est = run(_var_spec(weight))
    assert est.value_at_risk is not None and est.expected_shortfall is not None
    assert est.expected_shortfall_std_err is not None
    assert list(est.value_at_risk) == ["0.99", "0.975", "0.95"]
    assert est.estimate == est.value_at_risk["0.99"]
    assert est.ci_lower <= est.estimate <= est.ci_upper
    for key, level in (("0.99", 0.99), ("0.975", 0.975), ("0.95", 0.95)):
        var = cf.lognormal_var(100.0, weight, 0.3, 0.07, 10 / 252, level)
        es = cf.lognormal_es(100.0, weight, 0.3, 0.07, 10 / 252, level)
        # The engine's stdErr (order-statistic interval) is for the first level; the others
        # use the asymptotic sd of a sample quantile, sqrt(a (1 - a) / N) / density.
        se_var = est.std_err if key == "0.99" else _quantile_se(weight, level, est.paths)
        assert within(est.value_at_risk[key], se_var, var), (key, est.value_at_risk[key], var)
        es_se = est.expected_shortfall_std_err[key]
        assert within(est.expected_shortfall[key], es_se, es), (key, est.expected_shortfall, es)
        assert est.expected_shortfall[key] >= est.value_at_risk[key]


def _quantile_se(weight: float, level: float, n: int) -> float:
    """sqrt(a (1 - a) / n) / f(VaR) for the lognormal loss of the position."""
    m, s = (0.07 - 0.045) * 10 / 252, 0.3 * math.sqrt(10 / 252)
    z = cf.norm_ppf(level)
    price = 100.0 * math.exp(m - s * z if weight > 0 else m + s * z)  # price at the quantile
    density = math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) / (s * price * abs(weight))
    return math.sqrt(level * (1 - level) / n) / density


def test_var_is_exact_order_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-block tails give exactly the numbers of all losses sorted together."""
    spec = parse_spec(_var_spec(100.0, paths=60_000))
    truncated = aggregate(blocks_of(spec), spec)
    monkeypatch.setattr(simulate, "tail_size", lambda units, level: units)  # keep every loss
    full_blocks = blocks_of(spec)
    assert all(b.tail_complete for b in full_blocks)
    assert truncated == aggregate(full_blocks, spec)
    losses = sorted(x for b in full_blocks for x in b.losses.tolist())
    n = len(losses)
    assert n == 60_000
    # VaR_0.99 = L(ceil(0.99 N)) (ascending, 1-based) = L(59400): index 59399.
    assert truncated.value_at_risk is not None and truncated.expected_shortfall is not None
    assert truncated.value_at_risk["0.99"] == losses[59399]
    assert truncated.expected_shortfall["0.99"] == pytest.approx(
        math.fsum(losses[59400:]) / 600, rel=1e-15
    )
    assert truncated.value_at_risk["0.975"] == losses[58499]
