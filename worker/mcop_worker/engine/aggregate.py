"""Merging BlockStats into estimates, in block order, and the early-stopping rule.

* `aggregate(blocks, spec)`: the estimate over exactly the given blocks (strictly increasing
  block order), folded left to right with the Chan-Golub-LeVeque update: the same set of blocks
  always gives the same bits, however many shards computed them and in whatever order.
* `JobAggregator`: takes blocks as they arrive (any order, duplicates ignored), gives the running
  estimate over all finished blocks and, once decided, the final result.
* Stopping rule (targetStdErr): after each block that extends the contiguous prefix 0..k-1 of
  finished blocks, with k >= MIN_BLOCKS_TO_STOP, the prefix's standard error is compared with the
  target; the first k that reaches it is the result (`stoppedEarly` when k < all blocks). Blocks
  beyond k are ignored even if they finished. Without a target the result needs every block.

Estimators, with n sample units (paths, or antithetic pairs averaged so that the pairs are the
independent samples and the standard error is honest):

* plain: mean, stdErr = sqrt(m2 / (n - 1) / n);
* control variate x with known mean mu: beta = cov / m2_x (estimated on the same blocks),
  estimate = mean_y - beta (mean_x - mu), stdErr = sqrt((m2_y - cov**2 / m2_x) / (n - 2) / n);
* var: exact order statistics of all simulated losses, L(1) <= ... <= L(N):
  VaR_a = L(ceil(N a)); ES_a = (sum of the m largest + (N(1-a) - m) L(N - m)) / (N(1-a)) with
  m = floor(N(1-a)) (Acerbi-Tasche); the interval of the first level's VaR is the
  distribution-free order-statistic interval [L(r), L(s)], r, s = N a -/+ 1.96 sqrt(N a (1-a)),
  and its stdErr is (L(s) - L(r)) / (2 * 1.96).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from mcop_worker.engine.blocks import BlockPlan, plan_blocks
from mcop_worker.engine.controls import control_mean, uses_control
from mcop_worker.engine.stats import BlockStats, Moments
from mcop_worker.model.spec import JobSpec

CI_LEVEL = 0.95
Z_95 = 1.959963984540054
MIN_BLOCKS_TO_STOP = 8


class IncompleteTail(RuntimeError):
    """The stored loss tails cannot prove the order statistics exact (should never happen)."""


@dataclass(frozen=True)
class Estimate:
    estimate: float  # the price, or the VaR at the first confidence level
    std_err: float
    ci_lower: float
    ci_upper: float
    paths: int
    blocks: int
    stopped_early: bool = False
    ci_level: float = CI_LEVEL
    value_at_risk: dict[str, float] | None = None
    expected_shortfall: dict[str, float] | None = None
    expected_shortfall_std_err: dict[str, float] | None = None

    def to_result(self) -> dict[str, Any]:
        """The SPEC's result object (without elapsedSeconds/pathsPerSecond/specHash)."""
        doc: dict[str, Any] = {
            "estimate": _finite(self.estimate),
            "stdErr": _finite(self.std_err),
            "confidenceInterval": {
                "level": self.ci_level,
                "lower": _finite(self.ci_lower),
                "upper": _finite(self.ci_upper),
            },
            "paths": self.paths,
            "stoppedEarly": self.stopped_early,
        }
        if self.value_at_risk is not None:
            doc["valueAtRisk"] = dict(self.value_at_risk)
            doc["expectedShortfall"] = dict(self.expected_shortfall or {})
        return doc


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def level_key(level: float) -> str:
    """The confidence level as the SPEC's string key: "0.99", "0.975"."""
    return repr(float(level))


# -- folding ------------------------------------------------------------------------------------


