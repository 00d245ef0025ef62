"""Scrambled Sobol' points, turned into standard normals, with a Brownian bridge for paths.

The parts, each a numba kernel or a small function, so a sampler can chain them per chunk:

* `direction_numbers(dims)`: the Joe-Kuo (new-joe-kuo-6.21201) direction numbers as 64-bit
  integers, V[d, k] holding digit k (most significant first) in bit 63 - k. Gray-code order:
  point i is the XOR of V[d, k] over the set bits k of gray(i) = i ^ (i >> 1), so the first
  2^m points are the same set as in natural order (a (t, m, s)-net) and a block can start at any
  index (`sobol_integers`).
* `scrambling(dims, seed, randomization)`: Matousek's linear matrix scramble plus a digital shift
  (LMS + DS), drawn from Generator(PCG64(SeedSequence(seed, spawn_key=(SOBOL_STREAM,
  randomization)))): a random lower-triangular binary matrix with unit diagonal per dimension
  mixes each digit with the more significant ones (applied to the direction numbers, since the
  map is linear over GF(2)), and a random 64-bit XOR shifts the result. Every point of a scrambled
  set is uniform on (0, 1)^dims and the net property is kept, so the mean over one randomization
  is unbiased and R independent randomizations give an honest standard error.
* `to_uniform`: the top 53 bits and half an ulp, so u is in (0, 1), never 0 or 1.
* `ndtri`: the inverse normal cdf (Wichura's AS241, ~1e-16 relative), built on our own `flog`
  (+, *, / and an exponent-field bitcast: the same bits on any CPU, like kernels.fexp).
* `bridge_plan(steps)` and `brownian_bridge`: QuantLib's BrownianBridge construction on unit
  steps: dimension 0 sets the terminal value, the next ones the midpoints, so the first (best
  distributed) Sobol' dimensions carry most of the path's variance. Its output is the standard
  normal increments z_k = W(k) - W(k - 1), the same input the path kernels take from a
  pseudorandom stream.

`fill_normals_chunk` chains them: the normals of points start..start+c-1 in the kernels' layout
(normal (k, j, p) at (k * assets + j) * c + p: step, asset, point).
"""

from __future__ import annotations

import functools
import math
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic
from numpy.random import PCG64, Generator, SeedSequence

BITS = 64
MAX_DIMS = 21201  # rows of new-joe-kuo-6.21201
SOBOL_STREAM = 0x536F626F  # "Sobo": the scramblings' SeedSequence key, apart from block streams
DATA = "joe_kuo_6_21201.npz"

U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]


# -- direction numbers --------------------------------------------------------------------------


@functools.cache
def _joe_kuo() -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint32]]:
    with resources.files("mcop_worker.engine").joinpath("data", DATA).open("rb") as f:
        data = np.load(f)
        return data["poly"].copy(), data["vinit"].copy()


@njit(cache=True)
def _direction_kernel(poly: Any, vinit: Any, dims: int, out: Any) -> None:
    """out[d, k] = m_{k+1} << (63 - k) with m from the primitive polynomial's recurrence."""
    for k in range(BITS):
        out[0, k] = np.uint64(1) << np.uint64(63 - k)  # dimension 0: van der Corput
    for d in range(1, dims):
        p = np.uint64(poly[d])
        s = 0
        while (p >> np.uint64(s + 1)) != 0:
            s += 1  # degree of the polynomial
        m = np.zeros(BITS, dtype=np.uint64)
        for k in range(s):
            m[k] = np.uint64(vinit[d, k])
        for k in range(s, BITS):
            new = m[k - s] ^ (m[k - s] << np.uint64(s))
            for i in range(1, s):
                if (p >> np.uint64(s - i)) & np.uint64(1):
                    new ^= m[k - i] << np.uint64(i)
            m[k] = new
        for k in range(BITS):
            out[d, k] = m[k] << np.uint64(63 - k)


@functools.lru_cache(maxsize=8)
def direction_numbers(dims: int) -> U64:
    """Direction numbers of the first `dims` dimensions, (dims, 64) uint64 (read-only)."""
    if not 1 <= dims <= MAX_DIMS:
        raise ValueError(f"Sobol' points have 1 to {MAX_DIMS} dimensions, not {dims}")
    poly, vinit = _joe_kuo()
    out = np.zeros((dims, BITS), dtype=np.uint64)
    _direction_kernel(poly, vinit, dims, out)
    out.flags.writeable = False
    return out


# -- scrambling ---------------------------------------------------------------------------------


