"""Randomized quasi-Monte Carlo estimates (sampler sobol): R independent scramblings of one
Sobol' point set, each an unbiased estimate; the estimate is their mean and the stdErr the spread
between them, sd(estimates) / sqrt(R). The paths within one randomization are not independent,
so their own variance says nothing about the error and is never used.

Per randomization the blocks' moments are merged in block order (Chan-Golub-LeVeque), and every
sum over randomizations is exactly rounded (math.fsum): the same set of blocks gives the same
bits whatever the shard count.

* Control variate: each randomization r is corrected with beta_{-r}, the path-level coefficient of
  the other randomizations (`crossfit.leave_one_out`), so no correction sees its own points:
  z_r = mean_y_r - beta_{-r} (mean_x_r - E[x]); estimate and stdErr are those of the z_r. Below
  `crossfit.MIN_CONTROL_UNITS` sample units it is not applied (a warning says so).
* Antithetic: a point and its mirror are one sample unit, as with pseudorandom paths.
* Greeks: each component's per-randomization means, their mean and spread, like the price.
* The 95% interval is est +- t x stdErr with Student's t of R - 1 degrees of freedom (the stdErr
  is itself estimated from R values).
* Early stopping (targetStdErr) happens only at the end of a round (`BlockPlan.round_end`), when
  every randomization holds the same first 2^j points.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from mcop_worker.engine import crossfit
from mcop_worker.engine.blocks import plan_blocks
from mcop_worker.engine.controls import control_mean, uses_control
from mcop_worker.engine.stats import Moments
from mcop_worker.model.spec import JobSpec

HONEST_RANDOMIZATIONS = 32  # from here on the t interval covered 93-97% (tests/test_engine_rqmc.py)

if TYPE_CHECKING:
    from mcop_worker.engine.aggregate import Estimate, _Fold


def mean_and_std_err(values: list[float]) -> tuple[float, float]:
    """The mean of independent estimates and its standard error (exactly rounded sums)."""
    r = len(values)
    mean = math.fsum(values) / r
    if r < 2:
        return mean, math.nan
    spread = math.fsum((v - mean) * (v - mean) for v in values)
    return mean, math.sqrt(spread / (r - 1) / r)


def estimate(spec: JobSpec, fold: _Fold, stopped_early: bool) -> Estimate:
    plan = plan_blocks(spec)
    merged: dict[int, Moments] = {}
    greeks: dict[int, list[Moments]] = {}
    for block, part, greek_part in zip(fold.block_ids, fold.parts, fold.greek_parts, strict=True):
        r, _ = plan.sobol_block(block)
        merged[r] = merged.get(r, Moments()).merge(part)
        moments = [Moments(count=part.count, mean=m, m2=m2) for m, m2 in greek_part]
        previous = greeks.get(r)
        greeks[r] = moments if previous is None else [
            a.merge(b) for a, b in zip(previous, moments, strict=True)
        ]  # fmt: skip
    order = sorted(merged)
    n = fold.moments.count
    warnings: list[str] = []
    values = [merged[r].mean for r in order]
    if uses_control(spec) and n >= crossfit.MIN_CONTROL_UNITS and len(order) >= 2:
        cols = [merged[r] for r in order]
        _, beta = crossfit.leave_one_out(
            np.array([float(m.count) for m in cols]),
            np.array([m.mean for m in cols]),
            np.array([m.x_mean for m in cols]),
            np.array([m.x_m2 for m in cols]),
            np.array([m.cov for m in cols]),
            _fsum,
        )
        mu = control_mean(spec)
        values = [m.mean - float(b) * (m.x_mean - mu) for m, b in zip(cols, beta, strict=True)]
    elif uses_control(spec):
        warnings.append(
            f"The control variate was not applied: {n} sample units are fewer than the "
            f"{crossfit.MIN_CONTROL_UNITS} its coefficient needs to keep the interval honest; "
            "the estimate is the plain mean."
        )
    est, std_err = mean_and_std_err(values)
    if len(order) < HONEST_RANDOMIZATIONS:
        warnings.append(
            f"The stdErr comes from {len(order)} randomizations: their estimates are "
            "heavy-tailed for option payoffs, so the 95% interval covered only about 90% in tests "
            f"with 8 or 16 randomizations (94% with 32); use {HONEST_RANDOMIZATIONS} or more "
            "where the interval matters."
        )
    greek_values = None
    if spec.greeks and order and greeks[order[0]]:
        greek_values = [
            mean_and_std_err([greeks[r][i].mean for r in order])
            for i in range(len(greeks[order[0]]))
        ]
    return fold.finish(
        spec,
        est,
        std_err,
        stopped_early,
        warnings,
        greeks=greek_values,
        randomizations=len(order),
        quantile=student_t_975(len(order) - 1) if len(order) > 1 else math.inf,
    )


def student_t_975(dof: int) -> float:
    """The 97.5% quantile of Student's t with `dof` degrees of freedom (Cornish-Fisher expansion
    around the normal's, Abramowitz-Stegun 26.7.5: within 5e-5 from 7 degrees of freedom on).
    R randomizations give R - 1: with 8 of them the normal 1.96 would cover only 91%."""
    z = 1.959963984540054
    v = float(dof)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
        + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * v**4)
    )


def _fsum(values: npt.NDArray[np.float64]) -> float:
    return math.fsum(values.tolist())
