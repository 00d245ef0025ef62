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
* control variate x with known mean mu (engine version 2): each block is corrected with the
  coefficient of the other blocks, beta_{-b} (`crossfit.py`), so no correction sees its own paths;
  estimate and stdErr are the mean and sqrt(m2 / (n - 1) / n) of the residuals
  y - beta_{-b} (x - mu). Below `crossfit.MIN_CONTROL_UNITS` sample units the control is not
  applied (plain mean; a warning says so).
* var: exact order statistics of all simulated losses, L(1) <= ... <= L(N):
  VaR_a = L(ceil(N a)); ES_a = (sum of the m largest + (N(1-a) - m) L(N - m)) / (N(1-a)) with
  m = floor(N(1-a)) (Acerbi-Tasche). Each level's VaR has the distribution-free interval
  [L(r), L(s)] with r the largest and s the smallest rank such that P(Bin(N, a) >= r) >= 97.5% and
  P(Bin(N, a) < s) >= 97.5% (exact binomial; an unbounded side when no rank qualifies: too few
  paths to bound it), and stdErr (L(s) - L(r)) / (2 * 1.96). ES's stdErr is
  sd((L - VaR)+) / ((1 - a) sqrt N).

Never a confident wrong answer (`Estimate.warnings`, sentences): when no path pays, the interval is
[0, upper] with the one-sided 95% bound on the chance of paying (1 - 0.05^(1/n)) times the largest
payoff where one exists (puts), else unbounded; when few paths carry the payoff (an effective
count (sum y)^2 / sum y^2 below FEW_PAYING) or the total variance is large, a warning says the
interval may be optimistic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from mcop_worker.engine import crossfit
from mcop_worker.engine import greeks as greek_estimators
from mcop_worker.engine.blocks import BlockPlan, plan_blocks
from mcop_worker.engine.controls import control_mean, uses_control
from mcop_worker.engine.rqmc import estimate as rqmc_estimate
from mcop_worker.engine.stats import BlockStats, Moments
from mcop_worker.engine.var_ranks import CI_LEVEL as CI_LEVEL  # the level of every interval
from mcop_worker.engine.var_ranks import order_statistic_ranks
from mcop_worker.model.spec import JobSpec

Z_95 = 1.959963984540054
MIN_BLOCKS_TO_STOP = 8
FEW_PAYING = 30  # fewer paths carrying the payoff than this: the interval may be optimistic
HEAVY_TAIL_VARIANCE = 4.0  # volatility^2 x maturity above this: a heavy-tailed payoff


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
    value_at_risk_std_err: dict[str, float] | None = None
    value_at_risk_interval: dict[str, tuple[float, float]] | None = None
    warnings: tuple[str, ...] = ()
    greeks: dict[str, Any] | None = None  # result.greeks (spec.greeks)
    randomizations: int | None = None  # sobol: the randomizations the stdErr comes from

    def to_result(self) -> dict[str, Any]:
        """The SPEC's result object (without elapsedSeconds/pathsPerSecond/specHash)."""
        doc: dict[str, Any] = {
            "estimate": self.estimate,
            "stdErr": self.std_err,
            "confidenceInterval": {
                "level": self.ci_level,
                "lower": self.ci_lower,
                "upper": self.ci_upper,
            },
            "paths": self.paths,
            "stoppedEarly": self.stopped_early,
            "warnings": list(self.warnings),
        }
        if self.greeks is not None:
            doc["greeks"] = self.greeks
        if self.randomizations is not None:
            doc["randomizations"] = self.randomizations
        if self.value_at_risk is not None:
            doc["valueAtRisk"] = dict(self.value_at_risk)
            doc["expectedShortfall"] = dict(self.expected_shortfall or {})
            doc["valueAtRiskStdErr"] = dict(self.value_at_risk_std_err or {})
            doc["expectedShortfallStdErr"] = dict(self.expected_shortfall_std_err or {})
            doc["valueAtRiskInterval"] = {
                k: {"lower": lo, "upper": hi}
                for k, (lo, hi) in (self.value_at_risk_interval or {}).items()
            }
        return _known(doc)


