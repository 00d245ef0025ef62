"""The version of the numbers: what a result was computed with, so that a cached or stored result
is only ever reused by an engine that would produce the same bits.

`ENGINE_VERSION` is the engine's algorithm (block decomposition, streams, kernels, estimators); the
engine bumps it whenever a change alters any bit of any result. It enters `specHash` and every
stored `BlockStats`.

`build()` adds what else decides the bits: numpy (its Generator's streams and its elementwise
functions) and numba (the kernels' code generation). Both enter `specHash`, so a build with another
numpy or numba never reuses a result (cache, stored blocks) another build computed.
"""

from __future__ import annotations

import functools
from importlib import metadata

ENGINE_VERSION = 3
# 2: the control variate's coefficient is cross-fitted over blocks (and applied from 500 sample
#    units on); small jobs have 13-16 blocks.
# 3: pseudorandom normals from Philox4x32-10 + Box-Muller (engine/philox.py) instead of numpy's
#    PCG64 + ziggurat; fexp's polynomial evaluated by Estrin's scheme (a few ulp apart).

# The distributions whose versions can change the numbers.
NUMERIC_DISTRIBUTIONS = ("numpy", "numba")


@functools.cache
def build() -> dict[str, str | int]:
    """{"engine": ENGINE_VERSION, "numpy": "2.3.5", "numba": "0.62.1"}: read from the installed
    distributions' metadata (without importing numba, which takes a second)."""
    doc: dict[str, str | int] = {"engine": ENGINE_VERSION}
    for name in NUMERIC_DISTRIBUTIONS:
        doc[name] = metadata.version(name)
    return doc
