"""Pseudorandom normals: the block's own Philox4x32-10 stream through Box-Muller (`philox.py`).

Block b's stream is keyed by SeedSequence(seed, spawn_key=(b,)) (`philox.block_stream`); normal i
of the block is a function of i alone, and a chunk of c units starting at unit `start` of the
block takes normals start * dims .. (start + c) * dims - 1 in the order dimension, unit: normal
(dim, p) of the chunk is normal start * dims + dim * c + p of the block (see `blocks.py`). So the
units of a block are drawn in order, as from a sequential stream, and any chunk can be drawn on
its own.
"""

from __future__ import annotations

from typing import Any

from mcop_worker.engine import philox
from mcop_worker.model.spec import JobSpec


class Pseudorandom:
    def stream(self, seed: int, block: int, first_unit: int) -> philox.U64:
        return philox.block_stream(seed, block)

    def fill(self, stream: Any, start: int, c: int, dims: int, z: Any) -> None:
        philox.fill(stream, start * dims, c * dims, z)


_SAMPLER = Pseudorandom()


def setup(spec: JobSpec, dims: int) -> Pseudorandom:
    return _SAMPLER
