"""The monitoring the chart ships, without a cluster: the alert rules checked and unit-tested by
promtool, a runbook per alert, the Grafana dashboard's JSON model, and the chart's ServiceMonitor,
PrometheusRule and dashboard ConfigMap rendered from the same files."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from chart_harness import CHART, by_kind, one, render, run_helm, set_args, template
from monitoring_harness import (
    DASHBOARD,
    RULE_TESTS,
    RULES,
    RUNBOOKS,
    alerts,
    dashboard_queries,
    promtool,
)

ALERTS = {
    "McopOperatorDown",
    "McopNoLeader",
    "McopJobsFailing",
    "McopQueueStuck",
    "McopPostgresDown",
    "McopRedisDown",
    "McopPostgresPoolSaturated",
    "McopSlowQueries",
}
MONITORING_ON = {
    "metrics.serviceMonitor.enabled": True,
    "metrics.prometheusRule.enabled": True,
    "metrics.grafanaDashboard.enabled": True,
}
# The last schema version of Grafana's v1 dashboard JSON model (Grafana 12). 43 only rewrites
# formatTime transformations into convertFieldType, which this dashboard does not use.
GRAFANA_SCHEMA_VERSION = 42


# -- rules ---------------------------------------------------------------------------------------
def test_promtool_checks_the_rules_file_as_it_is() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout, result.stdout


def test_promtool_unit_tests_of_every_alert_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alerts_are_the_documented_set_each_unit_tested_firing_and_quiet() -> None:
    assert {rule["alert"] for rule in alerts()} == ALERTS
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in tests:
        for case in test.get("alert_rule_test") or []:
            (fires if case["exp_alerts"] else quiet).add(case["alertname"])
    assert fires == ALERTS, f"alerts never expected to fire: {ALERTS - fires}"
    assert quiet == ALERTS, f"alerts never expected to stay quiet: {ALERTS - quiet}"


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_every_alert_links_a_runbook_that_says_what_it_means_how_to_confirm_and_what_to_do(
    name: str,
) -> None:
    rule = next(r for r in alerts() if r["alert"] == name)
    assert rule["labels"]["severity"] in ("critical", "warning")
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert rule["annotations"]["runbook_url"] == f"docs/runbooks/{name}.md"
    page = (RUNBOOKS / f"{name}.md").read_text()
    assert page.startswith(f"# {name}\n")
    for section in ("## What it means", "## How to confirm", "## What to do"):
        assert section in page, f"{name}.md lacks {section}"
    assert f"[{name}.md]({name}.md)" in (RUNBOOKS / "README.md").read_text()


def test_no_runbook_without_an_alert() -> None:
    pages = {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"}
    assert pages == ALERTS


# -- dashboard -----------------------------------------------------------------------------------
def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels") or [])
    return out


def test_dashboard_is_a_grafana_json_model_of_the_current_schema_version() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] == GRAFANA_SCHEMA_VERSION
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["title"] and isinstance(dashboard["tags"], list)
    assert "id" not in dashboard or dashboard["id"] is None  # Grafana assigns it on import
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["type"] == "query"
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["type"] in ("row", "stat", "timeseries"), panel["title"]
        grid = panel["gridPos"]
        assert set(grid) == {"x", "y", "w", "h"}
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not covered & cells, f"panel {panel['title']!r} overlaps another"
        cells |= covered
        if panel["type"] == "row":
            continue
        # Every data panel reads the dashboard's data source variable (no hard-coded uid).
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        assert set(panel["fieldConfig"]) == {"defaults", "overrides"}
        assert panel["description"], panel["title"]


def test_dashboard_queries_name_only_metrics_the_operator_or_prometheus_export() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names: set[str] = set()
    for _, expr in dashboard_queries(dashboard):
        names |= set(re.findall(r"\b(mcop_[a-z_]+|up)\b", expr))
    assert "up" in names
    assert {
        "mcop_admission_wait_seconds_bucket",
        "mcop_job_duration_seconds_bucket",
        "mcop_paths_simulated_total",
        "mcop_leader",
        "mcop_reconcile_errors_total",
        "mcop_jobs_finished_total",
    } <= names


# -- chart ---------------------------------------------------------------------------------------
def test_monitoring_objects_are_off_by_default() -> None:
    kinds = {doc["kind"] for doc in render()}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    assert not [
        d
        for d in by_kind(render(), "ConfigMap")
        if (d["metadata"].get("labels") or {}).get("grafana_dashboard")
    ]


def test_helm_lint_strict_with_monitoring_on() -> None:
    out = run_helm("lint", "--strict", str(CHART), *set_args(MONITORING_ON))
    assert "0 chart(s) failed" in out.stdout


def test_service_monitor_scrapes_the_metrics_service_as_job_montecarlo_operator() -> None:
    docs = render({**MONITORING_ON, "metrics.serviceMonitor.labels": {"release": "kps"}})
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service", "mcop-montecarlo-operator-metrics")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["mcop"]}
    # The job label comes from the Service: the name the alert rules use.
    job_label = monitor["spec"]["jobLabel"]
    assert service["metadata"]["labels"][job_label] == "montecarlo-operator"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("30s", "10s")


def test_service_monitor_without_the_service_is_refused_naming_both_values() -> None:
    result = template(
        {"metrics.serviceMonitor.enabled": True, "metrics.service.enabled": False}, check=False
    )
    assert result.returncode != 0
    assert "metrics.serviceMonitor.enabled needs metrics.service.enabled" in result.stderr


def test_prometheus_rule_carries_the_rules_file_unchanged() -> None:
    rule = one(render(MONITORING_ON), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


def test_prometheus_rule_prefixes_runbook_urls_with_the_base_url() -> None:
    base = "https://git.example/platform/montecarlo-operator/-/blob/main"
    rule = one(
        render({**MONITORING_ON, "metrics.prometheusRule.runbookBaseUrl": base}), "PrometheusRule"
    )
    urls = {
        r["alert"]: r["annotations"]["runbook_url"]
        for group in rule["spec"]["groups"]
        for r in group["rules"]
    }
    assert urls == {name: f"{base}/docs/runbooks/{name}.md" for name in ALERTS}


def test_dashboard_config_map_is_labelled_for_the_sidecar_and_holds_the_file() -> None:
    folder = {"metrics.grafanaDashboard.annotations": {"grafana_folder": "MC"}}
    docs = render({**MONITORING_ON, **folder})
    (config_map,) = [
        d for d in by_kind(docs, "ConfigMap") if d["metadata"]["labels"].get("grafana_dashboard")
    ]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "MC"}
    (content,) = config_map["data"].values()
    assert json.loads(content) == json.loads(DASHBOARD.read_text())


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"metrics.serviceMonitor.interval": "30"}, "interval"),
        ({"metrics.serviceMonitor.enabled": "yes"}, "enabled"),
        ({"metrics.prometheusRule.runbookBaseUrl": "https://git.example/docs/"}, "runbookBaseUrl"),
        ({"metrics.prometheusRule.labels": {"release": 1}}, "release"),
        ({"metrics.grafanaDashboard.folder": "x"}, "folder"),
    ],
)
def test_schema_refuses_bad_monitoring_values_naming_the_field(
    values: dict[str, Any], where: str
) -> None:
    result = template(values, check=False)
    assert result.returncode != 0
    assert where in result.stderr, result.stderr
