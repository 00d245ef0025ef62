"""numba's on-disk kernel cache, in a folder named after the engine's sources.

numba checks a cached kernel against its own source file only: a kernel whose file did not change
is loaded with the code it inlined from other modules (`kernels.fexp`, `philox`, ...) as it was
when it was compiled. A cache folder shared across versions of the engine, such as a host's
``/tmp/numba-cache`` used by every checkout at one path, then serves old bits. So the folder numba
is given is ``<base>/engine-<hash of every engine source file>``: another engine, another folder.
``<base>`` is ``NUMBA_CACHE_DIR`` when set (the image, the worker pods) and else the package's
``__pycache__`` (where numba would put its caches anyway).

:func:`use_keyed_cache_dir` runs when the package is imported, before anything imports numba
(numba reads ``NUMBA_CACHE_DIR`` once, at its own import).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import MutableMapping
from functools import lru_cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ENGINE = PACKAGE / "engine"  # every numba kernel lives here
PREFIX = "engine-"


@lru_cache(maxsize=4)
def engine_key(engine: Path = ENGINE) -> str:
    """``engine-<16 hex>``: a hash of the names and bytes of every source file under `engine`."""
    digest = hashlib.sha256()
    for path in sorted(engine.rglob("*.py")):
        digest.update(path.relative_to(engine).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return PREFIX + digest.hexdigest()[:16]


def keyed(base: str | os.PathLike[str]) -> Path:
    """The cache folder under `base` for this engine (`base` itself if it already is one)."""
    path = Path(base)
    return path if path.name == engine_key() else path / engine_key()


def use_keyed_cache_dir(environ: MutableMapping[str, str] | None = None) -> Path:
    """Points NUMBA_CACHE_DIR at this engine's folder; returns it."""
    env = os.environ if environ is None else environ
    base = env.get("NUMBA_CACHE_DIR") or str(PACKAGE / "__pycache__" / "numba")
    folder = keyed(base)
    env["NUMBA_CACHE_DIR"] = str(folder)
    config = sys.modules.get("numba.core.config")
    if environ is None and config is not None:
        config.CACHE_DIR = str(folder)  # type: ignore[attr-defined]  # numba came first
    return folder
