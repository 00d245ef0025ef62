"""The engine as a composition of parts, one chunk of sample units at a time.

    sampler  ->  model  ->  payoff  ->  estimator  ->  block statistics
    (normals)    (paths)    (values)    (sample unit)  (moments merged chunk by chunk)

As in QuantLib's Monte Carlo framework (random sequence generator -> path generator -> path pricer
-> statistics), each part is a small module with its own numba kernels, registered in
`registry.py` (the interfaces are documented there). `run_block` is a Python loop over a block's
chunks that calls each part's kernel once per chunk (per mirror for the model and payoff): the
parts never call each other, so a new part needs no new compiled combination, and every kernel is
compiled once and cached by numba. A call costs about 1-3 us against 0.3-1 ms of work per chunk
(a chunk holds CHUNK_NORMALS normals); the kernels release the GIL.

Everything here is the same IEEE operations in the same order as the engine's former fused
kernels: the numbers are bit-for-bit those recorded in `tests/golden/engine_bits.json`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mcop_worker.engine.greek_kernels import GreekSetup
from mcop_worker.engine.greek_kernels import accumulate as accumulate_greeks
from mcop_worker.model.spec import JobSpec

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Grid:
    """The dates a payoff observes: t_k = k * horizon / steps, k = 1..steps."""

    horizon: float
    steps: int

    @property
    def dt(self) -> float:
        return self.horizon / self.steps


class Sampler(Protocol):
    """Standard normals for the sample units of a block (see registry.py)."""

    def stream(self, seed: int, block: int, first_unit: int) -> Any:
        """The state block `block` (units first_unit.. of the job) draws from, opened once."""

    def fill(self, stream: Any, start: int, c: int, dims: int, z: Array) -> None:
        """z[dim * c + p] = normal `dim` of unit `start + p` of the block, for p < c."""


@dataclass(frozen=True)
class ModelSetup:
    # kernel(params, z, c, signs, out): the log-prices on the payoff's dates of the m = signs.size
    # mirrors of c units, as m * c path units: out[(k * assets + j) * m * c + i * c + p] for
    # date k, asset j, mirror i of unit p, made from its normals z[dim * c + p] each multiplied
    # by signs[i] (+1, or -1 for an antithetic mirror)
    kernel: Any
    params: Array
    dims: int  # normals per path
    assets: int


@dataclass(frozen=True)
class PayoffSetup:
    # kernel(params, paths, n, y, x): y[:n] the values of n path units, x[:n] their control
    # variates (before `scale`); paths[(k * assets + j) * n + q]
    kernel: Any
    params: Array
    scale: float  # the discount factor, or 1 when the kernel discounts each path itself
    keeps_values: bool = False  # var: every unit's value is kept for the order statistics
    # american: fit(spec, paths, r) -> the payoff with its exercise rule, fitted on r regression
    # paths (paths[k * r + q], see `regression_paths`) before any block is simulated
    fit: Callable[[JobSpec, Array, int], PayoffSetup] | None = None
    regression_paths: int = 0


@dataclass(frozen=True)
class EstimatorSetup:
    # kernel(acc, scale, ys, xs, c, control, y, x): the values y[:c] (and controls x[:c]) of c
    # sample units from their mirrors' ys[i * c + p], merged into the block's accumulator
    kernel: Any
    signs: Array  # one entry per mirror of the normals in a sample unit


@dataclass(frozen=True)
class Composition:
    sampler: Sampler
    model: ModelSetup
    payoff: PayoffSetup
    estimator: EstimatorSetup
    grid: Grid
    control: bool  # accumulate the control variate

    @property
    def width(self) -> int:
        """Log-prices per path: dates x assets."""
        return self.grid.steps * self.model.assets

    def work_size(self, chunk: int) -> int:
        """Scratch floats for a chunk: normals; every mirror's paths, y, x; the units' y, x."""
        mirrors = self.estimator.signs.size
        return chunk * (self.model.dims + mirrors * (self.width + 2) + 2)


def run_block(
    parts: Composition,
    stream: Any,  # the block's sampler stream
    units: int,
    chunk: int,
    acc: Array,  # out: [count, mean_y, m2_y, mean_x, m2_x, cov_xy] of the block
    work: Array,  # scratch, >= parts.work_size(chunk) floats
    values: Array,  # out when the payoff keeps values: every unit's value, in unit order
    greeks: GreekSetup | None = None,  # spec.greeks: estimators fed the same normals
    gacc: Array | None = None,  # out: (components, 3) [count, mean, m2] of each Greek
) -> None:
    model, payoff, estimator = parts.model, parts.payoff, parts.estimator
    fill, dims, width = parts.sampler.fill, model.dims, parts.width
    model_kernel, model_params = model.kernel, model.params
    payoff_kernel, payoff_params, scale = payoff.kernel, payoff.params, payoff.scale
    merge, signs, control, keep = (
        estimator.kernel,
        estimator.signs,
        parts.control,
        payoff.keeps_values,
    )
    m = signs.size
    if work.size < parts.work_size(chunk) or (keep and values.size < units):
        raise ValueError("run_block: work or values buffer too small")
    z, rest = work[: chunk * dims], work[chunk * dims :]
    paths, rest = rest[: chunk * m * width], rest[chunk * m * width :]
    ys, rest = rest[: chunk * m], rest[chunk * m :]
    xs, rest = rest[: chunk * m], rest[chunk * m :]
    y, x = rest[:chunk], rest[chunk : 2 * chunk]
    start = 0
    while start < units:
        c = min(chunk, units - start)
        fill(stream, start, c, dims, z)
        if greeks is not None and gacc is not None:
            out = _greek_work(greeks.rows, chunk)
            greeks.compute(z, c, out)
            accumulate_greeks(gacc, out, greeks.select, c)
        model_kernel(model_params, z, c, signs, paths)
        payoff_kernel(payoff_params, paths, m * c, ys, xs)
        merge(acc, scale, ys, xs, c, control, y, x)
        if keep:
            values[start : start + c] = y[:c]
        start += c


_greek_scratch = threading.local()


def _greek_work(rows: int, chunk: int) -> Array:
    """A (rows, chunk) buffer for a chunk's per-unit Greeks, kept per thread."""
    buf: Array | None = getattr(_greek_scratch, "buf", None)
    if buf is None or buf.shape[0] < rows or buf.shape[1] < chunk:
        buf = np.empty((rows, chunk))
        _greek_scratch.buf = buf
    return buf


# Regression paths (e.g. an American exercise rule) draw from SeedSequence(seed,
# spawn_key=(REGRESSION_KEY, 0)): a key of two entries, which no pricing block's (b,) can equal.
REGRESSION_KEY = 0x4C534D
_REGRESSION_CHUNK_NORMALS = 32768
_ONE_MIRROR = np.ones(1)


def regression_paths(model: ModelSetup, width: int, seed: int, count: int) -> Array:
    """`count` paths of the model on the payoff's dates, from plain pseudorandom normals of their
    own stream, as paths[k * count + q]: the same bits in every worker and in `mcop run`, whatever
    the shard count or the job's sampler."""
    gen = np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(REGRESSION_KEY, 0)))
    )
    chunk = max(8, (_REGRESSION_CHUNK_NORMALS // model.dims) // 8 * 8)
    z = np.empty(chunk * model.dims)
    part = np.empty(chunk * width)
    out = np.empty(count * width)
    start = 0
    while start < count:
        c = min(chunk, count - start)
        gen.standard_normal(out=z[: c * model.dims])
        model.kernel(model.params, z, c, _ONE_MIRROR, part)
        for k in range(width):
            out[k * count + start : k * count + start + c] = part[k * c : (k + 1) * c]
        start += c
    return out
