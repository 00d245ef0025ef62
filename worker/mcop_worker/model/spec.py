"""The numbers-defining part of a MonteCarloJob spec as frozen dataclasses.

`parse_spec` takes the `spec` dict of a manifest that `validation.validate_manifest` has already
checked and defaulted, and judges what only code can judge (a correlation matrix that is not
positive-definite, ...), raising `InvalidSpec` with the field's path. Defaults that the SPEC states
in words (dividend yield 0, rebate 0, identity correlation, var drift = rate - dividendYield) are
applied here too, so that a spec parsed without the CRD's defaults still means the same thing.

Irrelevant fields are dropped (`steps` of a European, `barrier` of an Asian, ...): the dataclasses
hold exactly what determines the numbers, which is what `spec_hash` hashes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mcop_worker.model.errors import InvalidSpec

InstrumentType = Literal["european", "asian", "barrier", "basket", "var", "american"]
OptionType = Literal["call", "put"]
ModelType = Literal["gbm", "heston", "merton"]

SINGLE_ASSET: frozenset[str] = frozenset({"european", "asian", "barrier", "american"})
PATH_DEPENDENT: frozenset[str] = frozenset({"asian", "barrier", "american"})
MULTI_ASSET: frozenset[str] = frozenset({"basket", "var"})


@dataclass(frozen=True)
class Asset:
    name: str
    spot: float
    volatility: float
    dividend_yield: float
    weight: float  # units held; negative: short
    drift: float  # real-world drift (var) or risk-neutral rate - dividendYield (basket)


@dataclass(frozen=True)
class Heston:
    """dv = kappa (theta - v) dt + xi sqrt(v) dW_v, d ln S = (r - q - v/2) dt + sqrt(v) dW_S,
    d<W_S, W_v> = rho dt."""

    initial_variance: float  # v0
    mean_reversion: float  # kappa
    long_run_variance: float  # theta
    vol_of_vol: float  # xi
    correlation: float  # rho


@dataclass(frozen=True)
class Merton:
    """GBM (the asset's volatility) plus compound-Poisson log jumps N(jump_mean, jump_std**2)."""

    jump_intensity: float  # jumps per year
    jump_mean: float
    jump_std: float


DEFAULT_STEPS_PER_YEAR = 252


@dataclass(frozen=True)
class Model:
    """GBM, Heston or Merton. Single-asset instruments use `assets[0]` with weight 1 (Heston's
    asset volatility is sqrt(v0), for reference only)."""

    rate: float
    assets: tuple[Asset, ...]
    correlation: tuple[tuple[float, ...], ...]  # always explicit (identity by default)
    type: ModelType = "gbm"
    heston: Heston | None = None
    merton: Merton | None = None
    steps_per_year: int = DEFAULT_STEPS_PER_YEAR  # heston: the largest simulation step is 1/this

    def steps_per_date(self, interval: float) -> int:
        """heston: simulation steps between two of the instrument's dates `interval` apart (no
        step longer than 1/stepsPerYear); other models step from date to date."""
        if self.type != "heston":
            return 1
        return max(1, math.ceil(self.steps_per_year * interval - 1e-9))


@dataclass(frozen=True)
class Barrier:
    level: float
    direction: Literal["up", "down"]
    knock: Literal["in", "out"]
    rebate: float  # paid at maturity: knock-out if knocked out, knock-in if never knocked in


@dataclass(frozen=True)
class Instrument:
    type: InstrumentType
    option_type: OptionType | None = None
    strike: float | None = None
    maturity: float | None = None  # options
    steps: int | None = None  # asian, barrier
    barrier: Barrier | None = None
    horizon: float | None = None  # var
    confidence_levels: tuple[float, ...] = ()  # var, in the order given


@dataclass(frozen=True)
class VarianceReduction:
    antithetic: bool
    control_variate: bool


SamplerType = Literal["pseudorandom", "sobol"]
GREEK_NAMES: tuple[str, ...] = ("delta", "gamma", "vega", "rho", "theta")
MIN_RANDOMIZATIONS = 8
DEFAULT_RANDOMIZATIONS = 32  # 8-16 covered ~90-91%, 32 covered 94% (docs/rqmc-and-greeks.md)
MAX_RANDOMIZATIONS = 1024
MIN_POINTS_PER_RANDOMIZATION = 16


@dataclass(frozen=True)
class Sampler:
    """pseudorandom: one Philox4x32-10 stream per block. sobol: `randomizations` independent
    scramblings of one Sobol' point set (paths / randomizations points each, rounded down to a
    power of 2)."""

    type: SamplerType = "pseudorandom"
    randomizations: int = 0  # sobol only

    @property
    def sobol(self) -> bool:
        return self.type == "sobol"


@dataclass(frozen=True)
class JobSpec:
    model: Model
    instrument: Instrument
    paths: int
    seed: int
    variance_reduction: VarianceReduction
    target_std_err: float | None
    sampler: Sampler = Sampler()
    greeks: tuple[str, ...] = ()  # in GREEK_NAMES order


def parse_spec(spec: Mapping[str, Any]) -> JobSpec:
    """A validated, defaulted manifest `spec` -> JobSpec, or InvalidSpec naming the field."""
    if not isinstance(spec, Mapping):
        raise InvalidSpec("spec", "must be an object")
    instrument = _instrument(_obj(spec, "instrument", "spec.instrument"))
    model = _model(_obj(spec, "model", "spec.model"), instrument.type)
    paths = _int(spec, "paths", "spec.paths", minimum=1)
    seed = _int(spec, "seed", "spec.seed", minimum=0, default=0)
    vr_raw = spec.get("varianceReduction") or {}
    vr_raw = _as_obj(vr_raw, "spec.varianceReduction")
    if instrument.type == "var":
        # Quantiles use plain independent paths: exact order statistics and distribution-free
        # intervals need i.i.d. losses, so variance reduction does not apply to var.
        vr = VarianceReduction(antithetic=False, control_variate=False)
    else:
        vr = VarianceReduction(
            antithetic=_bool(vr_raw, "antithetic", "spec.varianceReduction.antithetic"),
            control_variate=_bool(
                vr_raw, "controlVariate", "spec.varianceReduction.controlVariate"
            ),
        )
    target = spec.get("targetStdErr")
    target_std_err = None
    if target is not None:
        target_std_err = _num(spec, "targetStdErr", "spec.targetStdErr")
        if target_std_err <= 0:
            raise InvalidSpec("spec.targetStdErr", "must be > 0 (or left out)")
    _check_jumps(model, instrument)
    sampler = _sampler(spec.get("sampler"), instrument.type, paths)
    if sampler.sobol:
        _check_sobol_dimensions(model, instrument)
    greeks = _greeks(spec.get("greeks"), instrument.type, model)
    return JobSpec(model, instrument, paths, seed, vr, target_std_err, sampler, greeks)


def _sampler(raw: Any, instrument: str, paths: int) -> Sampler:
    f = "spec.sampler"
    if raw is None:
        return Sampler()
    raw = _as_obj(raw, f)
    kind = raw.get("type", "pseudorandom")
    if kind not in ("pseudorandom", "sobol"):
        raise InvalidSpec(f"{f}.type", "must be pseudorandom or sobol")
    if kind == "pseudorandom":
        return Sampler()
    if instrument == "var":
        raise InvalidSpec(
            f"{f}.type",
            "sobol is not available for var: exact quantiles and their intervals need "
            "independent paths; use pseudorandom",
        )
    default = DEFAULT_RANDOMIZATIONS
    r = _int(raw, "randomizations", f"{f}.randomizations", minimum=1, default=default)
    if r < MIN_RANDOMIZATIONS:
        raise InvalidSpec(
            f"{f}.randomizations",
            f"must be at least {MIN_RANDOMIZATIONS}: the standard error comes from the spread "
            f"between independent randomizations, and fewer than {MIN_RANDOMIZATIONS} give no "
            "honest one",
        )
    if r > MAX_RANDOMIZATIONS:
        raise InvalidSpec(f"{f}.randomizations", f"must be at most {MAX_RANDOMIZATIONS}")
    if paths < MIN_POINTS_PER_RANDOMIZATION * r:
        raise InvalidSpec(
            "spec.paths",
            f"must be at least {MIN_POINTS_PER_RANDOMIZATION} x sampler.randomizations "
            f"({MIN_POINTS_PER_RANDOMIZATION * r}) with the sobol sampler",
        )
    return Sampler(type="sobol", randomizations=r)


SOBOL_MAX_DIMS = 21201  # the Joe-Kuo direction numbers shipped (engine/sobol.py MAX_DIMS)
NORMALS_PER_STEP = {"gbm": 1, "heston": 2, "merton": 3}


def normals_per_path(model: Model, instrument: Instrument) -> int:
    """The normals a path of `model` takes on the instrument's dates (the engine's `dims`)."""
    if instrument.type in MULTI_ASSET:
        return len(model.assets)  # one date
    dates = instrument.steps if instrument.type in PATH_DEPENDENT and instrument.steps else 1
    assert instrument.maturity is not None
    steps = dates * model.steps_per_date(instrument.maturity / dates)
    return NORMALS_PER_STEP[model.type] * steps


def _check_sobol_dimensions(model: Model, instrument: Instrument) -> None:
    """One Sobol' dimension per normal of a path: at most SOBOL_MAX_DIMS."""
    dims = normals_per_path(model, instrument)
    if dims <= SOBOL_MAX_DIMS:
        return
    field = "spec.model.stepsPerYear" if model.type == "heston" else "spec.instrument.steps"
    raise InvalidSpec(
        field,
        f"a path takes {dims} normals here, more than the {SOBOL_MAX_DIMS} Sobol' dimensions "
        "the sobol sampler has: lower it, or use sampler.type pseudorandom",
    )


# Greeks each model offers (docs/rqmc-and-greeks.md has the estimators), and why the others are not.
_GREEKS_OF_MODEL = {
    "gbm": GREEK_NAMES,
    "merton": ("delta", "gamma", "vega", "rho"),
    "heston": ("delta", "gamma", "rho"),
}
_WHY_NOT = {
    ("merton", "theta"): (
        "theta is not offered under merton: the number of jumps between two dates is a step "
        "function of the maturity, which has no per-path derivative"
    ),
    ("heston", "vega"): (
        "vega is not offered under heston: it has no single volatility (initialVariance, "
        "longRunVariance and volOfVol each move the price their own way)"
    ),
    ("heston", "theta"): (
        "theta is not offered under heston: the QE scheme's steps and martingale correction "
        "change with the maturity, which has no per-path derivative"
    ),
}


def _greeks(raw: Any, instrument: str, model: Model) -> tuple[str, ...]:
    f = "spec.greeks"
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise InvalidSpec(f, "must be a list, e.g. [delta, vega]")
    for i, name in enumerate(raw):
        if name not in GREEK_NAMES:
            raise InvalidSpec(f"{f}[{i}]", "must be one of " + ", ".join(GREEK_NAMES))
    if len(set(raw)) != len(raw):
        raise InvalidSpec(f, "must not repeat a Greek")
    if raw and instrument == "var":
        raise InvalidSpec(f, "Greeks are for options; var has none (leave greeks out)")
    if raw and instrument == "american":
        raise InvalidSpec(
            f,
            "Greeks are not offered for american: the price comes through an exercise rule "
            "fitted on other paths, which a per-path estimator would have to differentiate too "
            "(leave greeks out)",
        )
    for i, name in enumerate(raw):
        if name in _GREEKS_OF_MODEL[model.type]:
            if model.type == "heston" and instrument == "barrier" and name == "rho":
                raise InvalidSpec(
                    f"{f}[{i}]",
                    "rho is not offered for a barrier under heston: its likelihood ratio "
                    "divides by the variance simulated between every two dates, which the QE "
                    "scheme lets reach 0, so the estimator has no finite variance and no "
                    "honest stdErr",
                )
            continue
        raise InvalidSpec(f"{f}[{i}]", _WHY_NOT[(model.type, name)])
    if raw and any(a.volatility <= 0.0 for a in model.assets):
        raise InvalidSpec(
            f,
            "need volatility > 0 (every estimator divides by it); with volatility 0 the price "
            "is deterministic: leave greeks out",
        )
    return tuple(g for g in GREEK_NAMES if g in raw)


MAX_JUMPS_PER_INTERVAL = 50.0


def _check_jumps(model: Model, instrument: Instrument) -> None:
    """merton draws the jumps of each interval between dates by inverting the Poisson CDF from
    e^{-lambda dt}: refuse intervals where so many jumps are expected that this underflows."""
    if model.merton is None or instrument.maturity is None:
        return
    interval = instrument.maturity / (instrument.steps or 1)
    expected = model.merton.jump_intensity * interval
    if expected > MAX_JUMPS_PER_INTERVAL:
        raise InvalidSpec(
            "spec.model.jumpIntensity",
            f"expects {expected:g} jumps between two dates (at most {MAX_JUMPS_PER_INTERVAL:g}): "
            "lower it, or give the instrument more steps or a shorter maturity",
        )


# -- instrument ---------------------------------------------------------------------------------


def _instrument(raw: Mapping[str, Any]) -> Instrument:
    f = "spec.instrument"
    kind = raw.get("type")
    if kind not in ("european", "asian", "barrier", "basket", "var", "american"):
        raise InvalidSpec(
            f"{f}.type", "must be one of european, asian, barrier, basket, var, american"
        )
    if kind == "var":
        horizon = _num(raw, "horizon", f"{f}.horizon")
        if horizon <= 0:
            raise InvalidSpec(f"{f}.horizon", "must be > 0 (years)")
        levels_raw = raw.get("confidenceLevels")
        if not isinstance(levels_raw, Sequence) or isinstance(levels_raw, str) or not levels_raw:
            raise InvalidSpec(f"{f}.confidenceLevels", "must be a non-empty list, e.g. [0.99]")
        levels = []
        for i, level in enumerate(levels_raw):
            value = _float(level, f"{f}.confidenceLevels[{i}]")
            if not 0.0 < value < 1.0:
                raise InvalidSpec(f"{f}.confidenceLevels[{i}]", "must be strictly between 0 and 1")
            levels.append(value)
        if len(set(levels)) != len(levels):
            raise InvalidSpec(f"{f}.confidenceLevels", "must not repeat a level")
        return Instrument(type="var", horizon=horizon, confidence_levels=tuple(levels))

    option_type = raw.get("optionType", "call")
    if option_type not in ("call", "put"):
        raise InvalidSpec(f"{f}.optionType", "must be call or put")
    strike = _num(raw, "strike", f"{f}.strike")
    if strike <= 0:
        raise InvalidSpec(f"{f}.strike", "must be > 0")
    maturity = _num(raw, "maturity", f"{f}.maturity")
    if maturity <= 0:
        raise InvalidSpec(f"{f}.maturity", "must be > 0 (years)")
    steps = None
    if kind in PATH_DEPENDENT:
        steps = _int(raw, "steps", f"{f}.steps", minimum=1)
    barrier = None
    if kind == "barrier":
        barrier = _barrier(_obj(raw, "barrier", f"{f}.barrier"))
    return Instrument(
        type=kind,
        option_type=option_type,
        strike=strike,
        maturity=maturity,
        steps=steps,
        barrier=barrier,
    )


def _barrier(raw: Mapping[str, Any]) -> Barrier:
    f = "spec.instrument.barrier"
    level = _num(raw, "level", f"{f}.level")
    if level <= 0:
        raise InvalidSpec(f"{f}.level", "must be > 0")
    direction = raw.get("direction")
    if direction not in ("up", "down"):
        raise InvalidSpec(f"{f}.direction", "must be up or down")
    knock = raw.get("knock")
    if knock not in ("in", "out"):
        raise InvalidSpec(f"{f}.knock", "must be in or out")
    rebate = _num(raw, "rebate", f"{f}.rebate", default=0.0)
    if rebate < 0:
        raise InvalidSpec(f"{f}.rebate", "must be >= 0")
    return Barrier(level=level, direction=direction, knock=knock, rebate=rebate)


# -- model --------------------------------------------------------------------------------------


def _model(raw: Mapping[str, Any], instrument: str) -> Model:
    f = "spec.model"
    kind = raw.get("type", "gbm")
    if kind not in ("gbm", "heston", "merton"):
        raise InvalidSpec(f"{f}.type", "must be gbm, heston or merton")
    if kind != "gbm":
        return _single_asset_model(raw, kind, instrument)
    rate = _num(raw, "rate", f"{f}.rate", default=0.0)
    assets_raw = raw.get("assets")
    if instrument in MULTI_ASSET and assets_raw:
        if not isinstance(assets_raw, Sequence) or isinstance(assets_raw, str):
            raise InvalidSpec(f"{f}.assets", "must be a list of assets")
        assets = tuple(
            _asset(_as_obj(a, f"{f}.assets[{i}]"), f"{f}.assets[{i}]", rate, i, instrument)
            for i, a in enumerate(assets_raw)
        )
        names = [a.name for a in assets]
        if len(set(names)) != len(names):
            raise InvalidSpec(f"{f}.assets", "asset names must be unique")
        correlation = _correlation(raw.get("correlation"), len(assets))
        return Model(rate=rate, assets=assets, correlation=correlation)
    # One asset described by the model's own spot/volatility/dividendYield, weight 1.
    if "spot" not in raw:
        what = "spot (or assets)" if instrument in MULTI_ASSET else "spot"
        raise InvalidSpec(f"{f}.spot", f"is required for a {instrument} instrument: set {what}")
    asset = _asset(dict(raw, name="asset", weight=1.0), f, rate, 0, instrument)
    if raw.get("correlation") is not None:
        _correlation(raw.get("correlation"), 1)
    return Model(rate=rate, assets=(asset,), correlation=((1.0,),))


def _single_asset_model(raw: Mapping[str, Any], kind: str, instrument: str) -> Model:
    """Heston or Merton: one asset; refused for basket and var (several assets)."""
    f = "spec.model"
    if instrument in MULTI_ASSET:
        raise InvalidSpec(f"{f}.type", f"{kind} models one asset: {instrument} needs model gbm")
    if raw.get("assets") or raw.get("correlation") is not None:
        field = "assets" if raw.get("assets") else "correlation"
        raise InvalidSpec(f"{f}.{field}", f"is for gbm baskets; a {kind} model has one asset")
    rate = _num(raw, "rate", f"{f}.rate", default=0.0)
    steps_per_year = _int(
        raw, "stepsPerYear", f"{f}.stepsPerYear", minimum=1, default=DEFAULT_STEPS_PER_YEAR
    )
    if kind == "heston":
        heston = _heston(raw)
        asset_raw = dict(raw, name="asset", weight=1.0, volatility=heston.initial_variance**0.5)
        asset = _asset(asset_raw, f, rate, 0, instrument)
        return Model(
            rate, (asset,), ((1.0,),), "heston", heston=heston, steps_per_year=steps_per_year
        )
    merton = Merton(
        jump_intensity=_nonnegative(raw, "jumpIntensity"),
        jump_mean=_num(raw, "jumpMean", f"{f}.jumpMean", default=0.0),
        jump_std=_nonnegative(raw, "jumpStdDev"),
    )
    asset = _asset(dict(raw, name="asset", weight=1.0), f, rate, 0, instrument)
    return Model(rate, (asset,), ((1.0,),), "merton", merton=merton, steps_per_year=steps_per_year)


def _heston(raw: Mapping[str, Any]) -> Heston:
    f = "spec.model"
    values = {}
    for key in ("initialVariance", "meanReversion", "longRunVariance"):
        values[key] = _num(raw, key, f"{f}.{key}")
        if not values[key] > 0:
            raise InvalidSpec(f"{f}.{key}", "must be > 0")
    rho = _num(raw, "spotVarianceCorrelation", f"{f}.spotVarianceCorrelation")
    if not -1.0 < rho < 1.0:
        raise InvalidSpec(f"{f}.spotVarianceCorrelation", "must be strictly between -1 and 1")
    return Heston(
        initial_variance=values["initialVariance"],
        mean_reversion=values["meanReversion"],
        long_run_variance=values["longRunVariance"],
        vol_of_vol=_nonnegative(raw, "volOfVol"),
        correlation=rho,
    )


def _nonnegative(raw: Mapping[str, Any], key: str) -> float:
    value = _num(raw, key, f"spec.model.{key}", default=0.0)
    if value < 0:
        raise InvalidSpec(f"spec.model.{key}", "must be >= 0")
    return value


def _asset(
    raw: Mapping[str, Any],
    f: str,
    rate: float,
    index: int,
    instrument: str,
) -> Asset:
    spot = _num(raw, "spot", f"{f}.spot")
    if spot <= 0:
        raise InvalidSpec(f"{f}.spot", "must be > 0")
    vol = _num(raw, "volatility", f"{f}.volatility")
    if vol < 0:
        raise InvalidSpec(f"{f}.volatility", "must be >= 0")
    dividend_yield = _num(raw, "dividendYield", f"{f}.dividendYield", default=0.0)
    weight = _num(raw, "weight", f"{f}.weight", default=1.0)
    name = raw.get("name", f"asset{index}")
    if not isinstance(name, str) or not name:
        raise InvalidSpec(f"{f}.name", "must be a non-empty string")
    drift = rate - dividend_yield
    if instrument == "var" and raw.get("drift") is not None:
        drift = _num(raw, "drift", f"{f}.drift")
    return Asset(name, spot, vol, dividend_yield, weight, drift)


def _correlation(raw: Any, n: int) -> tuple[tuple[float, ...], ...]:
    f = "spec.model.correlation"
    if raw is None:
        return tuple(tuple(1.0 if i == j else 0.0 for j in range(n)) for i in range(n))
    if not isinstance(raw, Sequence) or isinstance(raw, str) or len(raw) != n:
        raise InvalidSpec(f, f"must be a {n}x{n} matrix (one row per asset)")
    rows = []
    for i, row in enumerate(raw):
        if not isinstance(row, Sequence) or isinstance(row, str) or len(row) != n:
            raise InvalidSpec(f"{f}[{i}]", f"must have {n} entries (one per asset)")
        rows.append(tuple(_float(v, f"{f}[{i}][{j}]") for j, v in enumerate(row)))
    for i in range(n):
        if rows[i][i] != 1.0:
            raise InvalidSpec(f"{f}[{i}][{i}]", "diagonal entries must be 1")
        for j in range(i):
            if rows[i][j] != rows[j][i]:
                raise InvalidSpec(f, f"is not symmetric: [{i}][{j}] != [{j}][{i}]")
            if not -1.0 <= rows[i][j] <= 1.0:
                raise InvalidSpec(f"{f}[{i}][{j}]", "must be between -1 and 1")
    cholesky(rows)  # raises if not positive-definite
    return tuple(rows)


def cholesky(matrix: Sequence[Sequence[float]]) -> list[list[float]]:
    """Lower-triangular L with L L^T = matrix; InvalidSpec if not positive-definite."""
    n = len(matrix)
    lower = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1):
            s = matrix[i][j] - math.fsum(lower[i][k] * lower[j][k] for k in range(j))
            if i == j:
                # A relative floor: a pivot this small means the matrix is numerically singular.
                if not s > 1e-12:
                    raise InvalidSpec(
                        "spec.model.correlation",
                        "is not positive-definite (assets "
                        f"0..{i} are perfectly or inconsistently correlated); "
                        "fix the correlations so that the matrix has only positive eigenvalues",
                    )
                lower[i][i] = math.sqrt(s)
            else:
                lower[i][j] = s / lower[j][j]
    return lower


