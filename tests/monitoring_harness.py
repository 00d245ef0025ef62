"""Prometheus and promtool built by scripts/build-prometheus, and a real Prometheus on 127.0.0.1
for the monitoring tests: it loads the chart's alert rules and scrapes the operator."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcop_devcluster.ports import free_port
from operator_harness import wait_for

ROOT = Path(__file__).resolve().parents[1]
FILES = ROOT / "charts" / "montecarlo-operator" / "files"
RULES = FILES / "prometheus-rules.yaml"
DASHBOARD = FILES / "grafana-dashboard.json"
RULE_TESTS = Path(__file__).resolve().parent / "prometheus" / "alerts_test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks"
JOB = "montecarlo-operator"  # the job name the chart's ServiceMonitor gives the operator's target


def _built_folders() -> list[Path]:
    """The folders scripts/build-prometheus fills: the programs, the Prometheus Operator CRDs."""
    out = subprocess.run(
        [str(ROOT / "scripts" / "build-prometheus"), "--print"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [Path(line) for line in out.splitlines() if line]


def operator_crds() -> list[Path]:
    """The ServiceMonitor and PrometheusRule CRDs of the Prometheus Operator, from its Go module."""
    folder = _built_folders()[1]
    if not (folder / ".complete").is_file():
        pytest.fail(
            f"the Prometheus Operator CRDs are not in {folder}: run scripts/build-prometheus",
            pytrace=False,
        )
    return sorted(folder.glob("*.yaml"))


def program(name: str) -> str:
    """prometheus or promtool from the cache (a failure says how to build them)."""
    folder = _built_folders()[0]
    path = folder / name
    if not (folder / ".complete").is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"{name} is not built (looked for {path}): run scripts/build-prometheus "
            "(or scripts/setup, which runs it)",
            pytrace=False,
        )
    return str(path)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [program("promtool"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, rows included."""
    out: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels") or [])
            out.extend((panel["title"], t["expr"]) for t in panel.get("targets") or [])

    walk(dashboard["panels"])
    return out


def as_grafana_would(expr: str, rate_interval: str = "5m") -> str:
    """A dashboard query with Grafana's variables replaced: every namespace, a rate window."""
    return expr.replace("$namespace", ".*").replace("$__rate_interval", rate_interval)


class Prometheus:
    """A Prometheus server on 127.0.0.1 scraping ``targets`` every second as job
    montecarlo-operator, with the chart's rules evaluated every second."""

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": targets}]}],
        }
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    program("prometheus"),
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self.ready, timeout=60, what=f"Prometheus ready on {self.url}")

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"Prometheus exited:\n{self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result (a list of series, empty when there is no data)."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else []
        return result


@contextlib.contextmanager
def running_prometheus(workdir: Path, targets: list[str]) -> Iterator[Prometheus]:
    server = Prometheus(workdir, targets)
    server.start()
    try:
        yield server
    finally:
        server.stop()