@dataclass
class _Fold:
    """Blocks merged left to right: moments, and for var the loss tails."""

    moments: Moments = field(default_factory=Moments)
    paths: int = 0
    blocks: int = 0
    tails: list[npt.NDArray[np.float64]] = field(default_factory=list)
    hidden_below: float = -math.inf  # the largest loss under which a truncated tail hides values

    def add(self, stats: BlockStats) -> None:
        self.moments = self.moments.merge(stats.moments)
        self.paths += stats.paths
        self.blocks += 1
        if stats.tail is not None:
            losses = stats.losses
            self.tails.append(losses)
            if not stats.tail_complete and losses.size:
                self.hidden_below = max(self.hidden_below, float(losses[-1]))

    def estimate(self, spec: JobSpec, stopped_early: bool = False) -> Estimate:
        if spec.instrument.type == "var":
            return self._var_estimate(spec, stopped_early)
        m = self.moments
        n = m.count
        est, std_err = m.mean, math.nan
        if uses_control(spec) and m.x_m2 > 0.0 and n > 2:
            beta = m.cov / m.x_m2
            est = m.mean - beta * (m.x_mean - control_mean(spec))
            resid = max(m.m2 - m.cov * m.cov / m.x_m2, 0.0)
            std_err = math.sqrt(resid / (n - 2) / n)
        elif n > 1:
            std_err = math.sqrt(m.m2 / (n - 1) / n)
        return Estimate(
            estimate=est,
            std_err=std_err,
            ci_lower=est - Z_95 * std_err,
            ci_upper=est + Z_95 * std_err,
            paths=self.paths,
            blocks=self.blocks,
            stopped_early=stopped_early,
        )

    def _var_estimate(self, spec: JobSpec, stopped_early: bool) -> Estimate:
        n = self.moments.count
        levels = spec.instrument.confidence_levels
        first = levels[0]
        spread = Z_95 * math.sqrt(n * first * (1.0 - first))
        rank_lo = min(max(math.floor(n * first - spread), 1), n)  # ascending ranks, 1-based
        rank_hi = min(max(math.ceil(n * first + spread), 1), n)
        cut = {lv: _tail_count(n, lv) for lv in levels}  # m = floor(N (1 - level)), exact
        needed = max(n - rank_lo + 1, *(m + 1 for m, _ in cut.values()))
        top = self._top(needed)
        var: dict[str, float] = {}
        es: dict[str, float] = {}
        es_se: dict[str, float] = {}
        for lv in levels:
            m, exact_m = cut[lv]
            value_at_risk = float(top[m])
            beyond = math.fsum(top[:m].tolist()) + float(exact_m - m) * value_at_risk
            shortfall = beyond / float(exact_m) if exact_m > 0 else value_at_risk
            var[level_key(lv)] = value_at_risk
            es[level_key(lv)] = shortfall
            es_se[level_key(lv)] = _es_std_err(top[:m], value_at_risk, n, lv)
        lower = float(top[n - rank_lo])  # top is largest first: rank r is top[n - r]
        upper = float(top[n - rank_hi])
        return Estimate(
            estimate=var[level_key(first)],
            std_err=(upper - lower) / (2.0 * Z_95) if n > 1 else math.nan,
            ci_lower=lower,
            ci_upper=upper,
            paths=self.paths,
            blocks=self.blocks,
            stopped_early=stopped_early,
            value_at_risk=var,
            expected_shortfall=es,
            expected_shortfall_std_err=es_se,
        )

    def _top(self, needed: int) -> npt.NDArray[np.float64]:
        """The `needed` largest losses, largest first, proven exact."""
        pool = np.concatenate(self.tails) if self.tails else np.empty(0)
        if pool.size < needed:
            raise IncompleteTail(
                f"the blocks' loss tails hold {pool.size} losses, {needed} are needed"
            )
        if needed < pool.size:
            pool = np.partition(pool, pool.size - needed)[pool.size - needed :]
        top = np.sort(pool)[::-1]
        if top[needed - 1] < self.hidden_below:
            raise IncompleteTail(
                "a block's stored loss tail is too short for exact order statistics; "
                "report this: the tail headroom in simulate.py must grow"
            )
        return top


def _tail_count(n: int, level: float) -> tuple[int, Fraction]:
    """floor(N (1 - level)) and N (1 - level), exactly (0.99 means 99/100, not its binary value)."""
    exact = n * (1 - Fraction(repr(float(level))))
    return math.floor(exact), exact


def _es_std_err(beyond: npt.NDArray[np.float64], var: float, n: int, level: float) -> float:
    """ES = VaR + E[(L - VaR)+] / (1 - a), so its asymptotic stdErr is
    sd((L - VaR)+) / ((1 - a) sqrt N)."""
    if n < 2:
        return math.nan
    excess = beyond - var
    mean = math.fsum(excess.tolist()) / n
    mean_sq = math.fsum((excess * excess).tolist()) / n
    variance = max(mean_sq - mean * mean, 0.0) * n / (n - 1)
    return math.sqrt(variance / n) / (1.0 - level)


# -- public API ---------------------------------------------------------------------------------


