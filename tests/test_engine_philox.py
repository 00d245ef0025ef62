"""The pseudorandom sampler's normals (`engine/philox.py`): Philox4x32-10 as published, Box-Muller
as written, any chunk on its own, standard normal, and the same bits on any CPU."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from mcop_worker.engine import philox
from mcop_worker.engine.kernels import fexp_array

U64 = npt.NDArray[np.uint64]

# Random123's tests/kat_vectors, the three "philox4x32 10" lines: counter, key, result.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_philox_known_answers(
    counter: tuple[int, ...], key: tuple[int, int], expected: tuple[int, ...]
) -> None:
    out = np.zeros((1, 4), dtype=np.uint64)
    philox.philox_array(philox.round_keys(*key), np.array([counter], dtype=np.uint64), out)
    assert tuple(int(v) for v in out[0]) == expected


def _philox_numpy(keys: U64, c: list[U64]) -> list[U64]:
    """Philox4x32-10 written again with numpy's uint64 arrays (an independent reading)."""
    m0, m1, mask = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57), np.uint64(0xFFFFFFFF)
    x0, x1, x2, x3 = c
    for r in range(10):
        p0, p1 = m0 * x0, m1 * x2
        x0, x1, x2, x3 = (
            (p1 >> np.uint64(32)) ^ x1 ^ keys[2 * r],
            p1 & mask,
            (p0 >> np.uint64(32)) ^ x3 ^ keys[2 * r + 1],
            p0 & mask,
        )
    return [x0, x1, x2, x3]


def _box_muller_numpy(stream: U64, pairs: int) -> npt.NDArray[np.float64]:
    """The module docstring's recipe with numpy's uint64 arithmetic and libm's log, cos, sin."""
    j = np.arange(pairs, dtype=np.uint64)
    h2 = np.full(pairs, stream[20], dtype=np.uint64)
    h3 = np.full(pairs, stream[21], dtype=np.uint64)
    x0, x1, x2, x3 = _philox_numpy(
        stream[:20], [j & np.uint64(0xFFFFFFFF), j >> np.uint64(32), h2, h3]
    )
    mant = (x1 << np.uint64(20)) | (x0 >> np.uint64(12))
    u = (mant.astype(np.float64) * 2.0 + 1.0) * 2.0**-53
    frac = ((x3 & np.uint64(0x3FFFFFFF)) << np.uint64(22)) | (x2 >> np.uint64(10))
    angle = (x3 >> np.uint64(30)).astype(np.float64) * (math.pi / 2) + (
        frac.astype(np.float64) * 2.0**-52 - 0.5
    ) * (math.pi / 2)
    r = np.sqrt(-2.0 * np.log(u))
    z = np.empty(2 * pairs)
    z[0::2] = r * np.cos(angle)
    z[1::2] = r * np.sin(angle)
    return z


