"""numba kernels compiled once, at image build, and shipped in the image.

At build: ``python -m mcop_worker.programs.kernel_cache build DIR MANIFEST...`` simulates one
small block of each manifest (and of its variance-reduction variants) with ``NUMBA_CACHE_DIR=DIR``
and ``NUMBA_CPU_NAME=generic``, so every kernel the engine runs is compiled into DIR for a CPU any
x86-64 machine has. At run time the root filesystem is read-only (numba cannot use a cache folder
it cannot write), so :func:`install_shipped_cache` copies DIR (``MCOP_NUMBA_SHIPPED_CACHE``) into
the writable ``NUMBA_CACHE_DIR`` before the first kernel runs: a worker pod then loads compiled
kernels instead of spending seconds of CPU compiling them. Numbers do not change: the same kernels,
compiled for the same target the image always uses (``NUMBA_CPU_NAME=generic`` is set in it).
Both folders are used through their engine-keyed subfolder (`mcop_worker.numba_cache`).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mcop_worker.numba_cache import keyed

SHIPPED_ENV = "MCOP_NUMBA_SHIPPED_CACHE"


def install_shipped_cache(env: Mapping[str, str] | None = None) -> bool:
    """Copies the image's compiled kernels for this engine into NUMBA_CACHE_DIR; False when there
    are none."""
    environment = os.environ if env is None else env
    shipped, target = environment.get(SHIPPED_ENV), environment.get("NUMBA_CACHE_DIR")
    if not shipped or not target:
        return False
    source, destination = keyed(shipped), keyed(target)
    if not source.is_dir() or source == destination:
        return False
    try:
        shutil.copytree(source, destination, dirs_exist_ok=True)
    except OSError:
        return False  # numba compiles as before
    return True


def _variants(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The spec, small, with each combination of variance reduction."""
    out = []
    for antithetic in (False, True):
        for control in (False, True):
            small = dict(spec)
            small.pop("targetStdErr", None)
            small["paths"] = 4096
            small["varianceReduction"] = {"antithetic": antithetic, "controlVariate": control}
            out.append(small)
    return out


def build(manifests: Sequence[Path]) -> int:
    import yaml

    from mcop_worker.engine.simulate import simulate_block
    from mcop_worker.model.spec import parse_spec

    count = 0
    for path in manifests:
        doc = yaml.safe_load(path.read_text())
        for spec in _variants(doc["spec"]):
            simulate_block(parse_spec(spec), 0)
            count += 1
    return count


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[0] != "build":
        print(
            "usage: python -m mcop_worker.programs.kernel_cache build DIR MANIFEST...",
            file=sys.stderr,
        )
        return 2
    # The package's import has already keyed NUMBA_CACHE_DIR (numba_cache.py).
    if os.environ.get("NUMBA_CACHE_DIR") != str(keyed(args[1])):
        print(f"NUMBA_CACHE_DIR must be {args[1]} (numba reads it at import)", file=sys.stderr)
        return 2
    count = build([Path(a) for a in args[2:]])
    print(f"compiled the kernels of {count} small blocks into {keyed(args[1])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
