"""The code stays as configured in pyproject.toml: ruff's rules everywhere, mypy strict on the
three packages, and the import contracts (one direction of imports through the layers). Part of
the suite so CI enforces it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mcop_devcluster.binaries import cache_dir

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_ruff_finds_nothing() -> None:
    result = _run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing() -> None:
    # The cache outside the clone (like the built programs): a fresh clone of an unchanged tree
    # is checked in seconds, not in a minute (mypy revalidates each file by its hash).
    result = _run(str(BIN / "mypy"), MYPY_CACHE_DIR=str(cache_dir() / "mypy"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contracts_are_kept() -> None:
    result = _run(str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout
