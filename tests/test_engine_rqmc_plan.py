"""The sobol sampler's spec, block plan and aggregation on their own (no simulation): the rounds
of blocks, the estimate and stdErr from the spread of the randomizations, and the spec's rules."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from engine_helpers import asian, european, multi_asset
from mcop_worker.engine.aggregate import aggregate
from mcop_worker.engine.blocks import plan_blocks
from mcop_worker.engine.stats import BlockStats, Moments
from mcop_worker.model.errors import InvalidSpec
from mcop_worker.model.spec import parse_spec
from mcop_worker.model.spec_hash import spec_hash
from mcop_worker.model.validation import InvalidManifest, validate_manifest


def _sobol(doc: dict[str, Any], r: int = 16, **kw: Any) -> dict[str, Any]:
    return dict(doc, sampler={"type": "sobol", "randomizations": r}, **kw)


def test_plan_has_doubling_rounds_that_cover_every_point_once() -> None:
    spec = parse_spec(_sobol(european(paths=1 << 21, antithetic=True, control=False)))
    plan = plan_blocks(spec)
    assert (plan.randomizations, plan.points, plan.paths_per_unit) == (16, 1 << 16, 2)
    assert plan.paths == 1 << 21
    assert plan.block_units * plan.n_blocks == plan.units
    seen: dict[int, list[int]] = {r: [] for r in range(16)}
    for b in range(plan.n_blocks):
        r, start = plan.sobol_block(b)
        seen[r].append(start)
        assert start % plan.block_units == 0
    for starts in seen.values():
        # every block of the randomization once, in increasing order: a prefix of rounds holds
        # the first 2^j points of every randomization
        assert starts == list(range(0, plan.points, plan.block_units))
    ends = [k for k in range(1, plan.n_blocks + 1) if plan.round_end(k)]
    assert ends == [16 << j for j in range(len(ends))] and ends[-1] == plan.n_blocks
    for k in ends:
        held = [plan.sobol_block(b) for b in range(k)]
        for r in range(16):
            starts = sorted(s for rr, s in held if rr == r)
            assert starts == list(range(0, len(starts) * plan.block_units, plan.block_units))


def test_plan_rounds_paths_down_to_a_power_of_two_per_randomization() -> None:
    plan = plan_blocks(parse_spec(_sobol(asian(paths=1_000_000, antithetic=False), r=10)))
    assert plan.points == 65536 and plan.units == 655360 and plan.paths <= 1_000_000
    small = plan_blocks(parse_spec(_sobol(european(paths=200, antithetic=False), r=8)))
    assert small.points == 16 and small.n_blocks == 8 and small.block_units == 16


def _stats(block: int, count: int, mean: float, m2: float = 1.0) -> BlockStats:
    return BlockStats(block=block, paths=count, moments=Moments(count=count, mean=mean, m2=m2))


def test_estimate_and_std_err_come_from_the_spread_between_randomizations() -> None:
    spec = parse_spec(_sobol(european(paths=16 * 8, antithetic=False, control=False), r=8))
    plan = plan_blocks(spec)
    assert plan.n_blocks == 8 and plan.block_units == 16
    means = [1.0, 2.0, 4.0, 3.0, 5.0, 2.5, 3.5, 3.0]
    # huge within-randomization variance: it must not enter the stdErr
    result = aggregate([_stats(r, 16, means[r], m2=1e6) for r in range(8)], spec)
    mean = sum(means) / 8
    sd = math.sqrt(sum((m - mean) ** 2 for m in means) / 7)
    assert result.estimate == pytest.approx(mean, abs=1e-15)
    assert result.std_err == pytest.approx(sd / math.sqrt(8), rel=1e-14)
    assert result.randomizations == 8
    assert result.to_result()["randomizations"] == 8


def test_spec_rules_and_hash() -> None:
    base = european(antithetic=False)
    plain = parse_spec(base)
    sobol = parse_spec(_sobol(base))
    assert not plain.sampler.sobol and sobol.sampler.randomizations == 16
    assert parse_spec(dict(base, sampler={"type": "sobol"})).sampler.randomizations == 32
    assert spec_hash(plain) != spec_hash(sobol)
    # an explicit pseudorandom sampler is the default: same numbers, same hash
    assert spec_hash(parse_spec(dict(base, sampler={"type": "pseudorandom"}))) == spec_hash(plain)
    assert spec_hash(parse_spec(dict(base, greeks=["vega", "delta"]))) == spec_hash(
        parse_spec(dict(base, greeks=["delta", "vega"]))
    )
    for bad, field in [
        (_sobol(base, r=4), "spec.sampler.randomizations"),
        (_sobol(base, r=16, paths=100), "spec.paths"),
        (dict(base, greeks=["speed"]), "spec.greeks[0]"),
        (dict(base, greeks=["delta", "delta"]), "spec.greeks"),
    ]:
        with pytest.raises(InvalidSpec) as info:
            parse_spec(bad)
        assert info.value.field == field
    var = multi_asset(
        {"type": "var", "horizon": 0.1, "confidenceLevels": [0.99]},
        [{"name": "a", "spot": 100.0, "volatility": 0.2}],
    )
    with pytest.raises(InvalidSpec, match="var"):
        parse_spec(_sobol(var))
    with pytest.raises(InvalidSpec, match="var"):
        parse_spec(dict(var, greeks=["delta"]))
    zero_vol = copy.deepcopy(base)
    zero_vol["model"]["volatility"] = 0.0
    with pytest.raises(InvalidSpec, match="volatility"):
        parse_spec(dict(zero_vol, greeks=["delta"]))


def _manifest(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "montecarlo.io/v1alpha1",
        "kind": "MonteCarloJob",
        "metadata": {"name": "x"},
        "spec": spec,
    }


def test_crd_refuses_what_the_engine_cannot_do_with_clear_messages() -> None:
    base = european(antithetic=False)
    ok = validate_manifest(_manifest(_sobol(base, greeks=["delta", "theta"])))
    assert ok["spec"]["sampler"] == {"type": "sobol", "randomizations": 16}
    assert "sampler" not in validate_manifest(_manifest(base))["spec"]
    assert validate_manifest(_manifest(dict(base, sampler={})))["spec"]["sampler"] == {
        "type": "pseudorandom"
    }
    cases = [
        (_sobol(base, r=4), "spec.sampler.randomizations", "at least 8"),
        (_sobol(base, r=16, paths=200), "spec.paths", "16 x sampler.randomizations"),
        (dict(base, sampler={"randomizations": 16}), "spec.sampler.randomizations", "sobol"),
        (dict(base, greeks=["speed"]), "spec.greeks[0]", "Unsupported value"),
    ]
    for spec, field, words in cases:
        with pytest.raises(InvalidManifest) as info:
            validate_manifest(_manifest(spec))
        assert info.value.errors[0].field == field, info.value.errors
        assert words in info.value.errors[0].message
    var = multi_asset(
        {"type": "var", "horizon": 0.1, "confidenceLevels": [0.99]},
        [{"name": "a", "spot": 100.0, "volatility": 0.2}],
    )
    for spec, field in [
        (_sobol(var), "spec.sampler.type"),
        (dict(var, greeks=["delta"]), "spec.greeks"),
    ]:
        with pytest.raises(InvalidManifest) as info:
            validate_manifest(_manifest(spec))
        assert [e.field for e in info.value.errors] == [field]
