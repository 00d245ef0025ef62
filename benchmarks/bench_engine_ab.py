"""Engine speed of this tree against another checkout of the project (e.g. main), same machine,
same run: the ratio that says whether a change to the engine slowed it down.

Each round starts one fresh process per tree (alternating, so that the machine's other load hits
both alike); a process loads its tree's engine (`PYTHONPATH=<tree>/worker`), warms the numba
cache, then times whole jobs through `simulate_block` in CPU seconds of the process (a machine
shared with other work inflates wall time, much less CPU time). The best time of each job over the
rounds is kept, and the ratio baseline time / this tree's time is printed (> 1: this tree is
faster).

Not a timed test: numbers depend on the machine and its load.
Run: .venv/bin/python benchmarks/bench_engine_ab.py /work/main [--rounds 5] [--jobs european,...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent

_ASSETS = [
    {"name": "a", "spot": 100.0, "volatility": 0.3, "weight": 1.0, "dividendYield": 0.01},
    {"name": "b", "spot": 40.0, "volatility": 0.5, "weight": 2.0},
    {"name": "c", "spot": 70.0, "volatility": 0.25, "weight": 0.5},
]
_CORR = [[1, 0.4, 0.2], [0.4, 1, -0.3], [0.2, -0.3, 1]]
_GBM = {"type": "gbm", "spot": 100.0, "volatility": 0.2, "rate": 0.05}
_MULTI = {"type": "gbm", "rate": 0.03, "assets": _ASSETS, "correlation": _CORR}


def _inst(kind: str) -> dict[str, Any]:
    base: dict[str, Any] = {"type": kind, "optionType": "call", "strike": 100.0, "maturity": 1.0}
    if kind == "asian":
        base["steps"] = 252
    if kind == "barrier":
        base.update(
            optionType="put",
            steps=50,
            barrier={"level": 80.0, "direction": "down", "knock": "out", "rebate": 0.0},
        )
    if kind == "basket":
        base.update(optionType="put", strike=150.0, maturity=0.5)
    if kind == "var":
        base = {"type": "var", "horizon": 0.04, "confidenceLevels": [0.99]}
    return base


# job name -> (model, instrument kind, paths); each runs plain and antithetic + control variate
JOBS: dict[str, tuple[dict[str, Any], str, int]] = {
    "european": (_GBM, "european", 1 << 23),
    "asian": (_GBM, "asian", 1 << 16),
    "barrier": (_GBM, "barrier", 1 << 18),
    "basket": (_MULTI, "basket", 1 << 21),
    "var": (_MULTI, "var", 1 << 21),
}

_CHILD = r"""
import json, sys, time
from mcop_worker.engine.blocks import plan_blocks
from mcop_worker.engine.simulate import simulate_block
from mcop_worker.model.spec import parse_spec
jobs = json.loads(sys.argv[1])
repeat = int(sys.argv[2])
out = {}
for name, doc in jobs.items():
    small = dict(doc, paths=20000)
    for b in range(plan_blocks(parse_spec(small)).n_blocks):
        simulate_block(parse_spec(small), b)  # compile or load the numba cache
    spec = parse_spec(doc)
    n = plan_blocks(spec).n_blocks
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for b in range(n):
            simulate_block(spec, b)
        best = min(best, time.process_time() - t0)
    out[name] = best
print(json.dumps(out))
"""


def specs(names: list[str], scale: int) -> dict[str, dict[str, Any]]:
    out = {}
    for name in names:
        model, kind, paths = JOBS[name]
        settings = ((False, False), (True, True)) if kind != "var" else ((False, False),)
        for anti, cv in settings:
            label = f"{name} {'antithetic+cv' if anti else 'plain'}"
            out[label] = {
                "model": model,
                "instrument": _inst(kind),
                "paths": paths // scale,
                "seed": 1,
                "varianceReduction": {"antithetic": anti, "controlVariate": cv},
            }
    return out


def run_tree(tree: Path, jobs: dict[str, Any], repeat: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree / "worker"))
    # compiled kernels go to a cache of our own, not into the other checkout's folders
    env.setdefault("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / "mcop-bench-ab-numba"))
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(jobs), str(repeat)],
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"{tree}: the engine failed:\n{done.stderr}")
    times: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return times


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="another checkout of the project (e.g. main)")
    parser.add_argument("--candidate", type=Path, default=HERE, help="default: this checkout")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2, help="timings per job per process")
    parser.add_argument("--jobs", default=",".join(JOBS), help="comma-separated: " + ",".join(JOBS))
    parser.add_argument("--quick", action="store_true", help="jobs 4x smaller")
    args = parser.parse_args()
    jobs = specs(args.jobs.split(","), 4 if args.quick else 1)
    trees = {"baseline": args.baseline.resolve(), "this": args.candidate.resolve()}
    best = {t: dict.fromkeys(jobs, math.inf) for t in trees}
    for _ in range(args.rounds):
        for label, tree in trees.items():
            for job, t in run_tree(tree, jobs, args.repeat).items():
                best[label][job] = min(best[label][job], t)
    print(f"cpu: {cpu_model()}, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    print(f"baseline: {trees['baseline']}   this: {trees['this']}")
    header = f"{'job':<28}{'baseline cpu s':>16}{'this cpu s':>12}{'speed ratio':>13}"
    print(header)
    print("-" * len(header))
    ratios = []
    for job, doc in jobs.items():
        b, t = best["baseline"][job], best["this"][job]
        ratios.append(b / t)
        print(f"{job:<28}{b:>16.3f}{t:>12.3f}{b / t:>12.3f}x   ({doc['paths']:,} paths)")
    geo = math.exp(math.fsum(math.log(r) for r in ratios) / len(ratios))
    print(f"geometric mean of the ratios: {geo:.3f}x (baseline time / this tree's time)")


if __name__ == "__main__":
    main()