def test_normals_are_box_muller_of_philox() -> None:
    stream = philox.block_stream(20260101, 7)
    n = 200_000
    z = np.empty(n)
    philox.fill(stream, 0, n, z)
    ref = _box_muller_numpy(stream, n // 2)
    assert np.max(np.abs(z - ref)) < 1e-13
    u = np.concatenate(
        [np.geomspace(2.0**-53, 0.5, 10_000), np.linspace(0.5, 1 - 2.0**-53, 10_000)]
    )
    ln = np.empty_like(u)
    philox.ln_array(u, ln)
    assert np.max(np.abs(ln - np.log(u)) / np.abs(np.log(u))) < 1e-15  # a few ulp


def test_a_chunk_needs_nothing_from_the_chunks_before() -> None:
    """Normal i of a block is a function of i: any cut into chunks (odd starts and lengths too)
    gives the same numbers."""
    stream = philox.block_stream(5, 3)
    whole = np.empty(10_001)
    philox.fill(stream, 0, whole.size, whole)
    pieces = np.empty_like(whole)
    start = 0
    for n in (1, 2, 3, 1000, 7, 8, 0, 4097, whole.size - 5118):
        philox.fill(stream, start, n, pieces[start:])
        start += n
    assert start == whole.size
    assert np.array_equal(whole, pieces)
    tail = np.empty(9)
    philox.fill(stream, 9_990, 9, tail)
    assert np.array_equal(tail, whole[9_990:9_999])


def _normal_cdf(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    erf = np.vectorize(math.erf)
    return np.asarray(0.5 * (1.0 + erf(x / math.sqrt(2.0))), dtype=np.float64)


def test_normals_are_standard_normal_and_independent() -> None:
    n = 1 << 20
    blocks = [np.empty(n) for _ in range(4)]
    for b, z in enumerate(blocks):
        philox.fill(philox.block_stream(1, b), 0, n, z)
    z = np.concatenate(blocks)
    size = z.size
    se = 1 / math.sqrt(size)
    assert abs(z.mean()) < 4.5 * se
    assert abs(z.var() - 1.0) < 4.5 * math.sqrt(2) * se
    assert abs(np.mean(z**3)) < 4.5 * math.sqrt(15) * se
    assert abs(np.mean(z**4) - 3.0) < 4.5 * math.sqrt(96) * se
    # Kolmogorov-Smirnov distance on a sample (critical value at 0.1%: 1.95 / sqrt(m))
    sample = np.sort(z[::16])
    m = sample.size
    cdf = _normal_cdf(sample)
    d = max(np.max(np.arange(1, m + 1) / m - cdf), np.max(cdf - np.arange(m) / m))
    assert d < 1.95 / math.sqrt(m)
    # tails: P(|z| > 3) = 0.0026998, P(|z| > 4) = 6.334e-5
    for level, p in ((3.0, 0.0026998), (4.0, 6.334e-5)):
        count = np.count_nonzero(np.abs(z) > level)
        assert abs(count - p * size) < 4.5 * math.sqrt(p * size)
    # no correlation: within a pair, between neighbours, between blocks
    for a, b in ((z[0::2], z[1::2]), (z[1:-1:2], z[2::2]), (blocks[0], blocks[1])):
        assert abs(np.mean(a * b)) < 4.5 / math.sqrt(a.size)
    # the squares too (Box-Muller's pair shares its radius: cos^2 and sin^2 are dependent but
    # uncorrelated: E[z1^2 z2^2] = 1)
    squares = z[0::2] ** 2 * z[1::2] ** 2
    assert abs(np.mean(squares) - 1.0) < 4.5 * math.sqrt(8 / squares.size)


def test_streams_differ_by_seed_and_block() -> None:
    firsts = set()
    for seed in (0, 1, 2**63):
        for block in (0, 1, 255):
            z = np.empty(4)
            philox.fill(philox.block_stream(seed, block), 0, 4, z)
            firsts.add(z.tobytes())
    assert len(firsts) == 9


_DIGEST = """
import hashlib, sys
import numpy as np
from mcop_worker.engine import philox
from mcop_worker.engine.kernels import fexp_array
z = np.empty(100_003)
philox.fill(philox.block_stream(123, 45), 1, z.size, z)
e = np.empty(z.size)
fexp_array(z * 3.0, e)
print(hashlib.sha256(z.tobytes() + e.tobytes()).hexdigest())
"""


def test_the_bits_do_not_depend_on_the_cpu(tmp_path: Path) -> None:
    """Compiled for a generic x86-64 CPU (SSE2, no FMA: what the image builds) in a process of
    its own and for this one here (AVX2 or AVX-512: wider vectors), the normals and exponentials
    are the same bits."""
    env = dict(os.environ, NUMBA_CPU_NAME="generic", NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", _DIGEST],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    z = np.empty(100_003)
    philox.fill(philox.block_stream(123, 45), 1, z.size, z)
    e = np.empty(z.size)
    fexp_array(z * 3.0, e)
    here = hashlib.sha256(z.tobytes() + e.tobytes()).hexdigest()
    assert out.stdout.strip() == here
