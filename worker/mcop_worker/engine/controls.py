"""Which control variate each instrument uses, and its exact expectation.

The kernels simulate the control `x` alongside the payoff `y` on the same paths; the aggregator
needs E[x] to correct the estimate. Keep this table in step with `kernels.py`:

| instrument | control variate x (discounted) | E[x] |
| --- | --- | --- |
| european | the terminal price S(T) | S e^{-qT} |
| asian | the geometric-average option on the same dates | Kemna-Vorst (discrete) |
| barrier | the vanilla option (same strike, type, maturity) | Black-Scholes |
| basket, weights > 0 | option on the geometric basket B0 prod (S_j(T)/S_j)^a_j | lognormal |
| basket, otherwise | the basket value sum w_j S_j(T) | sum w_j S_j e^{-q_j T} |
| var | none (quantiles use plain paths) | |
"""

from __future__ import annotations

import math

from mcop_worker.engine import closed_forms
from mcop_worker.model.spec import JobSpec


def uses_control(spec: JobSpec) -> bool:
    return spec.variance_reduction.control_variate and spec.instrument.type != "var"


def geometric_basket_control(spec: JobSpec) -> bool:
    return all(a.weight > 0 for a in spec.model.assets)


def control_mean(spec: JobSpec) -> float:
    """E[x] for the spec's control variate (see the table above)."""
    inst = spec.instrument
    model = spec.model
    rate = model.rate
    a0 = model.assets[0]
    assert inst.maturity is not None and inst.strike is not None and inst.option_type is not None
    if inst.type == "european":
        return a0.spot * math.exp(-a0.dividend_yield * inst.maturity)
    if inst.type == "asian":
        assert inst.steps is not None
        return closed_forms.geometric_asian(
            a0.spot,
            inst.strike,
            rate,
            a0.dividend_yield,
            a0.volatility,
            inst.maturity,
            inst.steps,
            inst.option_type,
        )
    if inst.type == "barrier":
        return closed_forms.black_scholes(
            a0.spot,
            inst.strike,
            rate,
            a0.dividend_yield,
            a0.volatility,
            inst.maturity,
            inst.option_type,
        )
    if inst.type == "basket":
        assets = model.assets
        if geometric_basket_control(spec):
            return closed_forms.geometric_basket(
                [a.spot for a in assets],
                [a.weight for a in assets],
                [a.volatility for a in assets],
                [a.dividend_yield for a in assets],
                model.correlation,
                rate,
                inst.maturity,
                inst.strike,
                inst.option_type,
            )
        return math.fsum(
            a.weight * a.spot * math.exp(-a.dividend_yield * inst.maturity) for a in assets
        )
    raise ValueError(f"{inst.type} has no control variate")
