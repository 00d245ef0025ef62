"""The Sobol' sampler's parts on their own: the sequence against known points (scipy.stats.qmc's,
from the same Joe-Kuo direction numbers), its net structure after scrambling, reproducibility, the
inverse normal cdf and the Brownian bridge."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from mcop_worker.engine import sobol

# scipy.stats.qmc.Sobol(d=6, scramble=False).random(16): dyadic, exact in any float format.
FIRST_POINTS = [
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
    [0.75, 0.25, 0.25, 0.25, 0.75, 0.75],
    [0.25, 0.75, 0.75, 0.75, 0.25, 0.25],
    [0.375, 0.375, 0.625, 0.875, 0.375, 0.125],
    [0.875, 0.875, 0.125, 0.375, 0.875, 0.625],
    [0.625, 0.125, 0.875, 0.625, 0.625, 0.875],
    [0.125, 0.625, 0.375, 0.125, 0.125, 0.375],
    [0.1875, 0.3125, 0.9375, 0.4375, 0.5625, 0.3125],
    [0.6875, 0.8125, 0.4375, 0.9375, 0.0625, 0.8125],
    [0.9375, 0.0625, 0.6875, 0.1875, 0.3125, 0.5625],
    [0.4375, 0.5625, 0.1875, 0.6875, 0.8125, 0.0625],
    [0.3125, 0.1875, 0.3125, 0.5625, 0.9375, 0.4375],
    [0.8125, 0.6875, 0.8125, 0.0625, 0.4375, 0.9375],
    [0.5625, 0.4375, 0.0625, 0.8125, 0.1875, 0.6875],
    [0.0625, 0.9375, 0.5625, 0.3125, 0.6875, 0.1875],
]
# scipy.stats.qmc.Sobol(d=21201, scramble=False, bits=30) after fast_forward(1000003): points
# 1000003 and 1000004 in dimensions 1, 99, 1000 and 21200, as 30-bit integers.
FAR_DIMS = [1, 99, 1000, 21200]
FAR_POINTS = [
    [603356160, 53261312, 249547776, 555338752],
    [200702976, 724349952, 115330048, 421121024],
]


def _ints(v: np.ndarray, shift: np.ndarray, start: int, n: int) -> np.ndarray:
    out = np.zeros((v.shape[0], n), dtype=np.uint64)
    sobol.sobol_integers(v, shift, start, n, out)
    return out


def test_first_points_are_the_known_sobol_points() -> None:
    v, shift = sobol.unscrambled(6)
    got = _ints(v, shift, 0, 16).astype(np.float64) * 2.0**-64
    assert got.T.tolist() == FIRST_POINTS


def test_far_points_in_high_dimensions() -> None:
    v, shift = sobol.unscrambled(sobol.MAX_DIMS)
    got = _ints(v[FAR_DIMS], shift[FAR_DIMS], 1_000_003, 2) >> np.uint64(34)
    assert got.T.tolist() == FAR_POINTS


def test_a_block_can_start_anywhere() -> None:
    v, shift = sobol.scrambling(5, seed=3, randomization=1)
    whole = _ints(v, shift, 0, 4096)
    for start in (1, 7, 1024, 3000):
        assert (_ints(v, shift, start, 4096 - start) == whole[:, start:]).all()


def test_scrambling_is_reproducible_and_differs_between_randomizations() -> None:
    a = sobol.scrambling(8, seed=42, randomization=0)
    sobol.scrambling.cache_clear()
    b = sobol.scrambling(8, seed=42, randomization=0)
    c = sobol.scrambling(8, seed=42, randomization=1)
    d = sobol.scrambling(8, seed=43, randomization=0)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    assert not (a[0] == c[0]).all() and not (a[0] == d[0]).all()


@pytest.mark.parametrize("randomization", [0, 1, 2])
def test_scrambled_points_keep_the_net_structure(randomization: int) -> None:
    """Every 1-D projection of 2^m points hits each of the 2^m intervals once, and dimensions 0
    and 1 form a (0, m, 2)-net: every dyadic box of area 2^-m holds exactly one point."""
    m = 10
    v, shift = sobol.scrambling(16, seed=7, randomization=randomization)
    u = _ints(v, shift, 0, 1 << m)
    for d in range(16):
        cells = u[d] >> np.uint64(64 - m)
        assert np.array_equal(np.sort(cells), np.arange(1 << m, dtype=np.uint64))
    for a in range(m + 1):
        x = (u[0] >> np.uint64(64 - a)) if a else np.zeros(1 << m, dtype=np.uint64)
        y = (u[1] >> np.uint64(64 - (m - a))) if a < m else np.zeros(1 << m, dtype=np.uint64)
        boxes = x * np.uint64(1 << (m - a)) + y
        assert np.unique(boxes).size == 1 << m


def test_randomized_estimates_are_unbiased_and_far_tighter_than_monte_carlo() -> None:
    """A smooth 8-dimensional integral (exactly 1): over 32 randomizations of 4096 points the mean
    is within 4 standard errors of 1, and the spread is 30x smaller than plain Monte Carlo's."""
    dims, n = 8, 4096
    estimates = []
    for r in range(32):
        v, shift = sobol.scrambling(dims, seed=11, randomization=r)
        u = (_ints(v, shift, 0, n) >> np.uint64(11)).astype(np.float64) * 2.0**-53
        estimates.append(float(np.prod(1.0 + 0.5 * (u - 0.5) * 2.0, axis=0).mean()))
    mean = float(np.mean(estimates))
    se = float(np.std(estimates, ddof=1)) / math.sqrt(len(estimates))
    assert abs(mean - 1.0) < 4 * se + 1e-12
    mc_sd = math.sqrt((1.0 + 1.0 / 12.0) ** dims - 1.0) / math.sqrt(n)
    assert float(np.std(estimates, ddof=1)) < mc_sd / 30


