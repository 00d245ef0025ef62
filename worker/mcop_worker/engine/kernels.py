"""numba primitives shared by the engine's parts: the exponential, drawing normals, accumulating.

The parts (models, samplers, payoffs, estimators: see `composition.py`) are numba kernels over one
chunk of sample units; they build on these.

`fill_normals` draws from the block's numpy Generator inside numba (`Generator.standard_normal`
compiled by numba uses the same bit generator and algorithm as numpy: the stream is identical,
`tests/test_engine_reproducibility.py` checks it).

Determinism: no fastmath, so every floating-point operation is the IEEE operation written here,
in the order written (vectorising an element-wise loop does not change its results); the
exponential is our own (`fexp`, ~2 ulp) built from additions and multiplications only, so it
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


@njit(inline="always", cache=True)
def fexp(x: float) -> float:
    """exp(x) for |x| <= 700 within ~2 ulp: 2**k * exp(r), |r| <= ln2/2, degree-12 Taylor."""
    x = min(max(x, -_EXP_LIMIT), _EXP_LIMIT)
    k = math.floor(x * _INV_LN2 + 0.5)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    p = 1.0 / 479001600.0
    p = 1.0 / 39916800.0 + r * p
    p = 1.0 / 3628800.0 + r * p
    p = 1.0 / 362880.0 + r * p
    p = 1.0 / 40320.0 + r * p
    p = 1.0 / 5040.0 + r * p
    p = 1.0 / 720.0 + r * p
    p = 1.0 / 120.0 + r * p
    p = 1.0 / 24.0 + r * p
    p = 1.0 / 6.0 + r * p
    p = 0.5 + r * p
    p = 1.0 + r * p
    p = 1.0 + r * p
    scale: float = _int64_bits_as_float64((np.int64(k) + 1023) << 52)  # type: ignore[call-arg]
    return p * scale


@njit(cache=True)
def fexp_array(x: Any, out: Any) -> None:
    """Element-wise fexp (tests and benchmarks)."""
    for i in range(x.size):
        out[i] = fexp(x[i])


# -- drawing and accumulating -------------------------------------------------------------------


@njit(cache=True)
def fill_normals(gen: Any, buf: Any, n: int) -> None:
    """buf[:n] = the next n standard normals of `gen` (the same numbers numpy would draw)."""
    for i in range(n):
        buf[i] = gen.standard_normal()


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
