"""numba kernels: simulate one block of sample units and accumulate its sufficient statistics.

Each kernel draws its standard normals from the block's numpy Generator inside numba
(`Generator.standard_normal` compiled by numba uses the same bit generator and algorithm as
numpy: the stream is identical, `tests/test_engine_reproducibility.py` checks it) into a chunk
buffer that stays in cache, then runs the path arithmetic over the chunk in loops that LLVM
vectorises.
Memory is a few chunk-sized buffers, whatever the number of paths.

The block kernels release the GIL (`nogil`), so a worker can keep its heartbeat thread or event
loop running while a block computes.

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


# -- scratch sizes (callers keep one buffer per process: fresh memory costs page faults) -------


@njit(cache=True)
def european_work(chunk: int) -> int:
    return 3 * chunk


@njit(cache=True)
def path_work(chunk: int, steps: int) -> int:
    return chunk * steps + 8 * chunk


@njit(cache=True)
def multi_asset_work(chunk: int, assets: int) -> int:
    return 3 * chunk * assets + 6 * chunk


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
def _accumulate(acc: Any, y: Any, x: Any, c: int, with_x: bool) -> None:
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


# -- single asset -------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def european_block(
    gen: Any,
    units: int,
    chunk: int,
    ln_spot: float,
    drift: float,  # (r - q - vol**2 / 2) * T
    diffusion: float,  # vol * sqrt(T)
    strike: float,
    phi: float,  # +1 call, -1 put
    discount: float,
    antithetic: bool,
    control: bool,  # control variate: the discounted terminal price
    acc: Any,
    work: Any,  # scratch, >= european_work(chunk) floats, reused across blocks
) -> None:
    if work.size < european_work(chunk):
        raise ValueError("european_block: work buffer too small")
    z = work[:chunk]
    y = work[chunk : 2 * chunk]
    x = work[2 * chunk : 3 * chunk]
    start = 0
    while start < units:
        c = min(chunk, units - start)
        fill_normals(gen, z, c)
        if antithetic:
            for p in range(c):
                d = diffusion * z[p]
                s1 = fexp(ln_spot + (drift + d))
                s2 = fexp(ln_spot + (drift - d))
                v1 = max(phi * (s1 - strike), 0.0)
                y[p] = 0.5 * discount * (v1 + max(phi * (s2 - strike), 0.0))
                x[p] = 0.5 * discount * (s1 + s2)
        else:
            for p in range(c):
                s1 = fexp(ln_spot + (drift + diffusion * z[p]))
                y[p] = discount * max(phi * (s1 - strike), 0.0)
                x[p] = discount * s1
        _accumulate(acc, y, x, c, control)
        start += c


@njit(cache=True, nogil=True)
def asian_block(
    gen: Any,
    units: int,
    chunk: int,
    steps: int,
    ln_spot: float,
    drift: float,  # per step: (r - q - vol**2 / 2) * dt
    diffusion: float,  # per step: vol * sqrt(dt)
    strike: float,
    phi: float,
    discount: float,
    antithetic: bool,
    control: bool,  # control variate: the geometric-average option on the same dates
    acc: Any,
    work: Any,  # scratch, >= path_work(chunk, steps) floats
) -> None:
    if work.size < path_work(chunk, steps):
        raise ValueError("asian_block: work buffer too small")
    z = work[: chunk * steps]
    rest = work[chunk * steps :]
    l1 = rest[:chunk]
    a1 = rest[chunk : 2 * chunk]
    g1 = rest[2 * chunk : 3 * chunk]
    l2 = rest[3 * chunk : 4 * chunk]
    a2 = rest[4 * chunk : 5 * chunk]
    g2 = rest[5 * chunk : 6 * chunk]
    y = rest[6 * chunk : 7 * chunk]
    x = rest[7 * chunk : 8 * chunk]
    start = 0
    while start < units:
        c = min(chunk, units - start)
        fill_normals(gen, z, c * steps)
        for p in range(c):
            l1[p] = ln_spot
            a1[p] = 0.0
            g1[p] = 0.0
            l2[p] = ln_spot
            a2[p] = 0.0
            g2[p] = 0.0
        for k in range(steps):
            base = k * c
            if antithetic:
                for p in range(c):
                    d = diffusion * z[base + p]
                    v = l1[p] + (drift + d)
                    w = l2[p] + (drift - d)
                    l1[p] = v
                    l2[p] = w
                    a1[p] += fexp(v)
                    a2[p] += fexp(w)
                    g1[p] += v
                    g2[p] += w
            else:
                for p in range(c):
                    v = l1[p] + (drift + diffusion * z[base + p])
                    l1[p] = v
                    a1[p] += fexp(v)
                    g1[p] += v
        for p in range(c):
            y1 = discount * max(phi * (a1[p] / steps - strike), 0.0)
            x1 = discount * max(phi * (fexp(g1[p] / steps) - strike), 0.0)
            if antithetic:
                y2 = discount * max(phi * (a2[p] / steps - strike), 0.0)
                x2 = discount * max(phi * (fexp(g2[p] / steps) - strike), 0.0)
                y[p] = 0.5 * (y1 + y2)
                x[p] = 0.5 * (x1 + x2)
            else:
                y[p] = y1
                x[p] = x1
        _accumulate(acc, y, x, c, control)
        start += c


@njit(cache=True, nogil=True)
def barrier_block(
    gen: Any,
    units: int,
    chunk: int,
    steps: int,
    ln_spot: float,
    drift: float,
    diffusion: float,
    strike: float,
    phi: float,
    discount: float,
    ln_level: float,
    up: bool,
    knock_in: bool,
    rebate: float,  # paid at maturity
    antithetic: bool,
    control: bool,  # control variate: the vanilla option (same strike, type, maturity)
    acc: Any,
    work: Any,  # scratch, >= path_work(chunk, steps) floats
) -> None:
    if work.size < path_work(chunk, steps):
        raise ValueError("barrier_block: work buffer too small")
    z = work[: chunk * steps]
    rest = work[chunk * steps :]
    l1 = rest[:chunk]
    hi1 = rest[chunk : 2 * chunk]
    lo1 = rest[2 * chunk : 3 * chunk]
    l2 = rest[3 * chunk : 4 * chunk]
    hi2 = rest[4 * chunk : 5 * chunk]
    lo2 = rest[5 * chunk : 6 * chunk]
    y = rest[6 * chunk : 7 * chunk]
    x = rest[7 * chunk : 8 * chunk]
    start = 0
    while start < units:
        c = min(chunk, units - start)
        fill_normals(gen, z, c * steps)
        for p in range(c):
            l1[p] = ln_spot
            hi1[p] = -np.inf
            lo1[p] = np.inf
            l2[p] = ln_spot
            hi2[p] = -np.inf
            lo2[p] = np.inf
        for k in range(steps):
            base = k * c
            if antithetic:
                for p in range(c):
                    d = diffusion * z[base + p]
                    v = l1[p] + (drift + d)
                    w = l2[p] + (drift - d)
                    l1[p] = v
                    l2[p] = w
                    hi1[p] = max(hi1[p], v)
                    lo1[p] = min(lo1[p], v)
                    hi2[p] = max(hi2[p], w)
                    lo2[p] = min(lo2[p], w)
            else:
                for p in range(c):
                    v = l1[p] + (drift + diffusion * z[base + p])
                    l1[p] = v
                    hi1[p] = max(hi1[p], v)
                    lo1[p] = min(lo1[p], v)
        for p in range(c):
            y1, x1 = _barrier_payoff(
                l1[p], hi1[p], lo1[p], strike, phi, ln_level, up, knock_in, rebate
            )
            if antithetic:
                y2, x2 = _barrier_payoff(
                    l2[p], hi2[p], lo2[p], strike, phi, ln_level, up, knock_in, rebate
                )
                y[p] = 0.5 * discount * (y1 + y2)
                x[p] = 0.5 * discount * (x1 + x2)
            else:
                y[p] = discount * y1
                x[p] = discount * x1
        _accumulate(acc, y, x, c, control)
        start += c


@njit(inline="always", cache=True)
def _barrier_payoff(
    ln_final: float,
    ln_high: float,
    ln_low: float,
    strike: float,
    phi: float,
    ln_level: float,
    up: bool,
    knock_in: bool,
    rebate: float,
) -> tuple[float, float]:
    """(barrier payoff, vanilla payoff), undiscounted; hit: level reached on a monitoring date."""
    vanilla = max(phi * (fexp(ln_final) - strike), 0.0)
    hit = ln_high >= ln_level if up else ln_low <= ln_level
    alive = hit if knock_in else not hit
    return (vanilla if alive else rebate), vanilla


# -- several correlated assets, terminal values only --------------------------------------------


@njit(cache=True)
def _correlated_log_prices(
    z: Any, c: int, ln_spot: Any, drift: Any, diffusion: Any, chol: Any, sign: float, out: Any
) -> None:
    """out[j, p] = ln_spot[j] + drift[j] + diffusion[j] * sign * (chol @ z[:, p])[j]."""
    d = ln_spot.size
    for j in range(d):
        for p in range(c):
            out[j, p] = 0.0
        for i in range(j + 1):
            lji = chol[j, i]
            base = i * c
            for p in range(c):
                out[j, p] += lji * z[base + p]
        for p in range(c):
            out[j, p] = ln_spot[j] + (drift[j] + diffusion[j] * (sign * out[j, p]))


@njit(cache=True, nogil=True)
def basket_block(
    gen: Any,
    units: int,
    chunk: int,
    ln_spot: Any,  # per asset
    drift: Any,  # per asset: (r - q_j - vol_j**2 / 2) * T
    diffusion: Any,  # per asset: vol_j * sqrt(T)
    chol: Any,  # lower Cholesky factor of the correlation matrix
    weights: Any,
    strike: float,
    phi: float,
    discount: float,
    antithetic: bool,
    control: bool,
    geometric: bool,  # control: geometric basket option (all weights > 0), else discounted basket
    geo_coef: Any,  # a_j = w_j S_j / sum_k w_k S_k
    geo_ln_base: float,  # ln(sum_k w_k S_k) - sum_j a_j ln S_j
    acc: Any,
    work: Any,  # scratch, >= multi_asset_work(chunk, assets) floats
) -> None:
    d = ln_spot.size
    if work.size < multi_asset_work(chunk, d):
        raise ValueError("basket_block: work buffer too small")
    z = work[: chunk * d]
    ln1 = work[chunk * d : 2 * chunk * d].reshape((d, chunk))
    ln2 = work[2 * chunk * d : 3 * chunk * d].reshape((d, chunk))
    rest = work[3 * chunk * d :]
    b1 = rest[:chunk]
    g1 = rest[chunk : 2 * chunk]
    b2 = rest[2 * chunk : 3 * chunk]
    g2 = rest[3 * chunk : 4 * chunk]
    y = rest[4 * chunk : 5 * chunk]
    x = rest[5 * chunk : 6 * chunk]
    start = 0
    while start < units:
        c = min(chunk, units - start)
        fill_normals(gen, z, c * d)
        _correlated_log_prices(z, c, ln_spot, drift, diffusion, chol, 1.0, ln1)
        _basket_values(ln1, c, weights, geo_coef, geo_ln_base, b1, g1)
        if antithetic:
            _correlated_log_prices(z, c, ln_spot, drift, diffusion, chol, -1.0, ln2)
            _basket_values(ln2, c, weights, geo_coef, geo_ln_base, b2, g2)
        for p in range(c):
            y1 = max(phi * (b1[p] - strike), 0.0)
            x1 = max(phi * (g1[p] - strike), 0.0) if geometric else b1[p]
            if antithetic:
                y2 = max(phi * (b2[p] - strike), 0.0)
                x2 = max(phi * (g2[p] - strike), 0.0) if geometric else b2[p]
                y[p] = 0.5 * discount * (y1 + y2)
                x[p] = 0.5 * discount * (x1 + x2)
            else:
                y[p] = discount * y1
                x[p] = discount * x1
        _accumulate(acc, y, x, c, control)
        start += c


@njit(cache=True)
def _basket_values(
    ln: Any, c: int, weights: Any, geo_coef: Any, geo_ln_base: float, basket: Any, geo: Any
) -> None:
    """basket[p] = sum_j w_j S_j; geo[p] = exp(geo_ln_base + sum_j a_j ln S_j)."""
    for p in range(c):
        basket[p] = 0.0
        geo[p] = geo_ln_base
    for j in range(ln.shape[0]):
        w = weights[j]
        a = geo_coef[j]
        for p in range(c):
            basket[p] += w * fexp(ln[j, p])
            geo[p] += a * ln[j, p]
    for p in range(c):
        geo[p] = fexp(geo[p])


@njit(cache=True, nogil=True)
def portfolio_losses_block(
    gen: Any,
    units: int,
    chunk: int,
    ln_spot: Any,
    drift: Any,  # per asset: (mu_j - vol_j**2 / 2) * horizon
    diffusion: Any,  # per asset: vol_j * sqrt(horizon)
    chol: Any,
    weights: Any,
    value0: float,  # sum_j w_j S_j(0)
    losses: Any,  # out: the loss of every path of the block, in path order
    acc: Any,
    work: Any,  # scratch, >= multi_asset_work(chunk, assets) floats
) -> None:
    d = ln_spot.size
    if work.size < multi_asset_work(chunk, d) or losses.size < units:
        raise ValueError("portfolio_losses_block: work or losses buffer too small")
    z = work[: chunk * d]
    ln = work[chunk * d : 2 * chunk * d].reshape((d, chunk))
    v = work[2 * chunk * d : 2 * chunk * d + chunk]
    start = 0
    while start < units:
        c = min(chunk, units - start)
        fill_normals(gen, z, c * d)
        _correlated_log_prices(z, c, ln_spot, drift, diffusion, chol, 1.0, ln)
        for p in range(c):
            v[p] = 0.0
        for j in range(d):
            w = weights[j]
            for p in range(c):
                v[p] += w * fexp(ln[j, p])
        for p in range(c):
            v[p] = value0 - v[p]
            losses[start + p] = v[p]
        _accumulate(acc, v, v, c, False)
        start += c
