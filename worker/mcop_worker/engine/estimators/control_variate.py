"""Control variate: each payoff simulates a control x with a known mean E[x] beside its value y
(the payoff modules say which); the aggregator reports mean(y) - beta (mean(x) - E[x]) with beta
estimated from the paths (see `aggregate.py`).

| instrument | control variate x (discounted) | E[x] |
| --- | --- | --- |
| european | the terminal price S(T) | S e^{-qT} |
| asian | the geometric-average option on the same dates | Kemna-Vorst (discrete) |
| barrier | the vanilla option (same strike, type, maturity) | Black-Scholes |
| basket, weights > 0 | option on the geometric basket B0 prod (S_j(T)/S_j)^a_j | log-normal |
| basket, otherwise | the basket value sum w_j S_j(T) | sum w_j S_j e^{-q_j T} |
| var | none (quantiles use plain paths) | |
"""

from __future__ import annotations

from collections.abc import Callable

from mcop_worker.model.spec import JobSpec

ControlMean = Callable[[JobSpec], "float | None"]


def applies(spec: JobSpec, control_mean: ControlMean) -> bool:
    """Whether the spec asks for a control variate and its payoff has one."""
    return spec.variance_reduction.control_variate and control_mean(spec) is not None
