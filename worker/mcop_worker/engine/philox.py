"""Pseudorandom standard normals that vectorise: Philox4x32-10 and Box-Muller in plain arithmetic.

The pseudorandom sampler's generator (engine version 3). What it replaced, numpy's PCG64 with its
ziggurat `standard_normal`, is a sequential stream with a table look-up and a rejection branch
per draw: no compiler vectorises it, and on an AVX2 CPU drawing the normals was most of the
engine's time. Here every normal is a pure function of (key, counter), made of operations a
compiler turns into SIMD lanes:

* **Philox4x32-10** (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3",
  SC 2011; the generator of Random123, cuRAND and JAX): 10 rounds of two 32 x 32 -> 64-bit
  multiplies and XORs on a 128-bit counter under a 64-bit key. The multiplies are `vpmuludq` on
  AVX2 (4 lanes) and AVX-512 (8 lanes). Checked against Random123's known-answer vectors.
* **Box-Muller**: one Philox output (128 bits) per pair of normals. 52 bits make
  u in [2**-53, 1 - 2**-53] (so r = sqrt(-2 ln u) <= 8.57, never infinite), 2 bits a quadrant and
  52 bits an angle a in [-pi/4, pi/4); (cos, sin) of quadrant * pi/2 + a are r times cos a and
  sin a, swapped and negated by the quadrant. The angle is uniform on a full turn, which is all
  Box-Muller needs.
* Our own `ln` (x = m 2**e, the atanh series to s**23) and sin/cos of |a| <= pi/4 (Taylor to
  a**15 and a**16, error < 1e-16), evaluated by Estrin's scheme (short dependency chains: the loop
  is otherwise latency-bound). Only +, *, /, sqrt (IEEE-exact on every CPU), integer operations
  and bit casts; no libm, no fastmath, no FMA (LLVM contracts nothing without fastmath flags), no
  float <-> int conversion instruction (exponents and mantissas are moved by bit casts). So the
  normals are the same bits on SSE2, AVX2 and AVX-512, vectorised or not
  (`tests/test_engine_philox.py` compiles them for a generic x86-64 CPU and compares).

The stream of block b of a job with `seed`: the 4 words of
`SeedSequence(seed, spawn_key=(b,)).generate_state(4, uint32)` are the key (words 0, 1) and the
counter's upper half (words 2, 3); pair j of the block has counter (j mod 2**32, j >> 32, w2, w3),
and normals 2j and 2j + 1 of the block are its cosine and sine. A normal is addressed by its
number, so a chunk needs no state from the chunks before it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic
from numpy.random import SeedSequence

U64 = npt.NDArray[np.uint64]

ROUNDS = 10
_M0 = np.uint64(0xD2511F53)  # Philox4x32 multipliers
_M1 = np.uint64(0xCD9E8D57)
_W0 = 0x9E3779B9  # key schedule (Weyl) increments
_W1 = 0xBB67AE85
_MASK = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
STREAM_WORDS = 2 * ROUNDS + 2  # the round keys, then counter words 2 and 3


def round_keys(k0: int, k1: int) -> U64:
    """The 10 round keys (k0 + r W0, k1 + r W1) mod 2**32, as 20 uint64 words."""
    out = np.empty(2 * ROUNDS, dtype=np.uint64)
    for r in range(ROUNDS):
        out[2 * r] = (k0 + r * _W0) & 0xFFFFFFFF
        out[2 * r + 1] = (k1 + r * _W1) & 0xFFFFFFFF
    return out


def block_stream(seed: int, block: int) -> U64:
    """Block `block`'s stream: its round keys and the upper counter words (module docstring)."""
    w = SeedSequence(seed, spawn_key=(block,)).generate_state(4, np.uint32)
    stream = np.empty(STREAM_WORDS, dtype=np.uint64)
    stream[: 2 * ROUNDS] = round_keys(int(w[0]), int(w[1]))
    stream[2 * ROUNDS] = w[2]
    stream[2 * ROUNDS + 1] = w[3]
    return stream


# -- bit casts (no conversion instruction: AVX2 has none for 64-bit integers) ---------------------


