"""Same bits for any shard count and completion order; streams, block plan, records and hashes."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from engine_helpers import asian, european, multi_asset, single_asset
from mcop_worker.engine.aggregate import (
    MIN_BLOCKS_TO_STOP,
    JobAggregator,
    aggregate,
    final_result,
    summarize,
)
from mcop_worker.engine.blocks import (
    ENGINE_VERSION,
    plan_blocks,
    shard_blocks,
)
from mcop_worker.engine.simulate import simulate_block
from mcop_worker.engine.stats import STATS_VERSION, BlockStats, Moments
from mcop_worker.model.errors import InvalidSpec, ManifestError
from mcop_worker.model.spec import JobSpec, parse_spec
from mcop_worker.model.spec_hash import canonical_spec, spec_hash
from mcop_worker.programs.local_runner import run_job

SHARD_COUNTS = [1, 2, 3, 7, 64]


def _barrier() -> dict[str, Any]:
    inst = {
        "type": "barrier",
        "optionType": "put",
        "strike": 100.0,
        "maturity": 1.0,
        "steps": 50,
        "barrier": {"level": 85.0, "direction": "down", "knock": "out", "rebate": 1.0},
    }
    return single_asset(inst, paths=70_001, seed=9)


def _var() -> dict[str, Any]:
    assets = [
        {"name": "a", "spot": 100.0, "volatility": 0.3, "weight": 10.0},
        {"name": "b", "spot": 40.0, "volatility": 0.5, "weight": -20.0, "drift": 0.1},
    ]
    inst = {"type": "var", "horizon": 0.04, "confidenceLevels": [0.99, 0.9]}
    return multi_asset(inst, assets, [[1, 0.4], [0.4, 1]], paths=45_000, seed=4)


def _basket() -> dict[str, Any]:
    assets = [
        {"name": "a", "spot": 100.0, "volatility": 0.3, "weight": 1.0},
        {"name": "b", "spot": 40.0, "volatility": 0.5, "weight": 2.0},
    ]
    inst = {"type": "basket", "optionType": "put", "strike": 170.0, "maturity": 0.5}
    return multi_asset(inst, assets, [[1, 0.4], [0.4, 1]], paths=66_000, seed=8)


JOBS = {
    "european": european(paths=300_000, seed=3),
    "asian-target": asian(steps=24, paths=200_000, seed=2, target=0.004),
    "asian-plain": asian(steps=24, paths=40_000, seed=2, antithetic=False, control=False),
    "barrier": _barrier(),
    "basket": _basket(),
    "var": _var(),
    "var-target": dict(_var(), targetStdErr=3.0),
}


def _shard_schedule(spec: JobSpec, shards: int, rng: random.Random) -> list[BlockStats]:
    """Every shard simulates its strided blocks in its own order of work; the shards' results
    interleave randomly (one shard racing ahead, another slow), as the aggregator sees them."""
    n = plan_blocks(spec).n_blocks
    queues = [list(shard_blocks(n, shards, i)) for i in range(shards)]
    arrivals: list[BlockStats] = []
    while any(queues):
        shard = rng.choice([i for i, q in enumerate(queues) if q])
        arrivals.append(simulate_block(spec, queues[shard].pop(0)))
    return arrivals


@pytest.mark.parametrize("name", list(JOBS))
def test_same_bits_for_every_shard_count_and_arrival_order(name: str) -> None:
    spec = parse_spec(JOBS[name])
    results = {}
    for shards in SHARD_COUNTS:
        arrivals = _shard_schedule(spec, shards, random.Random(shards))
        agg = JobAggregator(spec)
        for stats in arrivals:
            agg.add(stats)
        assert agg.final is not None
        results[shards] = agg.final
    first = results[1]
    for shards, result in results.items():
        assert result == first, f"{shards} shards differ from 1"
        assert json.dumps(result.to_result()) == json.dumps(first.to_result())
    if spec.target_std_err is not None:
        assert first.stopped_early
        assert MIN_BLOCKS_TO_STOP <= first.blocks < plan_blocks(spec).n_blocks
        assert first.std_err <= spec.target_std_err


def test_early_stop_is_the_first_prefix_reaching_the_target() -> None:
    spec = parse_spec(JOBS["asian-target"])
    plan = plan_blocks(spec)
    blocks = [simulate_block(spec, b) for b in range(plan.n_blocks)]
    target = spec.target_std_err
    assert target is not None
    stop = next(
        k
        for k in range(MIN_BLOCKS_TO_STOP, plan.n_blocks + 1)
        if aggregate(blocks[:k], spec).std_err <= target
    )
    result = final_result({b.block: b for b in reversed(blocks)}, spec)
    assert result is not None
    partial = summarize({b.block: b for b in blocks[2:stop]}, spec)  # block 0, 1 missing
    assert partial.final is None and partial.prefix_blocks == 0
    assert partial.running == aggregate(blocks[2:stop], spec)
    assert partial.blocks_done == stop - 2 and partial.paths_total == plan.paths
    assert result.blocks == stop
    assert result.paths == plan.paths_in_prefix(stop)
    assert result.estimate == aggregate(blocks[:stop], spec).estimate
    # Blocks after the stop change nothing, even when they arrive first; a gap delays the decision.
    agg = JobAggregator(spec)
    for b in blocks[stop:] + blocks[1:stop]:
        agg.add(b)
    assert agg.final is None and agg.missing_blocks() == [0]
    agg.add(blocks[0])
    assert agg.final == result
    assert agg.missing_blocks() == []


def test_local_processes_give_the_same_bits() -> None:
    """`mcop run`'s runner: in-process vs 3 spawned processes, with early stopping."""
    spec = parse_spec(asian(steps=24, paths=100_000, seed=5, target=0.006))
    one = run_job(spec, shards=1)
    three = run_job(spec, shards=3)
    assert one.estimate == three.estimate
    assert one.estimate.stopped_early
    assert one.spec_hash == three.spec_hash == spec_hash(spec)
    assert set(one.to_json()) == {
        "estimate",
        "stdErr",
        "confidenceInterval",
        "paths",
        "stoppedEarly",
        "elapsedSeconds",
        "pathsPerSecond",
        "specHash",
        "warnings",
    }


