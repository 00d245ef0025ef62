"""The fixed decomposition of a job's paths into blocks, and each block's random stream.

Everything here depends on the spec only, never on the shard count, so any set of workers
computes exactly the same blocks. The rule (engine version 1, and as noted since):

* A *sample unit* is one path, or one antithetic pair (a path and its mirror, which share normals).
  units = paths, or ceil(paths / 2) with antithetic variates (an odd path count is rounded up).
* Block size: ceil(units / 256) rounded up to a multiple of 512 units, at least 512 and at most
  2**20 units. So a job has at most 256 blocks until it exceeds 2**28 units, and any job with
  at least 32,768 units has at least 64 blocks: up to 64 shards all get work. The last block
  holds the remainder. A small job (fewer than 16 x 512 units, engine version 2) has blocks of
  ceil(units / 16) units instead: 13 to 16 blocks, enough folds for the control variate's
  cross-fitted coefficient (aggregate.py).
* Block b draws from its Philox4x32-10 stream keyed by SeedSequence(seed, spawn_key=(b,))
  (`philox.block_stream`, engine version 3; before, Generator(PCG64(that SeedSequence))).
* Inside a block the units are simulated in chunks of `chunk_units` units (a function of the
  normals each unit needs); a chunk of c units draws its standard normals in the order
  step, asset, unit: normal (k, j, p) is draw number (k * assets + j) * c + p of the chunk.
  An antithetic partner uses the same normals negated.

* sobol sampler (`plan_sobol_blocks`, `BlockPlan.sobol_block`): R randomizations of n points
  (a power of 2), blocks of b points in doubling rounds; block b's normals come from
  randomization r's scrambled Sobol' points start..start+units-1 (`sobol.py`), in chunks laid out
  like the pseudorandom normals (a point and its antithetic mirror share them).

Changing any of this changes the numbers: bump ENGINE_VERSION (it enters specHash and BlockStats).
"""

from __future__ import annotations

from dataclasses import dataclass

from mcop_worker.engine.philox import block_stream as block_stream
from mcop_worker.engine.registry import dims, paths_per_unit
from mcop_worker.engine.sobol import block_points
from mcop_worker.model.spec import JobSpec
from mcop_worker.model.versions import ENGINE_VERSION as ENGINE_VERSION  # the rules below

TARGET_BLOCKS = 256
BLOCK_ALIGN_UNITS = 512
MAX_BLOCK_UNITS = 1 << 20
MIN_BLOCKS = 16  # a small job still has this many blocks (folds of the cross-fitted control)
CHUNK_NORMALS = 32768  # ~256 KiB of float64: stays in L2 between drawing and using them


@dataclass(frozen=True)
class BlockPlan:
    units: int  # sample units in the whole job
    paths_per_unit: int  # 2 with antithetic variates
    block_units: int
    n_blocks: int
    normals_per_unit: int  # steps x assets
    chunk_units: int
    randomizations: int = 0  # sobol: R scramblings of `points` points each (0: pseudorandom)
    points: int = 0  # sobol: points (sample units) per randomization, a power of 2

    def sobol_block(self, block: int) -> tuple[int, int]:
        """sobol: (randomization, index of the block's first point in its point set); blocks come
        in doubling rounds (`sobol.block_points`)."""
        self._check(block)
        return block_points(block, self.randomizations, self.block_units)

    def round_end(self, blocks: int) -> bool:
        """sobol: whether the prefix of `blocks` blocks ends a round (R 2^j blocks)."""
        q, rem = divmod(blocks, self.randomizations) if self.randomizations else (0, 1)
        return rem == 0 and q > 0 and q & (q - 1) == 0

    @property
    def paths(self) -> int:
        return self.units * self.paths_per_unit

    def block_start(self, block: int) -> int:
        self._check(block)
        return block * self.block_units

    def units_in_block(self, block: int) -> int:
        self._check(block)
        return min(self.block_units, self.units - block * self.block_units)

    def paths_in_block(self, block: int) -> int:
        return self.units_in_block(block) * self.paths_per_unit

    def paths_in_prefix(self, blocks: int) -> int:
        """Paths simulated by blocks 0..blocks-1."""
        if blocks <= 0:
            return 0
        return min(self.units, blocks * self.block_units) * self.paths_per_unit

    def _check(self, block: int) -> None:
        if not 0 <= block < self.n_blocks:
            raise IndexError(f"block {block} is outside 0..{self.n_blocks - 1}")


def plan_blocks(spec: JobSpec) -> BlockPlan:
    if spec.sampler.sobol:
        return plan_sobol_blocks(spec)
    per_unit = paths_per_unit(spec)
    units = -(-spec.paths // per_unit)
    block_units = -(-units // TARGET_BLOCKS)
    block_units = -(-block_units // BLOCK_ALIGN_UNITS) * BLOCK_ALIGN_UNITS
    block_units = min(max(block_units, BLOCK_ALIGN_UNITS), MAX_BLOCK_UNITS)
    if units < MIN_BLOCKS * BLOCK_ALIGN_UNITS:
        block_units = max(1, -(-units // MIN_BLOCKS))
    n_blocks = -(-units // block_units)
    normals = normals_per_unit(spec)
    return BlockPlan(
        units=units,
        paths_per_unit=per_unit,
        block_units=block_units,
        n_blocks=n_blocks,
        normals_per_unit=normals,
        chunk_units=chunk_units(normals),
    )


def plan_sobol_blocks(spec: JobSpec) -> BlockPlan:
    """sobol: R randomizations of n = 2^floor(log2(paths / (R x paths per unit))) points, each
    cut into blocks of b points (a power of 2: about TARGET_BLOCKS blocks in all, at least
    BLOCK_ALIGN_UNITS points unless n is smaller, at most MAX_BLOCK_UNITS)."""
    per_unit = paths_per_unit(spec)
    r_count = spec.sampler.randomizations
    points = _pow2_floor(max(1, spec.paths // (r_count * per_unit)))
    per_randomization = _pow2_floor(max(1, TARGET_BLOCKS // r_count))
    block_units = max(points // per_randomization, min(points, BLOCK_ALIGN_UNITS))
    block_units = min(block_units, MAX_BLOCK_UNITS)
    normals = normals_per_unit(spec)
    return BlockPlan(
        units=r_count * points,
        paths_per_unit=per_unit,
        block_units=block_units,
        n_blocks=r_count * (points // block_units),
        normals_per_unit=normals,
        chunk_units=chunk_units(normals),
        randomizations=r_count,
        points=points,
    )


def _pow2_floor(n: int) -> int:
    return 1 << (n.bit_length() - 1)


def normals_per_unit(spec: JobSpec) -> int:
    """The dimensions of one path: its model's normals (GBM: dates x assets)."""
    return dims(spec)


def chunk_units(normals: int) -> int:
    """Units per chunk: as many as fit CHUNK_NORMALS, a multiple of 8 (a SIMD width), at least 8."""
    return max(8, (CHUNK_NORMALS // normals) // 8 * 8)


def shard_blocks(n_blocks: int, shards: int, index: int) -> range:
    """Blocks owned by shard `index` of `shards`: index, index + shards, ... (strided, so that the
    prefix of finished blocks grows evenly whatever the number of shards)."""
    if shards < 1:
        raise ValueError("shards must be >= 1")
    if not 0 <= index < shards:
        raise ValueError(f"shard index {index} is outside 0..{shards - 1}")
    return range(index, n_blocks, shards)