@njit(cache=True)
def _parity(x: Any) -> Any:
    x ^= x >> np.uint64(32)
    x ^= x >> np.uint64(16)
    x ^= x >> np.uint64(8)
    x ^= x >> np.uint64(4)
    x ^= x >> np.uint64(2)
    x ^= x >> np.uint64(1)
    return x & np.uint64(1)


@njit(cache=True)
def _lms_kernel(v: Any, raw: Any, out: Any) -> None:
    """out[d, j] = L_d v[d, j]: digit k of the result is the parity of (row k of L_d) & v."""
    dims = v.shape[0]
    for d in range(dims):
        for k in range(BITS):
            own = np.uint64(1) << np.uint64(63 - k)
            above = ~((own << np.uint64(1)) - np.uint64(1)) if k > 0 else np.uint64(0)
            row = (raw[d, k] & above) | own  # unit diagonal, random above it, zero below
            for j in range(BITS):
                if _parity(row & v[d, j]):
                    out[d, j] |= own


@functools.lru_cache(maxsize=64)
def scrambling(dims: int, seed: int, randomization: int) -> tuple[U64, U64]:
    """(scrambled direction numbers (dims, 64), digital shift (dims,)) of one randomization."""
    gen = Generator(PCG64(SeedSequence(seed, spawn_key=(SOBOL_STREAM, randomization))))
    raw = gen.bit_generator.random_raw(dims * BITS).astype(np.uint64).reshape(dims, BITS)
    shift = gen.bit_generator.random_raw(dims).astype(np.uint64)
    out = np.zeros((dims, BITS), dtype=np.uint64)
    _lms_kernel(direction_numbers(dims), raw, out)
    out.flags.writeable = False
    shift.flags.writeable = False
    return out, shift


def unscrambled(dims: int) -> tuple[U64, U64]:
    """The plain Sobol' sequence (tests): the direction numbers and a zero shift."""
    return direction_numbers(dims), np.zeros(dims, dtype=np.uint64)


# -- where a block's points are (the plan: blocks.plan_sobol_blocks) ---------------------------


