"""Heston, Merton and American (Bermudan) exercise through the engine's composition: against
QuantLib (AnalyticHestonEngine, JumpDiffusionEngine, FdBlackScholesVanillaEngine with Bermudan
exercise) and a CRR tree, bit-identical for any shard count, and refused with the field named.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from engine_references import (
    HESTON_PATH_CASES,
    HESTON_SETS,
    MERTON_PARAMS,
    crr_bermudan,
    quantlib_bermudan_fd,
    quantlib_heston,
    quantlib_merton,
)
from mcop_worker.engine import model_closed_forms
from mcop_worker.engine.aggregate import JobAggregator, aggregate
from mcop_worker.engine.blocks import plan_blocks, shard_blocks
from mcop_worker.engine.closed_forms import black_scholes
from mcop_worker.engine.registry import compose
from mcop_worker.engine.simulate import plan_blocks_cached, simulate_block
from mcop_worker.engine.stats import BlockStats
from mcop_worker.model.errors import InvalidSpec
from mcop_worker.model.spec import JobSpec, parse_spec

# Measured with benchmarks/bench_heston_bias.py (400,000 paths): at 32 steps a year the QE
# scheme's bias on these at-the-money options is below 0.02 for both sets (Feller met: within
# the noise, 0.01; violated: about -0.02). The tests allow 4 standard errors plus this bound.
HESTON_BIAS_AT_32 = 0.03

MERTON = MERTON_PARAMS


def _job(model: dict[str, Any], instrument: dict[str, Any], **kw: Any) -> dict[str, Any]:
    anti, control = kw.pop("antithetic", True), kw.pop("control", True)
    return {
        "model": model,
        "instrument": instrument,
        "paths": kw.pop("paths", 100_000),
        "seed": kw.pop("seed", 3),
        "varianceReduction": {"antithetic": anti, "controlVariate": control},
        **kw,
    }


def _heston(name: str, **kw: Any) -> dict[str, Any]:
    return dict(HESTON_SETS[name], type="heston", **kw)


def _european(kind: str, maturity: float = 1.0) -> dict[str, Any]:
    return {"type": "european", "optionType": kind, "strike": 100.0, "maturity": maturity}


def _american(kind: str = "put", steps: int = 5) -> dict[str, Any]:
    return {
        "type": "american",
        "optionType": kind,
        "strike": 100.0,
        "maturity": 1.0,
        "steps": steps,
    }


def _price(doc: dict[str, Any]) -> tuple[float, float]:
    spec = parse_spec(doc)
    blocks = [simulate_block(spec, b) for b in range(plan_blocks(spec).n_blocks)]
    est = aggregate(blocks, spec)
    return est.estimate, est.std_err


# -- closed forms against QuantLib ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["call", "put"])
@pytest.mark.parametrize("name", list(HESTON_SETS))
def test_heston_closed_form_is_quantlibs(name: str, kind: str) -> None:
    p = HESTON_SETS[name]
    ours = model_closed_forms.heston(
        p["spot"],
        100.0,
        p["rate"],
        p["dividendYield"],
        p["initialVariance"],
        p["meanReversion"],
        p["longRunVariance"],
        p["volOfVol"],
        p["spotVarianceCorrelation"],
        1.0,
        kind,
    )
    assert ours == pytest.approx(quantlib_heston(p, 100.0, 1.0, kind), abs=1e-9)


@pytest.mark.parametrize("kind", ["call", "put"])
def test_merton_series_is_quantlibs(kind: str) -> None:
    m = MERTON
    args = (m["spot"], 100.0, m["rate"], m["dividendYield"], m["volatility"])
    jumps = (m["jumpIntensity"], m["jumpMean"], m["jumpStdDev"])
    ours = model_closed_forms.merton(*args, *jumps, 1.0, kind)
    assert ours == pytest.approx(quantlib_merton(*args, *jumps, 1.0, kind), abs=1e-6)


def test_merton_without_jumps_is_black_scholes() -> None:
    m = MERTON
    ours = model_closed_forms.merton(100.0, 95.0, 0.04, 0.01, 0.2, 0.0, -0.1, 0.2, 1.0, "call")
    assert ours == pytest.approx(black_scholes(100.0, 95.0, 0.04, 0.01, 0.2, 1.0, "call"))
    assert m["jumpIntensity"] > 0


# -- Monte Carlo against the closed forms ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["call", "put"])
@pytest.mark.parametrize("name", list(HESTON_SETS))
def test_heston_european_within_four_stderr_plus_bias(name: str, kind: str) -> None:
    estimate, se = _price(_job(_heston(name, stepsPerYear=32), _european(kind)))
    exact = quantlib_heston(HESTON_SETS[name], 100.0, 1.0, kind)
    assert 0 < se < 0.05
    assert abs(estimate - exact) <= 4 * se + HESTON_BIAS_AT_32, (estimate, se, exact)


def test_heston_stays_finite_far_beyond_feller() -> None:
    """volOfVol 2 with kappa theta 0.02: the variance hits 0 on most steps (QE's exponential
    branch), never negative, and the price stays a price."""
    model = _heston("feller-violated", stepsPerYear=16, volOfVol=2.0, spotVarianceCorrelation=0.5)
    estimate, se = _price(_job(model, _european("call"), paths=20_000))
    assert math.isfinite(estimate) and math.isfinite(se)
    assert 0.0 < estimate < 100.0


# High-path references for Heston Asian and barrier options on 12 monthly dates
# (benchmarks/heston_path_reference.py --paths 600000, run once on 28 Nov 2026, about 10 minutes of
# CPU, hence stored): QuantLib 1.44's own Heston simulation, independent of the engine's code
# (HestonProcess with QuadraticExponentialMartingale on 504 steps a year, 600,000 paths in
# antithetic pairs, Mersenne-Twister seed 20261128). (price, stdErr)
HESTON_PATH_REFERENCES = {
    "asian-call-met": (5.22755, 0.01218),
    "asian-put-violated": (2.96090, 0.01519),
    "up-and-out-call-met": (5.97029, 0.01471),
    "down-and-in-put-violated": (3.71016, 0.02253),
}
# The engine's price minus the reference, measured by the same script (1,000,000 engine paths,
# seed 11) at 12 / 52 / 252 steps a year, each +- about 0.015 (the reference's noise dominates):
#   asian-call-met           -0.014 / -0.018 / -0.016
#   asian-put-violated       -0.025 / +0.001 / -0.015
#   up-and-out-call-met      -0.008 / -0.014 / -0.010
#   down-and-in-put-violated -0.027 / -0.007 / -0.021   (+- about 0.025)
# Every difference is within 1.3 of its combined stdErr; the four cases' mean differences (each
# case shares its reference's noise) together sit 1.6 combined stdErrs below 0: no bias resolved
# at this precision. The test allows this bound on top of 4 combined stdErrs.
HESTON_PATH_BIAS = 0.025


@pytest.mark.parametrize("name", list(HESTON_PATH_CASES))
def test_heston_path_dependent_against_a_high_path_reference(name: str) -> None:
    heston_set, inst = HESTON_PATH_CASES[name]
    model = _heston(heston_set, stepsPerYear=52)
    estimate, se = _price(_job(model, inst, paths=100_000, seed=21, control=False))
    ref, ref_se = HESTON_PATH_REFERENCES[name]
    assert abs(estimate - ref) <= 4 * math.hypot(se, ref_se) + HESTON_PATH_BIAS, (estimate, se, ref)


@pytest.mark.parametrize("kind", ["call", "put"])
def test_merton_european_within_four_stderr(kind: str) -> None:
    """Exact simulation between dates: no bias to allow for."""
    model = dict(MERTON, type="merton")
    estimate, se = _price(_job(model, _european(kind), paths=200_000))
    m = MERTON
    exact = quantlib_merton(
        m["spot"],
        100.0,
        m["rate"],
        m["dividendYield"],
        m["volatility"],
        m["jumpIntensity"],
        m["jumpMean"],
        m["jumpStdDev"],
        1.0,
        kind,
    )
    assert abs(estimate - exact) <= 4 * se, (estimate, se, exact)


def test_merton_path_dependent_is_exact_on_any_grid() -> None:
    """An Asian on 4 dates: the same paths whatever stepsPerYear (merton ignores it)."""
    model = dict(MERTON, type="merton")
    inst = {"type": "asian", "optionType": "call", "strike": 100.0, "maturity": 1.0, "steps": 4}
    a = simulate_block(parse_spec(_job(dict(model, stepsPerYear=4), inst, paths=4000)), 0)
    b = simulate_block(parse_spec(_job(dict(model, stepsPerYear=500), inst, paths=4000)), 0)
    assert a == b


# -- American (Bermudan) by Longstaff-Schwartz ----------------------------------------------------

GBM = {"type": "gbm", "spot": 100.0, "volatility": 0.25, "rate": 0.06, "dividendYield": 0.0}


def test_american_put_against_fd_and_tree() -> None:
    """5 exercise dates on whole days (73 days apart): QuantLib's finite differences and a CRR
    tree agree; Longstaff-Schwartz is low-biased (a fixed rule is at most optimal), so it sits
    below them by the rule's suboptimality (at most 1% here), within 4 stdErr."""
    fd = quantlib_bermudan_fd(100.0, 100.0, 0.06, 0.0, 0.25, 1.0, 5, "put")
    tree = crr_bermudan(100.0, 100.0, 0.06, 0.0, 0.25, 1.0, 5, "put")
    assert fd == pytest.approx(tree, abs=2e-3)
    estimate, se = _price(_job(GBM, _american("put", 5), paths=100_000))
    assert fd - 4 * se - 0.01 * fd <= estimate <= fd + 4 * se, (estimate, se, fd)


