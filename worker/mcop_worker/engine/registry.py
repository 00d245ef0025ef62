"""The one table of the engine's parts: a new model, sampler, instrument or variance-reduction
method is one module registered in `PARTS` plus its tests. `compose(spec)` picks a job's parts.

A job's block is simulated chunk by chunk (`composition.run_block`); each part is a module whose
numba kernels work on a chunk's arrays (no part calls another; they meet here):

* **sampler** (`samplers/`): `setup(spec, dims) -> Sampler`, an object with
  `stream(seed, block, first_unit)`, opened once per block, and `fill(stream, start, c, dims, z)`,
  which writes the standard normals of units start..start+c-1 of the block as
  `z[dim * c + p]` (dimension `dim` of unit `start + p`). A model's dimensions are ordered
  step, then asset (or the model's own order within a step, e.g. Heston's variance then price).
  The normals must be standard normal and independent across units; antithetic mirrors are the
  model's business (it multiplies every normal by `sign`), not the sampler's.
* **model** (`models/`): `setup(spec, grid) -> ModelSetup`: `dims` normals per path, `assets`,
  and a kernel `(params, z, stride, first, count, sign, out)` writing the log-prices of units
  first..first+count-1 of a chunk of `stride` units on the grid's dates as
  `out[(k * assets + j) * count + q]` (date k, asset j), from `sign * z[dim * stride + first + q]`.
  Optionally `greeks(spec, grid, model_setup) -> GreekSetup`: Greek estimators that rebuild the
  model's paths from a chunk's normals (`greek_part`); without it, GBM's (`greek_kernels`).
* **payoff** (`payoffs/`, keyed by `instrument.type`): `grid(spec) -> Grid` (the dates it
  observes), `setup(spec) -> PayoffSetup` (a kernel `(params, paths, c, y, x)` giving each path's
  value y and control variate x, a `scale` applied to both by the estimator, `keeps_values` when
  every unit's value is kept, as var's losses are) and `control_mean(spec) -> float | None`
  (E[x], None when the instrument has no control variate).
* **estimator** (`estimators/`): a unit estimator has `PATHS_PER_UNIT` and
  `setup() -> EstimatorSetup`: the `signs` of the mirrors that make one sample unit, and a kernel
  `(acc, scale, ys, xs, c, control, y, x)` that combines the mirrors' values `ys[i * c + p]`
  into the units' y[:c] (x[:c]) and merges them into the block accumulator
  `acc = [count, mean_y, m2_y, mean_x, m2_x, cov_xy]` (`kernels.accumulate`: the chunk's
  two-pass moments, then the Chan-Golub-LeVeque update; the merge order fixes the bits). The
  control variate (`estimators/control_variate.py`) says whether x is accumulated; the aggregator
  applies it with a cross-fitted coefficient (`crossfit.py`).

The block statistics depend only on these kernels and the block's stream, never on the shard
count. Changing what a registered part computes changes the numbers: bump ENGINE_VERSION.
"""

from __future__ import annotations

from functools import lru_cache
from types import ModuleType

from mcop_worker.engine import greek_kernels
from mcop_worker.engine.composition import Composition, Grid, ModelSetup, regression_paths
from mcop_worker.engine.estimators import antithetic, control_variate, plain
from mcop_worker.engine.greek_kernels import GreekSetup
from mcop_worker.engine.models import gbm, heston, merton
from mcop_worker.engine.payoffs import american, asian, barrier, basket, european, var
from mcop_worker.engine.samplers import pseudorandom, sobol
from mcop_worker.model.spec import JobSpec

PARTS: dict[str, dict[str, ModuleType]] = {
    "sampler": {"pseudorandom": pseudorandom, "sobol": sobol},
    "model": {"gbm": gbm, "heston": heston, "merton": merton},  # by model.type
    "payoff": {  # by instrument.type
        "european": european,
        "asian": asian,
        "barrier": barrier,
        "basket": basket,
        "var": var,
        "american": american,
    },
    "estimator": {"plain": plain, "antithetic": antithetic},  # the sample unit
}


def model_of(spec: JobSpec) -> ModuleType:
    return PARTS["model"][spec.model.type]


def sampler_of(spec: JobSpec) -> ModuleType:
    return PARTS["sampler"][spec.sampler.type]


def payoff_of(spec: JobSpec) -> ModuleType:
    return PARTS["payoff"][spec.instrument.type]


def unit_estimator_of(spec: JobSpec) -> ModuleType:
    return PARTS["estimator"]["antithetic" if spec.variance_reduction.antithetic else "plain"]


def paths_per_unit(spec: JobSpec) -> int:
    n: int = unit_estimator_of(spec).PATHS_PER_UNIT
    return n


def uses_control(spec: JobSpec) -> bool:
    return control_variate.applies(spec, payoff_of(spec).control_mean)


def control_mean(spec: JobSpec) -> float:
    """E[x] of the spec's control variate (see `estimators/control_variate.py`)."""
    mean: float | None = payoff_of(spec).control_mean(spec)
    if mean is None:
        raise ValueError(f"{spec.instrument.type} has no control variate")
    return mean


@lru_cache(maxsize=64)
def grid_and_model(spec: JobSpec) -> tuple[Grid, ModelSetup]:
    """The payoff's dates and the model set up on them: plain Python, no kernel runs (the
    operator plans blocks with it; fitting an exercise rule is left to `compose`, in workers)."""
    grid = payoff_of(spec).grid(spec)
    return grid, model_of(spec).setup(spec, grid)


def dims(spec: JobSpec) -> int:
    """Normals per path (they set the chunk size of `blocks.py`)."""
    return grid_and_model(spec)[1].dims


@lru_cache(maxsize=64)
def greek_part(spec: JobSpec) -> GreekSetup | None:
    """The Greek estimators of `spec` (None when it asks for none): a model that rebuilds its
    own paths for them has `greeks(spec, grid, model_setup)` beside its path kernel; GBM's are
    `greek_kernels.setup`."""
    if not spec.greeks:
        return None
    model = model_of(spec)
    if hasattr(model, "greeks"):
        grid, setup = grid_and_model(spec)
        part: GreekSetup = model.greeks(spec, grid, setup)
        return part
    return greek_kernels.setup(spec)


@lru_cache(maxsize=64)
def compose(spec: JobSpec) -> Composition:
    payoff = payoff_of(spec)
    grid, model = grid_and_model(spec)
    payoff_setup = payoff.setup(spec)
    if payoff_setup.fit is not None:  # a rule fitted on paths of its own, before any block
        r = payoff_setup.regression_paths
        fitting = regression_paths(model, grid.steps * model.assets, spec.seed, r)
        payoff_setup = payoff_setup.fit(spec, fitting, r)
    return Composition(
        sampler=sampler_of(spec).setup(spec, model.dims),
        model=model,
        payoff=payoff_setup,
        estimator=unit_estimator_of(spec).setup(),
        grid=grid,
        control=uses_control(spec),
    )
