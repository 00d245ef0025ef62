"""The numbers must not depend on which BLAS kernel numpy picks on this CPU: the worker pods run
without the machine's OPENBLAS_* settings, so any BLAS call in the engine would make the cluster's
result differ from `mcop run`'s in the last bits (seen with the basket's geometric control)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(manifest: Path, env: dict[str, str]) -> dict[str, object]:
    mcop = str(Path(sys.executable).parent / "mcop")
    out = subprocess.run(
        [mcop, "run", str(manifest), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize("example", ["basket", "var", "european"])
def test_results_do_not_depend_on_the_blas_kernel(example: str, tmp_path: Path) -> None:
    doc = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text())
    doc["spec"]["paths"] = 50_000
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    base = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS")}
    results = [
        _run(manifest, {**base, "OPENBLAS_CORETYPE": core}) for core in ("Prescott", "Haswell")
    ] + [_run(manifest, base)]
    keys = ("estimate", "stdErr", "valueAtRisk", "expectedShortfall")
    first = {k: results[0].get(k) for k in keys}
    for other in results[1:]:
        assert {k: other.get(k) for k in keys} == first
