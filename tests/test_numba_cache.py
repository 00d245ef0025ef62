"""numba's kernel cache folder is named after the engine's sources (mcop_worker.numba_cache).

numba checks a cached kernel against its own file only, so a folder shared by two versions of the
engine served kernels with another version's inlined helpers (CI: a host's /tmp/numba-cache, kept
from an earlier checkout at the same path, gave the worker pods the old `fexp`, and their results
differed from `mcop run` in the last bits)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from mcop_worker import numba_cache
from mcop_worker.programs.kernel_cache import install_shipped_cache


def _engine(root: Path) -> Path:
    shutil.copytree(numba_cache.ENGINE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_any_change_to_any_engine_file_names_another_folder(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "engine")
    key = numba_cache.engine_key(engine)
    assert key == numba_cache.engine_key(numba_cache.ENGINE), "the key is of the sources only"
    numba_cache.engine_key.cache_clear()
    helper = engine / "kernels.py"
    helper.write_text(helper.read_text() + "\n# an inlined helper changed\n")
    changed = numba_cache.engine_key(engine)
    assert changed != key
    numba_cache.engine_key.cache_clear()
    (engine / "payoffs" / "new_part.py").write_text("")
    assert numba_cache.engine_key(engine) not in (key, changed), "a new file too"
    numba_cache.engine_key.cache_clear()


def test_the_folder_is_under_the_given_base_once(tmp_path: Path) -> None:
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    folder = numba_cache.use_keyed_cache_dir(env)
    assert folder == tmp_path / numba_cache.engine_key()
    assert env["NUMBA_CACHE_DIR"] == str(folder)
    assert numba_cache.use_keyed_cache_dir(env) == folder, "a child process keeps it"
    default = numba_cache.use_keyed_cache_dir({})
    assert default == numba_cache.PACKAGE / "__pycache__" / "numba" / numba_cache.engine_key()


def test_numba_in_a_worker_process_uses_the_keyed_folder(tmp_path: Path) -> None:
    code = (
        "import json, mcop_worker, numba.core.config as c, os;"
        "print(json.dumps([c.CACHE_DIR, os.environ['NUMBA_CACHE_DIR']]))"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    expected = str(tmp_path / numba_cache.engine_key())
    assert json.loads(out.stdout) == [expected, expected]


def test_the_image_kernels_are_copied_for_this_engine_only(tmp_path: Path) -> None:
    shipped, target = tmp_path / "shipped", tmp_path / "run"
    (shipped / numba_cache.engine_key() / "engine_x").mkdir(parents=True)
    (shipped / numba_cache.engine_key() / "engine_x" / "k.nbi").write_text("this engine")
    (shipped / "engine-0000000000000000" / "engine_x").mkdir(parents=True)
    env = {"MCOP_NUMBA_SHIPPED_CACHE": str(shipped), "NUMBA_CACHE_DIR": str(target)}
    numba_cache.use_keyed_cache_dir(env)  # as the package's import does
    assert install_shipped_cache(env)
    copied = sorted(p.relative_to(target).as_posix() for p in target.rglob("*"))
    key = numba_cache.engine_key()
    assert copied == [key, f"{key}/engine_x", f"{key}/engine_x/k.nbi"]
    assert not install_shipped_cache({"NUMBA_CACHE_DIR": str(target)}), "no image cache: none"