def test_american_put_is_worth_at_least_the_european() -> None:
    european = black_scholes(100.0, 100.0, 0.06, 0.0, 0.25, 1.0, "put")
    estimate, se = _price(_job(GBM, _american("put", 12), paths=60_000))
    assert estimate - 4 * se > european, (estimate, se, european)


def test_american_call_without_dividends_is_the_european() -> None:
    """Never optimal to exercise a call early without dividends: the rule must not."""
    european = black_scholes(100.0, 100.0, 0.06, 0.0, 0.25, 1.0, "call")
    estimate, se = _price(_job(GBM, _american("call", 8), paths=60_000))
    assert abs(estimate - european) <= 4 * se + 0.005 * european, (estimate, se, european)


def test_american_put_under_heston_beats_the_european() -> None:
    model = _heston("feller-met", stepsPerYear=24)
    european = quantlib_heston(HESTON_SETS["feller-met"], 100.0, 1.0, "put")
    estimate, se = _price(_job(model, _american("put", 6), paths=40_000))
    assert estimate - 4 * se > european - HESTON_BIAS_AT_32, (estimate, se, european)


# -- every shard count gives the same bits ---------------------------------------------------------

JOBS = {
    "heston-asian": _job(
        _heston("feller-violated", stepsPerYear=24),
        {"type": "asian", "optionType": "call", "strike": 100.0, "maturity": 1.0, "steps": 6},
        paths=30_001,
    ),
    "merton-barrier": _job(
        dict(MERTON, type="merton"),
        {
            "type": "barrier",
            "optionType": "put",
            "strike": 100.0,
            "maturity": 1.0,
            "steps": 12,
            "barrier": {"level": 80.0, "direction": "down", "knock": "out"},
        },
        paths=30_001,
    ),
    "american-gbm": _job(GBM, _american("put", 6), paths=30_001),
    "american-heston": _job(_heston("feller-met", stepsPerYear=12), _american("put", 4)),
}