def test_block_results_do_not_depend_on_what_ran_before() -> None:
    """A block computed first, after other jobs, or twice, is the same record."""
    spec = parse_spec(JOBS["barrier"])
    fresh = simulate_block(spec, 5).to_json()
    simulate_block(parse_spec(JOBS["european"]), 0)
    simulate_block(parse_spec(JOBS["basket"]), 3)
    simulate_block(spec, 4)
    assert simulate_block(spec, 5).to_json() == fresh


def test_block_plan_rule() -> None:
    def plan(paths: int, antithetic: bool = False) -> Any:
        return plan_blocks(parse_spec(european(paths=paths, antithetic=antithetic)))

    p = plan(10_000_000, antithetic=True)
    assert (p.units, p.paths_per_unit, p.block_units, p.n_blocks) == (5_000_000, 2, 19_968, 251)
    assert p.paths == 10_000_000
    # A small job still has 13-16 blocks: the folds of the cross-fitted control variate.
    assert (plan(500).n_blocks, plan(500).paths_in_block(0), plan(500).paths_in_block(15)) == (
        16,
        32,
        20,
    )
    assert plan(100, antithetic=True).n_blocks == 13  # 50 pairs in blocks of 4
    small = plan(1_000)
    assert (small.n_blocks, small.block_units, small.paths_in_block(15)) == (16, 63, 55)
    assert plan(8_192).n_blocks == 16 and plan(8_191).block_units == 512
    # Up to 64 shards all get work from 32,768 sample units on.
    assert plan(32_768).n_blocks == 64
    assert plan(65_536, antithetic=True).n_blocks == 64
    odd = plan(100_001, antithetic=True)
    assert odd.paths == 100_002  # an odd path count is rounded up to whole pairs
    assert sum(odd.paths_in_block(b) for b in range(odd.n_blocks)) == odd.paths
    huge = plan(10_000_000_000)
    assert huge.block_units == 1 << 20  # memory per block stays bounded
    assert [list(shard_blocks(10, 3, i)) for i in range(3)] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    with pytest.raises(ValueError):
        shard_blocks(10, 3, 3)


def test_block_stats_json_round_trip() -> None:
    for name in ("asian-target", "var", "asian-plain"):
        spec = parse_spec(JOBS[name])
        stats = simulate_block(spec, 2)
        text = stats.to_json()
        back = BlockStats.from_json(text)
        assert back == stats
        assert back.to_json() == text
        doc = json.loads(text)
        assert doc["v"] == STATS_VERSION and doc["engine"] == ENGINE_VERSION
        assert (doc["cv"] is None) == (name != "asian-target")
        assert (doc["tail"] is None) == (not name.startswith("var"))
    negative_zero = BlockStats(block=0, paths=2, moments=Moments(count=2, mean=-0.0, m2=1e-300))
    again = BlockStats.from_json(negative_zero.to_json())
    assert str(again.moments.mean) == "-0.0" and again.moments.m2 == 1e-300


def test_block_stats_refuse_other_versions() -> None:
    spec = parse_spec(JOBS["european"])
    doc = json.loads(simulate_block(spec, 0).to_json())
    with pytest.raises(ValueError, match="version"):
        BlockStats.from_json(json.dumps(dict(doc, v=STATS_VERSION + 1)))
    with pytest.raises(ValueError, match="engine version"):
        BlockStats.from_json(json.dumps(dict(doc, engine=ENGINE_VERSION + 1)))