def test_uniforms_never_touch_the_ends() -> None:
    out = np.empty(3)
    sobol.uniform_array(np.array([0, 2**63, 2**64 - 1], dtype=np.uint64), out)
    assert out.tolist() == [2.0**-54, 0.5 + 2.0**-54, 1.0 - 2.0**-54]


def test_inverse_normal_cdf_and_log() -> None:
    u = np.concatenate(
        [np.linspace(1e-12, 1 - 1e-12, 20001), np.geomspace(1e-300, 1e-3, 400), [0.5]]
    )
    u = np.concatenate([u, 1.0 - u[(u > 1e-16) & (u < 0.5)]])
    got = np.empty_like(u)
    sobol.ndtri_array(u, got)
    ref = NormalDist()
    for x, g in zip(u.tolist(), got.tolist(), strict=True):
        want = ref.inv_cdf(x)
        assert abs(g - want) <= 1e-14 * max(1.0, abs(want)), (x, g, want)
    assert got[u == 0.5][0] == 0.0

    x = np.concatenate([np.geomspace(1e-300, 1e300, 5001), [0.7071067811865476, 1.0, 2.0]])
    logs = np.empty_like(x)
    sobol.flog_array(x, logs)
    for xi, got_log in zip(x.tolist(), logs.tolist(), strict=True):
        assert abs(got_log - math.log(xi)) <= 4e-16 * max(1.0, abs(math.log(xi))), xi


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 12, 52, 100])
def test_brownian_bridge_is_an_orthogonal_map_with_the_terminal_value_first(steps: int) -> None:
    """Increments from the bridge of independent normals are independent normals exactly when the
    map is orthogonal; the first dimension alone sets W(T) = sqrt(steps) g_0."""
    index, weight = sobol.bridge_plan(steps)
    # c = steps points, point p is the unit vector e_p: out[k, p] is the map's column p.
    g = np.eye(steps).reshape(-1)
    out = np.empty(steps * steps)
    sobol.brownian_bridge(index, weight, g, steps, 1, 0, out)
    m = out.reshape(steps, steps)
    assert np.allclose(m @ m.T, np.eye(steps), atol=1e-12)
    assert np.allclose(m.sum(axis=0)[0], math.sqrt(steps))
    assert np.allclose(m.sum(axis=0)[1:], 0.0, atol=1e-12)


def test_fill_normals_chunk_layout_for_several_assets() -> None:
    """Two assets over 4 steps: each asset's increments come from its own bridge dimensions
    (dimension i * assets + j), and the chunk can start anywhere in the sequence."""
    steps, assets, c = 4, 2, 64
    v, shift = sobol.scrambling(steps * assets, seed=5, randomization=0)
    index, weight = sobol.bridge_plan(steps)
    ints = np.empty(c, dtype=np.uint64)
    g = np.empty(steps * assets * c)
    out = np.empty(steps * assets * c)
    sobol.fill_normals_chunk(v, shift, 8, c, steps, assets, True, index, weight, ints, g, out)
    z = out.reshape(steps, assets, c)
    u = np.empty(c)
    for j in range(assets):
        # W(T) of asset j is sqrt(steps) times the normal of its dimension j (bridge index 0).
        sobol.uniform_array(_ints(v, shift, 8, c)[j], u)
        terminal = z[:, j, :].sum(axis=0)
        first = np.array([NormalDist().inv_cdf(x) for x in u.tolist()])
        assert np.allclose(terminal, math.sqrt(steps) * first, atol=1e-9)