def _arrivals(spec: JobSpec, shards: int, rng: random.Random) -> list[BlockStats]:
    n = plan_blocks(spec).n_blocks
    queues = [list(shard_blocks(n, shards, i)) for i in range(shards)]
    out: list[BlockStats] = []
    while any(queues):
        shard = rng.choice([i for i, q in enumerate(queues) if q])
        out.append(simulate_block(spec, queues[shard].pop(0)))
    return out


@pytest.mark.parametrize("name", list(JOBS))
def test_same_bits_for_one_or_several_shards(name: str) -> None:
    results = []
    for shards in (1, 3, 7):
        # each "worker" composes the job afresh (and fits the American rule itself)
        compose.cache_clear()
        plan_blocks_cached.cache_clear()
        spec = parse_spec(dict(JOBS[name]))
        agg = JobAggregator(spec)
        for stats in _arrivals(spec, shards, random.Random(shards)):
            agg.add(stats)
        assert agg.final is not None
        results.append(agg.final)
    assert results[0] == results[1] == results[2]
    assert math.isfinite(results[0].estimate) and results[0].std_err > 0


# -- refusals name the field -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"volOfVol": -0.1}, "spec.model.volOfVol"),
        ({"spotVarianceCorrelation": 1.0}, "spec.model.spotVarianceCorrelation"),
        ({"spotVarianceCorrelation": -1.0}, "spec.model.spotVarianceCorrelation"),
        ({"initialVariance": 0.0}, "spec.model.initialVariance"),
        ({"meanReversion": -1.0}, "spec.model.meanReversion"),
        ({"longRunVariance": 0.0}, "spec.model.longRunVariance"),
    ],
)
def test_heston_refusals_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        parse_spec(_job(dict(_heston("feller-met"), **change), _european("call")))
    assert err.value.field == field


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"jumpIntensity": -0.5}, "spec.model.jumpIntensity"),
        ({"jumpStdDev": -0.1}, "spec.model.jumpStdDev"),
    ],
)
def test_merton_refusals_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        parse_spec(_job(dict(MERTON, type="merton", **change), _european("call")))
    assert err.value.field == field


def test_american_needs_a_single_asset_model() -> None:
    assets = [
        {"name": "a", "spot": 100.0, "volatility": 0.2},
        {"name": "b", "spot": 50.0, "volatility": 0.3},
    ]
    doc = _job({"type": "gbm", "rate": 0.03, "assets": assets}, _american())
    with pytest.raises(InvalidSpec) as err:
        parse_spec(doc)
    assert err.value.field.startswith("spec.model")