# -- scalar helpers -----------------------------------------------------------------------------

_MISSING = object()


def _as_obj(value: Any, f: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidSpec(f, "must be an object")
    return value


def _obj(raw: Mapping[str, Any], key: str, f: str) -> Mapping[str, Any]:
    if key not in raw or raw[key] is None:
        raise InvalidSpec(f, "is required")
    return _as_obj(raw[key], f)


def _float(value: Any, f: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSpec(f, f"must be a number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise InvalidSpec(f, "must be a finite number")
    return result


def _num(raw: Mapping[str, Any], key: str, f: str, default: Any = _MISSING) -> float:
    value = raw.get(key)
    if value is None:
        if default is _MISSING:
            raise InvalidSpec(f, "is required")
        return float(default)
    return _float(value, f)


def _int(raw: Mapping[str, Any], key: str, f: str, minimum: int, default: int | None = None) -> int:
    value = raw.get(key)
    if value is None:
        if default is None:
            raise InvalidSpec(f, "is required")
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpec(f, f"must be an integer, got {value!r}")
    if value < minimum:
        raise InvalidSpec(f, f"must be >= {minimum}")
    return value


def _bool(raw: Mapping[str, Any], key: str, f: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise InvalidSpec(f, f"must be true or false, got {value!r}")
    return value
