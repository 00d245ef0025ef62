"""Greeks from the same paths as the price: per-path estimators, accumulated like the price.

Each kernel (`greek_kernels.py`) takes a chunk's standard normals as the price kernels use
them (normal (k, j, p) at (k * assets + j) * c + p, an antithetic partner the same normals
negated), rebuilds the paths with the same arithmetic, and writes one value per sample unit and
Greek component;
`accumulate` merges the selected components' chunk moments into the block's `(components, 3)`
accumulator [count, mean, m2] with the same two-pass + Chan-Golub-LeVeque update as the price,
so a Greek's mean and standard error follow the price's reproducibility promise.

Conventions (GBM, D = e^{-rT}, nu = r - q - vol^2/2, W the Brownian motion driving the asset):

* delta dV/dS0, gamma d2V/dS0^2, vega dV/dvol per unit of volatility, rho dV/dr per unit of rate,
  theta dV/dt = -dV/dT: the change as calendar time passes, per year (negative when the option
  loses value with time); path-dependent instruments keep their dates at kT/steps, so a shorter
  maturity moves them proportionally.
* European, Asian, basket (Lipschitz payoffs): pathwise. With ind = phi 1{phi (X - K) > 0} and X
  the terminal price, average or basket: delta = D ind dX/dS0, vega = D ind dX/dvol,
  rho = -T D f + D ind dX/dr, theta = r D f - D ind dX/dT; dS_t/dvol = S_t (W_t - vol t),
  dS_t/dr = S_t t, dS_t/dT = S_t (nu t + vol W_t / 2) / T.
* gamma: pathwise delta differentiated by likelihood ratio through the first normal that carries
  S0 (European: W_T; Asian: the first step; basket: asset j's own score (L^-T z)_j):
  gamma = E[D ind X / S0^2 (score - 1)].
* Barrier (an indicator of the path: not Lipschitz): likelihood ratio for every Greek, from the
  log-density of the steps' increments x_k ~ N(nu dt, vol^2 dt): scores z_1 / (S0 vol sqrt(dt))
  (delta), ((z_1^2 - 1) / (vol^2 dt) - z_1 / (vol sqrt(dt))) / S0^2 (gamma), sum((z^2 - 1) / vol -
  z sqrt(dt)) (vega), sqrt(dt) sum(z) / vol (rho), sum((z^2 - 1) / (2T) + nu z sqrt(dt) /
  (vol T)) (dT, for theta), each times the discounted payoff.

Every estimator divides by the volatility: Greeks need volatility > 0 (the spec refuses 0).
Component order: single asset [delta, gamma, vega, rho, theta]; basket of d assets
[delta_0..d-1, gamma_0..d-1, vega_0..d-1, rho, theta].
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from mcop_worker.model.spec import GREEK_NAMES, JobSpec

GREEKS = GREEK_NAMES
PER_ASSET = ("delta", "gamma", "vega")  # keyed by asset name for a basket


def component_count(assets: int) -> int:
    return 5 if assets == 1 else 3 * assets + 2


def component_index(greek: str, asset: int, assets: int) -> int:
    """Where `greek` (of asset `asset` for a basket) sits in a kernel's output rows."""
    g = GREEKS.index(greek)
    if assets == 1:
        return g
    if greek in PER_ASSET:
        return g * assets + asset
    return 3 * assets + (0 if greek == "rho" else 1)


# -- which components a spec asks for, and the result's shape -----------------------------------


def components(spec: JobSpec) -> list[tuple[str, int]]:
    """(Greek, asset index) of each accumulated component, in accumulator order: the spec's
    Greeks in GREEKS order, the per-asset ones of a basket asset by asset."""
    assets = len(spec.model.assets) if spec.instrument.type == "basket" else 1
    out: list[tuple[str, int]] = []
    for greek in spec.greeks:
        per_asset = assets > 1 and greek in PER_ASSET
        out.extend((greek, j) for j in range(assets if per_asset else 1))
    return out


def selection(spec: JobSpec) -> npt.NDArray[np.int64]:
    """Rows of the kernel's output that the accumulator keeps (see `components`)."""
    assets = len(spec.model.assets) if spec.instrument.type == "basket" else 1
    return np.array([component_index(g, j, assets) for g, j in components(spec)], dtype=np.int64)


def result(spec: JobSpec, values: list[tuple[float, float]]) -> dict[str, Any]:
    """{greek: {value, stdErr}} (basket: {greek: {asset name: {value, stdErr}}} for the per-asset
    ones), from one (value, stdErr) per component."""
    basket = spec.instrument.type == "basket"
    doc: dict[str, Any] = {}
    for (greek, j), (value, std_err) in zip(components(spec), values, strict=True):
        entry = {"value": value, "stdErr": std_err}
        if basket and greek in PER_ASSET:
            doc.setdefault(greek, {})[spec.model.assets[j].name] = entry
        else:
            doc[greek] = entry
    return doc
