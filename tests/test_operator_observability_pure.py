"""What the operator shows, computed without a cluster: the rounded ESTIMATE and STDERR columns,
status.history, and the metrics' bounded labels."""

from __future__ import annotations

import itertools
import math

import pytest
from prometheus_client import REGISTRY

from mcop_operator import metrics
from mcop_operator.job_status import HISTORY_POINTS, display_fields, extend_history


@pytest.mark.parametrize(
    ("estimate", "std_err", "shown"),
    [
        (8.937045726777841, 0.0009934487372539335, ("8.93705", "0.00099")),
        (5.7712, 0.0031, ("5.7712", "0.0031")),
        (10.450583572185565, 0.014, ("10.451", "0.014")),
        (0.5, 0.0996, ("0.50", "0.10")),  # rounding adds a digit: 0.0996 -> 0.10
        (45612.3, 1234.0, ("45600", "1200")),
        (-2.25e-05, 0.01, ("0.000", "0.010")),  # no "-0.000"
        (1.0, 0.0, ("1", "0")),  # not random: the value itself
        (3.0e-9, 1.2e-15, ("3e-09", "1.2e-15")),  # beyond 12 decimals: scientific
    ],
)
def test_display_rounds_the_estimate_to_what_its_standard_error_justifies(
    estimate: float, std_err: float, shown: tuple[str, str]
) -> None:
    assert display_fields(estimate, std_err) == {
        "display": {"estimate": shown[0], "stdErr": shown[1]}
    }


def test_display_needs_both_numbers() -> None:
    assert display_fields(None, 0.1) == {} and display_fields(1.0, None) == {}
    assert display_fields(math.nan, 0.1) == {} and display_fields(1.0, math.inf) == {}


def test_history_keeps_at_most_32_points_spread_over_log_paths_with_first_and_last() -> None:
    history: list[dict[str, float]] = []
    for n in range(1, 5001):
        history = extend_history(history, n * 1000, 1.0 + 1 / n, 1 / math.sqrt(n))
    assert len(history) == HISTORY_POINTS
    paths = [p["paths"] for p in history]
    assert paths[0] == 1000 and paths[-1] == 5_000_000
    assert paths == sorted(set(paths))
    # Spread over log(paths): no gap wider than 4 times the even spacing.
    gaps = [math.log(b / a) for a, b in itertools.pairwise(paths)]
    assert max(gaps) < 4 * math.log(5000) / (HISTORY_POINTS - 1)
    assert history[-1] == {"paths": 5_000_000, "estimate": 1.0 + 1 / 5000, "stdErr": 1 / 5000**0.5}


def test_history_adds_only_new_finite_progress_and_replaces_a_point_of_the_same_paths() -> None:
    history = extend_history(None, 100, 1.0, 0.5)
    assert extend_history(history, None, 1.0, 0.5) == history
    assert extend_history(history, 200, None, 0.5) == history
    assert extend_history(history, 200, 1.0, math.nan) == history
    assert extend_history(history, 50, 2.0, 0.5) == history  # never backwards
    newest = {"paths": 100, "estimate": 1.1, "stdErr": 0.4}
    assert extend_history(history, 100, 1.1, 0.4) == [newest]


def _sample(name: str, labels: dict[str, str]) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_leader_is_1_without_leader_election_and_settable() -> None:
    assert _sample("mcop_leader", {}) == 1.0
    metrics.set_leader(False)
    assert _sample("mcop_leader", {}) == 0.0
    metrics.set_leader(True)
    assert _sample("mcop_leader", {}) == 1.0


def test_error_kinds_are_bounded_and_exported_from_the_start() -> None:
    for reason in metrics.ERROR_REASONS:
        assert _sample("mcop_reconcile_errors_total", {"reason": reason}) is not None
    assert metrics.error_reason(TimeoutError()) == "timeout"
    assert metrics.error_reason(ValueError("boom")) == "internal"
    from kubernetes.client.exceptions import ApiException

    assert metrics.error_reason(ApiException(status=500)) == "kubernetes"
    import asyncpg
    import redis.exceptions

    assert metrics.error_reason(asyncpg.exceptions.ConnectionDoesNotExistError()) == "postgres"
    assert metrics.error_reason(redis.exceptions.ConnectionError()) == "redis"
    before = _sample("mcop_reconcile_errors_total", {"reason": "internal"}) or 0.0
    metrics.count_error(KeyError("x"))
    assert _sample("mcop_reconcile_errors_total", {"reason": "internal"}) == before + 1


def test_failure_reasons_start_at_zero_so_the_first_failure_is_an_increase() -> None:
    for reason in metrics.FAILURE_REASONS:
        labels = {"phase": "Failed", "reason": reason}
        assert _sample("mcop_jobs_finished_total", labels) is not None


def test_no_metric_has_a_label_that_grows_with_jobs() -> None:
    allowed = {"namespace", "perftuning", "priority", "phase", "reason", "le"}
    for family in REGISTRY.collect():
        if not family.name.startswith("mcop_"):
            continue
        for sample in family.samples:
            assert set(sample.labels) <= allowed, (family.name, sample.labels)
