"""Good and bad manifests as data, shared by the pure validation tests (model.validation) and
the tests that apply them to the real API server: both must refuse every bad one at the same field
with the same reason.

Each bad case is ``(id, manifest, expected_field, message_fragment)``. Fragments are worded so they
appear in the API server's message too (``Required value``, ``should be greater than 0``,
``Unsupported value``, or the CEL rule's own message from the CRD).
"""

from __future__ import annotations

import copy
from typing import Any

API_VERSION = "montecarlo.io/v1alpha1"

Manifest = dict[str, Any]
BadCase = tuple[str, Manifest, str, str]


def _job(name: str, spec: dict[str, Any]) -> Manifest:
    return {
        "apiVersion": API_VERSION,
        "kind": "MonteCarloJob",
        "metadata": {"name": name},
        "spec": spec,
    }


def _tuning(name: str, spec: dict[str, Any]) -> Manifest:
    return {
        "apiVersion": API_VERSION,
        "kind": "PerfTuning",
        "metadata": {"name": name},
        "spec": spec,
    }


# --------------------------------------------------------------------------- good MonteCarloJobs

EUROPEAN_MINIMAL = _job(
    "eur-min",
    {
        "model": {"spot": 100, "volatility": 0.2, "rate": 0.05},
        "instrument": {"type": "european", "optionType": "call", "strike": 100, "maturity": 1},
    },
)

# The example of SPEC.md, as a quant would write it.
ASIAN_SPEC_EXAMPLE = _job(
    "spx-asian",
    {
        "model": {
            "type": "gbm",
            "spot": 100.0,
            "volatility": 0.2,
            "rate": 0.05,
            "dividendYield": 0.0,
        },
        "instrument": {
            "type": "asian",
            "optionType": "call",
            "strike": 100.0,
            "maturity": 1.0,
            "steps": 252,
        },
        "paths": 10000000,
        "seed": 42,
        "varianceReduction": {"antithetic": True, "controlVariate": True},
        "targetStdErr": 0.005,
        "shards": 4,
        "priority": "high",
        "priorityClassName": "",
        "tuningRef": "default",
        "timeoutSeconds": 3600,
        "ttlSecondsAfterFinished": 86400,
        "cache": True,
        "suspend": False,
        "resources": {"requests": {"cpu": "1", "memory": "512Mi"}},
    },
)

BARRIER = _job(
    "eur-up-out",
    {
        "model": {"spot": 100.0, "volatility": 0.25, "rate": 0.03, "dividendYield": 0.01},
        "instrument": {
            "type": "barrier",
            "optionType": "call",
            "strike": 100.0,
            "maturity": 0.5,
            "steps": 126,
            "barrier": {"level": 130.0, "direction": "up", "knock": "out"},
        },
        "paths": 200000,
        "priorityClassName": "batch-low",
    },
)

BASKET = _job(
    "basket-3",
    {
        "model": {
            "rate": 0.02,
            "assets": [
                {"name": "AAA", "spot": 100, "volatility": 0.2, "weight": 0.5},
                {
                    "name": "BBB",
                    "spot": 50,
                    "volatility": 0.3,
                    "weight": 1.0,
                    "dividendYield": 0.01,
                },
                {"name": "CCC", "spot": 80, "volatility": 0.25, "weight": 0.25},
            ],
            "correlation": [[1, 0.5, 0.2], [0.5, 1, 0.3], [0.2, 0.3, 1]],
        },
        "instrument": {"type": "basket", "optionType": "put", "strike": 120, "maturity": 1},
        "shards": 2,
        "priority": "low",
    },
)

VAR = _job(
    "book-var",
    {
        "model": {
            "rate": 0.03,
            "assets": [
                {"name": "SPX", "spot": 5000, "volatility": 0.18, "weight": 10, "drift": 0.07},
                {"name": "TLT", "spot": 90, "volatility": 0.12, "weight": -200},
            ],
            "correlation": [[1.0, -0.3], [-0.3, 1.0]],
        },
        "instrument": {"type": "var", "horizon": 0.0397, "confidenceLevels": [0.99, 0.975]},
        "paths": 100000,
        "seed": 7,
    },
)

