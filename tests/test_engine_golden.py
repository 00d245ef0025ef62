"""Golden bits: every instrument x variance-reduction setting gives exactly the numbers recorded
(engine version 3: Philox4x32-10 + Box-Muller normals, Estrin's fexp; the earlier versions' bits
were kept unchanged through the engine's recomposition into parts).

The recorded file holds float.hex of the estimate, standard error, VaR and ES of each case, and the
raw block moments of the first block (so a difference is seen before aggregation hides it). When
a change is meant to alter the numbers, it bumps ENGINE_VERSION and re-records with
`python tests/test_engine_golden.py --record` (and says why in the commit).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from engine_helpers import asian, european, multi_asset, single_asset
from mcop_worker.engine.aggregate import aggregate
from mcop_worker.engine.blocks import ENGINE_VERSION, plan_blocks
from mcop_worker.engine.simulate import simulate_block
from mcop_worker.model.spec import parse_spec

GOLDEN = Path(__file__).parent / "golden" / "engine_bits.json"

SETTINGS = {
    "plain": (False, False),
    "antithetic": (True, False),
    "control": (False, True),
    "antithetic+control": (True, True),
}


def _barrier(direction: str, knock: str, level: float, **kw: Any) -> dict[str, Any]:
    inst = {
        "type": "barrier",
        "optionType": "call" if direction == "up" else "put",
        "strike": 100.0,
        "maturity": 1.0,
        "steps": 50,
        "barrier": {"level": level, "direction": direction, "knock": knock, "rebate": 1.5},
    }
    return single_asset(inst, **kw)


_ASSETS = [
    {"name": "a", "spot": 100.0, "volatility": 0.3, "weight": 1.0, "dividendYield": 0.01},
    {"name": "b", "spot": 40.0, "volatility": 0.5, "weight": 2.0},
    {"name": "c", "spot": 70.0, "volatility": 0.25, "weight": 0.5},
]
_CORR = [[1, 0.4, 0.2], [0.4, 1, -0.3], [0.2, -0.3, 1]]


def _basket(weights: list[float], **kw: Any) -> dict[str, Any]:
    assets = [dict(a, weight=w) for a, w in zip(_ASSETS, weights, strict=True)]
    inst = {"type": "basket", "optionType": "put", "strike": 150.0, "maturity": 0.5}
    return multi_asset(inst, assets, _CORR, **kw)


def _var(**kw: Any) -> dict[str, Any]:
    assets = [dict(a, weight=w) for a, w in zip(_ASSETS, [10.0, -20.0, 5.0], strict=True)]
    assets[1]["drift"] = 0.1
    inst = {"type": "var", "horizon": 0.04, "confidenceLevels": [0.99, 0.9]}
    return multi_asset(inst, assets, _CORR, **kw)


# Odd path counts and sizes that leave a partial last chunk and a partial last block.
CASES = {
    "european-call": lambda **kw: european(dividend_yield=0.02, **kw),
    "european-put": lambda **kw: european(option_type="put", strike=90.0, **kw),
    "asian-call": lambda **kw: asian(steps=24, **kw),
    "asian-put": lambda **kw: asian(option_type="put", steps=7, strike=105.0, **kw),
    "barrier-down-out": lambda **kw: _barrier("down", "out", 85.0, **kw),
    "barrier-up-in": lambda **kw: _barrier("up", "in", 120.0, **kw),
    "basket-geometric": lambda **kw: _basket([1.0, 2.0, 0.5], **kw),
    "basket-arithmetic": lambda **kw: _basket([1.0, -0.5, 2.0], **kw),
    "var": _var,
}


def _case_spec(case: str, setting: str) -> dict[str, Any]:
    anti, control = SETTINGS[setting]
    return CASES[case](paths=70_001, seed=11, antithetic=anti, control=control)


def _hex(x: float) -> str:
    return float(x).hex()


def compute(case: str, setting: str) -> dict[str, Any]:
    spec = parse_spec(_case_spec(case, setting))
    blocks = [simulate_block(spec, b) for b in range(plan_blocks(spec).n_blocks)]
    est = aggregate(blocks, spec)
    m = blocks[0].moments
    out: dict[str, Any] = {
        "estimate": _hex(est.estimate),
        "stdErr": _hex(est.std_err),
        "paths": est.paths,
        "block0": [m.count] + [_hex(v) for v in (m.mean, m.m2, m.x_mean, m.x_m2, m.cov)],
    }
    if est.value_at_risk is not None:
        out["valueAtRisk"] = {k: _hex(v) for k, v in sorted(est.value_at_risk.items())}
        out["expectedShortfall"] = {
            k: _hex(v) for k, v in sorted((est.expected_shortfall or {}).items())
        }
        out["tail0"] = blocks[0].tail.hex()[:256]
    out["large"] = _large_blocks(case, setting)
    return out


def _large_blocks(case: str, setting: str) -> list[list[Any]]:
    """First and last block of a larger job: blocks of several chunks, a partial last chunk."""
    anti, control = SETTINGS[setting]
    spec = parse_spec(CASES[case](paths=600_001, seed=5, antithetic=anti, control=control))
    n = plan_blocks(spec).n_blocks
    rows = []
    for b in (0, n - 1):
        m = simulate_block(spec, b).moments
        rows.append([b, m.count] + [_hex(v) for v in (m.mean, m.m2, m.x_mean, m.x_m2, m.cov)])
    return rows


def _recorded() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(GOLDEN.read_text())
    return doc


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("case", list(CASES))
def test_bits_as_recorded(case: str, setting: str) -> None:
    doc = _recorded()
    assert doc["engineVersion"] == ENGINE_VERSION, "ENGINE_VERSION changed: re-record the bits"
    assert compute(case, setting) == doc["cases"][f"{case}/{setting}"]


def test_every_case_recorded() -> None:
    assert set(_recorded()["cases"]) == {f"{c}/{s}" for c in CASES for s in SETTINGS}


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    sys.path.insert(0, str(Path(__file__).parent))
    cases = {f"{c}/{s}": compute(c, s) for c in CASES for s in SETTINGS}
    GOLDEN.write_text(
        json.dumps({"engineVersion": ENGINE_VERSION, "cases": cases}, indent=1, sort_keys=True)
        + "\n"
    )
    print(f"recorded {len(cases)} cases in {GOLDEN}")