def _u64_as_f64_typer(typingctx: Any, bits: Any) -> Any:
    sig = types.float64(types.uint64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


def _f64_as_u64_typer(typingctx: Any, x: Any) -> Any:
    sig = types.uint64(types.float64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


_u64_as_f64: Any = intrinsic(_u64_as_f64_typer)
_f64_as_u64: Any = intrinsic(_f64_as_u64_typer)


# -- Philox4x32-10 ------------------------------------------------------------------------------


@njit(inline="always", cache=True)
def _round(x0: Any, x1: Any, x2: Any, x3: Any, k0: Any, k1: Any) -> Any:
    p0 = _M0 * x0
    p1 = _M1 * x2
    return (p1 >> _S32) ^ x1 ^ k0, p1 & _MASK, (p0 >> _S32) ^ x3 ^ k1, p0 & _MASK


@njit(inline="always", cache=True)
def philox(keys: Any, x0: Any, x1: Any, x2: Any, x3: Any) -> Any:
    """Philox4x32-10 of the counter (x0, x1, x2, x3) (each < 2**32, as uint64) under the round
    keys `keys` (`round_keys`). The masks tell LLVM the keys fit 32 bits, so every multiply is one
    32 x 32 -> 64-bit instruction."""
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, keys[0] & _MASK, keys[1] & _MASK)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, keys[2] & _MASK, keys[3] & _MASK)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, keys[4] & _MASK, keys[5] & _MASK)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, keys[6] & _MASK, keys[7] & _MASK)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, keys[8] & _MASK, keys[9] & _MASK)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, keys[10] & _MASK, keys[11] & _MASK)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, keys[12] & _MASK, keys[13] & _MASK)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, keys[14] & _MASK, keys[15] & _MASK)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, keys[16] & _MASK, keys[17] & _MASK)
    x0, x1, x2, x3 = _round(x0, x1, x2, x3, keys[18] & _MASK, keys[19] & _MASK)
    return x0, x1, x2, x3


@njit(cache=True)
def philox_array(keys: Any, counters: Any, out: Any) -> None:
    """out[i] = Philox4x32-10(counters[i]) for (n, 4) uint64 arrays (tests)."""
    for i in range(counters.shape[0]):
        a, b, c, d = philox(keys, counters[i, 0], counters[i, 1], counters[i, 2], counters[i, 3])
        out[i, 0] = a
        out[i, 1] = b
        out[i, 2] = c
        out[i, 3] = d


# -- Box-Muller in plain arithmetic -------------------------------------------------------------

_ONE = np.uint64(0x3FF0000000000000)  # the bits of 1.0
_MANTISSA = np.uint64(0x000FFFFFFFFFFFFF)
_TWO52 = np.uint64(0x4330000000000000)  # the bits of 2**52: OR-ing in k < 2**52 gives 2**52 + k
_HALF_ULP = 2.0**-53
_SQRT2 = 1.4142135623730951
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that e * _LN2_HI is exact for |e| < 2**11
_LN2_LO = 1.90821492927058770002e-10
_HALF_PI = math.pi / 2
_F = [1.0 / math.factorial(k) for k in range(17)]


@njit(inline="always", cache=True)
def ln_unit(u: float) -> float:
    """ln u for a normal positive u (here u in (0, 1)): u = m 2**e with m in [sqrt(1/2), sqrt(2)),
    ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, odd series to s**23 (within 5 ulp)."""
    bits = _f64_as_u64(u)
    m = _u64_as_f64((bits & _MANTISSA) | _ONE)  # [1, 2)
    big = m > _SQRT2
    m = m * 0.5 if big else m
    e = _u64_as_f64(_TWO52 | (bits >> np.uint64(52))) - (4503599627370496.0 + 1023.0)
    e = e + 1.0 if big else e
    s = (m - 1.0) / (m + 1.0)
    t = s * s
    t2 = t * t
    t4 = t2 * t2
    b0 = (1.0 + t * (1.0 / 3.0)) + t2 * (1.0 / 5.0 + t * (1.0 / 7.0))
    b1 = (1.0 / 9.0 + t * (1.0 / 11.0)) + t2 * (1.0 / 13.0 + t * (1.0 / 15.0))
    b2 = (1.0 / 17.0 + t * (1.0 / 19.0)) + t2 * (1.0 / 21.0 + t * (1.0 / 23.0))
    p = (b0 + t4 * b1) + (t4 * t4) * b2
    ln: float = (e * _LN2_HI + 2.0 * s * p) + e * _LN2_LO
    return ln


_S3, _S5, _S7, _S9, _S11, _S13, _S15 = -_F[3], _F[5], -_F[7], _F[9], -_F[11], _F[13], -_F[15]
_C2, _C4, _C6, _C8 = -_F[2], _F[4], -_F[6], _F[8]
_C10, _C12, _C14, _C16 = -_F[10], _F[12], -_F[14], _F[16]