# Worker placement: every field of spec.workerTemplate (Kubernetes' own schemas).
WORKER_TEMPLATE: dict[str, Any] = {
    "nodeSelector": {"pool": "compute"},
    "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}
                ]
            }
        },
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 50,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"team": "rates"}},
                    },
                }
            ]
        },
    },
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"montecarlo.io/job": "placed"}},
        }
    ],
    "serviceAccountName": "mc-workers",
    "imagePullSecrets": [{"name": "regcred"}],
    "labels": {"team": "rates"},
    "annotations": {"example.com/owner": "rates desk"},
}
PLACED = _job(
    "placed", {**copy.deepcopy(EUROPEAN_MINIMAL["spec"]), "workerTemplate": WORKER_TEMPLATE}
)

HESTON = _job(
    "heston",
    {
        "model": {
            "type": "heston",
            "spot": 100.0,
            "rate": 0.03,
            "initialVariance": 0.04,
            "meanReversion": 1.5,
            "longRunVariance": 0.04,
            "volOfVol": 0.5,
            "spotVarianceCorrelation": -0.7,
            "stepsPerYear": 252,
        },
        "instrument": {"type": "european", "optionType": "call", "strike": 100, "maturity": 1},
    },
)
MERTON = _job(
    "merton",
    {
        "model": {
            "type": "merton",
            "spot": 100.0,
            "volatility": 0.2,
            "rate": 0.03,
            "jumpIntensity": 0.5,
            "jumpMean": -0.1,
            "jumpStdDev": 0.15,
        },
        "instrument": {"type": "european", "optionType": "put", "strike": 100, "maturity": 1},
    },
)
AMERICAN = _job(
    "american",
    {
        "model": {"spot": 100, "volatility": 0.2, "rate": 0.05},
        "instrument": {
            "type": "american",
            "optionType": "put",
            "strike": 100,
            "maturity": 1,
            "steps": 50,
        },
    },
)

GOOD_JOBS: list[Manifest] = [
    EUROPEAN_MINIMAL,
    ASIAN_SPEC_EXAMPLE,
    BARRIER,
    BASKET,
    VAR,
    PLACED,
    HESTON,
    MERTON,
    AMERICAN,
]

# The PerfTuning of SPEC.md; its values are also the CRD's defaults.
PERFTUNING_SPEC_EXAMPLE = _tuning(
    "default",
    {
        "redis": {
            "urlSecretRef": {"name": "montecarlo-redis", "key": "url"},
            "maxConnections": 100,
            "socketKeepalive": True,
            "socketTimeoutSeconds": 5,
            "healthCheckIntervalSeconds": 30,
            "ttlSeconds": 3600,
        },
        "postgres": {
            "dsnSecretRef": {"name": "montecarlo-postgres", "key": "dsn"},
            "poolSize": 20,
            "maxOverflow": 30,
            "poolRecycleSeconds": 3600,
            "prePing": True,
            "commandTimeoutSeconds": 30,
            "ensureIndexes": True,
        },
        "workers": {
            "maxConcurrentJobs": 10,
            "jobTimeoutSeconds": 3600,
            "heartbeatIntervalSeconds": 30,
        },
        "metrics": {"intervalSeconds": 30, "slowQueryThresholdMs": 100},
    },
)
PERFTUNING_EMPTY = _tuning("empty", {})
PERFTUNING_PLACEMENT = _tuning("placement", {"workers": {"template": WORKER_TEMPLATE}})
GOOD_TUNINGS: list[Manifest] = [PERFTUNING_SPEC_EXAMPLE, PERFTUNING_EMPTY, PERFTUNING_PLACEMENT]


# --------------------------------------------------------------------------- building bad ones

DELETE = object()


