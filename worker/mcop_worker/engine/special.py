"""Platform-independent log and normal CDF for numba kernels (the models' per-path arithmetic).

Like `kernels.fexp`, built from +, *, / and exact operations (frexp/ldexp, sqrt) only, never the
platform's libm (whose results may differ between CPUs and versions), so the bits of a path are
the same on every machine.
"""

from __future__ import annotations

import math

from numba import njit

from mcop_worker.engine.kernels import fexp

_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_SQRT_HALF = 0.7071067811865476


@njit(inline="always", cache=True)
def flog(x: float) -> float:
    """ln x for finite x > 0 within ~2 ulp: x = m 2**e, m in [sqrt(1/2), sqrt(2)),
    ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172, odd series to s**23."""
    if not x > 0.0:
        return -math.inf if x == 0.0 else math.nan
    m, e = math.frexp(x)  # x = m 2**e, m in [0.5, 1)
    if m < _SQRT_HALF:
        m = m * 2.0
        e -= 1
    f = m - 1.0
    s = f / (2.0 + f)
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
    # fdlibm log1p: ln(1 + f) = f - (f^2/2 - s (f^2/2 + 2 s^2 p))
    hfsq = 0.5 * f * f
    r = s * (hfsq + 2.0 * s2 * p)
    lnm = f - (hfsq - r)
    return e * _LN2_HI + (lnm + e * _LN2_LO)


@njit(inline="always", cache=True)
def norm_cdf(x: float) -> float:
    """Standard normal CDF, absolute error < 1e-14 (Hart 1968 as given by West 2005), with our
    own exponential."""
    ax = abs(x)
    if ax > 37.0:
        tail = 0.0
    else:
        ex = fexp(-0.5 * ax * ax)
        if ax < 7.07106781186547:
            n = 3.52624965998911e-02 * ax + 0.700383064443688
            n = n * ax + 6.37396220353165
            n = n * ax + 33.912866078383
            n = n * ax + 112.079291497871
            n = n * ax + 221.213596169931
            n = n * ax + 220.206867912376
            d = 8.83883476483184e-02 * ax + 1.75566716318264
            d = d * ax + 16.064177579207
            d = d * ax + 86.7807322029461
            d = d * ax + 296.564248779674
            d = d * ax + 637.333633378831
            d = d * ax + 793.826512519948
            d = d * ax + 440.413735824752
            tail = ex * n / d
        else:
            b = ax + 0.65
            b = ax + 4.0 / b
            b = ax + 3.0 / b
            b = ax + 2.0 / b
            b = ax + 1.0 / b
            tail = ex / b / 2.506628274631
    return 1.0 - tail if x > 0.0 else tail


@njit(cache=True)
def flog_array(x: object, out: object) -> None:
    """Element-wise flog (tests)."""
    for i in range(x.size):  # type: ignore[attr-defined]
        out[i] = flog(x[i])  # type: ignore[index]


@njit(cache=True)
def norm_cdf_array(x: object, out: object) -> None:
    """Element-wise norm_cdf (tests)."""
    for i in range(x.size):  # type: ignore[attr-defined]
        out[i] = norm_cdf(x[i])  # type: ignore[index]
