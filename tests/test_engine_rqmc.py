"""The sobol sampler through the whole engine: prices against closed forms and pseudorandom
references, honest intervals over many seeds, the same bits for any shard count, early stopping in
whole rounds, and a far smaller stdErr than pseudorandom paths at equal paths."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from engine_helpers import RATE, SPOT, VOL, asian, blocks_of, european, multi_asset
from mcop_worker.engine import closed_forms as cf
from mcop_worker.engine.aggregate import Estimate, JobAggregator, aggregate
from mcop_worker.engine.blocks import plan_blocks, shard_blocks
from mcop_worker.engine.simulate import simulate_block
from mcop_worker.model.spec import JobSpec, parse_spec


def run_job(spec: JobSpec) -> Estimate:
    return aggregate(blocks_of(spec), spec)


def _sobol(doc: dict[str, Any], r: int = 16) -> dict[str, Any]:
    return dict(doc, sampler={"type": "sobol", "randomizations": r})


def _close(result: Any, want: float, sigmas: float = 4.0) -> None:
    assert result.std_err > 0.0
    assert abs(result.estimate - want) <= sigmas * result.std_err, (result, want)


@pytest.mark.parametrize(("antithetic", "control"), [(False, False), (True, True), (False, True)])
@pytest.mark.parametrize("kind", ["call", "put"])
def test_european_matches_black_scholes(kind: str, antithetic: bool, control: bool) -> None:
    spec = parse_spec(_sobol(european(kind, paths=1 << 16, antithetic=antithetic, control=control)))
    result = run_job(spec)
    _close(result, cf.black_scholes(SPOT, 100.0, RATE, 0.0, VOL, 1.0, kind))
    assert result.randomizations == 16
    assert result.paths == 1 << 16


def test_asian_and_barrier_through_the_bridge_match_references() -> None:
    spec = parse_spec(_sobol(asian(steps=52, paths=1 << 16, antithetic=False, control=False)))
    reference = run_job(parse_spec(asian(steps=52, paths=1 << 20, seed=9)))
    result = run_job(spec)
    assert abs(result.estimate - reference.estimate) <= 4 * math.hypot(
        result.std_err, reference.std_err
    )
    inst = {
        "type": "barrier",
        "optionType": "call",
        "strike": 100.0,
        "maturity": 1.0,
        "steps": 50,
        "barrier": {"level": 125.0, "direction": "up", "knock": "out"},
    }
    doc = european(paths=1 << 16)
    doc["instrument"] = inst
    barrier = run_job(parse_spec(_sobol(doc)))
    ref = run_job(parse_spec(dict(doc, paths=1 << 20, seed=5)))
    assert abs(barrier.estimate - ref.estimate) <= 4 * math.hypot(barrier.std_err, ref.std_err)


def test_basket_matches_pseudorandom() -> None:
    assets = [
        {"name": "a", "spot": 100.0, "volatility": 0.3},
        {"name": "b", "spot": 50.0, "volatility": 0.2, "weight": 2.0},
    ]
    inst = {"type": "basket", "optionType": "call", "strike": 200.0, "maturity": 1.0}
    doc = multi_asset(inst, assets, [[1, 0.3], [0.3, 1]], paths=1 << 16)
    result = run_job(parse_spec(_sobol(doc)))
    ref = run_job(parse_spec(dict(doc, paths=1 << 20)))
    assert abs(result.estimate - ref.estimate) <= 4 * math.hypot(result.std_err, ref.std_err)


def test_same_bits_for_any_shard_count_and_arrival_order() -> None:
    spec = parse_spec(_sobol(asian(steps=12, paths=1 << 15), r=8))
    plan = plan_blocks(spec)
    blocks = {b: simulate_block(spec, b) for b in range(plan.n_blocks)}
    whole = aggregate([blocks[b] for b in range(plan.n_blocks)], spec)
    for shards in (1, 3, 7):
        agg = JobAggregator(spec)
        order = [b for i in range(shards) for b in shard_blocks(plan.n_blocks, shards, i)]
        random.Random(shards).shuffle(order)
        for b in order:
            agg.add(simulate_block(spec, b))
        assert agg.final == whole
    assert simulate_block(spec, 5) == blocks[5]


def test_early_stopping_in_whole_rounds() -> None:
    doc = _sobol(european(paths=1 << 22, antithetic=False, control=False), r=8)
    full = parse_spec(doc)
    plan = plan_blocks(full)
    target = 0.02
    spec = parse_spec(dict(doc, targetStdErr=target))
    agg = JobAggregator(spec)
    for b in range(plan.n_blocks):
        agg.add(simulate_block(spec, b))
        if agg.done:
            break
    result = agg.final
    assert result is not None and result.stopped_early and result.std_err <= target
    assert plan.round_end(result.blocks)
    assert result.paths == result.blocks * plan.block_units


def test_interval_covers_the_truth_over_many_seeds() -> None:
    """32 randomizations (the default) of 256 points: the t interval (31 degrees of freedom)
    covers the Black-Scholes price 92.5-97.5% of the time over 500 seeds (binomial sd 1%). With 8
    randomizations the heavy-tailed estimates make it cover about 90%: the result says so."""
    truth = cf.black_scholes(SPOT, 100.0, RATE, 0.0, VOL, 1.0, "call")
    hits = 0
    seeds = 500
    for seed in range(seeds):
        doc = european(paths=8192, seed=seed, antithetic=False, control=False)
        result = run_job(parse_spec(_sobol(doc, r=32)))
        hits += result.ci_lower <= truth <= result.ci_upper
        assert not any("randomizations" in w for w in result.warnings)
    assert 0.925 <= hits / seeds <= 0.975, hits / seeds
    few = run_job(parse_spec(_sobol(european(paths=2048, antithetic=False), r=8)))
    assert any("8 randomizations" in w for w in few.warnings)


def test_std_err_far_below_pseudorandom_at_equal_paths() -> None:
    """The issue's targets at 2^16 paths without control variate: European >= 20x smaller stdErr,
    Asian (52 dates, Brownian bridge) >= 8x."""
    for doc, factor in [
        (european(paths=1 << 16, antithetic=False, control=False), 20.0),
        (asian(steps=52, paths=1 << 16, antithetic=False, control=False), 8.0),
    ]:
        pseudo = run_job(parse_spec(doc))
        sobol = run_job(parse_spec(_sobol(doc)))
        assert pseudo.std_err / sobol.std_err >= factor, (pseudo.std_err, sobol.std_err)
