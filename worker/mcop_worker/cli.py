"""`mcop`: run a MonteCarloJob here (`mcop run`), the operator (`mcop operator`) or a worker pod
(`mcop worker`).

Imports are lazy so that `mcop --help` is instant and `mcop run` works without the operator's
dependencies. Exit codes: 0 success, 2 invalid manifest (the message names the field), 1 anything
else (unreadable file, a shard that crashed, ...), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("operator", "worker"):
        return _dispatch(args[0], args[1:])
    parser = _parser()
    ns = parser.parse_args(args)
    if ns.command == "plot":
        return plot_command(ns.file, Path(ns.output), ns.shards, ns.progress)
    if ns.command != "run":
        parser.print_help(sys.stderr)
        return EXIT_INVALID
    plot = Path(ns.plot) if ns.plot else None
    return run_command(ns.file, ns.shards, ns.json, ns.progress, plot)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcop", description="Reproducible Monte Carlo simulations as Kubernetes resources."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run a MonteCarloJob manifest on this machine",
        description="Run a MonteCarloJob manifest on this machine with the engine the worker pods "
        "run. The numbers are the same bits for any --shards.",
    )
    run.add_argument("file", metavar="FILE", help="MonteCarloJob YAML manifest ('-' for stdin)")
    run.add_argument(
        "--shards",
        type=_shards,
        default=None,
        metavar="N",
        help="local processes (1-64; default: the manifest's spec.shards, at most the CPU count)",
    )
    run.add_argument("--json", action="store_true", help="print the result as one JSON object")
    run.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress line on stderr: auto (only on a terminal), always, never",
    )
    run.add_argument(
        "--plot",
        metavar="OUT.png",
        help="also draw the convergence plot to this PNG (needs the [plot] extra: matplotlib)",
    )
    plot = sub.add_parser(
        "plot",
        help="draw a convergence plot from a manifest (run here) or a MonteCarloJob's JSON",
        description="Draw the convergence of a job to a PNG: the estimate with its 95%% band "
        "against paths (log scale), the closed form or the target precision where known; for var "
        "the loss tail with VaR and expected shortfall. FILE is a manifest, run here as by `mcop "
        "run`, or a MonteCarloJob from the cluster: kubectl get mcj NAME -o json | mcop plot - "
        "-o plot.png (its status.history).",
    )
    plot.add_argument("file", metavar="FILE", help="manifest or MonteCarloJob JSON ('-': stdin)")
    plot.add_argument("-o", "--output", required=True, metavar="OUT.png", help="the PNG to write")
    plot.add_argument(
        "--shards",
        type=_shards,
        default=None,
        metavar="N",
        help="local processes when FILE is a manifest to run (as `mcop run`)",
    )
    plot.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress line on stderr while a manifest runs",
    )
    sub.add_parser("operator", help="run the operator (see `mcop operator --help`)")
    sub.add_parser("worker", help="worker pod entrypoint (configured by environment variables)")
    return parser


def _shards(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError("must be between 1 and 64")
    return value


def _dispatch(command: str, rest: list[str]) -> int:
    if command == "operator":
        from mcop_operator.main import run as run_operator

        return int(run_operator(rest))
    from mcop_worker.programs.worker_main import run as run_worker

    return int(run_worker(rest))


# -- mcop run -----------------------------------------------------------------------------------


def run_command(
    file: str, shards: int | None, as_json: bool, progress: str = "auto", plot: Path | None = None
) -> int:
    from mcop_worker.model.errors import ManifestError

    try:
        manifest = load_manifest(file)
    except OSError as exc:
        _error(f"cannot read {file}: {exc.strerror or exc}")
        return EXIT_FAILED
    except ManifestError as exc:
        _invalid(file, exc)
        return EXIT_INVALID
    try:
        spec, shards_in_manifest = _job_spec(manifest)
    except ManifestError as exc:
        _invalid(file, exc)
        return EXIT_INVALID
    if shards is None:
        shards = max(1, min(shards_in_manifest, os.cpu_count() or 1))
    try:
        return _execute(manifest, spec, shards, as_json, progress, plot)
    except Exception as exc:  # a bug or a broken install: say what, exit 1, no traceback wall
        _error(f"failed: {type(exc).__name__}: {exc}")
        return EXIT_FAILED


def load_manifest(file: str) -> dict[str, Any]:
    """The one YAML document of `file`; ManifestError if it is not YAML or not one object."""
    import yaml

    from mcop_worker.model.errors import ManifestError
    from mcop_worker.model.manifest_yaml import load_all

    text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    try:
        docs = [d for d in load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError("manifest", f"is not valid YAML: {exc}") from None
    if len(docs) != 1:
        raise ManifestError("manifest", f"must hold one MonteCarloJob document, found {len(docs)}")
    if not isinstance(docs[0], dict):
        raise ManifestError("manifest", "must be a YAML mapping (apiVersion, kind, metadata, spec)")
    return docs[0]


def _job_spec(manifest: dict[str, Any]) -> tuple[Any, int]:
    """Validate with the CRD's rules (defaults applied), then what only code can judge."""
    from mcop_worker.model import validation
    from mcop_worker.model.spec import parse_spec

    doc = validation.validate_manifest(manifest)
    spec = doc["spec"]
    return parse_spec(spec), int(spec.get("shards", 1))