def changed(base: Manifest, name: str, **changes: Any) -> Manifest:
    """A deep copy of ``base`` named ``name`` with ``changes`` applied: keys are dotted paths
    (``spec__instrument__strike`` for ``spec.instrument.strike``; integers index lists), values
    are the new values or ``DELETE``."""
    doc = copy.deepcopy(base)
    doc["metadata"]["name"] = name
    for dotted, value in changes.items():
        *parents, last = [int(p) if p.isdigit() else p for p in dotted.split("__")]
        node: Any = doc
        for part in parents:
            node = node[part]
        if value is DELETE:
            del node[last]
        else:
            node[last] = copy.deepcopy(value)
    return doc


E, A, B, K, V, P = EUROPEAN_MINIMAL, ASIAN_SPEC_EXAMPLE, BARRIER, BASKET, VAR, PLACED
H, M, AM = HESTON, MERTON, AMERICAN

BAD_JOBS: list[BadCase] = [
    # sampler and greeks (docs/rqmc-and-greeks.md)
    (
        "too-few-randomizations",
        changed(E, "rqmc-few", spec__sampler={"type": "sobol", "randomizations": 4}),
        "spec.sampler.randomizations",
        "must be at least 8",
    ),
    (
        "sobol-paths-below-16-per-randomization",
        changed(
            E, "rqmc-paths", spec__sampler={"type": "sobol", "randomizations": 64}, spec__paths=1000
        ),
        "spec.paths",
        "at least 16 x sampler.randomizations",
    ),
    (
        "randomizations-without-sobol",
        changed(E, "rqmc-pseudo", spec__sampler={"randomizations": 16}),
        "spec.sampler.randomizations",
        "only used by sampler.type sobol",
    ),
    (
        "sobol-for-var",
        changed(V, "rqmc-var", spec__sampler={"type": "sobol"}),
        "spec.sampler.type",
        "not available for var",
    ),
    (
        "greeks-for-var",
        changed(V, "greeks-var", spec__greeks=["delta"]),
        "spec.greeks",
        "var has none",
    ),
    (
        "unknown-greek",
        changed(E, "greeks-speed", spec__greeks=["speed"]),
        "spec.greeks[0]",
        "Unsupported value",
    ),
    # worker placement: Kubernetes' own schemas, and the operator's labels kept
    (
        "tolerations-not-a-list",
        changed(P, "tol-string", spec__workerTemplate__tolerations="spot"),
        "spec.workerTemplate.tolerations",
        "must be of type array",
    ),
    (
        "node-affinity-without-terms",
        changed(
            P,
            "aff-no-terms",
            spec__workerTemplate__affinity={
                "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}
            },
        ),
        "spec.workerTemplate.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms",
        "Required value",
    ),
    (
        "spread-without-when-unsatisfiable",
        changed(
            P,
            "spread-no-when",
            spec__workerTemplate__topologySpreadConstraints=[{"maxSkew": 1, "topologyKey": "zone"}],
        ),
        "spec.workerTemplate.topologySpreadConstraints[0].whenUnsatisfiable",
        "Required value",
    ),
    (
        "pod-field-outside-the-template",
        changed(P, "host-network", spec__workerTemplate__hostNetwork=True),
        "spec.workerTemplate.hostNetwork",
        "unknown field",
    ),
    (
        "worker-label-overrides-the-operator",
        changed(P, "label-job", spec__workerTemplate__labels={"montecarlo.io/job": "other"}),
        "spec.workerTemplate.labels",
        "labels may not set the operator's labels",
    ),
    # structure and types
    ("no-model", changed(E, "no-model", spec__model=DELETE), "spec.model", "Required value"),
    (
        "no-instrument-type",
        changed(E, "no-itype", spec__instrument__type=DELETE),
        "spec.instrument.type",
        "Required value",
    ),
    ("unknown-field", changed(E, "unknown-field", spec__pathz=1000), "spec.pathz", "unknown field"),
    (
        "paths-not-a-number",
        changed(E, "paths-string", spec__paths="many"),
        "spec.paths",
        "must be of type integer",
    ),
    (
        "spot-as-string",
        changed(E, "spot-string", spec__model__spot="100"),
        "spec.model.spot",
        "must be of type number",
    ),
    (
        "suspend-as-string",
        changed(E, "suspend-string", spec__suspend="false"),
        "spec.suspend",
        "must be of type boolean",
    ),
    # enums
    (
        "unknown-instrument",
        changed(E, "digital", spec__instrument__type="digital"),
        "spec.instrument.type",
        "Unsupported value",
    ),
    (
        "unknown-model",
        changed(E, "sabr", spec__model__type="sabr"),
        "spec.model.type",
        "Unsupported value",
    ),
    (
        "unknown-option-type",
        changed(E, "straddle", spec__instrument__optionType="straddle"),
        "spec.instrument.optionType",
        "Unsupported value",
    ),
    (
        "unknown-priority",
        changed(E, "urgent", spec__priority="urgent"),
        "spec.priority",
        "Unsupported value",
    ),
    (
        "barrier-sideways",
        changed(B, "sideways", spec__instrument__barrier__direction="sideways"),
        "spec.instrument.barrier.direction",
        "Unsupported value",
    ),
    # ranges
    (
        "strike-negative",
        changed(E, "strike-neg", spec__instrument__strike=-1),
        "spec.instrument.strike",
        "should be greater than 0",
    ),
    (
        "maturity-zero",
        changed(E, "maturity-zero", spec__instrument__maturity=0),
        "spec.instrument.maturity",
        "should be greater than 0",
    ),
    (
        "volatility-zero",
        changed(E, "vol-zero", spec__model__volatility=0),
        "spec.model.volatility",
        "should be greater than 0",
    ),
    (
        "volatility-in-percent",
        changed(E, "vol-pct", spec__model__volatility=20),
        "spec.model.volatility",
        "should be less than or equal to 10",
    ),
    (
        "volatility-10-over-100-years",
        changed(E, "vol-10-100y", spec__model__volatility=10, spec__instrument__maturity=100),
        "spec.model.volatility",
        "must be at most 16",
    ),
    (
        "basket-volatility-too-long",
        changed(K, "basket-vol", spec__model__assets__0__volatility=5),
        "spec.model.assets",
        "must be at most 16",
    ),
    (
        "rate-in-percent",
        changed(E, "rate-pct", spec__model__rate=5),
        "spec.model.rate",
        "should be less than or equal to 1",
    ),
    (
        "paths-zero",
        changed(E, "paths-zero", spec__paths=0),
        "spec.paths",
        "should be greater than or equal to 100",
    ),
    (
        "paths-too-many",
        changed(E, "paths-huge", spec__paths=10**11),
        "spec.paths",
        "should be less than or equal to 10000000000",
    ),
    (
        "seed-negative",
        changed(E, "seed-neg", spec__seed=-1),
        "spec.seed",
        "should be greater than or equal to 0",
    ),
    (
        "shards-zero",
        changed(E, "shards-zero", spec__shards=0),
        "spec.shards",
        "should be greater than or equal to 1",
    ),
    (
        "shards-65",
        changed(E, "shards-65", spec__shards=65),
        "spec.shards",
        "should be less than or equal to 64",
    ),
    (
        "steps-zero",
        changed(A, "steps-zero", spec__instrument__steps=0),
        "spec.instrument.steps",
        "should be greater than or equal to 1",
    ),
    (
        "steps-too-many",
        changed(A, "steps-huge", spec__instrument__steps=100000),
        "spec.instrument.steps",
        "should be less than or equal to 10000",
    ),
    (
        "target-stderr-zero",
        changed(A, "target-zero", spec__targetStdErr=0),
        "spec.targetStdErr",
        "should be greater than 0",
    ),
    (
        "timeout-zero",
        changed(E, "timeout-zero", spec__timeoutSeconds=0),
        "spec.timeoutSeconds",
        "should be greater than or equal to 1",
    ),
    (
        "ttl-negative",
        changed(E, "ttl-neg", spec__ttlSecondsAfterFinished=-1),
        "spec.ttlSecondsAfterFinished",
        "should be greater than or equal to 0",
    ),
    (
        "rebate-negative",
        changed(B, "rebate-neg", spec__instrument__barrier__rebate=-1.0),
        "spec.instrument.barrier.rebate",
        "should be greater than or equal to 0",
    ),
    (
        "barrier-level-zero",
        changed(B, "level-zero", spec__instrument__barrier__level=0),
        "spec.instrument.barrier.level",
        "should be greater than 0",
    ),
    (
        "confidence-one",
        changed(V, "conf-one", spec__instrument__confidenceLevels=[0.99, 1.0]),
        "spec.instrument.confidenceLevels[1]",
        "should be less than 1",
    ),
    (
        "confidence-zero",
        changed(V, "conf-zero", spec__instrument__confidenceLevels=[0]),
        "spec.instrument.confidenceLevels[0]",
        "should be greater than 0",
    ),
    (
        "confidence-empty",
        changed(V, "conf-empty", spec__instrument__confidenceLevels=[]),
        "spec.instrument.confidenceLevels",
        "should have at least 1 items",
    ),
    (
        "asset-volatility-zero",
        changed(K, "asset-vol", spec__model__assets__1__volatility=0),
        "spec.model.assets[1].volatility",
        "should be greater than 0",
    ),
    (
        "correlation-above-one",
        changed(
            K, "corr-big", spec__model__correlation=[[1, 1.5, 0.2], [1.5, 1, 0.3], [0.2, 0.3, 1]]
        ),
        "spec.model.correlation[0][1]",
        "should be less than or equal to 1",
    ),
    # patterns and sizes
    (
        "priority-class-not-a-name",
        changed(E, "pc-bad", spec__priorityClassName="High_Prio"),
        "spec.priorityClassName",
        "should match",
    ),
    (
        "tuning-ref-not-a-name",
        changed(E, "tuning-bad", spec__tuningRef="Default Tuning"),
        "spec.tuningRef",
        "should match",
    ),
    (
        "memory-not-a-quantity",
        changed(A, "mem-bad", spec__resources__requests__memory="lots"),
        "spec.resources.requests.memory",
        "should match",
    ),
    ("name-too-long", changed(E, "j" * 53), "metadata.name", "must be at most 52 characters"),
    (
        "tuning-ref-too-long",
        changed(E, "tuning-long", spec__tuningRef="t" * 254),
        "spec.tuningRef",
        "Too long",
    ),
    (
        "too-many-assets",
        changed(
            V,
            "assets-65",
            spec__model__correlation=DELETE,
            spec__model__assets=[
                {"name": f"A{i}", "spot": 1.0, "volatility": 0.1} for i in range(65)
            ],
        ),
        "spec.model.assets",
        "must have at most 64 items",
    ),
    # CEL: which instrument takes which fields
    (
        "barrier-on-european",
        changed(
            E,
            "eur-barrier",
            spec__instrument__barrier={"level": 130, "direction": "up", "knock": "out"},
        ),
        "spec.instrument.barrier",
        "only allowed when instrument.type is barrier",
    ),
    (
        "barrier-missing",
        changed(B, "no-barrier", spec__instrument__barrier=DELETE),
        "spec.instrument.barrier",
        "required when instrument.type is barrier",
    ),
    (
        "horizon-on-european",
        changed(E, "eur-horizon", spec__instrument__horizon=0.04),
        "spec.instrument.horizon",
        "only allowed when instrument.type is var",
    ),
    (
        "confidence-on-european",
        changed(E, "eur-conf", spec__instrument__confidenceLevels=[0.99]),
        "spec.instrument.confidenceLevels",
        "only allowed when instrument.type is var",
    ),
    (
        "var-without-horizon",
        changed(V, "var-no-horizon", spec__instrument__horizon=DELETE),
        "spec.instrument.horizon",
        "required when instrument.type is var",
    ),
    (
        "var-without-confidence",
        changed(V, "var-no-conf", spec__instrument__confidenceLevels=DELETE),
        "spec.instrument.confidenceLevels",
        "required when instrument.type is var",
    ),
    (
        "var-with-strike",
        changed(V, "var-strike", spec__instrument__strike=100),
        "spec.instrument.strike",
        "only used by options",
    ),
    (
        "var-with-option-type",
        changed(V, "var-call", spec__instrument__optionType="call"),
        "spec.instrument.optionType",
        "only used by options",
    ),
    (
        "var-with-maturity",
        changed(V, "var-maturity", spec__instrument__maturity=1),
        "spec.instrument.maturity",
        "var uses instrument.horizon",
    ),
    (
        "confidence-repeated",
        changed(V, "conf-twice", spec__instrument__confidenceLevels=[0.99, 0.99]),
        "spec.instrument.confidenceLevels",
        "must be distinct",
    ),
    (
        "option-without-type",
        changed(E, "no-call-put", spec__instrument__optionType=DELETE),
        "spec.instrument.optionType",
        "required for options",
    ),
    (
        "option-without-strike",
        changed(E, "no-strike", spec__instrument__strike=DELETE),
        "spec.instrument.strike",
        "required for options",
    ),
    (
        "option-without-maturity",
        changed(A, "no-maturity", spec__instrument__maturity=DELETE),
        "spec.instrument.maturity",
        "required for options",
    ),
    # CEL: which model fields each instrument takes
    (
        "european-without-spot",
        changed(E, "no-spot", spec__model__spot=DELETE),
        "spec.model.spot",
        "required for european, asian, barrier and american",
    ),
    (
        "asian-without-volatility",
        changed(A, "no-vol", spec__model__volatility=DELETE),
        "spec.model.volatility",
        "required for european, asian, barrier and american",
    ),
    (
        "european-with-assets",
        changed(E, "eur-assets", spec__model__assets=K["spec"]["model"]["assets"]),
        "spec.model.assets",
        "only used by basket and var",
    ),
    (
        "basket-without-assets",
        changed(K, "basket-empty", spec__model__assets=DELETE, spec__model__correlation=DELETE),
        "spec.model.assets",
        "required for basket and var",
    ),
    (
        "basket-with-spot",
        changed(K, "basket-spot", spec__model__spot=100),
        "spec.model.spot",
        "only used by single-asset instruments",
    ),
    (
        "var-with-volatility",
        changed(V, "var-vol", spec__model__volatility=0.2),
        "spec.model.volatility",
        "only used by single-asset instruments",
    ),
    (
        "basket-with-model-dividend",
        changed(K, "basket-div", spec__model__dividendYield=0.02),
        "spec.model.dividendYield",
        "only used by single-asset instruments",
    ),
    (
        "basket-with-drift",
        changed(K, "basket-drift", spec__model__assets__0__drift=0.05),
        "spec.model.assets",
        "only used by var instruments",
    ),
    (
        "assets-empty",
        changed(V, "var-no-assets", spec__model__assets=[], spec__model__correlation=DELETE),
        "spec.model.assets",
        "should have at least 1 items",
    ),
    (
        "asset-names-repeated",
        changed(K, "names-twice", spec__model__assets__2__name="AAA"),
        "spec.model.assets",
        "unique names",
    ),
    # CEL: the correlation matrix
    (
        "correlation-wrong-size",
        changed(K, "corr-2x2", spec__model__correlation=[[1, 0.5], [0.5, 1]]),
        "spec.model.correlation",
        "one row (and one column) per entry of model.assets",
    ),
    (
        "correlation-without-assets",
        changed(E, "eur-corr", spec__model__correlation=[[1.0]]),
        "spec.model.correlation",
        "one row (and one column) per entry of model.assets",
    ),
    (
        "correlation-not-square",
        changed(
            K, "corr-ragged", spec__model__correlation=[[1, 0.5, 0.2], [0.5, 1], [0.2, 0.3, 1]]
        ),
        "spec.model.correlation",
        "must be square",
    ),
    (
        "correlation-diagonal",
        changed(
            K, "corr-diag", spec__model__correlation=[[1, 0.5, 0.2], [0.5, 0.9, 0.3], [0.2, 0.3, 1]]
        ),
        "spec.model.correlation",
        "1.0 on its diagonal",
    ),
    (
        "correlation-asymmetric",
        changed(
            K, "corr-asym", spec__model__correlation=[[1, 0.5, 0.2], [0.4, 1, 0.3], [0.2, 0.3, 1]]
        ),
        "spec.model.correlation",
        "must be symmetric",
    ),
    # Heston, Merton, American (issue 12)
    (
        "heston-vol-of-vol-negative",
        changed(H, "h-xi", spec__model__volOfVol=-0.1),
        "spec.model.volOfVol",
        "should be greater than or equal to 0",
    ),
    (
        "heston-correlation-one",
        changed(H, "h-rho", spec__model__spotVarianceCorrelation=1.0),
        "spec.model.spotVarianceCorrelation",
        "strictly between -1 and 1",
    ),
    (
        "heston-initial-variance-zero",
        changed(H, "h-v0", spec__model__initialVariance=0),
        "spec.model.initialVariance",
        "should be greater than 0",
    ),
    (
        "heston-mean-reversion-zero",
        changed(H, "h-kappa", spec__model__meanReversion=0),
        "spec.model.meanReversion",
        "should be greater than 0",
    ),
    (
        "heston-long-run-variance-zero",
        changed(H, "h-theta", spec__model__longRunVariance=0),
        "spec.model.longRunVariance",
        "should be greater than 0",
    ),
    (
        "heston-without-vol-of-vol",
        changed(H, "h-no-xi", spec__model__volOfVol=DELETE),
        "spec.model.volOfVol",
        "model.volOfVol is required when model.type is heston",
    ),
    (
        "heston-field-on-gbm",
        changed(E, "gbm-kappa", spec__model__meanReversion=1.0),
        "spec.model.meanReversion",
        "only used when model.type is heston",
    ),
    (
        "merton-intensity-negative",
        changed(M, "m-lambda", spec__model__jumpIntensity=-0.5),
        "spec.model.jumpIntensity",
        "should be greater than or equal to 0",
    ),
    (
        "merton-jump-std-negative",
        changed(M, "m-std", spec__model__jumpStdDev=-0.1),
        "spec.model.jumpStdDev",
        "should be greater than or equal to 0",
    ),
    (
        "american-on-a-basket",
        changed(
            AM,
            "am-basket",
            spec__model__assets=[
                {"name": "a", "spot": 100, "volatility": 0.2},
                {"name": "b", "spot": 50, "volatility": 0.3},
            ],
        ),
        "spec.model.assets",
        "american instruments take model.spot",
    ),
    *[
        (
            f"heston-without-{key}",
            changed(H, f"h-no-{key.lower()}", **{f"spec__model__{key}": DELETE}),
            f"spec.model.{key}",
            f"model.{key} is required when model.type is heston",
        )
        for key in (
            "initialVariance",
            "meanReversion",
            "longRunVariance",
            "spotVarianceCorrelation",
        )
    ],
    *[
        (
            f"{key}-on-merton",
            changed(M, f"m-{key.lower()}", **{f"spec__model__{key}": value}),
            f"spec.model.{key}",
            "only used when model.type is heston",
        )
        for key, value in (
            ("initialVariance", 0.04),
            ("longRunVariance", 0.04),
            ("volOfVol", 0.3),
            ("spotVarianceCorrelation", -0.5),
        )
    ],
    *[
        (
            f"{key}-on-heston",
            changed(H, f"h-{key.lower()}", **{f"spec__model__{key}": value}),
            f"spec.model.{key}",
            "only used when model.type is merton",
        )
        for key, value in (("jumpIntensity", 0.5), ("jumpMean", -0.1), ("jumpStdDev", 0.1))
    ],
    (
        "heston-with-volatility",
        changed(H, "h-vol", spec__model__volatility=0.2),
        "spec.model.volatility",
        "not used when model.type is heston",
    ),
    (
        "steps-per-year-on-gbm",
        changed(E, "gbm-spy", spec__model__stepsPerYear=52),
        "spec.model.stepsPerYear",
        "only used when model.type is heston or merton",
    ),
    (
        "heston-basket",
        changed(K, "h-basket", spec__model__type="heston"),
        "spec.model.type",
        "basket and var instruments need",
    ),
]