@njit(inline="always", cache=True)
def _sin_cos(a: float) -> tuple[float, float]:
    """sin a and cos a for |a| <= pi/4 (Taylor to a**15 and a**16, Estrin)."""
    t = a * a
    t2 = t * t
    t4 = t2 * t2
    sp = ((_S3 + t * _S5) + t2 * (_S7 + t * _S9)) + t4 * ((_S11 + t * _S13) + t2 * _S15)
    cp = ((_C2 + t * _C4) + t2 * (_C6 + t * _C8)) + t4 * (
        (_C10 + t * _C12) + t2 * (_C14 + t * _C16)
    )
    return a + a * (t * sp), 1.0 + t * cp


@njit(inline="always", cache=True)
def normal_pair(keys: Any, j: Any, h2: Any, h3: Any) -> tuple[float, float]:
    """Normals 2j and 2j + 1 of the stream (keys, h2, h3): Box-Muller on Philox4x32-10 of
    counter (j mod 2**32, j >> 32, h2, h3)."""
    x0, x1, x2, x3 = philox(keys, j & _MASK, j >> _S32, h2, h3)
    mant = (x1 << np.uint64(20)) | (x0 >> np.uint64(12))  # 52 bits
    u = (_u64_as_f64(mant | _ONE) - 1.0) + _HALF_ULP  # exact: (2 mant + 1) 2**-53
    frac = ((x3 & np.uint64(0x3FFFFFFF)) << np.uint64(22)) | (x2 >> np.uint64(10))  # 52 bits
    a = (_u64_as_f64(frac | _ONE) - 1.5) * _HALF_PI  # [-pi/4, pi/4)
    quadrant = x3 >> np.uint64(30)
    sn, cs = _sin_cos(a)
    r = math.sqrt(-2.0 * ln_unit(u))
    # (cos, sin) of quadrant * pi/2 + a: swap for odd quadrants, then the signs by bit flips
    odd = (quadrant & np.uint64(1)) != 0
    c = sn if odd else cs
    s = cs if odd else sn
    c_sign = ((quadrant ^ (quadrant >> np.uint64(1))) & np.uint64(1)) << np.uint64(63)  # 1, 2
    s_sign = (quadrant >> np.uint64(1)) << np.uint64(63)  # quadrants 2, 3
    return _u64_as_f64(_f64_as_u64(r * c) ^ c_sign), _u64_as_f64(_f64_as_u64(r * s) ^ s_sign)


@njit(cache=True, nogil=True, error_model="numpy")
def fill(stream: Any, first: int, n: int, z: Any) -> None:
    """z[:n] = normals first..first+n-1 of a block's stream (`block_stream`).

    Two independent halves per loop iteration: each lane's work is a long chain of dependent
    operations, and two chains keep the CPU's units busy. (error_model="numpy": IEEE division,
    without the zero check that would keep LLVM from vectorising.)"""
    keys = stream[: 2 * ROUNDS]
    h2 = stream[2 * ROUNDS]
    h3 = stream[2 * ROUNDS + 1]
    i = 0
    if first & 1 and n > 0:
        z[0] = normal_pair(keys, np.uint64(first >> 1), h2, h3)[1]
        i = 1
    j0 = (first + i) >> 1
    pairs = (n - i) >> 1
    half = pairs >> 1
    for q in range(half):
        a, b = normal_pair(keys, np.uint64(j0 + q), h2, h3)
        c, d = normal_pair(keys, np.uint64(j0 + half + q), h2, h3)
        z[i + 2 * q] = a
        z[i + 2 * q + 1] = b
        z[i + 2 * (half + q)] = c
        z[i + 2 * (half + q) + 1] = d
    if pairs & 1:
        a, b = normal_pair(keys, np.uint64(j0 + pairs - 1), h2, h3)
        z[i + 2 * (pairs - 1)] = a
        z[i + 2 * (pairs - 1) + 1] = b
    if (n - i) & 1:
        z[n - 1] = normal_pair(keys, np.uint64(j0 + pairs), h2, h3)[0]


@njit(cache=True, error_model="numpy")
def ln_array(x: Any, out: Any) -> None:
    """Element-wise ln_unit (tests)."""
    for i in range(x.size):
        out[i] = ln_unit(x[i])
