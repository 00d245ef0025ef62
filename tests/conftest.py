"""Fixtures shared by the operator's end-to-end tests (the servers come from mcop_devcluster)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcop_devcluster.ports import free_port
from operator_harness import (
    PRIORITY_CLASSES,
    JobsHarness,
    running_operator,
    secret_manifest,
    wait_for,
)

STARTED = "montecarlo-operator started"  # the operator's log line once its start-up ran

# scripts/test runs the suite on two processes (pytest-xdist, `--dist loadfile`, which hands out
# files in this order): the longest go first, so that neither process is left alone with a long
# file at the end. From the per-test wall and CPU times of a whole run (docs/control-plane.md).
LONGEST_FIRST = (
    "test_realnode.py",  # ~15 min on one process
    "test_operator_ha.py",
    "test_operator_jobs.py",
    "test_operator_tuning.py",
    "test_operator_scaleout.py",
    "test_operator_kueue.py",
    "test_operator_platform.py",
    "test_plot.py",
    "test_chart.py",
    "test_engine_machine_independence.py",
    "test_monitoring_e2e.py",
    "test_engine_cli.py",
    "test_engine_statistics.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: keeps module order


@pytest.fixture(scope="session")
def cluster_with_crds(kube_cluster: Any) -> Any:
    """The control plane with the project's CRDs and PriorityClasses installed."""
    kube_cluster.install_crds()
    kube_cluster.kubectl("apply", "-f", str(PRIORITY_CLASSES))
    return kube_cluster


@pytest.fixture
def jobs(
    cluster_with_crds: Any,
    namespace: str,
    pg_dsn: str,
    redis_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[JobsHarness]:
    """A namespace ready for MonteCarloJobs: Secrets for the built-in PerfTuning defaults and an
    operator (`mcop operator --namespace NS`) watching it. Extra operator environment comes from
    the test's ``operator_env`` marker."""
    for doc in (
        secret_manifest(namespace, "montecarlo-redis", "url", redis_url),
        secret_manifest(namespace, "montecarlo-postgres", "dsn", pg_dsn),
    ):
        cluster_with_crds.kubectl("apply", "-f", "-", input=json.dumps(doc))
    marker = request.node.get_closest_marker("operator_env")
    env = {"MCOP_METRICS_PORT": str(free_port()), **(dict(marker.kwargs) if marker else {})}
    with running_operator(
        str(cluster_with_crds.kubeconfig), namespace, tmp_path / "operator.log", **env
    ) as op:
        # Started (its imports take tens of seconds on a busy machine): the tests' own deadlines
        # then measure the operator's work, not its start.
        wait_for(lambda: STARTED in op.log(), timeout=300, what="the operator started")
        yield JobsHarness(cluster_with_crds, namespace, op)
