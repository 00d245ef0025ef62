"""Monitoring end to end: a real Prometheus (built from its Go module) scrapes the real operator
while a MonteCarloJob runs against the control plane, PostgreSQL and Redis; it loads the chart's
alert rules, and every query of the chart's Grafana dashboard returns data. The same run checks
status.history and the rounded ESTIMATE/STDERR columns of `kubectl get mcj`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chart_harness import CHART, RELEASE, run_helm, set_args
from monitoring_harness import (
    DASHBOARD,
    as_grafana_would,
    dashboard_queries,
    operator_crds,
    running_prometheus,
)
from operator_harness import JobsHarness, wait_for
from test_operator_jobs import EUROPEAN, spec
from test_operator_tuning import tuning, wait_tuning


def _value(series: list[dict[str, Any]]) -> float:
    return sum(float(s["value"][1]) for s in series)


@pytest.mark.operator_env(MCOP_METRICS_ADDRESS="127.0.0.1")
def test_prometheus_scrapes_the_operator_and_every_dashboard_query_returns_data(
    jobs: JobsHarness, tmp_path: Path
) -> None:
    jobs.apply(tuning(metrics={"intervalSeconds": 1}))
    wait_tuning(jobs, lambda s: s.get("phase") == "Ready", "PerfTuning Ready")
    target = f"127.0.0.1:{jobs.operator.extra_env['MCOP_METRICS_PORT']}"
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    with running_prometheus(workdir, [target]) as prom:
        wait_for(
            lambda: _value(prom.query('up{job="montecarlo-operator"}')) == 1,
            timeout=60,
            what="Prometheus scraping the operator",
        )
        rules = prom.api("rules")["groups"]
        loaded = {r["name"]: r["health"] for g in rules for r in g["rules"]}
        assert len(loaded) == 8 and set(loaded.values()) == {"ok"}, loaded

        jobs.create_job("euro", spec(EUROPEAN, paths=4_000_000, cache=False))
        status = jobs.wait_phase("euro", "Succeeded", "Failed", timeout=240)
        assert status["phase"] == "Succeeded", status
        ns = jobs.namespace

        # The operator's own figures, as Prometheus stored them.
        def scraped(expr: str) -> float | None:
            series = prom.query(expr)
            return _value(series) if series else None

        wait_for(
            lambda: (
                scraped(f'mcop_job_duration_seconds_count{{namespace="{ns}",phase="Succeeded"}}')
                == 1
            ),
            timeout=30,
            what="the job's duration scraped",
        )
        selector = f'namespace="{ns}",priority="high"'
        assert scraped(f"mcop_admission_wait_seconds_count{{{selector}}}") == 1
        # Every path counted once (no job names as labels: the namespace is the finest grain).
        assert scraped(f'mcop_paths_simulated_total{{namespace="{ns}"}}') == status["pathsTotal"]
        assert scraped('sum(mcop_jobs_finished_total{phase="Succeeded"})') == 1
        assert scraped("mcop_leader") == 1
        assert scraped("count(mcop_reconcile_errors_total)") == 5  # every kind, from the start

        # Every query of the dashboard returns data from this Prometheus, as Grafana asks it.
        dashboard = json.loads(DASHBOARD.read_text())
        for title, expr in dashboard_queries(dashboard):
            query = as_grafana_would(expr)
            wait_for(lambda q=query: prom.query(q), timeout=30, what=f"{title!r}: {query}")
        # Nothing fires or is pending on a healthy system.
        wait_for(lambda: not prom.query("ALERTS"), timeout=30, what="no alert pending or firing")


def test_history_rounded_columns_and_plot_of_a_finished_job(
    jobs: JobsHarness, tmp_path: Path
) -> None:
    jobs.create_job("euro", spec(EUROPEAN, paths=3_000_000, cache=False))
    status = jobs.wait_phase("euro", "Succeeded", "Failed", timeout=240)
    assert status["phase"] == "Succeeded", status
    history = status["history"]
    assert 2 <= len(history) <= 32, history
    paths = [p["paths"] for p in history]
    assert paths == sorted(set(paths))
    assert history[-1] == {
        "paths": status["pathsDone"],
        "estimate": status["result"]["estimate"],
        "stdErr": status["result"]["stdErr"],
    }
    # The standard error shrinks like 1/sqrt(paths) along the way.
    first = history[0]
    ratio = first["stdErr"] / history[-1]["stdErr"]
    assert 0.5 < ratio / math.sqrt(paths[-1] / paths[0]) < 2, history
    # kubectl shows the rounded strings; status keeps full precision.
    shown = status["display"]
    err = status["stdErr"]
    assert float(shown["stdErr"]) == float(f"{err:.2g}")
    assert abs(float(shown["estimate"]) - status["estimate"]) <= err / 10
    row = jobs.kubectl("get", "mcj", "euro", "--no-headers").stdout.split()
    assert row[3:5] == [shown["estimate"], shown["stdErr"]], row
    # kubectl get mcj NAME -o json | mcop plot - -o OUT.png
    resource = jobs.kubectl("get", "mcj", "euro", "-o", "json").stdout
    out = tmp_path / "euro.png"
    mcop = str(Path(sys.executable).parent / "mcop")
    plotted = subprocess.run(
        [mcop, "plot", "-", "-o", str(out)],
        input=resource,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert plotted.returncode == 0, plotted.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.cluster
def test_api_server_accepts_the_chart_monitoring_objects(kube_cluster: Any) -> None:
    """The ServiceMonitor, PrometheusRule and dashboard ConfigMap against the Prometheus
    Operator's own CRDs (from its Go module): a server-side dry run, without a warning."""
    kube_cluster.install_crds(operator_crds())
    ns = "monitoring-dry-run"
    kube_cluster.kubectl("create", "namespace", ns, check=False)
    values = {
        "metrics.serviceMonitor.enabled": True,
        "metrics.prometheusRule.enabled": True,
        "metrics.grafanaDashboard.enabled": True,
        "metrics.prometheusRule.runbookBaseUrl": "https://git.example/mc/-/blob/main",
    }
    rendered = run_helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        ns,
        *set_args(values),
        "--show-only",
        "templates/servicemonitor.yaml",
        "--show-only",
        "templates/prometheusrule.yaml",
        "--show-only",
        "templates/grafana-dashboard.yaml",
    ).stdout
    out = kube_cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=chart-test",
        "-f",
        "-",
        input=rendered,
    )
    assert "Warning" not in out.stderr, out.stderr
    assert out.stdout.count("(server dry run)") == 3, out.stdout
