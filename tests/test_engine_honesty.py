"""Never a confident wrong answer: honest bounds and warnings where few or no paths pay, the
control variate left out where its coefficient would make the interval optimistic, and VaR
intervals that cover at small path counts."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from engine_helpers import european, multi_asset, run
from mcop_worker.engine.var_ranks import order_statistic_ranks


def test_no_path_pays_gives_a_bound_not_zero_plus_minus_zero() -> None:
    est = run(european(option_type="put", strike=20.0, paths=1_000))
    assert est.estimate == 0.0 and est.ci_lower == 0.0
    assert 0.0 < est.ci_upper < 20.0 and est.std_err > 0.0
    assert any("No path" in w for w in est.warnings)
    call = run(european(strike=1_000.0, paths=1_000)).to_result()
    assert call["estimate"] == 0.0 and "upper" not in call["confidenceInterval"]
    assert "stdErr" not in call and any("No path" in w for w in call["warnings"])


def test_few_paying_paths_are_said() -> None:
    est = run(european(strike=180.0, paths=2_000, antithetic=False, control=False))
    assert est.estimate > 0.0
    assert any("carry the payoff" in w for w in est.warnings)
    assert run(european(paths=2_000)).warnings == ()


def test_control_variate_left_out_below_its_minimum() -> None:
    small = run(european(paths=100, antithetic=True, control=True))
    plain = run(european(paths=100, antithetic=True, control=False))
    assert (small.estimate, small.std_err) == (plain.estimate, plain.std_err)
    assert any("control variate was not applied" in w for w in small.warnings)
    big = run(european(paths=1_000, antithetic=False, control=True))
    assert big.warnings == () and big.std_err < run(european(paths=1_000, control=False)).std_err


def _var_spec(paths: int, levels: list[float]) -> dict[str, object]:
    inst = {"type": "var", "horizon": 0.1, "confidenceLevels": levels}
    assets = [{"name": "a", "spot": 100.0, "volatility": 0.2, "weight": 1.0, "drift": 0.0}]
    return multi_asset(inst, assets, paths=paths)


def test_var_reports_stderrs_and_an_interval_per_level() -> None:
    est = run(_var_spec(10_000, [0.99, 0.95]))
    doc = est.to_result()
    for key in ("0.99", "0.95"):
        lo, hi = doc["valueAtRiskInterval"][key]["lower"], doc["valueAtRiskInterval"][key]["upper"]
        assert lo < doc["valueAtRisk"][key] < hi
        assert doc["valueAtRiskStdErr"][key] > 0 and doc["expectedShortfallStdErr"][key] > 0
    small = run(_var_spec(100, [0.99])).to_result()  # 100 paths cannot bound a 99% VaR above
    assert "upper" not in small["valueAtRiskInterval"]["0.99"]
    assert "stdErr" not in small and any("cannot bound" in w for w in small["warnings"])


def test_var_interval_covers_at_small_path_counts() -> None:
    """Distribution-free ranks: >= 95% coverage whatever the loss distribution, even at 100 paths
    (the old normal-approximation ranks, cut at the sample maximum, covered 61%)."""
    rng = np.random.default_rng(7)
    for n, level in [(100, 0.95), (400, 0.99), (1_000, 0.99), (1_000, 0.95)]:
        r, s = order_statistic_ranks(n, level)
        losses = np.sort(rng.standard_exponential((4_000, n)), axis=1)
        truth = -math.log(1.0 - level)
        lower = losses[:, r - 1] if r >= 1 else -np.inf
        upper = losses[:, s - 1] if s <= n else np.inf
        coverage = float(np.mean((lower <= truth) & (truth <= upper)))
        assert coverage >= 0.945, (n, level, coverage)


def _exact_ranks(n: int, level: float) -> tuple[int, int]:
    """The ranks' definition in exact rational arithmetic (the oracle of order_statistic_ranks)."""
    p = Fraction(repr(level))  # 0.99 as 99/100 (the float differs in the 17th digit)
    tail = Fraction(1, 40)
    cdf, total = [], Fraction(0)
    for k in range(n + 1):
        total += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        cdf.append(total)
    # r: the largest with P(Bin >= r) = 1 - cdf[r - 1] >= 1 - tail; s: the smallest with
    # P(Bin <= s - 1) = cdf[s - 1] >= 1 - tail.
    r = max((r for r in range(1, n + 1) if 1 - cdf[r - 1] >= 1 - tail), default=0)
    s = min((s for s in range(1, n + 1) if cdf[s - 1] >= 1 - tail), default=n + 1)
    return r, s


@pytest.mark.parametrize("level", [0.5, 0.9, 0.95, 0.99, 0.999])
def test_var_interval_ranks_are_the_exact_binomial_ones(level: float) -> None:
    """The tabulated law (engine/var_ranks.py) against exact fractions, small to medium N."""
    for n in [*range(1, 40), 100, 257, 400]:
        assert order_statistic_ranks.__wrapped__(n, level) == _exact_ranks(n, level), n