def aggregate(blocks: Sequence[BlockStats], spec: JobSpec) -> Estimate:
    """The estimate over exactly these blocks, which must be in strictly increasing block order."""
    fold = _Fold()
    previous = -1
    for stats in blocks:
        if stats.block <= previous:
            raise ValueError("aggregate() needs blocks in strictly increasing block order")
        previous = stats.block
        fold.add(stats)
    return fold.estimate(spec)


def final_result(blocks: Mapping[int, BlockStats], spec: JobSpec) -> Estimate | None:
    """The job's result once it is decided (all blocks, or the target reached on a prefix)."""
    return summarize(blocks, spec).final


def summarize(blocks: Mapping[int, BlockStats], spec: JobSpec) -> Progress:
    """Finished blocks by index (any subset, any order) -> running estimate over all of them and,
    when complete or the target is reached on the prefix, the final result. For repeated calls
    with a growing set, keep a JobAggregator instead."""
    agg = JobAggregator(spec)
    for index, stats in blocks.items():
        if index != stats.block:
            raise ValueError(f"the entry for block {index} holds block {stats.block}")
        agg.add(stats)
    return agg.progress()


@dataclass(frozen=True)
class Progress:
    blocks_done: int
    n_blocks: int
    paths_done: int
    paths_total: int
    prefix_blocks: int  # length of the contiguous prefix 0..k-1 of finished blocks
    running: Estimate | None  # over all finished blocks, in block order
    final: Estimate | None  # the result, once decided

    @property
    def fraction(self) -> float:
        if self.final is not None:
            return 1.0
        return self.paths_done / self.paths_total if self.paths_total else 0.0


class JobAggregator:
    """Blocks arriving in any order -> running estimate and, once decided, the final result.

    The operator feeds it the rows it reads from the database; `mcop run` the blocks its
    processes send. Only the spec and the set of blocks matter, never the order of arrival.
    """

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.plan: BlockPlan = plan_blocks(spec)
        self.blocks: dict[int, BlockStats] = {}
        self._prefix = _Fold()
        self._final: Estimate | None = None
        self._running: Estimate | None = None
        self._running_blocks = -1

    @property
    def final(self) -> Estimate | None:
        return self._final

    @property
    def done(self) -> bool:
        return self._final is not None

    def add(self, stats: BlockStats) -> None:
        """Record one finished block (again: ignored if identical, an error if it differs)."""
        b = stats.block
        if not 0 <= b < self.plan.n_blocks:
            raise ValueError(f"block {b} does not belong to this job (0..{self.plan.n_blocks - 1})")
        if stats.paths != self.plan.paths_in_block(b):
            raise ValueError(
                f"block {b} has {stats.paths} paths, the plan says {self.plan.paths_in_block(b)}"
            )
        known = self.blocks.get(b)
        if known is not None:
            if known != stats:
                raise ValueError(f"block {b} was reported twice with different numbers")
            return
        self.blocks[b] = stats
        self._advance_prefix()

    def missing_blocks(self) -> list[int]:
        """Blocks still needed for the result (none once it is decided)."""
        if self.done:
            return []
        return [b for b in range(self.plan.n_blocks) if b not in self.blocks]

    def running(self) -> Estimate | None:
        """Estimate over every finished block (block order), or the final result once decided."""
        if self._final is not None:
            return self._final
        if not self.blocks:
            return None
        if self._running_blocks != len(self.blocks):
            self._running = aggregate([self.blocks[b] for b in sorted(self.blocks)], self.spec)
            self._running_blocks = len(self.blocks)
        return self._running

    def progress(self) -> Progress:
        final = self._final
        return Progress(
            blocks_done=len(self.blocks),
            n_blocks=self.plan.n_blocks,
            paths_done=final.paths if final else sum(s.paths for s in self.blocks.values()),
            paths_total=self.plan.paths,
            prefix_blocks=self._prefix.blocks,
            running=self.running(),
            final=final,
        )

    def _advance_prefix(self) -> None:
        target = self.spec.target_std_err
        n_blocks = self.plan.n_blocks
        while self._final is None and self._prefix.blocks in self.blocks:
            self._prefix.add(self.blocks[self._prefix.blocks])
            k = self._prefix.blocks
            if k == n_blocks:
                self._final = self._prefix.estimate(self.spec, stopped_early=False)
            elif target is not None and k >= MIN_BLOCKS_TO_STOP:
                estimate = self._prefix.estimate(self.spec, stopped_early=True)
                if estimate.std_err <= target:
                    self._final = estimate
