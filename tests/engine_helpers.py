"""Spec builders and a whole-job runner for the engine tests (pure, in-process)."""

from __future__ import annotations

import copy
from typing import Any

from mcop_worker.engine.aggregate import Estimate, aggregate
from mcop_worker.engine.blocks import plan_blocks
from mcop_worker.engine.simulate import simulate_block
from mcop_worker.engine.stats import BlockStats, Moments
from mcop_worker.model.spec import JobSpec, parse_spec

SPOT, RATE, VOL = 100.0, 0.05, 0.2


def single_asset(
    instrument: dict[str, Any],
    paths: int = 200_000,
    seed: int = 1,
    antithetic: bool = True,
    control: bool = True,
    dividend_yield: float = 0.0,
    target: float | None = None,
    **model: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {
            "type": "gbm",
            "spot": SPOT,
            "volatility": VOL,
            "rate": RATE,
            "dividendYield": dividend_yield,
            **model,
        },
        "instrument": instrument,
        "paths": paths,
        "seed": seed,
        "varianceReduction": {"antithetic": antithetic, "controlVariate": control},
    }
    if target is not None:
        spec["targetStdErr"] = target
    return spec


def european(option_type: str = "call", strike: float = 100.0, **kw: Any) -> dict[str, Any]:
    inst = {"type": "european", "optionType": option_type, "strike": strike, "maturity": 1.0}
    return single_asset(inst, **kw)


def asian(
    option_type: str = "call", strike: float = 100.0, steps: int = 252, **kw: Any
) -> dict[str, Any]:
    inst = {
        "type": "asian",
        "optionType": option_type,
        "strike": strike,
        "maturity": 1.0,
        "steps": steps,
    }
    return single_asset(inst, **kw)


def multi_asset(
    instrument: dict[str, Any],
    assets: list[dict[str, Any]],
    correlation: list[list[float]] | None = None,
    paths: int = 200_000,
    seed: int = 1,
    antithetic: bool = True,
    control: bool = True,
) -> dict[str, Any]:
    model: dict[str, Any] = {"type": "gbm", "rate": RATE, "assets": copy.deepcopy(assets)}
    if correlation is not None:
        model["correlation"] = correlation
    return {
        "model": model,
        "instrument": instrument,
        "paths": paths,
        "seed": seed,
        "varianceReduction": {"antithetic": antithetic, "controlVariate": control},
    }


def blocks_of(spec: JobSpec) -> list[BlockStats]:
    return [simulate_block(spec, b) for b in range(plan_blocks(spec).n_blocks)]


def run(spec_dict: dict[str, Any]) -> Estimate:
    spec = parse_spec(spec_dict)
    return aggregate(blocks_of(spec), spec)


def merged_moments(blocks: list[BlockStats]) -> Moments:
    total = Moments()
    for stats in blocks:
        total = total.merge(stats.moments)
    return total


def within(estimate: float, std_err: float, expected: float, sigmas: float = 4.0) -> bool:
    return abs(estimate - expected) <= sigmas * std_err
