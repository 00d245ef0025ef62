"""Ranks of the distribution-free 95% interval of a VaR: order statistics [L(r), L(s)] of N losses.

The ranks come from the binomial law of how many of N losses fall below the true quantile, so the
interval holds whatever the loss distribution. Every running estimate of a VaR job asks for them
(a new N after each block), so they must be cheap:

* n p q > NORMAL_ENOUGH: the normal approximation with continuity correction (exact enough there),
  a bisection over k of its closed-form cdf;
* otherwise the exact law, tabulated once per (n, p) over the window around the mode outside
  which no term counts (every term below 1e-20 of the largest), from one log-gamma anchor and the
  ratio of neighbouring terms, in logs (numpy), then cumulated. Before, each cdf value summed
  log-gamma terms in Python from k outwards to 40 standard deviations: a 1M-path VaR job spent
  25 of its 26 seconds here.
"""

from __future__ import annotations

import functools
import math

import numpy as np

CI_LEVEL = 0.95
NORMAL_ENOUGH = 1e4
"""Above this binomial variance n p q the normal approximation's ranks are used."""
NEGLIGIBLE = 1e-20
"""Terms below this fraction of the largest are left out of the exact table."""


@functools.lru_cache(maxsize=256)
def order_statistic_ranks(n: int, level: float) -> tuple[int, int]:
    """Ranks (r, s), 1-based ascending, of the distribution-free 95% interval [L(r), L(s)] of the
    `level` quantile: r the largest with P(Bin(n, level) >= r) >= 97.5%, s the smallest with
    P(Bin(n, level) <= s - 1) >= 97.5%. r = 0 or s = n + 1 when none qualifies (unbounded)."""
    tail = (1.0 - CI_LEVEL) / 2.0
    if n * level * (1.0 - level) > NORMAL_ENOUGH:
        below, cdf_below = _normal_quantile(n, level, tail)
        above, _ = _normal_quantile(n, level, 1.0 - tail)
    else:
        table = _BinomialTable(n, level)
        below, cdf_below = table.quantile(tail)  # P(Bin <= below) >= tail, smallest such
        above, _ = table.quantile(1.0 - tail)
    # P(Bin >= r) >= 1 - tail  <=>  P(Bin <= r - 1) <= tail: r - 1 < below unless equality
    r = below if cdf_below > tail else below + 1
    r = min(r, n)
    s = above + 1
    return max(r, 0), min(s, n + 1)


def _normal_cdf(n: int, p: float, k: int) -> float:
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    mean, var = n * p, n * p * (1.0 - p)
    return 0.5 * math.erfc(-(k + 0.5 - mean) / math.sqrt(2.0 * var))


def _normal_quantile(n: int, p: float, prob: float) -> tuple[int, float]:
    """The smallest k with cdf(k) >= prob (bisection over k), and cdf(k)."""
    spread = 50.0 * math.sqrt(n * p * (1.0 - p)) + 2.0  # outside, the cdf is 0 or 1 in floats
    lo = max(-1, math.floor(n * p - spread))
    hi = min(n, math.ceil(n * p + spread))  # cdf(lo) < prob <= cdf(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _normal_cdf(n, p, mid) >= prob:
            hi = mid
        else:
            lo = mid
    return hi, _normal_cdf(n, p, hi)


class _BinomialTable:
    """The cdf of Bin(n, p) at every k of [lo, hi], the window that holds all but a negligible
    part of its mass (P(Bin < lo) and P(Bin > hi) below about 1e-17)."""

    def __init__(self, n: int, p: float) -> None:
        q = 1.0 - p
        mode = min(n, max(0, math.floor((n + 1) * p)))
        log_mode = (
            math.lgamma(n + 1)
            - math.lgamma(mode + 1)
            - math.lgamma(n - mode + 1)
            + mode * math.log(p)
            + (n - mode) * math.log(q)
        )
        width = math.ceil(16.0 * math.sqrt(n * p * q)) + 32
        while True:  # widen until both ends are negligible or at 0 and n (skewed laws)
            lo, hi = max(0, mode - width), min(n, mode + width)
            log_terms = self._log_terms(n, p, mode, log_mode, lo, hi)
            ends_negligible = (lo == 0 or log_terms[0] < log_mode + math.log(NEGLIGIBLE)) and (
                hi == n or log_terms[-1] < log_mode + math.log(NEGLIGIBLE)
            )
            if ends_negligible:
                break
            width *= 2
        self.lo = lo
        self.cdf = np.minimum(np.cumsum(np.exp(log_terms)), 1.0)
        if hi == n:
            self.cdf[-1] = 1.0  # P(Bin <= n) is 1 exactly

    @staticmethod
    def _log_terms(n: int, p: float, mode: int, log_mode: float, lo: int, hi: int) -> np.ndarray:
        """log P(Bin = k) for k in [lo, hi], from the mode's by the ratio of neighbours:
        P(k + 1) / P(k) = (n - k) / (k + 1) * p / q."""
        log_odds = math.log(p) - math.log(1.0 - p)
        up = np.arange(mode, hi, dtype=np.float64)  # k = mode .. hi - 1
        down = np.arange(mode, lo, -1, dtype=np.float64)  # k = mode .. lo + 1
        rising = log_mode + np.cumsum(np.log((n - up) / (up + 1.0)) + log_odds)
        falling = log_mode + np.cumsum(np.log(down / (n - down + 1.0)) - log_odds)
        return np.concatenate([falling[::-1], [log_mode], rising])

    def quantile(self, prob: float) -> tuple[int, float]:
        """The smallest k with P(Bin <= k) >= prob, and that probability."""
        index = int(np.searchsorted(self.cdf, prob, side="left"))
        if index == len(self.cdf):  # not reached inside the window: only at n
            index = len(self.cdf) - 1
        return self.lo + index, float(self.cdf[index])