def _execute(
    manifest: dict[str, Any],
    spec: Any,
    shards: int,
    as_json: bool,
    mode: str,
    plot: Path | None = None,
) -> int:
    from mcop_worker.programs.local_runner import ShardFailed, run_job
    from mcop_worker.programs.progress_bar import ProgressBar

    if plot is not None:
        from mcop_worker.programs import plot as plotting

        plotting.check_available()
    bar = ProgressBar(sys.stderr, mode)
    points: list[dict[str, Any]] = []

    def on_progress(progress: Any, elapsed: float) -> None:
        bar.update(progress, elapsed)
        running = progress.running
        if running is not None and (not points or progress.paths_done > points[-1]["paths"]):
            points.append(
                {
                    "paths": progress.paths_done,
                    "estimate": running.estimate,
                    "stdErr": running.std_err,
                }
            )

    try:
        result = run_job(spec, shards, on_progress=on_progress)
    except KeyboardInterrupt:
        bar.close()
        _error("interrupted")
        return EXIT_INTERRUPTED
    except ShardFailed as exc:
        bar.close()
        _error(str(exc))
        return EXIT_FAILED
    bar.close()
    if plot is not None:
        _plot_run(plot, manifest, spec, result, points)
    if as_json:
        print(json.dumps(result.to_json()))
    else:
        name = (manifest.get("metadata") or {}).get("name", "job")
        print_result(sys.stdout, name, spec, result, shards)
    return EXIT_OK


def _plot_run(
    out: Path, manifest: dict[str, Any], spec: Any, result: Any, points: list[dict[str, Any]]
) -> None:
    from mcop_worker.programs import plot as plotting

    est = result.estimate
    losses = None
    if spec.instrument.type == "var":
        losses = plotting.loss_tail(
            result.blocks, est.blocks, est.paths, spec.instrument.confidence_levels
        )
    name = str((manifest.get("metadata") or {}).get("name", "job"))
    doc = result.to_json()
    points = [p for p in points if p["paths"] < est.paths]  # the last point is the result's
    points.append({"paths": est.paths, "estimate": est.estimate, "stdErr": est.std_err})
    plotting.draw(out, name, manifest.get("spec") or {}, points, doc, losses, est.paths)
    print(f"mcop: convergence plot written to {out}", file=sys.stderr)


# -- mcop plot ----------------------------------------------------------------------------------


