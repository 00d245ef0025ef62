"""Engine throughput against a straightforward numpy pricer and against its random numbers alone.

Prints, all measured in this run:
  * European paths/s and 252-step Asian path-steps/s of the engine on one core (whole jobs through
    `simulate_block`, block after block), plain and with antithetic + control variates;
  * the ratio to a straightforward whole-array numpy implementation (the baseline, below);
  * the ratio to generating the same standard normals alone (the engine's Philox4x32-10 +
    Box-Muller draw, `engine/philox.py`: the limit), and numpy's own `standard_normal` for
    reference;
  * Heston, Merton and American exercise, paths/s beside GBM with the same instrument;
  * 1 vs 2 processes (simulation only, after start-up, like two worker pods);
  * peak memory (RSS) of fresh processes simulating a small and an 8x larger job.

Not a timed test: numbers depend on the machine and its load. Use the best of `--repeat` runs.
The first line names the CPU and its vector width (the engine's loops are SIMD: AVX2 runs 4 lanes
of float64, AVX-512 8).
Run: .venv/bin/python benchmarks/bench_engine.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mcop_worker.engine.blocks import block_stream, plan_blocks, shard_blocks
from mcop_worker.engine.philox import fill
from mcop_worker.engine.registry import compose
from mcop_worker.engine.simulate import simulate_block
from mcop_worker.model.spec import JobSpec, parse_spec

S0, K, R, VOL, T = 100.0, 100.0, 0.05, 0.2, 1.0
STEPS = 252


def job(kind: str, paths: int, antithetic: bool, control: bool) -> JobSpec:
    instrument: dict[str, Any] = {"type": kind, "optionType": "call", "strike": K, "maturity": T}
    if kind == "asian":
        instrument["steps"] = STEPS
    return parse_spec(
        {
            "model": {"type": "gbm", "spot": S0, "volatility": VOL, "rate": R},
            "instrument": instrument,
            "paths": paths,
            "seed": 1,
            "varianceReduction": {"antithetic": antithetic, "controlVariate": control},
        }
    )


def best(fn: Callable[[], Any], repeat: int) -> float:
    """The least CPU time of this process over `repeat` runs of fn: one core's work, which other
    processes on a busy machine disturb less than they do wall time (everything timed here runs
    on one thread: numpy's element-wise functions and the engine's kernels alike)."""
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def run_engine(spec: JobSpec) -> None:
    for b in range(plan_blocks(spec).n_blocks):
        simulate_block(spec, b)


# -- the baseline: what one writes first with numpy ---------------------------------------------


def numpy_european(n: int) -> tuple[float, float]:
    rng = np.random.default_rng(1)
    z = rng.standard_normal(n)
    st = S0 * np.exp((R - 0.5 * VOL**2) * T + VOL * math.sqrt(T) * z)
    payoff = math.exp(-R * T) * np.maximum(st - K, 0.0)
    return float(payoff.mean()), float(payoff.std(ddof=1) / math.sqrt(n))


def numpy_asian(n: int) -> tuple[float, float]:
    rng = np.random.default_rng(1)
    dt = T / STEPS
    z = rng.standard_normal((n, STEPS))
    paths = S0 * np.exp(np.cumsum((R - 0.5 * VOL**2) * dt + VOL * math.sqrt(dt) * z, axis=1))
    payoff = math.exp(-R * T) * np.maximum(paths.mean(axis=1) - K, 0.0)
    return float(payoff.mean()), float(payoff.std(ddof=1) / math.sqrt(n))


# -- the limit: the same normals, drawn alone ---------------------------------------------------


def draw_normals(count: int) -> None:
    """Draw `count` normals the way the engine does (block streams, 32768-normal chunks)."""
    buf = np.empty(32768)
    stream = block_stream(1, 0)
    done = 0
    while done < count:
        n = min(count - done, buf.size)
        fill(stream, done, n, buf)
        done += n


def numpy_normals(count: int) -> None:
    rng = np.random.default_rng(1)
    buf = np.empty(32768)
    left = count
    while left > 0:
        n = min(left, buf.size)
        rng.standard_normal(out=buf[:n])
        left -= n


# -- models and exercise (issue 12) --------------------------------------------------------------

HESTON = {
    "type": "heston",
    "spot": S0,
    "rate": R,
    "initialVariance": VOL**2,
    "meanReversion": 1.5,
    "longRunVariance": VOL**2,
    "volOfVol": 0.5,
    "spotVarianceCorrelation": -0.7,
    "stepsPerYear": 252,
}
MERTON = {
    "type": "merton",
    "spot": S0,
    "volatility": VOL,
    "rate": R,
    "jumpIntensity": 0.5,
    "jumpMean": -0.1,
    "jumpStdDev": 0.15,
}
GBM = {"type": "gbm", "spot": S0, "volatility": VOL, "rate": R}


def model_job(
    model: dict[str, Any], instrument: dict[str, Any], paths: int, greeks: tuple[str, ...] = ()
) -> JobSpec:
    doc: dict[str, Any] = {
        "model": model,
        "instrument": instrument,
        "paths": paths,
        "seed": 1,
        "varianceReduction": {"antithetic": True, "controlVariate": True},
    }
    if greeks:
        doc["greeks"] = list(greeks)
    return parse_spec(doc)


NORMALS_PER_STEP = {"gbm": 1, "heston": 2, "merton": 3}


def model_rows(scale: int, rep: int) -> None:
    """Paths/s (CPU time of this process) of each model and of American exercise, beside the GBM
    job with the same instrument, all antithetic + control variate."""
    euro = {"type": "european", "optionType": "call", "strike": K, "maturity": T}
    amer = {"type": "american", "optionType": "put", "strike": K, "maturity": T, "steps": 50}
    four = ("delta", "gamma", "vega", "rho")
    heston_greeks = ("delta", "gamma", "rho")  # no vega under heston
    rows: list[tuple[str, dict[str, Any], dict[str, Any], int, tuple[str, ...]]] = [
        ("gbm european", GBM, euro, (1 << 23) // scale, ()),
        ("heston european (252 steps/yr)", HESTON, euro, (1 << 17) // scale, ()),
        ("merton european", MERTON, euro, (1 << 22) // scale, ()),
        ("gbm european + 4 greeks", GBM, euro, (1 << 23) // scale, four),
        ("heston european + 3 greeks", HESTON, euro, (1 << 17) // scale, heston_greeks),
        ("merton european + 4 greeks", MERTON, euro, (1 << 22) // scale, four),
        ("gbm american put (50 dates)", GBM, amer, (1 << 19) // scale, ()),
        ("heston american put (50 dates)", HESTON, amer, (1 << 17) // scale, ()),
        ("merton american put (50 dates)", MERTON, amer, (1 << 19) // scale, ()),
    ]
    print("\nmodels, one core, antithetic + control variate (CPU time; American: the rule's fit")
    print("on 32,768 regression paths is done once per process, not timed)")
    header = f"{'job':<36}{'paths/s':>12}{'x gbm, same instrument':>26}{'ns/path-step':>14}"
    print(header)
    print("-" * len(header))
    base: dict[str, float] = {}
    for label, model, inst, paths, greeks in rows:
        spec = model_job(model, inst, paths, greeks)
        run_engine(model_job(model, inst, 20_000, greeks))  # compile / load the cache
        simulate_block(spec, 0)  # the American rule's fit, once
        times = []
        for _ in range(rep):
            t0 = time.process_time()
            run_engine(spec)
            times.append(time.process_time() - t0)
        rate = paths / min(times)
        base.setdefault(inst["type"], rate)
        # simulation steps of a path (Heston refines each interval between dates): normals per
        # path / normals per step
        steps = compose(spec).model.dims // NORMALS_PER_STEP[model["type"]]
        print(
            f"{label:<36}{rate:>12,.0f}{rate / base[inst['type']]:>25.4f}x"
            f"{1e9 / (rate * steps):>14.1f}"
        )


# -- processes ----------------------------------------------------------------------------------


def _shard(spec: JobSpec, shards: int, index: int, barrier: Any, out: Any) -> None:
    simulate_block(spec, 0)  # start-up: imports, numba cache, first-touch of buffers
    barrier.wait()
    t0 = time.perf_counter()
    for b in shard_blocks(plan_blocks(spec).n_blocks, shards, index):
        simulate_block(spec, b)
    out.put(time.perf_counter() - t0)


def processes_time(spec: JobSpec, shards: int) -> float:
    """Wall time of `shards` processes simulating the job together, start-up excluded."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(shards)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_shard, args=(spec, shards, i, barrier, out)) for i in range(shards)
    ]
    for p in procs:
        p.start()
    times = [float(out.get()) for _ in procs]
    for p in procs:
        p.join()
    return max(times)


