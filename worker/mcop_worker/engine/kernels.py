"""numba primitives shared by the engine's parts: the exponential and accumulating.

The parts (models, samplers, payoffs, estimators: see `composition.py`) are numba kernels over one
chunk of sample units; they build on these. (The pseudorandom normals are `philox.py`'s.)

Determinism: no fastmath, so every floating-point operation is the IEEE operation written here,
in the order written (vectorising an element-wise loop does not change its results); the
exponential is our own (`fexp`, ~3 ulp) built from additions and multiplications only, so it
vectorises and does not depend on the platform's libm. Reductions use 8 partial sums combined in
a fixed order (fast, and still the same bits on any CPU).

Statistics per chunk are a two-pass mean and centred sums, merged into the block's accumulator
`acc = [count, mean_y, m2_y, mean_x, m2_x, cov_xy]` with the Chan-Golub-LeVeque update.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

# -- exp from +, *, and an exponent-field bitcast: vectorisable, platform-independent -------------

_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact for |k| < 2**11
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
_EXP_LIMIT = 700.0  # prices beyond e**700 are meaningless; clamping keeps the bit trick valid


@intrinsic
def _int64_bits_as_float64(typingctx: Any, bits: Any) -> Any:
    sig = types.float64(types.int64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@intrinsic
def _float64_bits_as_int64(typingctx: Any, x: Any) -> Any:
    sig = types.int64(types.float64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


_ROUND_MAGIC = 6755399441055744.0  # 1.5 * 2**52
_ROUND_MAGIC_BITS = 0x4338000000000000  # its bits


_E2, _E3, _E4, _E5, _E6, _E7, _E8, _E9, _E10, _E11, _E12 = (
    1.0 / math.factorial(n) for n in range(2, 13)
)


@njit(inline="always", cache=True)
def fexp(x: float) -> float:
    """exp(x) for |x| <= 700 within ~3 ulp: 2**k * exp(r), |r| <= ln2/2, degree-12 Taylor,
    evaluated by Estrin's scheme (engine version 3: Horner's chain of 12 dependent multiply-adds
    made element-wise loops latency-bound)."""
    x = min(max(x, -_EXP_LIMIT), _EXP_LIMIT)
    k = math.floor(x * _INV_LN2 + 0.5)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    r2 = r * r
    r4 = r2 * r2
    b0 = (1.0 + r) + r2 * (_E2 + r * _E3)
    b1 = (_E4 + r * _E5) + r2 * (_E6 + r * _E7)
    b2 = (_E8 + r * _E9) + r2 * (_E10 + r * _E11)
    p = (b0 + r4 * b1) + (r4 * r4) * (b2 + r4 * _E12)
    # 2**k from k's bits: k + 1.5 * 2**52 holds the integer k in its low bits exactly (|k| < 2**51),
    # so no float -> int conversion (which AVX2 cannot vectorise) is needed
    kbits: int = _float64_bits_as_int64(k + _ROUND_MAGIC)  # type: ignore[call-arg]
    scale: float = _int64_bits_as_float64((kbits - _ROUND_MAGIC_BITS + 1023) << 52)
    return p * scale


@njit(cache=True)
def fexp_array(x: Any, out: Any) -> None:
    """Element-wise fexp (tests and benchmarks)."""
    for i in range(x.size):
        out[i] = fexp(x[i])


# -- accumulating ------------------------------------------------------------------------------


_LANES = 8  # independent partial sums: breaks the add latency chain, lets LLVM vectorise


@njit(inline="always", cache=True)
def _lane_total(s: Any) -> float:
    """Fixed-order sum of the 8 lanes (the order is part of the engine's definition)."""
    total: float = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))
    return total


@njit(cache=True)
def accumulate(acc: Any, y: Any, x: Any, c: int, with_x: bool) -> None:
    """Merge the chunk y[:c] (and its control x[:c]) into acc (two-pass chunk moments + CGL)."""
    if with_x:
        my, m2y, mx, m2x, cxy = _chunk_moments_xy(y, x, c)
    else:
        my, m2y = _chunk_moments(y, c)
        mx = m2x = cxy = 0.0
    na = acc[0]
    if na == 0.0:
        acc[0] = c
        acc[1] = my
        acc[2] = m2y
        acc[3] = mx
        acc[4] = m2x
        acc[5] = cxy
        return
    n = na + c
    w = na * c / n
    dmy = my - acc[1]
    dmx = mx - acc[3]
    acc[0] = n
    acc[1] = acc[1] + dmy * (c / n)
    acc[2] = acc[2] + m2y + dmy * dmy * w
    acc[3] = acc[3] + dmx * (c / n)
    acc[4] = acc[4] + m2x + dmx * dmx * w
    acc[5] = acc[5] + cxy + dmx * dmy * w


@njit(inline="always", cache=True)
def _chunk_moments(y: Any, c: int) -> tuple[float, float]:
    """Mean and centred sum of squares of y[:c], two passes, 8 lanes each."""
    body = c - c % _LANES
    s = np.zeros(_LANES)
    for i in range(0, body, _LANES):
        for j in range(_LANES):
            s[j] += y[i + j]
    total = _lane_total(s)
    for i in range(body, c):
        total += y[i]
    mean = total / c
    q = np.zeros(_LANES)
    for i in range(0, body, _LANES):
        for j in range(_LANES):
            d = y[i + j] - mean
            q[j] += d * d
    m2 = _lane_total(q)
    for i in range(body, c):
        d = y[i] - mean
        m2 += d * d
    return mean, m2


@njit(inline="always", cache=True)
def _chunk_moments_xy(y: Any, x: Any, c: int) -> tuple[float, float, float, float, float]:
    """Means, centred sums of squares and co-moment of y[:c] and x[:c]."""
    body = c - c % _LANES
    sy = np.zeros(_LANES)
    sx = np.zeros(_LANES)
    for i in range(0, body, _LANES):
        for j in range(_LANES):
            sy[j] += y[i + j]
            sx[j] += x[i + j]
    ty = _lane_total(sy)
    tx = _lane_total(sx)
    for i in range(body, c):
        ty += y[i]
        tx += x[i]
    my = ty / c
    mx = tx / c
    qy = np.zeros(_LANES)
    qx = np.zeros(_LANES)
    qxy = np.zeros(_LANES)
    for i in range(0, body, _LANES):
        for j in range(_LANES):
            dy = y[i + j] - my
            dx = x[i + j] - mx
            qy[j] += dy * dy
            qx[j] += dx * dx
            qxy[j] += dx * dy
    m2y = _lane_total(qy)
    m2x = _lane_total(qx)
    cxy = _lane_total(qxy)
    for i in range(body, c):
        dy = y[i] - my
        dx = x[i] - mx
        m2y += dy * dy
        m2x += dx * dx
        cxy += dx * dy
    return my, m2y, mx, m2x, cxy
