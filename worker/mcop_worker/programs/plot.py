"""Convergence plots (`mcop run FILE --plot OUT.png`, `mcop plot FILE|- -o OUT.png`): the running
estimate with its 95% band against paths on a log scale, the closed form where one is known, the
standard error against the 1/sqrt(paths) line and the target precision; for var the loss tail with
the VaR and expected shortfall of each confidence level.

matplotlib is an optional dependency (`pip install 'montecarlo-operator[plot]'`): the worker image
and the operator never draw, and matplotlib with its font and image libraries is most of a
plotting install.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mcop_worker.engine import closed_forms
from mcop_worker.engine.aggregate import Z_95

Point = Mapping[str, Any]  # {paths, estimate, stdErr}, as in status.history

_INSTRUMENTS = {
    "european": "European",
    "asian": "Asian",
    "barrier": "Barrier",
    "basket": "Basket",
    "var": "Value-at-Risk",
    "american": "American",
}
_MODELS = {"gbm": "geometric Brownian motion", "heston": "Heston", "merton": "Merton jumps"}


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed; the message says how to get it."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable(
            "plots need matplotlib: pip install 'montecarlo-operator[plot]'"
        ) from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def check_available() -> None:
    """Raises PlotUnavailable before a long run whose plot could not be drawn."""
    _pyplot()


def title_of(name: str, spec: Mapping[str, Any]) -> tuple[str, str]:
    """(title, subtitle): what was priced under which model, and the inputs that matter."""
    inst: Mapping[str, Any] = spec.get("instrument") or {}
    model: Mapping[str, Any] = spec.get("model") or {}
    kind = str(inst.get("type", "?"))
    what = _INSTRUMENTS.get(kind, kind)
    if inst.get("optionType"):
        what += f" {inst['optionType']}"
    barrier = inst.get("barrier")
    if kind == "barrier" and isinstance(barrier, Mapping):
        what = f"{barrier.get('direction', '')}-and-{barrier.get('knock', '')} {what}".strip("-")
    model_type = str(model.get("type", "gbm"))
    title = f"{name}: {what}, {_MODELS.get(model_type, model_type)}"
    facts = []
    if model.get("spot") is not None:
        facts.append(f"S={_num(model['spot'])}")
    if inst.get("strike") is not None:
        facts.append(f"K={_num(inst['strike'])}")
    if kind == "barrier" and isinstance(barrier, Mapping):
        facts.append(f"B={_num(barrier.get('level'))}")
    if inst.get("maturity") is not None:
        facts.append(f"T={_num(inst['maturity'])}")
    if model.get("volatility") is not None:
        facts.append(f"σ={_num(model['volatility'])}")
    if model.get("rate") is not None:
        facts.append(f"r={_num(model['rate'])}")
    if model.get("assets"):
        facts.append(f"{len(model['assets'])} assets")
    if kind == "var":
        facts.append(f"horizon {_num(inst.get('horizon'))} y")
    facts.append(f"seed {spec.get('seed', '?')}")
    return title, ", ".join(facts)


def _num(x: Any) -> str:
    return f"{float(x):g}" if isinstance(x, int | float) else str(x)


def reference_value(spec: Mapping[str, Any]) -> tuple[str, float] | None:
    """The closed form of the job's price, where one is exact (European) or a standard
    approximation (discretely monitored barrier, Broadie-Glasserman-Kou), under GBM only."""
    inst: Mapping[str, Any] = spec.get("instrument") or {}
    model: Mapping[str, Any] = spec.get("model") or {}
    if model.get("type", "gbm") != "gbm" or model.get("spot") is None:
        return None
    try:
        args = (
            float(model["spot"]),
            float(inst["strike"]),
            float(model.get("rate", 0.0)),
            float(model.get("dividendYield", 0.0)),
            float(model["volatility"]),
            float(inst["maturity"]),
        )
        if inst.get("type") == "european":
            return "Black-Scholes", closed_forms.black_scholes(*args, str(inst["optionType"]))
        barrier = inst.get("barrier")
        if inst.get("type") == "barrier" and isinstance(barrier, Mapping):
            value = closed_forms.barrier_discrete(
                *args,
                int(inst["steps"]),
                float(barrier["level"]),
                str(barrier["direction"]),
                str(barrier["knock"]),
                float(barrier.get("rebate", 0.0)),
                str(inst["optionType"]),
            )
            return "closed form (BGK correction)", value
    except (KeyError, TypeError, ValueError):
        return None
    return None


def clean(points: Sequence[Point]) -> list[tuple[int, float, float]]:
    """(paths, estimate, stdErr) with finite numbers and growing paths."""
    out: list[tuple[int, float, float]] = []
    for p in points:
        try:
            n, est, se = int(p["paths"]), float(p["estimate"]), float(p["stdErr"])
        except (KeyError, TypeError, ValueError):
            continue
        if n > 0 and math.isfinite(est) and math.isfinite(se) and (not out or n > out[-1][0]):
            out.append((n, est, se))
    return out


def draw(
    out: Path,
    name: str,
    spec: Mapping[str, Any],
    points: Sequence[Point],
    result: Mapping[str, Any] | None = None,
    losses: npt.NDArray[np.float64] | None = None,
    total_paths: int | None = None,
) -> None:
    """Write the convergence plot of one job to `out` (PNG)."""
    plt = _pyplot()
    series = clean(points)
    if not series:
        raise ValueError("no convergence points to draw (status.history is empty: has it run?)")
    is_var = (spec.get("instrument") or {}).get("type") == "var"
    title, subtitle = title_of(name, spec)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 7.5), height_ratios=(3, 2), layout="constrained"
    )
    fig.suptitle(f"{title}\n{subtitle}", fontsize=12)
    _draw_estimate(top, series, spec, is_var)
    if is_var:
        _draw_tail(bottom, spec, result, losses, total_paths)
    else:
        _draw_std_err(bottom, series, spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    _save_small(buffer, out)


def _save_small(png: io.BytesIO, out: Path) -> None:
    """A 256-colour palette PNG: a third of the size, the same to the eye (pillow comes with
    matplotlib)."""
    from PIL import Image

    png.seek(0)
    with Image.open(png) as image:
        image.convert("RGB").quantize(colors=256).save(out, format="PNG", optimize=True)


def _draw_estimate(
    ax: Any, series: list[tuple[int, float, float]], spec: Any, is_var: bool
) -> None:
    n = np.array([s[0] for s in series], dtype=float)
    est = np.array([s[1] for s in series])
    se = np.array([s[2] for s in series])
    label = "VaR at " + _level((spec.get("instrument") or {}).get("confidenceLevels", [0.99])[0])
    label = label if is_var else "estimate"
    ax.fill_between(
        n,
        est - Z_95 * se,
        est + Z_95 * se,
        color="tab:blue",
        alpha=0.2,
        label="95% interval",
        step=None,
    )
    ax.plot(n, est, color="tab:blue", marker="o", markersize=3, linewidth=1.5, label=label)
    ref = None if is_var else reference_value(spec)
    if ref is not None:
        ax.axhline(
            ref[1], color="tab:red", linestyle="--", linewidth=1.2, label=f"{ref[0]}: {ref[1]:.6g}"
        )
    final = f"{_with_error(est[-1], Z_95 * se[-1])} (95%) after {int(n[-1]):,} paths"
    ax.set_title(final, fontsize=10, loc="left")
    ax.set_xscale("log")
    ax.set_xlabel("paths simulated (log scale)")
    ax.set_ylabel("VaR (loss)" if is_var else "price")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    # Zoom on the last one and a half decades of paths: the first blocks' wide bands would
    # flatten the rest (they run off the top and bottom of the axes).
    recent = n >= n[-1] / 30 if np.count_nonzero(n >= n[-1] / 30) >= 3 else np.ones_like(n, bool)
    lo = float(np.min(est[recent] - Z_95 * se[recent]))
    hi = float(np.max(est[recent] + Z_95 * se[recent]))
    if ref is not None:
        lo, hi = min(lo, ref[1]), max(hi, ref[1])
    pad = 0.15 * (hi - lo) if hi > lo else abs(hi) * 0.01 + 1e-12
    ax.set_ylim(lo - pad, hi + pad)


def _draw_std_err(ax: Any, series: list[tuple[int, float, float]], spec: Any) -> None:
    n = np.array([s[0] for s in series], dtype=float)
    se = np.array([s[2] for s in series])
    ax.loglog(n, se, color="tab:blue", marker="o", markersize=3, label="standard error")
    ax.loglog(n, se[-1] * np.sqrt(n[-1] / n), color="gray", linestyle=":", label="∝ 1/√paths")
    target = spec.get("targetStdErr")
    if target:
        ax.axhline(
            float(target),
            color="tab:green",
            linestyle="--",
            label=f"target stdErr {float(target):g}",
        )
    ax.set_xlabel("paths simulated (log scale)")
    ax.set_ylabel("standard error")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=9)


def _draw_tail(
    ax: Any,
    spec: Any,
    result: Mapping[str, Any] | None,
    losses: npt.NDArray[np.float64] | None,
    total_paths: int | None,
) -> None:
    var: Mapping[str, float] = (result or {}).get("valueAtRisk") or {}
    es: Mapping[str, float] = (result or {}).get("expectedShortfall") or {}
    colors = ("tab:red", "tab:purple", "tab:orange", "tab:brown")
    if losses is not None and losses.size:
        ax.hist(
            losses,
            bins=60,
            color="tab:blue",
            alpha=0.5,
            label=f"largest {losses.size:,} of {total_paths or '?':,} losses",
        )
        ax.set_ylabel("paths")
    for i, key in enumerate(var):
        color = colors[i % len(colors)]
        ax.axvline(
            var[key],
            color=color,
            linewidth=1.8,
            label=f"VaR {_level(float(key))}: {_fmt(var[key])}",
        )
        if key in es:
            ax.axvline(
                es[key],
                color=color,
                linewidth=1.8,
                linestyle="--",
                label=f"ES {_level(float(key))}: {_fmt(es[key])}",
            )
    ax.set_xlabel("loss of the portfolio over the horizon")
    ax.set_title(
        "loss tail" if losses is not None else "VaR and expected shortfall", fontsize=10, loc="left"
    )
    ax.grid(True, alpha=0.3)
    if var or losses is not None:
        ax.legend(loc="best", fontsize=9)


def _level(level: Any) -> str:
    return f"{float(level) * 100:g}%"


def loss_tail(
    blocks: Mapping[int, Any], used_blocks: int, paths: int, levels: Sequence[float]
) -> npt.NDArray[np.float64] | None:
    """The largest simulated losses of the blocks the result used, down to where every block's
    stored tail is complete (a block keeps only its largest losses), and at most four times the
    losses beyond the lowest VaR level: the tail, drawn exactly."""
    stats = [blocks[b] for b in range(used_blocks) if b in blocks and blocks[b].tail is not None]
    if not stats or not levels:
        return None
    pool = np.concatenate([s.losses for s in stats])
    cuts = [float(s.losses[-1]) for s in stats if not s.tail_complete and s.losses.size]
    if cuts:
        pool = pool[pool >= max(cuts)]
    keep = min(pool.size, max(50, 4 * math.ceil(paths * (1 - min(levels)))))
    tail: npt.NDArray[np.float64] = np.sort(pool)[::-1][:keep]
    return tail


def _fmt(x: float) -> str:
    """A number for a label: thousands separated, else four significant digits."""
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def _with_error(value: float, half_width: float) -> str:
    """ "value ± half_width": the half-width to two significant digits, the value to the same
    decimal place (10.451309 ± 0.00269 -> "10.4513 ± 0.0027"), no exponents."""
    if not math.isfinite(half_width) or half_width <= 0:
        return f"{value:,.6g}"
    places = 1 - math.floor(math.log10(half_width))
    digits = max(places, 0)
    return f"{round(value, places):,.{digits}f} ± {round(half_width, places):,.{digits}f}"


def from_resource(
    doc: Mapping[str, Any],
) -> tuple[str, Mapping[str, Any], list[Point], Mapping[str, Any] | None]:
    """(name, spec, history, result) of a MonteCarloJob read from the API server."""
    status: Mapping[str, Any] = doc.get("status") or {}
    name = str((doc.get("metadata") or {}).get("name") or "job")
    history = list(status.get("history") or [])
    if not history and status.get("estimate") is not None:
        history = [
            {
                "paths": status.get("pathsDone"),
                "estimate": status.get("estimate"),
                "stdErr": status.get("stdErr"),
            }
        ]
    return name, doc.get("spec") or {}, history, status.get("result")
