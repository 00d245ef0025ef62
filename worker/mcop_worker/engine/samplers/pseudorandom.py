"""Pseudorandom normals: the block's own numpy Generator (PCG64), drawn in order.

Block b draws from Generator(PCG64(SeedSequence(seed, spawn_key=(b,)))); a chunk of c units draws
its c * dims normals in the order dimension, unit: normal (dim, p) is draw number dim * c + p of
the chunk (see `blocks.py`): the units of a block are drawn in order (`first_unit` and `start`
are not needed). numba's `Generator.standard_normal` is numpy's own algorithm on the same bit
generator.

Handing a numpy Generator to a numba kernel costs ~20 us per call (numba rebuilds its view of the
bit generator through ctypes each time), so the stream wraps it once per block in a `Stream`
structref, which crosses into numba for ~1 us.
"""

from __future__ import annotations

from typing import Any

from numba import njit, types
from numba.experimental import structref
from numpy.random import PCG64, Generator, SeedSequence

from mcop_worker.model.spec import JobSpec


@structref.register
class _StreamType(types.StructRef):
    def preprocess_fields(self, fields: Any) -> Any:
        return tuple((name, types.unliteral(t)) for name, t in fields)  # type: ignore[no-untyped-call]


class Stream(structref.StructRefProxy):
    """A block's Generator, as numba sees it."""


structref.define_proxy(Stream, _StreamType, ["gen"])  # type: ignore[no-untyped-call]


def block_generator(seed: int, block: int) -> Generator:
    """The random stream of one block: independent of every other block and of the shards."""
    return Generator(PCG64(SeedSequence(seed, spawn_key=(block,))))


@njit(cache=True)
def _open(gen: Any) -> Any:
    return Stream(gen)  # type: ignore[no-untyped-call]


@njit(cache=True, nogil=True)
def _fill(stream: Any, z: Any, n: int) -> None:
    gen = stream.gen
    for i in range(n):
        z[i] = gen.standard_normal()


class Pseudorandom:
    def stream(self, seed: int, block: int, first_unit: int) -> Any:
        return _open(block_generator(seed, block))

    def fill(self, stream: Any, start: int, c: int, dims: int, z: Any) -> None:
        _fill(stream, z, c * dims)


_SAMPLER = Pseudorandom()


def setup(spec: JobSpec, dims: int) -> Pseudorandom:
    return _SAMPLER
