"""Greeks through the whole engine: from the same paths as the price, against Black-Scholes and
against finite differences of the engine's own prices with common random numbers (the same seed),
with the same bits for any shard count, in the result's shape (per asset for a basket)."""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine_helpers import RATE, SPOT, VOL, asian, blocks_of, european, multi_asset
from mcop_worker.cli import main
from mcop_worker.engine import closed_forms as cf
from mcop_worker.engine.aggregate import Estimate, JobAggregator, aggregate
from mcop_worker.engine.blocks import plan_blocks
from mcop_worker.engine.simulate import simulate_block
from mcop_worker.engine.stats import BlockStats
from mcop_worker.model.spec import JobSpec, parse_spec

ALL = ["delta", "gamma", "vega", "rho", "theta"]


def run_job(spec: JobSpec) -> Estimate:
    return aggregate(blocks_of(spec), spec)


@pytest.mark.parametrize("sampler", ["pseudorandom", "sobol"])
@pytest.mark.parametrize("kind", ["call", "put"])
def test_european_greeks_match_black_scholes(kind: str, sampler: str) -> None:
    doc = european(kind, paths=1 << 17, dividend_yield=0.02)
    doc["greeks"] = ALL
    doc["sampler"] = {"type": sampler, "randomizations": 16} if sampler == "sobol" else {}
    result = run_job(parse_spec(doc))
    assert result.greeks is not None
    want = cf.black_scholes_greeks(SPOT, 100.0, RATE, 0.02, VOL, 1.0, kind)
    for name in ALL:
        got = result.greeks[name]
        assert got["stdErr"] > 0.0
        assert abs(got["value"] - want[name]) <= 4 * got["stdErr"], (name, got, want[name])
    # the price is the same with or without Greeks: they only add statistics
    doc.pop("greeks")
    assert run_job(parse_spec(doc)).estimate == result.estimate


def _bumped(doc: dict[str, Any], path: list[Any], h: float) -> float:
    up, down = _copy(doc), _copy(doc)
    for d, sign in ((up, 1.0), (down, -1.0)):
        node = d
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] += sign * h
    return (run_job(parse_spec(up)).estimate - run_job(parse_spec(down)).estimate) / (2 * h)


def _copy(doc: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(doc)


def test_asian_and_basket_greeks_match_finite_differences_with_the_same_seed() -> None:
    """A central difference of the engine's prices at the same seed (common random numbers) has
    about the pathwise estimator's noise, so they agree within 4 x sqrt(2) stdErr."""
    doc = asian(steps=12, paths=100_000, control=False)
    doc["greeks"] = ["delta", "vega", "rho", "theta"]
    result = run_job(parse_spec(doc))
    assert result.greeks is not None
    checks = {
        "delta": _bumped(doc, ["model", "spot"], 1.0),
        "vega": _bumped(doc, ["model", "volatility"], 0.01),
        "rho": _bumped(doc, ["model", "rate"], 0.01),
        "theta": -_bumped(doc, ["instrument", "maturity"], 0.01),
    }
    for name, fd in checks.items():
        got = result.greeks[name]
        assert abs(got["value"] - fd) <= 4 * math.sqrt(2) * got["stdErr"], (name, got, fd)

    assets = [
        {"name": "spx", "spot": 100.0, "volatility": 0.3},
        {"name": "ndx", "spot": 50.0, "volatility": 0.2, "weight": 2.0},
    ]
    inst = {"type": "basket", "optionType": "call", "strike": 200.0, "maturity": 1.0}
    basket = multi_asset(inst, assets, [[1, 0.3], [0.3, 1]], paths=100_000, control=False)
    basket["greeks"] = ["delta", "vega", "rho"]
    result = run_job(parse_spec(basket))
    assert result.greeks is not None
    assert set(result.greeks["delta"]) == {"spx", "ndx"}
    for j, name in enumerate(["spx", "ndx"]):
        for greek, key, h in (("delta", "spot", 0.5), ("vega", "volatility", 0.01)):
            fd = _bumped(basket, ["model", "assets", j, key], h)
            got = result.greeks[greek][name]
            assert abs(got["value"] - fd) <= 4 * math.sqrt(2) * got["stdErr"], (greek, name, got)
    fd = _bumped(basket, ["model", "rate"], 0.01)
    assert (
        abs(result.greeks["rho"]["value"] - fd) <= 4 * math.sqrt(2) * result.greeks["rho"]["stdErr"]
    )
    doc_out = result.to_result()["greeks"]
    assert doc_out["rho"].keys() == {"value", "stdErr"}
    assert doc_out["delta"]["spx"].keys() == {"value", "stdErr"}


def test_greeks_have_the_same_bits_for_any_shard_count_and_survive_storage() -> None:
    doc = european(paths=40_000)
    doc["greeks"] = ALL
    spec = parse_spec(doc)
    plan = plan_blocks(spec)
    whole = run_job(spec)
    order = list(range(plan.n_blocks))
    random.Random(3).shuffle(order)
    agg = JobAggregator(spec)
    for b in order:
        stats = simulate_block(spec, b)
        assert len(stats.greeks) == 5
        agg.add(BlockStats.from_json(stats.to_json()))
    assert agg.final == whole


def test_mcop_run_prints_greeks_and_randomizations_the_same_for_any_shards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = {
        "apiVersion": "montecarlo.io/v1alpha1",
        "kind": "MonteCarloJob",
        "metadata": {"name": "rqmc-greeks"},
        "spec": dict(
            asian(steps=12, paths=1 << 15),
            sampler={"type": "sobol", "randomizations": 32},
            greeks=["delta", "vega", "theta"],
        ),
    }
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    results = []
    for shards in ("1", "2"):
        assert main(["run", str(manifest), "--json", "--shards", shards]) == 0
        out = json.loads(capsys.readouterr().out)
        results.append(
            {k: v for k, v in out.items() if k not in ("elapsedSeconds", "pathsPerSecond")}
        )
    assert results[0] == results[1]
    assert results[0]["randomizations"] == 32
    assert set(results[0]["greeks"]) == {"delta", "vega", "theta"}
    assert main(["run", str(manifest), "--shards", "1", "--progress", "never"]) == 0
    text = capsys.readouterr().out
    assert "Sobol' RQMC (32 randomizations)" in text and "theta" in text