def plot_command(file: str, out: Path, shards: int | None, progress: str = "auto") -> int:
    """A MonteCarloJob read from the cluster (it has a status): draw its status.history. A
    manifest: run it here, as `mcop run FILE --plot OUT`."""
    from mcop_worker.model.errors import ManifestError
    from mcop_worker.programs import plot as plotting

    try:
        doc = load_manifest(file)
    except OSError as exc:
        _error(f"cannot read {file}: {exc.strerror or exc}", "plot")
        return EXIT_FAILED
    except ManifestError as exc:
        _invalid(file, exc)
        return EXIT_INVALID
    if "status" not in doc:
        path = _as_file(file, doc)
        try:
            return run_command(path, shards, False, progress, out)
        finally:
            if path != file:
                Path(path).unlink(missing_ok=True)
    name, spec, history, result = plotting.from_resource(doc)
    try:
        plotting.draw(out, name, spec, history, result, None, None)
    except (ValueError, plotting.PlotUnavailable) as exc:
        _error(str(exc), "plot")
        return EXIT_FAILED
    print(f"mcop: convergence plot written to {out}", file=sys.stderr)
    return EXIT_OK


def _as_file(file: str, doc: dict[str, Any]) -> str:
    """The manifest again as a file `run_command` can read (stdin has been read already)."""
    if file != "-":
        return file
    import tempfile

    import yaml

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as tmp:
        yaml.safe_dump(doc, tmp)
    return tmp.name


def print_result(out: TextIO, name: str, spec: Any, result: Any, shards: int) -> None:
    from mcop_worker.programs.progress_bar import duration, human

    est = result.estimate
    inst = spec.instrument
    vr = spec.variance_reduction
    techniques = [
        t
        for t, on in (("antithetic", vr.antithetic), ("control variate", vr.control_variate))
        if on
    ]
    if spec.sampler.sobol:
        techniques.insert(0, f"Sobol' RQMC ({spec.sampler.randomizations} randomizations)")
    what = inst.type if inst.type == "var" else f"{inst.type} {inst.option_type}"
    out.write(f"{name}: {what}, seed {spec.seed}, {', '.join(techniques) or 'plain Monte Carlo'}\n")
    label = "VaR " + _level(inst.confidence_levels[0]) if inst.type == "var" else "price"
    rows = [
        (f"estimate ({label})", f"{est.estimate:.6f}"),
        ("std error", f"{est.std_err:.6f}"),
        (f"{est.ci_level:.0%} interval", f"[{est.ci_lower:.6f}, {est.ci_upper:.6f}]"),
    ]
    if est.value_at_risk is not None:
        for key, value in est.value_at_risk.items():
            es = (est.expected_shortfall or {}).get(key, float("nan"))
            rows.append((f"level {key}", f"VaR {value:.6f}   ES {es:.6f}"))
    for greek, entry in (est.greeks or {}).items():
        per_asset = entry if "value" not in entry else {"": entry}
        for asset, g in per_asset.items():
            se = g.get("stdErr", float("nan"))
            rows.append((f"{greek} {asset}".rstrip(), f"{g['value']:.6f} +- {se:.6f}"))
    stopped = " (target stdErr reached: stopped early)" if est.stopped_early else ""
    rows += [
        ("paths", f"{est.paths:,}{stopped}"),
        (
            "time",
            f"{duration(result.elapsed_seconds)} on {shards} process"
            f"{'es' if shards > 1 else ''}, {human(result.paths_per_second)} paths/s",
        ),
        ("spec hash", result.spec_hash),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        out.write(f"  {key:<{width}}  {value}\n")
    for warning in est.warnings:
        out.write(f"  warning: {warning}\n")


def _level(level: float) -> str:
    return f"{level * 100:g}%"


def _invalid(file: str, exc: Any) -> None:
    lines = str(exc).splitlines() or [str(exc)]
    _error(f"{file} is not a valid MonteCarloJob:\n" + "\n".join(f"  {line}" for line in lines))


def _error(message: str, command: str = "run") -> None:
    print(f"mcop {command}: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
