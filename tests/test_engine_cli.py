"""`mcop run`: examples, --json, --shards, progress, and exit codes for bad manifests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bad_manifests import BAD_JOBS
from mcop_worker.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
MCOP = Path(sys.executable).with_name("mcop")
RESULT_KEYS = {
    "estimate",
    "stdErr",
    "confidenceInterval",
    "paths",
    "stoppedEarly",
    "elapsedSeconds",
    "pathsPerSecond",
    "specHash",
    "warnings",
}
VAR_KEYS = {
    "valueAtRisk",
    "expectedShortfall",
    "valueAtRiskStdErr",
    "expectedShortfallStdErr",
    "valueAtRiskInterval",
}


def mcop(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    assert MCOP.exists(), f"{MCOP} missing: run scripts/setup (pip install -e '.[test]')"
    return subprocess.run(
        [str(MCOP), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


def test_examples_cover_every_instrument() -> None:
    kinds = {yaml.safe_load(p.read_text())["spec"]["instrument"]["type"] for p in EXAMPLES}
    assert kinds == {"european", "asian", "barrier", "basket", "var", "american"}
    assert (ROOT / "examples" / "asian.yaml") in EXAMPLES  # the README's first command


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_and_prints_the_spec_json(
    example: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(example), "--json", "--shards", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    is_var = "valueAtRisk" in doc
    spec = yaml.safe_load(example.read_text())["spec"]
    extra = {"greeks"} if spec.get("greeks") else set()
    extra |= {"randomizations"} if spec.get("sampler", {}).get("type") == "sobol" else set()
    assert set(doc) == RESULT_KEYS | (VAR_KEYS if is_var else set()) | extra
    assert doc["warnings"] == []  # the examples are within what the engine computes accurately
    assert set(doc["confidenceInterval"]) == {"level", "lower", "upper"}
    assert doc["confidenceInterval"]["level"] == 0.95
    assert (
        doc["confidenceInterval"]["lower"] <= doc["estimate"] <= doc["confidenceInterval"]["upper"]
    )
    assert doc["specHash"].startswith("sha256:")
    assert doc["paths"] > 0 and doc["pathsPerSecond"] > 0 and doc["elapsedSeconds"] > 0
    if extra:
        assert set(doc.get("greeks", {})) == set(spec.get("greeks", []))
    if is_var:
        keys = [repr(float(x)) for x in spec["instrument"]["confidenceLevels"]]
        assert list(doc["valueAtRisk"]) == keys == list(doc["expectedShortfall"])
        assert doc["estimate"] == doc["valueAtRisk"][keys[0]]
        for k in keys:
            assert doc["expectedShortfall"][k] >= doc["valueAtRisk"][k] > 0
            interval = doc["valueAtRiskInterval"][k]
            assert interval["lower"] <= doc["valueAtRisk"][k] <= interval["upper"]
            assert doc["valueAtRiskStdErr"][k] > 0 and doc["expectedShortfallStdErr"][k] > 0


def _numbers(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("elapsedSeconds", "pathsPerSecond")}


def test_console_script_same_numbers_for_any_shards() -> None:
    one = mcop("run", "examples/asian.yaml", "--json", "--shards", "1")
    two = mcop("run", "examples/asian.yaml", "--json", "--shards", "2")
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert _numbers(json.loads(one.stdout)) == _numbers(json.loads(two.stdout))
    assert json.loads(one.stdout)["stoppedEarly"] is True  # asian.yaml has a targetStdErr
    assert one.stderr == ""  # no progress line when stderr is not a terminal


def test_readable_result_and_progress_line() -> None:
    out = mcop("run", "examples/european.yaml", "--shards", "2", "--progress", "always")
    assert out.returncode == 0, out.stderr
    for word in ("estimate (price)", "std error", "95% interval", "paths", "spec hash", "sha256:"):
        assert word in out.stdout
    progress = out.stderr.strip().splitlines()
    assert progress, "expected at least the final progress line"
    assert "100.0%" in progress[-1] and "paths/s" in progress[-1] and "ETA" in progress[-1]


def _write(tmp_path: Path, doc: Any, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(("case_id", "manifest", "field", "fragment"), BAD_JOBS, ids=lambda x: "")
def test_bad_manifest_exits_2_naming_the_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case_id: str,
    manifest: dict[str, Any],
    field: str,
    fragment: str,
) -> None:
    assert main(["run", str(_write(tmp_path, manifest))]) == 2, case_id
    err = capsys.readouterr().err
    assert field in err and fragment in err, (case_id, err)


ENGINE_ONLY_BAD = [
    # what only code can judge: the CRD cannot check positive-definiteness
    (
        "correlation-not-positive-definite",
        {
            "apiVersion": "montecarlo.io/v1alpha1",
            "kind": "MonteCarloJob",
            "metadata": {"name": "not-pd"},
            "spec": {
                "model": {
                    "rate": 0.05,
                    "assets": [
                        {"name": n, "spot": 100.0, "volatility": 0.2, "weight": 1.0} for n in "abc"
                    ],
                    "correlation": [[1.0, 0.9, 0.9], [0.9, 1.0, -0.9], [0.9, -0.9, 1.0]],
                },
                "instrument": {
                    "type": "basket",
                    "optionType": "call",
                    "strike": 300.0,
                    "maturity": 1.0,
                },
            },
        },
        "spec.model.correlation",
        "positive-definite",
    ),
    ("not-yaml", "spec: [unclosed\n", "manifest", "not valid YAML"),
    ("two-documents", "kind: MonteCarloJob\n---\nkind: MonteCarloJob\n", "manifest", "one"),
    ("a-list", "- 1\n- 2\n", "manifest", "mapping"),
    (
        "wrong-kind",
        {"apiVersion": "montecarlo.io/v1alpha1", "kind": "Pod", "metadata": {"name": "x"}},
        "kind",
        "",
    ),
]


@pytest.mark.parametrize(("case_id", "doc", "field", "fragment"), ENGINE_ONLY_BAD)
def test_engine_refusals_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case_id: str,
    doc: Any,
    field: str,
    fragment: str,
) -> None:
    assert main(["run", str(_write(tmp_path, doc))]) == 2, case_id
    err = capsys.readouterr().err
    assert field in err and fragment in err, err


def test_real_exit_codes(tmp_path: Path) -> None:
    bad = mcop("run", str(_write(tmp_path, ENGINE_ONLY_BAD[0][1])))
    assert bad.returncode == 2
    assert "spec.model.correlation" in bad.stderr and "positive-definite" in bad.stderr
    missing = mcop("run", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    assert mcop("--help").returncode == 0
    assert mcop("run", "examples/asian.yaml", "--shards", "65").returncode == 2  # argparse


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "run" in capsys.readouterr().err


def test_numbers_read_as_kubectl_reads_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """YAML 1.2 / go-yaml numbers: `1e-3` and `1e7` are numbers for kubectl, so for `mcop run`."""
    manifest = (ROOT / "examples" / "european.yaml").read_text()
    manifest = manifest.replace("paths: 4000000", "paths: 1e7\n  targetStdErr: 1e-3")
    manifest = manifest.replace("maturity: 1.0", "maturity: 1.0e0")
    path = tmp_path / "job.yaml"
    path.write_text(manifest)
    assert main(["run", str(path), "--json", "--shards", "1"]) == 0, capsys.readouterr().err
    doc = json.loads(capsys.readouterr().out)
    assert doc["stoppedEarly"] is True and doc["stdErr"] <= 1e-3
    assert doc["paths"] < 10_000_000
    reference = yaml.safe_load((ROOT / "examples" / "european.yaml").read_text())
    reference["spec"].update(paths=10_000_000, targetStdErr=0.001)
    path.write_text(yaml.safe_dump(reference))
    assert main(["run", str(path), "--json", "--shards", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["specHash"] == doc["specHash"]


def test_manifest_yaml_floats_follow_go_yaml() -> None:
    from mcop_worker.model.manifest_yaml import load_all

    (doc,) = load_all(
        "a: 1e-3\nb: 1e7\nc: 1.0e-3\nd: .5\ne: 100\nf: '1e3'\ng: 1.\nh: -1E+2\ni: .\n"
    )
    assert doc == {
        "a": 0.001, "b": 1e7, "c": 0.001, "d": 0.5, "e": 100, "f": "1e3", "g": 1.0, "h": -100.0,
        "i": ".",
    }  # fmt: skip
    assert isinstance(doc["e"], int) and isinstance(doc["b"], float)
