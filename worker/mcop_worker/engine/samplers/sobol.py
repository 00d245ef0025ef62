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

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mcop_worker.engine import sobol
from mcop_worker.model.spec import PATH_DEPENDENT, JobSpec


@dataclass(frozen=True)
class Stream:
    directions: npt.NDArray[np.uint64]
    shift: npt.NDArray[np.uint64]
    first_point: int
    index: npt.NDArray[np.int64]
    weight: npt.NDArray[np.float64]
    ints: npt.NDArray[np.uint64]  # scratch
    bridge_in: npt.NDArray[np.float64]  # scratch


class Sobol:
    def __init__(self, spec: JobSpec, dims: int) -> None:
        inst = spec.instrument
        self.spec = spec
        self.dims = dims
        self.steps = inst.steps if inst.type in PATH_DEPENDENT and inst.steps else 1
        if dims % self.steps:
            raise ValueError(f"{dims} normals per path do not split into {self.steps} dates")
        self.factors = dims // self.steps
        self.bridge = self.steps > 1

    def stream(self, seed: int, block: int, first_unit: int) -> Stream:
        from mcop_worker.engine.blocks import plan_blocks  # blocks -> registry -> here

        plan = plan_blocks(self.spec)
        r, first_point = plan.sobol_block(block)
        directions, shift = sobol.scrambling(self.dims, seed, r)
        index, weight = sobol.bridge_plan(self.steps)
        chunk = plan.chunk_units
        return Stream(
            directions,
            shift,
            first_point,
            index,
            weight,
            np.empty(chunk, dtype=np.uint64),
            np.empty(chunk * self.dims if self.bridge else 0),
        )

    def fill(self, stream: Any, start: int, c: int, dims: int, z: Any) -> None:
        sobol.fill_normals_chunk(
            stream.directions,
            stream.shift,
            stream.first_point + start,
            c,
            self.steps,
            self.factors,
            self.bridge,
            stream.index,
            stream.weight,
            stream.ints,
            stream.bridge_in,
            z,
        )


def setup(spec: JobSpec, dims: int) -> Sobol:
    return Sobol(spec, dims)
