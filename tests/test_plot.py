"""Convergence plots: `mcop run FILE --plot OUT.png` and `mcop plot FILE|- -o OUT.png`, from a
manifest run here or from a MonteCarloJob read from the API server (its status.history)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mcop_worker.engine import closed_forms
from mcop_worker.programs import plot
from operator_harness import EXAMPLES

MCOP = str(Path(sys.executable).parent / "mcop")


def _mcop(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MCOP, *args], capture_output=True, text=True, input=input, timeout=300, check=False
    )


def _manifest(tmp_path: Path, example: str, **over: Any) -> Path:
    doc = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text())
    doc["spec"].update(over)
    path = tmp_path / f"{example}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _image(path: Path) -> np.ndarray[Any, Any]:
    from matplotlib import image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels: np.ndarray[Any, Any] = image.imread(path)
    return pixels


def _drawn(pixels: np.ndarray[Any, Any]) -> float:
    """Share of pixels that are not white: a blank figure has almost none."""
    rgb = pixels[..., :3]
    return float(np.mean(np.any(rgb < 0.9, axis=-1)))


def test_run_with_plot_prints_the_same_result_and_draws_the_convergence(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "european", paths=200_000, shards=1)
    out = tmp_path / "plots" / "euro.png"
    plotted = _mcop("run", str(manifest), "--json", "--plot", str(out), "--progress", "never")
    assert plotted.returncode == 0, plotted.stderr
    plain = _mcop("run", str(manifest), "--json", "--progress", "never")
    with_plot, without = json.loads(plotted.stdout), json.loads(plain.stdout)
    for key in ("estimate", "stdErr", "paths", "specHash"):
        assert with_plot[key] == without[key], key
    pixels = _image(out)
    assert pixels.shape[:2] == (750, 900)
    assert 0.03 < _drawn(pixels) < 0.6
    assert f"written to {out}" in plotted.stderr


def test_plot_of_a_var_manifest_runs_it_and_draws_the_loss_tail(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "var", paths=40_000, shards=1)
    out = tmp_path / "var.png"
    result = _mcop("plot", str(manifest), "-o", str(out), "--progress", "never")
    assert result.returncode == 0, result.stderr
    assert _drawn(_image(out)) > 0.03


def _resource(history: list[dict[str, Any]]) -> dict[str, Any]:
    doc = yaml.safe_load((EXAMPLES / "european.yaml").read_text())
    doc["status"] = {
        "phase": "Succeeded",
        "history": history,
        "result": {"estimate": history[-1]["estimate"], "stdErr": history[-1]["stdErr"]},
    }
    return dict(doc)


def test_plot_of_a_job_read_from_the_cluster_draws_its_history(tmp_path: Path) -> None:
    history = [
        {"paths": 2**k * 1000, "estimate": 10.45 + 0.3 / 2 ** (k / 2), "stdErr": 0.2 / 2 ** (k / 2)}
        for k in range(12)
    ]
    out = tmp_path / "cluster.png"
    result = _mcop("plot", "-", "-o", str(out), input=json.dumps(_resource(history)))
    assert result.returncode == 0, result.stderr
    assert _drawn(_image(out)) > 0.03


def test_plot_of_a_job_without_history_says_so(tmp_path: Path) -> None:
    doc = _resource([{"paths": 1, "estimate": 1.0, "stdErr": 0.1}])
    doc["status"] = {"phase": "Pending"}
    result = _mcop("plot", "-", "-o", str(tmp_path / "x.png"), input=json.dumps(doc))
    assert result.returncode == 1
    assert "status.history is empty" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_title_names_instrument_and_model_and_reference_is_the_closed_form() -> None:
    spec = yaml.safe_load((EXAMPLES / "european.yaml").read_text())["spec"]
    title, subtitle = plot.title_of("spx", spec)
    assert title == "spx: European call, geometric Brownian motion"
    assert "K=100" in subtitle and "seed 42" in subtitle
    name, value = plot.reference_value(spec) or ("", 0.0)
    m, i = spec["model"], spec["instrument"]
    expected = closed_forms.black_scholes(
        m["spot"],
        i["strike"],
        m["rate"],
        m.get("dividendYield", 0.0),
        m["volatility"],
        i["maturity"],
        i["optionType"],
    )
    assert (name, value) == ("Black-Scholes", expected)
    asian = yaml.safe_load((EXAMPLES / "asian.yaml").read_text())["spec"]
    assert plot.reference_value(asian) is None  # arithmetic average: no closed form


@pytest.mark.parametrize(
    ("points", "kept"),
    [
        ([{"paths": 10, "estimate": 1.0, "stdErr": 0.1}], 1),
        ([{"paths": 10, "estimate": None, "stdErr": 0.1}], 0),
        (
            [
                {"paths": 10, "estimate": 1.0, "stdErr": 0.1},
                {"paths": 5, "estimate": 1, "stdErr": 1},
            ],
            1,
        ),
    ],
)
def test_only_finite_points_with_growing_paths_are_drawn(points: list[Any], kept: int) -> None:
    assert len(plot.clean(points)) == kept