def _known(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` without the numbers that are not finite (an unknown stdErr, an unbounded side of an
    interval): absent, not null, so `mcop run --json` and status.result (where the API server
    keeps no nulls) stay equal."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            out[key] = _known(value)
        elif isinstance(value, float) and not math.isfinite(value):
            continue
        else:
            out[key] = value
    return out


def level_key(level: float) -> str:
    """The confidence level as the SPEC's string key: "0.99", "0.975"."""
    return repr(float(level))


# -- folding ------------------------------------------------------------------------------------


@dataclass
class _Fold:
    """Blocks merged left to right: moments, and for var the loss tails."""

    moments: Moments = field(default_factory=Moments)
    parts: list[Moments] = field(default_factory=list)  # per block, for the cross-fitted control
    block_ids: list[int] = field(default_factory=list)
    greek_parts: list[tuple[tuple[float, float], ...]] = field(default_factory=list)
    paths: int = 0
    blocks: int = 0
    tails: list[npt.NDArray[np.float64]] = field(default_factory=list)
    hidden_below: float = -math.inf  # the largest loss under which a truncated tail hides values

    def add(self, stats: BlockStats) -> None:
        self.moments = self.moments.merge(stats.moments)
        self.parts.append(stats.moments)
        self.block_ids.append(stats.block)
        self.greek_parts.append(stats.greeks)
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
        if spec.sampler.sobol:
            return rqmc_estimate(spec, self, stopped_early)
        m = self.moments
        n = m.count
        est, std_err = m.mean, math.nan
        warnings: list[str] = []
        if uses_control(spec) and n >= crossfit.MIN_CONTROL_UNITS and len(self.parts) >= 2:
            n_b, my, m2y, mx, m2x, cov = (np.array(c) for c in _columns(self.parts))
            count, est, m2z = crossfit.cross_fitted(
                n_b, my, m2y, mx, m2x, cov, control_mean(spec), _fsum
            )
            std_err = math.sqrt(float(m2z) / (count - 1) / count)
            est = float(est)
        else:
            if uses_control(spec):
                warnings.append(
                    f"The control variate was not applied: {n} sample units are fewer than the "
                    f"{crossfit.MIN_CONTROL_UNITS} its coefficient needs to keep the interval "
                    "honest; the estimate is the plain mean."
                )
            if n > 1:
                std_err = math.sqrt(m.m2 / (n - 1) / n)
        return self.finish(spec, est, std_err, stopped_early, warnings)

    def finish(
        self,
        spec: JobSpec,
        est: float,
        std_err: float,
        stopped_early: bool,
        warnings: list[str],
        greeks: list[tuple[float, float]] | None = None,
        randomizations: int | None = None,
        quantile: float = Z_95,
    ) -> Estimate:
        """The interval (est +- quantile x stdErr), the warnings that concern every sampler, and
        the Greeks."""
        m = self.moments
        n = m.count
        lower, upper = est - quantile * std_err, est + quantile * std_err
        if n > 1 and m.mean == 0.0 and m.m2 == 0.0:
            # No path paid: 0 is no proof the price is 0. One-sided 95% bound on the chance of
            # paying, times the largest payoff when there is one.
            bound = _largest_payoff(spec)
            upper = (1.0 - 0.05 ** (1.0 / n)) * bound
            lower, std_err = 0.0, upper / Z_95 if math.isfinite(upper) else math.nan
            warnings.append(
                f"No path of {self.paths} paid anything: the price is between 0 and "
                + (f"{upper:.6g} (95%)" if math.isfinite(upper) else "an unknown bound")
                + "; simulate more paths or check the strike and barrier."
            )
        elif n > 1:
            paying = _effective_paying(n, m.mean, m.m2)
            if paying < FEW_PAYING:
                warnings.append(
                    f"Only about {paying:.0f} of {n} sample units carry the payoff: the interval "
                    "may be optimistic; simulate more paths."
                )
        warnings.extend(_model_warnings(spec))
        if spec.greeks and greeks is None:
            greeks = self.greek_values()
        return Estimate(
            estimate=est,
            std_err=std_err,
            ci_lower=lower,
            ci_upper=upper,
            paths=self.paths,
            blocks=self.blocks,
            stopped_early=stopped_early,
            warnings=tuple(warnings),
            greeks=greek_estimators.result(spec, greeks) if spec.greeks and greeks else None,
            randomizations=randomizations,
        )

    def greek_values(self) -> list[tuple[float, float]]:
        """(value, stdErr) of each Greek component: the blocks' moments merged in block order."""
        merged = [Moments() for _ in self.greek_parts[0]] if self.greek_parts else []
        for part, stats in zip(self.greek_parts, self.parts, strict=True):
            merged = [
                acc.merge(Moments(count=stats.count, mean=mean, m2=m2))
                for acc, (mean, m2) in zip(merged, part, strict=True)
            ]
        out = []
        for g in merged:
            se = math.sqrt(g.m2 / (g.count - 1) / g.count) if g.count > 1 else math.nan
            out.append((g.mean, se))
        return out

    def _var_estimate(self, spec: JobSpec, stopped_early: bool) -> Estimate:
        n = self.moments.count
        levels = spec.instrument.confidence_levels
        ranks = {lv: order_statistic_ranks(n, lv) for lv in levels}  # ascending, 1-based
        cut = {lv: _tail_count(n, lv) for lv in levels}  # m = floor(N (1 - level)), exact
        lowest = min(max(r, 1) for r, _ in ranks.values())
        needed = max(n - lowest + 1, *(m + 1 for m, _ in cut.values()))
        top = self._top(needed)
        var: dict[str, float] = {}
        es: dict[str, float] = {}
        es_se: dict[str, float] = {}
        var_se: dict[str, float] = {}
        intervals: dict[str, tuple[float, float]] = {}
        warnings: list[str] = []
        for lv in levels:
            key = level_key(lv)
            m, exact_m = cut[lv]
            value_at_risk = float(top[m])
            beyond = math.fsum(top[:m].tolist()) + float(exact_m - m) * value_at_risk
            shortfall = beyond / float(exact_m) if exact_m > 0 else value_at_risk
            var[key] = value_at_risk
            es[key] = shortfall
            es_se[key] = _es_std_err(top[:m], value_at_risk, n, lv)
            r, s_ = ranks[lv]
            lower = float(top[n - r]) if r >= 1 else -math.inf  # top is largest first
            upper = float(top[n - s_]) if s_ <= n else math.inf
            intervals[key] = (lower, upper)
            var_se[key] = (upper - lower) / (2.0 * Z_95) if n > 1 else math.nan
            if not math.isfinite(upper):
                warnings.append(
                    f"{n} paths cannot bound the {key} VaR from above (fewer than about "
                    f"{math.ceil(3.7 / (1.0 - lv))} paths): its interval and stdErr are "
                    "unbounded; simulate more paths."
                )
            elif m < FEW_PAYING:
                warnings.append(
                    f"Only {m} losses lie beyond the {key} VaR: its expected shortfall and "
                    "stdErr are rough; simulate more paths."
                )
        first = level_key(levels[0])
        warnings.extend(_model_warnings(spec))
        return Estimate(
            estimate=var[first],
            std_err=var_se[first],
            ci_lower=intervals[first][0],
            ci_upper=intervals[first][1],
            paths=self.paths,
            blocks=self.blocks,
            stopped_early=stopped_early,
            value_at_risk=var,
            expected_shortfall=es,
            expected_shortfall_std_err=es_se,
            value_at_risk_std_err=var_se,
            value_at_risk_interval=intervals,
            warnings=tuple(warnings),
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


def _columns(parts: Sequence[Moments]) -> tuple[list[float], ...]:
    return (
        [float(p.count) for p in parts],
        [p.mean for p in parts],
        [p.m2 for p in parts],
        [p.x_mean for p in parts],
        [p.x_m2 for p in parts],
        [p.cov for p in parts],
    )


def _fsum(values: npt.NDArray[np.float64]) -> float:
    """An exactly rounded sum: the same bits whatever the order or the CPU."""
    return math.fsum(values.tolist())


def _effective_paying(n: int, mean: float, m2: float) -> float:
    """(sum y)^2 / sum y^2 of payoffs y >= 0: k when k samples pay about the same, n when all do."""
    square_sum = m2 + n * mean * mean
    return n * n * mean * mean / square_sum if square_sum > 0.0 else 0.0


def _largest_payoff(spec: JobSpec) -> float:
    """The largest discounted payoff of one sample unit, or inf (a call has none)."""
    inst = spec.instrument
    if inst.option_type != "put" or inst.strike is None or inst.maturity is None:
        return math.inf
    rebate = inst.barrier.rebate if inst.barrier is not None else 0.0
    return (inst.strike + rebate) * math.exp(-spec.model.rate * inst.maturity)


def _model_warnings(spec: JobSpec) -> list[str]:
    inst = spec.instrument
    t = inst.horizon if inst.type == "var" else inst.maturity
    if t is None:
        return []
    total = max(a.volatility * a.volatility * t for a in spec.model.assets)
    if total <= HEAVY_TAIL_VARIANCE:
        return []
    return [
        f"volatility^2 x maturity is {total:.3g}: the prices' distribution is so skewed that a "
        "rare path carries much of the value; the stdErr may be optimistic at small path counts."
    ]


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
            elif (
                target is not None
                and k >= MIN_BLOCKS_TO_STOP
                and (not self.plan.randomizations or self.plan.round_end(k))
            ):
                estimate = self._prefix.estimate(self.spec, stopped_early=True)
                if estimate.std_err <= target:
                    self._final = estimate
