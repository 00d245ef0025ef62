"""Which control variate a job uses and its exact expectation: see
`estimators/control_variate.py` (the table) and each payoff's `control_mean`."""

from __future__ import annotations

from mcop_worker.engine.registry import control_mean as control_mean
from mcop_worker.engine.registry import uses_control as uses_control
