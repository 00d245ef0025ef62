"""BlockStats: the sufficient statistics of one simulated block, and their exact merge.

This record is what a worker stores per block (PostgreSQL, as JSON) and what the operator merges.
It is versioned: `STATS_VERSION` (the record's layout) and `engine` (the numbers' algorithm,
`blocks.ENGINE_VERSION`); `from_json` refuses any other version rather than mixing them.

JSON layout (version 1)::

    {"v": 1, "engine": 1, "block": 7, "count": 19968, "paths": 39936,
     "mean": 5.77, "m2": 1.2e5,                        # per sample unit: discounted payoff / loss
     "cv": {"mean": ..., "m2": ..., "cov": ...},      # control variate, or null
     "tail": {"n": 1200, "complete": false, "losses": "<base64 float64 little-endian>"},  # var
     "greeks": [[mean, m2], ...]}                     # spec.greeks only: per Greek component

`mean`/`m2` are the mean and sum of squared deviations of the sample units (a path, or an
antithetic pair's average); `cv.cov` is the co-moment sum((x - mean_x) * (y - mean_y)). Floats
are written with Python's shortest round-trip repr and the tail as raw IEEE-754 bytes, so a
record read back is bit-for-bit the record written.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mcop_worker.model.versions import ENGINE_VERSION

STATS_VERSION = 1


@dataclass(frozen=True)
class Moments:
    """Count, means and centred (co-)moments of (y, x): y the estimator's sample, x its control."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    x_mean: float = 0.0
    x_m2: float = 0.0
    cov: float = 0.0

    def merge(self, other: Moments) -> Moments:
        """Chan-Golub-LeVeque update; callers merge in block order so results are reproducible."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        dy = other.mean - self.mean
        dx = other.x_mean - self.x_mean
        w = self.count * other.count / n
        return Moments(
            count=n,
            mean=self.mean + dy * (other.count / n),
            m2=self.m2 + other.m2 + dy * dy * w,
            x_mean=self.x_mean + dx * (other.count / n),
            x_m2=self.x_m2 + other.x_m2 + dx * dx * w,
            cov=self.cov + other.cov + dx * dy * w,
        )


@dataclass(frozen=True)
class BlockStats:
    block: int
    paths: int
    moments: Moments
    has_control: bool = False
    tail: bytes | None = None  # var: the block's largest losses, descending, float64 LE
    tail_complete: bool = False  # the tail holds every loss of the block
    engine: int = ENGINE_VERSION
    # spec.greeks: (mean, m2) per Greek component of the sample units, in the order of
    # `greeks.components` (count: moments.count)
    greeks: tuple[tuple[float, float], ...] = ()

    @property
    def losses(self) -> npt.NDArray[np.float64]:
        """The stored tail as a read-only array (largest first); empty if none."""
        if self.tail is None:
            return np.empty(0, dtype=np.float64)
        return np.frombuffer(self.tail, dtype="<f8")

    def to_json(self) -> str:
        m = self.moments
        doc: dict[str, Any] = {
            "v": STATS_VERSION,
            "engine": self.engine,
            "block": self.block,
            "count": m.count,
            "paths": self.paths,
            "mean": m.mean,
            "m2": m.m2,
            "cv": {"mean": m.x_mean, "m2": m.x_m2, "cov": m.cov} if self.has_control else None,
            "tail": None,
        }
        if self.greeks:
            doc["greeks"] = [[mean, m2] for mean, m2 in self.greeks]
        if self.tail is not None:
            doc["tail"] = {
                "n": len(self.tail) // 8,
                "complete": self.tail_complete,
                "losses": base64.b64encode(self.tail).decode("ascii"),
            }
        return json.dumps(doc, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> BlockStats:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("v") != STATS_VERSION:
            found = doc.get("v") if isinstance(doc, dict) else doc
            raise ValueError(
                f"unsupported BlockStats record version {found!r}"
                f" (this engine reads version {STATS_VERSION})"
            )
        if doc.get("engine") != ENGINE_VERSION:
            raise ValueError(
                f"BlockStats from engine version {doc.get('engine')!r} cannot be merged with "
                f"engine version {ENGINE_VERSION}: the numbers were computed differently"
            )
        cv = doc.get("cv")
        moments = Moments(
            count=int(doc["count"]),
            mean=float(doc["mean"]),
            m2=float(doc["m2"]),
            x_mean=float(cv["mean"]) if cv else 0.0,
            x_m2=float(cv["m2"]) if cv else 0.0,
            cov=float(cv["cov"]) if cv else 0.0,
        )
        tail = None
        complete = False
        if doc.get("tail") is not None:
            tail = base64.b64decode(doc["tail"]["losses"])
            if len(tail) != 8 * int(doc["tail"]["n"]):
                raise ValueError("BlockStats tail is truncated: its length does not match n")
            complete = bool(doc["tail"]["complete"])
        return cls(
            block=int(doc["block"]),
            paths=int(doc["paths"]),
            moments=moments,
            has_control=cv is not None,
            tail=tail,
            tail_complete=complete,
            engine=int(doc["engine"]),
            greeks=tuple((float(g[0]), float(g[1])) for g in doc.get("greeks") or ()),
        )