def test_aggregator_refuses_foreign_or_conflicting_blocks() -> None:
    spec = parse_spec(JOBS["european"])
    agg = JobAggregator(spec)
    stats = simulate_block(spec, 1)
    agg.add(stats)
    agg.add(BlockStats.from_json(stats.to_json()))  # a retried shard: ignored
    assert len(agg.blocks) == 1
    with pytest.raises(ValueError, match="twice"):
        agg.add(BlockStats(block=1, paths=stats.paths, moments=Moments(count=1)))
    with pytest.raises(ValueError, match="does not belong"):
        agg.add(BlockStats(block=10_000, paths=1, moments=Moments(count=1)))
    with pytest.raises(ValueError, match="increasing"):
        aggregate([simulate_block(spec, 2), stats], spec)


# -- specHash -----------------------------------------------------------------------------------


def _manifest_spec() -> dict[str, Any]:
    return {
        "model": {"type": "gbm", "spot": 100, "volatility": 0.2, "rate": 0.05},
        "instrument": {
            "type": "european",
            "optionType": "call",
            "strike": 100,
            "maturity": 1,
            "steps": 252,
        },
        "paths": 1_000_000,
        "seed": 42,
        "varianceReduction": {"antithetic": True, "controlVariate": True},
        "shards": 4,
        "priority": "high",
        "resources": {"requests": {"cpu": "1"}},
    }


def _hash(spec: dict[str, Any]) -> str:
    return spec_hash(parse_spec(spec))


def test_spec_hash_ignores_what_does_not_change_the_numbers() -> None:
    base = _manifest_spec()
    digest = _hash(base)
    assert digest.startswith("sha256:") and len(digest) == 71
    same = [
        dict(base, shards=64, priority="low", resources={}, tuningRef="x", cache=False),
        # numbers written differently, defaults spelled out, keys in another order
        dict(
            reversed(list(base.items())),
            model={"rate": 0.05, "volatility": 0.2, "spot": 100.0, "dividendYield": 0.0},
        ),
        dict(base, instrument=dict(base["instrument"], steps=12)),  # a European has no dates
    ]
    for spec in same:
        assert _hash(spec) == digest
    var = _var()
    renamed = copy.deepcopy(var)
    renamed["model"]["assets"][0]["name"] = "other"
    renamed["model"]["rate"] = 0.3  # var uses drifts; asset a's default drift is rate - q ...
    renamed["model"]["assets"][0]["drift"] = var["model"]["rate"]  # ... so pin it
    assert _hash(renamed) == _hash(var)


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 43},
        {"paths": 1_000_001},
        {"targetStdErr": 0.01},
        {"varianceReduction": {"antithetic": False, "controlVariate": True}},
        {"model": {"type": "gbm", "spot": 100, "volatility": 0.21, "rate": 0.05}},
        {"model": {"spot": 100, "volatility": 0.2, "rate": 0.05, "dividendYield": 0.01}},
        {"instrument": {"type": "european", "optionType": "put", "strike": 100, "maturity": 1}},
    ],
)
def test_spec_hash_changes_with_the_numbers(change: dict[str, Any]) -> None:
    base = _manifest_spec()
    assert _hash(dict(base, **change)) != _hash(base)


def test_canonical_spec_names_its_engine() -> None:
    doc = canonical_spec(parse_spec(_manifest_spec()))
    assert doc["engine"] == ENGINE_VERSION
    import numba
    import numpy

    assert doc["build"] == {
        "engine": ENGINE_VERSION,
        "numpy": numpy.__version__,
        "numba": numba.__version__,
    }
    assert "shards" not in doc and "priority" not in doc


def test_spec_hash_changes_with_numpy_or_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache and stored blocks must never serve bits another build would not produce."""
    from mcop_worker.model import spec_hash as spec_hash_module

    spec = parse_spec(_manifest_spec())
    digest = spec_hash(spec)
    for name in ("numpy", "numba"):
        other = dict(spec_hash_module.build(), **{name: "0.0.1"})
        monkeypatch.setattr(spec_hash_module, "build", lambda other=other: other)
        assert spec_hash(spec) != digest
        monkeypatch.undo()
    assert spec_hash(spec) == digest


# -- what only code can judge -------------------------------------------------------------------


def test_correlation_not_positive_definite_names_the_field() -> None:
    assets = [{"name": n, "spot": 100.0, "volatility": 0.2} for n in "abc"]
    inst = {"type": "basket", "optionType": "call", "strike": 300.0, "maturity": 1.0}
    bad = [[1.0, 0.9, 0.9], [0.9, 1.0, -0.9], [0.9, -0.9, 1.0]]
    with pytest.raises(InvalidSpec) as info:
        parse_spec(multi_asset(inst, assets, bad))
    assert info.value.field == "spec.model.correlation"
    assert "positive-definite" in info.value.message
    assert isinstance(info.value, ManifestError)
    singular = [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    with pytest.raises(InvalidSpec, match="positive-definite"):
        parse_spec(multi_asset(inst, assets, singular))
    with pytest.raises(InvalidSpec) as wrong_size:
        parse_spec(multi_asset(inst, assets, [[1.0, 0.0], [0.0, 1.0]]))
    assert wrong_size.value.field == "spec.model.correlation"
