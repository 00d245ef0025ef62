"""Reference prices of Heston Asian and barrier options from many paths of QuantLib's own Heston
simulation (independent of the engine's code: QuantLib's HestonProcess with its
QuadraticExponentialMartingale discretisation on a fine grid, Mersenne-Twister normals, antithetic
pairs), and the engine's discretisation bias against them at several stepsPerYear.

tests/test_engine_models.py compares the engine (modest paths) with the references this prints,
recorded there with their standard errors and how they were made. Run (about 15 minutes on a
shared 2-core machine):
    .venv/bin/python benchmarks/heston_path_reference.py --paths 600000 --engine-paths 1000000

Measured (28 Nov 2026, AMD EPYC, 2 CPUs shared, load average 2.5-10; about 10 minutes of CPU for
the references): references 5.22755 +- 0.01218, 2.96090 +- 0.01519, 5.97029 +- 0.01471,
3.71016 +- 0.02253; the engine minus the reference at 12 / 52 / 252 steps a year: asian-call-met
-0.014 / -0.018 / -0.016, asian-put-violated -0.025 / +0.001 / -0.015, up-and-out-call-met
-0.008 / -0.014 / -0.010, down-and-in-put-violated -0.027 / -0.007 / -0.021 (each +- 0.013-0.025).

QuantLib's exact (Broadie-Kaya) schemes were tried first: they fail to bracket their root with the
Feller condition violated, so the reference uses QE on a grid twice as fine as the engine's default
(504 steps a year), where the European bias is below 0.001 (benchmarks/bench_heston_bias.py).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from engine_references import HESTON_PATH_CASES, HESTON_SETS
from mcop_worker.engine.aggregate import aggregate
from mcop_worker.engine.blocks import plan_blocks
from mcop_worker.engine.simulate import simulate_block
from mcop_worker.model.spec import parse_spec


def payoff(inst: dict[str, Any], prices: np.ndarray) -> np.ndarray:
    """Undiscounted payoff of each path from its prices on the dates (paths x dates)."""
    phi = 1.0 if inst["optionType"] == "call" else -1.0
    k = inst["strike"]
    if inst["type"] == "asian":
        return np.maximum(phi * (prices.mean(axis=1) - k), 0.0)
    b = inst["barrier"]
    level = b["level"]
    hit = (prices >= level).any(axis=1) if b["direction"] == "up" else (prices <= level).any(axis=1)
    alive = hit if b["knock"] == "in" else ~hit
    vanilla = np.maximum(phi * (prices[:, -1] - k), 0.0)
    return np.where(alive, vanilla, b.get("rebate", 0.0))


def quantlib_reference(
    params: dict[str, float], inst: dict[str, Any], paths: int, steps_per_year: int, seed: int
) -> tuple[float, float]:
    """(discounted price, stdErr) from `paths` QuantLib Heston paths (QE with martingale
    correction, `steps_per_year` steps, the dates on the grid)."""
    import QuantLib as ql

    today = ql.Date(2, 1, 2025)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()

    def flat(r: float) -> Any:
        return ql.YieldTermStructureHandle(ql.FlatForward(today, r, dc))

    process = ql.HestonProcess(
        flat(params["rate"]),
        flat(params["dividendYield"]),
        ql.QuoteHandle(ql.SimpleQuote(params["spot"])),
        params["initialVariance"],
        params["meanReversion"],
        params["longRunVariance"],
        params["volOfVol"],
        params["spotVarianceCorrelation"],
        ql.HestonProcess.QuadraticExponentialMartingale,
    )
    t = inst["maturity"]
    dates = [t * (k + 1) / inst["steps"] for k in range(inst["steps"])]
    grid = ql.TimeGrid(dates, int(steps_per_year * t))
    times = list(grid)
    where = [min(range(len(times)), key=lambda i, d=d: abs(times[i] - d)) for d in dates]
    dim = process.factors() * (len(grid) - 1)
    rsg = ql.GaussianRandomSequenceGenerator(
        ql.UniformRandomSequenceGenerator(dim, ql.UniformRandomGenerator(seed))
    )
    gen = ql.GaussianMultiPathGenerator(process, times, rsg, False)
    pairs = paths // 2
    prices = np.empty((2, pairs, len(dates)))
    for i in range(pairs):
        for side, path in enumerate((gen.next(), gen.antithetic())):
            spot_path = path.value()[0]
            prices[side, i] = [spot_path[j] for j in where]
    # a path and its antithetic mirror are one sample unit: the stdErr is that of the pairs
    pair_sum = payoff(inst, prices[0]) + payoff(inst, prices[1])
    values = 0.5 * math.exp(-params["rate"] * t) * pair_sum
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(pairs))


def engine_price(
    params: dict[str, float], inst: dict[str, Any], paths: int, steps_per_year: int, seed: int
) -> tuple[float, float]:
    spec = parse_spec(
        {
            "model": dict(params, type="heston", stepsPerYear=steps_per_year),
            "instrument": inst,
            "paths": paths,
            "seed": seed,
            "varianceReduction": {"antithetic": True, "controlVariate": False},
        }
    )
    est = aggregate([simulate_block(spec, b) for b in range(plan_blocks(spec).n_blocks)], spec)
    return est.estimate, est.std_err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=400_000, help="QuantLib reference paths")
    parser.add_argument("--engine-paths", type=int, default=1_000_000)
    parser.add_argument("--reference-steps", type=int, default=504, help="steps a year")
    parser.add_argument("--steps", default="12,52,252", help="the engine's stepsPerYear")
    parser.add_argument("--seed", type=int, default=20261128)
    args = parser.parse_args()
    import QuantLib as ql

    print(
        f"QuantLib {ql.__version__}: {args.paths:,} paths, QE + martingale correction, "
        f"{args.reference_steps} steps a year, seed {args.seed}; engine: {args.engine_paths:,} "
        "paths (antithetic), seed 11"
    )
    for name, (heston_set, inst) in HESTON_PATH_CASES.items():
        params = HESTON_SETS[heston_set]
        t0 = time.process_time()
        ref, ref_se = quantlib_reference(params, inst, args.paths, args.reference_steps, args.seed)
        print(
            f"{name:<26} reference {ref:.5f} +- {ref_se:.5f} "
            f"({time.process_time() - t0:.0f} s CPU)",
            flush=True,
        )
        for n in (int(s) for s in args.steps.split(",")):
            t0 = time.process_time()
            est, se = engine_price(params, inst, args.engine_paths, n, 11)
            bias = est - ref
            combined = math.hypot(se, ref_se)
            print(
                f"    engine {n:>4} steps/yr {est:.5f} +- {se:.5f}: bias {bias:+.5f} "
                f"+- {combined:.5f} ({time.process_time() - t0:.0f} s CPU)",
                flush=True,
            )


if __name__ == "__main__":
    main()
