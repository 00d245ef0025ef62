"""specHash: a canonical hash of everything that determines a job's numbers, and nothing else.

The canonical form is built from the parsed JobSpec, so defaults are applied, integers written as
floats where the field is a number (100 == 100.0), key order and formatting do not matter, and
fields that cannot change the numbers are left out: shards, priority, resources and names never
enter; nor do `steps` of a European, the asset names, or `rate` of a var (only its drifts do).
The build that decides the bits is included (the engine's version, and the versions of numpy and
numba: `versions.build()`), so that neither a change of algorithm nor another numpy or numba ever
reuses results another build computed (the Redis cache, the stored blocks).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mcop_worker.model.spec import MULTI_ASSET, JobSpec
from mcop_worker.model.versions import ENGINE_VERSION, build


def canonical_spec(spec: JobSpec) -> dict[str, Any]:
    """The JSON-ready dict that `spec_hash` hashes (useful to show what a hash covers)."""
    inst = spec.instrument
    is_var = inst.type == "var"
    assets = []
    for a in spec.model.assets:
        entry: dict[str, Any] = {"spot": a.spot, "volatility": a.volatility}
        if is_var:
            entry["drift"] = a.drift
        else:
            entry["dividendYield"] = a.dividend_yield
        if inst.type in MULTI_ASSET:
            entry["weight"] = a.weight
            if spec.greeks:
                entry["name"] = a.name  # keys of the per-asset Greeks in the result
        assets.append(entry)
    model: dict[str, Any] = {"type": spec.model.type, "assets": assets}
    if spec.model.heston is not None:
        h = spec.model.heston
        assets[0].pop("volatility")  # sqrt(v0): not a parameter of its own
        model["heston"] = {
            "initialVariance": h.initial_variance,
            "meanReversion": h.mean_reversion,
            "longRunVariance": h.long_run_variance,
            "volOfVol": h.vol_of_vol,
            "spotVarianceCorrelation": h.correlation,
        }
    if spec.model.merton is not None:
        m = spec.model.merton
        model["merton"] = {
            "jumpIntensity": m.jump_intensity,
            "jumpMean": m.jump_mean,
            "jumpStdDev": m.jump_std,
        }
    if spec.model.type == "heston":
        model["stepsPerYear"] = spec.model.steps_per_year
    if not is_var:
        model["rate"] = spec.model.rate
    if inst.type in MULTI_ASSET:
        model["correlation"] = [list(row) for row in spec.model.correlation]

    instrument: dict[str, Any] = {"type": inst.type}
    if is_var:
        instrument["horizon"] = inst.horizon
        instrument["confidenceLevels"] = list(inst.confidence_levels)
    else:
        instrument.update(optionType=inst.option_type, strike=inst.strike, maturity=inst.maturity)
    if inst.steps is not None:
        instrument["steps"] = inst.steps
    if inst.barrier is not None:
        b = inst.barrier
        instrument["barrier"] = {
            "level": b.level,
            "direction": b.direction,
            "knock": b.knock,
            "rebate": b.rebate,
        }
    doc: dict[str, Any] = {
        "engine": ENGINE_VERSION,
        "build": build(),
        "model": model,
        "instrument": instrument,
        "paths": spec.paths,
        "seed": spec.seed,
        "varianceReduction": {
            "antithetic": spec.variance_reduction.antithetic,
            "controlVariate": spec.variance_reduction.control_variate,
        },
        "targetStdErr": spec.target_std_err,
    }
    # Present only when used, so the hashes of specs without them stay what they were.
    if spec.sampler.sobol:
        doc["sampler"] = {"type": "sobol", "randomizations": spec.sampler.randomizations}
    if spec.greeks:
        doc["greeks"] = list(spec.greeks)
    return doc


def spec_hash(spec: JobSpec) -> str:
    """ "sha256:<hex>" of the canonical JSON (sorted keys, no spaces, floats by repr)."""
    text = json.dumps(canonical_spec(spec), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
