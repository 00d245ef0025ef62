"""The version of the numbers: what a result was computed with, so that a cached or stored result
is only ever reused by an engine that would produce the same bits.

`ENGINE_VERSION` is the engine's algorithm (block decomposition, streams, kernels, estimators); the
engine bumps it whenever a change alters any bit of any result. It enters `specHash` and every
stored `BlockStats`.
"""

from __future__ import annotations

ENGINE_VERSION = 1
