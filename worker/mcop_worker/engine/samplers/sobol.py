"""Randomized quasi-Monte Carlo normals: scrambled Sobol' points through the inverse normal cdf,
with a Brownian bridge over the dates of a path (engine/sobol.py has the kernels).

Block b belongs to randomization r and holds points start..start+units-1 of its point set
(`BlockPlan.sobol_block`); the block's stream is that randomization's scrambling
(`sobol.scrambling(dims, seed, r)`, the same in every worker) and the index of its first point, so
the normals of unit `start + p` of the block are those of point first + start + p, whichever shard
computes it. Dimensions: date k, factor j (the model's normals per date: assets for GBM) is
dimension k * factors + j of the model; with a bridge, Sobol' dimension i * factors + j drives
bridge step i of factor j, so each factor's terminal value takes one of the first dimensions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from mcop_worker.engine import sobol
from mcop_worker.model.spec import PATH_DEPENDENT, JobSpec

U64 = npt.NDArray[np.uint64]


class Stream:
    """One block's state: its randomization's scrambling, its first point, scratch buffers."""

    def __init__(self, directions: U64, shift: U64, first_point: int, dims: int) -> None:
        self.directions = directions
        self.shift = shift
        self.first_point = first_point
        self.dims = dims
        self.ints = np.empty(0, dtype=np.uint64)
        self.bridge_in = np.empty(0)

    def scratch(self, c: int, bridge: bool) -> tuple[U64, npt.NDArray[np.float64]]:
        if self.ints.size < c:
            self.ints = np.empty(c, dtype=np.uint64)
            self.bridge_in = np.empty(c * self.dims if bridge else 0)
        return self.ints, self.bridge_in


class Sobol:
    def __init__(self, spec: JobSpec, dims: int) -> None:
        inst = spec.instrument
        self.randomizations = spec.sampler.randomizations
        self.dims = dims
        self.steps = inst.steps if inst.type in PATH_DEPENDENT and inst.steps else 1
        if dims % self.steps:
            raise ValueError(f"{dims} normals per path do not split into {self.steps} dates")
        self.factors = dims // self.steps
        self.bridge = self.steps > 1
        self.index, self.weight = sobol.bridge_plan(self.steps)

    def stream(self, seed: int, block: int, first_unit: int) -> Stream:
        # Every block has the same number of points: first_unit = block x block_units.
        block_units = first_unit // block if block else 0
        r, first_point = sobol.block_points(block, self.randomizations, block_units)
        directions, shift = sobol.scrambling(self.dims, seed, r)
        return Stream(directions, shift, first_point, self.dims)

    def fill(self, stream: Any, start: int, c: int, dims: int, z: Any) -> None:
        ints, bridge_in = stream.scratch(c, self.bridge)
        sobol.fill_normals_chunk(
            stream.directions,
            stream.shift,
            stream.first_point + start,
            c,
            self.steps,
            self.factors,
            self.bridge,
            self.index,
            self.weight,
            ints,
            bridge_in,
            z,
        )


def setup(spec: JobSpec, dims: int) -> Sobol:
    return Sobol(spec, dims)