BAD_TUNINGS: list[BadCase] = [
    (
        "template-toleration-seconds-as-string",
        changed(
            PERFTUNING_PLACEMENT,
            "tol-seconds",
            spec__workers__template__tolerations=[{"key": "spot", "tolerationSeconds": "60"}],
        ),
        "spec.workers.template.tolerations[0].tolerationSeconds",
        "must be of type integer",
    ),
    (
        "template-label-overrides-the-operator",
        changed(
            PERFTUNING_PLACEMENT,
            "label-tuning",
            spec__workers__template__labels={"app.kubernetes.io/managed-by": "me"},
        ),
        "spec.workers.template.labels",
        "labels may not set the operator's labels",
    ),
    (
        "pool-size-zero",
        changed(PERFTUNING_EMPTY, "pool-zero", spec={"postgres": {"poolSize": 0}}),
        "spec.postgres.poolSize",
        "should be greater than or equal to 1",
    ),
    (
        "max-overflow-negative",
        changed(PERFTUNING_EMPTY, "overflow-neg", spec={"postgres": {"maxOverflow": -1}}),
        "spec.postgres.maxOverflow",
        "should be greater than or equal to 0",
    ),
    (
        "max-connections-zero",
        changed(PERFTUNING_EMPTY, "redis-zero", spec={"redis": {"maxConnections": 0}}),
        "spec.redis.maxConnections",
        "should be greater than or equal to 1",
    ),
    (
        "socket-timeout-zero",
        changed(PERFTUNING_EMPTY, "sock-zero", spec={"redis": {"socketTimeoutSeconds": 0}}),
        "spec.redis.socketTimeoutSeconds",
        "should be greater than 0",
    ),
    (
        "ttl-as-string",
        changed(PERFTUNING_EMPTY, "ttl-str", spec={"redis": {"ttlSeconds": "1h"}}),
        "spec.redis.ttlSeconds",
        "must be of type integer",
    ),
    (
        "secret-ref-without-key",
        changed(
            PERFTUNING_EMPTY, "ref-no-key", spec={"redis": {"urlSecretRef": {"name": "my-redis"}}}
        ),
        "spec.redis.urlSecretRef.key",
        "Required value",
    ),
    (
        "secret-ref-bad-name",
        changed(
            PERFTUNING_EMPTY,
            "ref-bad",
            spec={"postgres": {"dsnSecretRef": {"name": "My DB", "key": "dsn"}}},
        ),
        "spec.postgres.dsnSecretRef.name",
        "should match",
    ),
    (
        "password-in-spec",
        changed(PERFTUNING_EMPTY, "password", spec={"redis": {"password": "hunter2"}}),
        "spec.redis.password",
        "unknown field",
    ),
    (
        "heartbeat-not-below-timeout",
        changed(
            PERFTUNING_EMPTY,
            "heartbeat",
            spec={"workers": {"heartbeatIntervalSeconds": 600, "jobTimeoutSeconds": 600}},
        ),
        "spec.workers.heartbeatIntervalSeconds",
        "shorter than workers.jobTimeoutSeconds",
    ),
    (
        "max-concurrent-zero",
        changed(PERFTUNING_EMPTY, "conc-zero", spec={"workers": {"maxConcurrentJobs": 0}}),
        "spec.workers.maxConcurrentJobs",
        "should be greater than or equal to 1",
    ),
    (
        "metrics-interval-zero",
        changed(PERFTUNING_EMPTY, "metrics-zero", spec={"metrics": {"intervalSeconds": 0}}),
        "spec.metrics.intervalSeconds",
        "should be greater than or equal to 1",
    ),
    (
        "slow-query-negative",
        changed(PERFTUNING_EMPTY, "slow-neg", spec={"metrics": {"slowQueryThresholdMs": -5}}),
        "spec.metrics.slowQueryThresholdMs",
        "should be greater than or equal to 0",
    ),
]