def _peak_rss(spec: JobSpec, out: Any) -> None:
    run_engine(spec)
    out.put(_vm_hwm_kib())


def _vm_hwm_kib() -> int:
    """Peak resident set of this process. (Not getrusage: on Linux its ru_maxrss survives the
    exec of a spawned child, so it would report the parent's peak.)"""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss_kib(spec: JobSpec) -> int:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_peak_rss, args=(spec, out))
    p.start()
    rss = int(out.get())
    p.join()
    return rss


# -- report -------------------------------------------------------------------------------------


def cpu_kind() -> str:
    """The CPU's name and its widest vector unit (from /proc/cpuinfo's flags)."""
    name, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and name == "unknown CPU":
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    width = "128-bit (SSE2)"
    if "avx512f" in flags:
        width = "512-bit (AVX-512)"
    elif "avx2" in flags:
        width = "256-bit (AVX2)"
    return f"{name}, vector width {width}"


def millions(x: float) -> str:
    return f"{x / 1e6:7.1f} M"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller jobs (a rough look)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models-only", action="store_true", help="only the models' rows")
    args = parser.parse_args()
    scale = 4 if args.quick else 1
    euro_paths = (1 << 25) // scale  # 33.5M
    asian_paths = (1 << 19) // scale  # 524k x 252 = 132M path-steps
    base_euro_paths = (1 << 24) // scale
    base_asian_paths = (1 << 16) // scale  # whole array: 65k x 252 doubles = 132 MB
    rep = args.repeat
    print(
        f"machine: {cpu_kind()}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}, "
        f"numpy {np.__version__}"
    )
    print(f"load average: {os.getloadavg()[0]:.2f} (other work on the machine skews the numbers)")
    if args.models_only:
        model_rows(scale, rep)
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
        return
    for kind in ("european", "asian"):
        run_engine(job(kind, 20_000, True, True))  # compile / load the numba cache
        run_engine(job(kind, 20_000, False, False))

    # numpy baseline and the normal-generation limit
    t_base_e = best(lambda: numpy_european(base_euro_paths), rep)
    t_base_a = best(lambda: numpy_asian(base_asian_paths), rep)
    base_e = base_euro_paths / t_base_e
    base_a = base_asian_paths * STEPS / t_base_a
    draw_normals(10_000)
    normals_rate = 20_000_000 / best(lambda: draw_normals(20_000_000), rep)
    numpy_rate = 20_000_000 / best(lambda: numpy_normals(20_000_000), rep)
    print(
        f"\nstandard normals/s: engine draw {millions(normals_rate)}, numpy {millions(numpy_rate)}"
    )
    print(f"numpy baseline: European {millions(base_e)} paths/s, Asian {millions(base_a)} steps/s")

    print("\none core, whole jobs (paths/s of CPU time; Asian: path-steps/s)")
    header = f"{'job':<44}{'rate':>12}{'x baseline':>12}{'x normals time':>16}"
    print(header)
    print("-" * len(header))
    rows = []
    for kind, paths, unit, base in (
        ("european", euro_paths, 1, base_e),
        ("asian", asian_paths, STEPS, base_a),
    ):
        for anti, cv in ((False, False), (True, True)):
            spec = job(kind, paths, anti, cv)
            t = best(lambda spec=spec: run_engine(spec), rep)  # type: ignore[misc]
            rate = paths * unit / t
            normals = plan_blocks(spec).units * plan_blocks(spec).normals_per_unit
            limit = normals / normals_rate  # seconds to draw the normals it used
            vr = "antithetic+cv" if anti else "plain"
            label = f"{kind} {vr} ({paths:,} paths)"
            rows.append((kind, vr, rate, rate / base, t / limit))
            print(f"{label:<44}{millions(rate):>12}{rate / base:>11.1f}x{t / limit:>15.2f}x")

    model_rows(scale, rep)

    spec = job("asian", 4 * asian_paths, True, True)
    # Alternate 1 and 2 processes and keep the best of each: other work on a small machine
    # otherwise decides the ratio.
    t1 = t2 = math.inf
    for _ in range(rep):
        t1 = min(t1, processes_time(spec, 1))
        t2 = min(t2, processes_time(spec, 2))
    print(
        f"\nprocesses (asian antithetic+cv, simulation only): 1 -> {t1:.2f}s, 2 -> {t2:.2f}s, "
        f"speed-up {t1 / t2:.2f}x"
    )

    print("\npeak RSS of a fresh process simulating a whole job:")
    for kind, small in (("european", 1 << 21), ("asian", 1 << 15)):
        a = peak_rss_kib(job(kind, small, True, True))
        b = peak_rss_kib(job(kind, 8 * small, True, True))
        print(
            f"  {kind:<9} {small:>10,} paths: {a / 1024:6.1f} MiB   "
            f"{8 * small:>11,} paths: {b / 1024:6.1f} MiB"
        )


if __name__ == "__main__":
    main()