def block_points(block: int, randomizations: int, block_units: int) -> tuple[int, int]:
    """(randomization, index of the block's first point) of `block` when R randomizations are cut
    into blocks of `block_units` points in doubling rounds: round 0 is block 0 of each
    randomization (points 0..b-1), round j >= 1 holds points b 2^(j-1)..b 2^j - 1 of randomization
    0, then 1, ...: blocks R 2^(j-1)..R 2^j - 1. So the prefix that ends a round holds the first
    b 2^j points (a scrambled (t, m, s)-net) of every randomization."""
    if block < randomizations:
        return block, 0
    half = 1 << ((block // randomizations).bit_length() - 1)  # 2^(j-1) blocks per randomization
    offset = block - randomizations * half
    return offset // half, block_units * (half + offset % half)


# -- points -------------------------------------------------------------------------------------


@njit(cache=True)
def _point_at(v: Any, d: int, index: int) -> Any:
    """Integer point `index` (Gray-code order) in dimension d, unshifted."""
    g = np.uint64(index) ^ (np.uint64(index) >> np.uint64(1))
    x = np.uint64(0)
    k = 0
    while g != 0:
        if g & np.uint64(1):
            x ^= v[d, k]
        g >>= np.uint64(1)
        k += 1
    return x


@njit(cache=True)
def _trailing_zeros(i: Any) -> int:
    n = 0
    while (i & np.uint64(1)) == 0:
        i >>= np.uint64(1)
        n += 1
    return n


@njit(cache=True)
def sobol_integers(v: Any, shift: Any, start: int, n: int, out: Any) -> None:
    """out[d, p] = (point start + p, dimension d) as a 64-bit integer (out is (dims, >= n))."""
    dims = v.shape[0]
    for d in range(dims):
        x = _point_at(v, d, start)
        s = shift[d]
        for p in range(n):
            out[d, p] = x ^ s
            x ^= v[d, _trailing_zeros(np.uint64(start + p + 1))]


_TWO_M53 = 1.0 / 9007199254740992.0


@njit(inline="always", cache=True)
def to_uniform(x: Any) -> float:
    """The top 53 bits of x plus half an ulp: in (0, 1), symmetric about 1/2."""
    return (float(x >> np.uint64(11)) + 0.5) * _TWO_M53


# -- log and the inverse normal cdf, platform-independent ---------------------------------------


@intrinsic
def _float64_bits(typingctx: Any, x: Any) -> Any:
    sig = types.int64(types.float64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


@intrinsic
def _bits_float64(typingctx: Any, bits: Any) -> Any:
    sig = types.float64(types.int64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_SQRT_HALF = 0.70710678118654752440


@njit(inline="always", cache=True)
def flog(x: float) -> float:
    """ln x for normal positive x: x = 2^e m, m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s),
    s = (m - 1) / (m + 1), |s| < 0.172, by its odd series to s^23 (error < 1e-17 relative)."""
    bits: int = _float64_bits(x)  # type: ignore[call-arg]
    e = (bits >> 52) - 1023
    mantissa = (bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000
    m: float = _bits_float64(mantissa)
    if m > 2.0 * _SQRT_HALF:
        m *= 0.5
        e += 1
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    p = 1.0 / 23.0
    p = 1.0 / 21.0 + s2 * p
    p = 1.0 / 19.0 + s2 * p
    p = 1.0 / 17.0 + s2 * p
    p = 1.0 / 15.0 + s2 * p
    p = 1.0 / 13.0 + s2 * p
    p = 1.0 / 11.0 + s2 * p
    p = 1.0 / 9.0 + s2 * p
    p = 1.0 / 7.0 + s2 * p
    p = 1.0 / 5.0 + s2 * p
    p = 1.0 / 3.0 + s2 * p
    p = 1.0 + s2 * p
    ef = float(e)
    return (ef * _LN2_HI + 2.0 * s * p) + ef * _LN2_LO


# Wichura's AS241 (PPND16) coefficients, highest degree first: numerator and denominator of the
# central region |u - 1/2| <= 0.425, of r = sqrt(-ln(min(u, 1 - u))) <= 5 and of r > 5.
_A = (2509.0809287301226727, 33430.575583588128105, 67265.770927008700853,
      45921.953931549871457, 13731.693765509461125, 1971.5909503065514427,
      133.14166789178437745, 3.387132872796366608)  # fmt: skip
_B = (5226.495278852545925, 28729.085735721942674, 39307.89580009271061,
      21213.794301586595867, 5394.1960214247511077, 687.1870074920579083,
      42.313330701600911252, 1.0)  # fmt: skip
_C = (7.7454501427834140764e-4, 0.0227238449892691845833, 0.24178072517745061177,
      1.27045825245236838258, 3.64784832476320460504, 5.7694972214606914055,
      4.6303378461565452959, 1.42343711074968357734)  # fmt: skip
_D = (1.05075007164441684324e-9, 5.475938084995344946e-4, 0.0151986665636164571966,
      0.14810397642748007459, 0.68976733498510000455, 1.6763848301838038494,
      2.05319162663775882187, 1.0)  # fmt: skip
_E = (2.01033439929228813265e-7, 2.71155556874348757815e-5, 0.0012426609473880784386,
      0.026532189526576123093, 0.29656057182850489123, 1.7848265399172913358,
      5.4637849111641143699, 6.6579046435011037772)  # fmt: skip
_F = (2.04426310338993978564e-15, 1.4215117583164458887e-7, 1.8463183175100546818e-5,
      7.868691311456132591e-4, 0.0148753612908506148525, 0.13692988092273580531,
      0.59983220655588793769, 1.0)  # fmt: skip


@njit(inline="always", cache=True)
def _horner(coefs: Any, r: float) -> float:
    p = 0.0
    for a in coefs:
        p = p * r + a
    return p


@njit(inline="always", cache=True)
def ndtri(u: float) -> float:
    """The standard normal quantile of u in (0, 1): Wichura's AS241 (PPND16)."""
    q = u - 0.5
    if abs(q) <= 0.425:
        r = 0.180625 - q * q
        return q * _horner(_A, r) / _horner(_B, r)
    r = math.sqrt(-flog(u if q < 0.0 else 1.0 - u))
    if r <= 5.0:
        x = _horner(_C, r - 1.6) / _horner(_D, r - 1.6)
    else:
        x = _horner(_E, r - 5.0) / _horner(_F, r - 5.0)
    return -x if q < 0.0 else x


@njit(cache=True)
def ndtri_array(u: Any, out: Any) -> None:
    """Element-wise ndtri (tests)."""
    for i in range(u.size):
        out[i] = ndtri(u[i])


@njit(cache=True)
def flog_array(x: Any, out: Any) -> None:
    """Element-wise flog (tests)."""
    for i in range(x.size):
        out[i] = flog(x[i])


@njit(cache=True)
def uniform_array(x: Any, out: Any) -> None:
    """Element-wise to_uniform (tests)."""
    for i in range(x.size):
        out[i] = to_uniform(x[i])


# -- Brownian bridge ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def bridge_plan(steps: int) -> tuple[npt.NDArray[np.int64], F64]:
    """QuantLib's BrownianBridge on the unit grid 1..steps: rows (bridge, left, right) of int
    indices and rows (left weight, right weight, sd) of floats, one column per dimension.
    Dimension 0 gives W(steps) = sd * z; dimension i puts W at `bridge` between the known
    values at `left` - 1 (or 0 when left == 0) and `right`."""
    t = [float(k + 1) for k in range(steps)]
    filled = [0] * steps
    index = np.zeros((3, steps), dtype=np.int64)
    weight = np.zeros((3, steps), dtype=np.float64)
    filled[steps - 1] = 1
    index[0, 0] = steps - 1
    weight[2, 0] = t[steps - 1] ** 0.5
    j = 0
    for i in range(1, steps):
        while filled[j]:
            j += 1
        k = j
        while not filled[k]:
            k += 1
        mid = j + ((k - 1 - j) >> 1)  # j..k-1 unknown, k known
        filled[mid] = i + 1
        index[:, i] = (mid, j, k)
        t_left = t[j - 1] if j else 0.0
        span = t[k] - t_left
        weight[0, i] = (t[k] - t[mid]) / span
        weight[1, i] = (t[mid] - t_left) / span
        weight[2, i] = ((t[mid] - t_left) * (t[k] - t[mid]) / span) ** 0.5
        j = k + 1
        if j >= steps:
            j = 0
    index.flags.writeable = False
    weight.flags.writeable = False
    return index, weight


@njit(cache=True)
def brownian_bridge(
    index: Any, weight: Any, g: Any, c: int, assets: int, asset: int, out: Any
) -> None:
    """One asset's path from its bridge-ordered normals to its increments, for c points:
    g[(i * assets + asset) * c + p] is bridge dimension i's normal; out[(k * assets + asset) *
    c + p] receives W(k + 1) - W(k). `out` and `g` must not overlap."""
    steps = index.shape[1]
    last = index[0, 0]
    sd0 = weight[2, 0]
    base_in = asset * c
    base_out = (last * assets + asset) * c
    for p in range(c):
        out[base_out + p] = sd0 * g[base_in + p]
    for i in range(1, steps):
        mid = index[0, i]
        left = index[1, i]
        right = index[2, i]
        wl = weight[0, i]
        wr = weight[1, i]
        sd = weight[2, i]
        src = (i * assets + asset) * c
        dst = (mid * assets + asset) * c
        r0 = (right * assets + asset) * c
        if left:
            l0 = ((left - 1) * assets + asset) * c
            for p in range(c):
                out[dst + p] = (wl * out[l0 + p] + wr * out[r0 + p]) + sd * g[src + p]
        else:
            for p in range(c):
                out[dst + p] = wr * out[r0 + p] + sd * g[src + p]
    for k in range(steps - 1, 0, -1):
        hi = (k * assets + asset) * c
        lo = ((k - 1) * assets + asset) * c
        for p in range(c):
            out[hi + p] = out[hi + p] - out[lo + p]


@njit(cache=True, nogil=True)
def fill_normals_chunk(
    v: Any,  # scrambled direction numbers, (steps * assets, 64)
    shift: Any,  # (steps * assets,)
    start: int,  # index of the chunk's first point in its randomization's sequence
    c: int,  # points in the chunk
    steps: int,
    assets: int,
    bridge: bool,  # path-dependent: the dimensions go through the Brownian bridge
    index: Any,  # bridge_plan(steps)[0] (ignored without the bridge)
    weight: Any,  # bridge_plan(steps)[1]
    ints: Any,  # scratch: >= c uint64
    g: Any,  # scratch: >= steps * assets * c floats (the bridge's input)
    out: Any,  # the normals, normal (k, j, p) at (k * assets + j) * c + p
) -> None:
    dims = steps * assets
    target = g if bridge else out
    for d in range(dims):
        x = _point_at(v, d, start)
        s = shift[d]
        base = d * c
        for p in range(c):
            ints[p] = x ^ s
            x ^= v[d, _trailing_zeros(np.uint64(start + p + 1))]
        for p in range(c):
            target[base + p] = ndtri(to_uniform(ints[p]))
    if bridge:
        for j in range(assets):
            brownian_bridge(index, weight, g, c, assets, j, out)
