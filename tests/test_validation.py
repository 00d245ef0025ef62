"""mcop_worker.model.validation against the CRDs in crds/: defaults, schema, CEL rules (pure
tests)."""

from __future__ import annotations

import copy
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bad_manifests import (
    ASIAN_SPEC_EXAMPLE,
    BAD_JOBS,
    BAD_TUNINGS,
    BARRIER,
    BASKET,
    DELETE,
    EUROPEAN_MINIMAL,
    GOOD_JOBS,
    GOOD_TUNINGS,
    PERFTUNING_EMPTY,
    PERFTUNING_SPEC_EXAMPLE,
    BadCase,
    changed,
)
from mcop_worker.model import validation
from mcop_worker.model.errors import ManifestError
from mcop_worker.model.validation import (
    InvalidManifest,
    manifest_errors,
    validate_manifest,
    validate_perftuning,
    validate_update,
)

ROOT = Path(__file__).resolve().parents[1]


def _ids(cases: list[BadCase]) -> list[str]:
    return [case[0] for case in cases]


# --------------------------------------------------------------------------- good manifests


@pytest.mark.parametrize("doc", GOOD_JOBS, ids=lambda d: d["metadata"]["name"])
def test_good_jobs_are_accepted(doc: dict[str, Any]) -> None:
    assert manifest_errors(doc) == []
    validated = validate_manifest(doc)
    assert validated["spec"]["model"]["type"] == doc["spec"]["model"].get("type", "gbm")


@pytest.mark.parametrize("doc", GOOD_TUNINGS, ids=lambda d: d["metadata"]["name"])
def test_good_tunings_are_accepted(doc: dict[str, Any]) -> None:
    assert manifest_errors(doc, validation.TUNING_KIND) == []


def test_defaults_are_applied_like_the_api_server() -> None:
    spec = validate_manifest(EUROPEAN_MINIMAL)["spec"]
    assert spec == {
        "model": {
            "type": "gbm",
            "spot": 100.0,
            "volatility": 0.2,
            "rate": 0.05,
            "dividendYield": 0.0,
        },
        "instrument": {
            "type": "european",
            "optionType": "call",
            "strike": 100.0,
            "maturity": 1.0,
            "steps": 252,
        },
        "paths": 1_000_000,
        "seed": 42,
        "varianceReduction": {"antithetic": True, "controlVariate": True},
        "shards": 1,
        "priority": "normal",
        "tuningRef": "default",
        "ttlSecondsAfterFinished": 86400,
        "cache": True,
        "suspend": False,
    }


def test_nested_defaults_reach_list_items_and_optional_objects() -> None:
    basket = validate_manifest(BASKET)["spec"]["model"]["assets"]
    assert [a["dividendYield"] for a in basket] == [0.0, 0.01, 0.0]
    assert [a["weight"] for a in basket] == [0.5, 1.0, 0.25]
    barrier = validate_manifest(BARRIER)["spec"]["instrument"]["barrier"]
    assert barrier == {"level": 130.0, "direction": "up", "knock": "out", "rebate": 0.0}
    partial = changed(EUROPEAN_MINIMAL, "vr", spec__varianceReduction={"antithetic": False})
    assert validate_manifest(partial)["spec"]["varianceReduction"] == {
        "antithetic": False,
        "controlVariate": True,
    }


def test_nulls_take_the_default_or_disappear() -> None:
    doc = changed(EUROPEAN_MINIMAL, "nulls", spec__shards=None, spec__targetStdErr=None)
    spec = validate_manifest(doc)["spec"]
    assert spec["shards"] == 1
    assert "targetStdErr" not in spec


def test_numbers_are_normalised_by_schema_type() -> None:
    doc = changed(EUROPEAN_MINIMAL, "numbers", spec__paths=2e6, spec__model__rate=0)
    spec = validate_manifest(doc)["spec"]
    assert spec["paths"] == 2_000_000 and type(spec["paths"]) is int
    assert type(spec["model"]["rate"]) is float and type(spec["model"]["spot"]) is float
    corr = validate_manifest(BASKET)["spec"]["model"]["correlation"]
    assert all(type(x) is float for row in corr for x in row)


def test_input_is_not_modified_and_status_is_dropped() -> None:
    doc = copy.deepcopy(ASIAN_SPEC_EXAMPLE)
    doc["status"] = {"phase": "Succeeded"}
    before = copy.deepcopy(doc)
    validated = validate_manifest(doc)
    assert doc == before
    assert "status" not in validated


def test_perftuning_defaults_are_exactly_the_spec_example() -> None:
    from_empty = validate_perftuning(PERFTUNING_EMPTY)["spec"]
    from_example = validate_perftuning(PERFTUNING_SPEC_EXAMPLE)["spec"]
    assert from_empty == from_example
    assert from_empty["postgres"]["maxOverflow"] == 30
    assert from_empty["redis"]["urlSecretRef"] == {"name": "montecarlo-redis", "key": "url"}
    no_spec = {k: v for k, v in PERFTUNING_EMPTY.items() if k != "spec"}
    assert validate_perftuning(no_spec)["spec"] == from_example


# --------------------------------------------------------------------------- bad manifests


def _assert_refused(doc: dict[str, Any], field: str, fragment: str, kind: str) -> None:
    errors = manifest_errors(doc, kind)
    assert errors, f"accepted, but should be refused at {field}"
    assert errors[0].field == field, f"first error is {errors[0]}, expected {field}"
    assert fragment in errors[0].message, f"{errors[0].message!r} lacks {fragment!r}"
    # The raising API says the same.
    with pytest.raises(ManifestError) as raised:
        (validate_manifest if kind == validation.JOB_KIND else validate_perftuning)(doc)
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")


@pytest.mark.parametrize(("case_id", "doc", "field", "fragment"), BAD_JOBS, ids=_ids(BAD_JOBS))
def test_bad_jobs_are_refused_at_the_field(
    case_id: str, doc: dict[str, Any], field: str, fragment: str
) -> None:
    _assert_refused(doc, field, fragment, validation.JOB_KIND)


@pytest.mark.parametrize(
    ("case_id", "doc", "field", "fragment"), BAD_TUNINGS, ids=_ids(BAD_TUNINGS)
)
def test_bad_tunings_are_refused_at_the_field(
    case_id: str, doc: dict[str, Any], field: str, fragment: str
) -> None:
    _assert_refused(doc, field, fragment, validation.TUNING_KIND)


def test_the_tables_are_big_enough_and_their_ids_unique() -> None:
    assert len(BAD_JOBS) >= 25 and len(BAD_TUNINGS) >= 8
    ids = _ids(BAD_JOBS + BAD_TUNINGS)
    names = [case[1]["metadata"]["name"] for case in BAD_JOBS + BAD_TUNINGS]
    assert len(set(ids)) == len(ids) and len(set(names)) == len(names)


def test_all_errors_are_reported_the_first_names_the_field() -> None:
    doc = changed(
        EUROPEAN_MINIMAL, "three", spec__shards=0, spec__instrument__strike=-1, spec__seed=-5
    )
    with pytest.raises(InvalidManifest) as raised:
        validate_manifest(doc)
    fields = [e.field for e in raised.value.errors]
    assert fields == ["spec.instrument.strike", "spec.seed", "spec.shards"]
    assert raised.value.field == "spec.instrument.strike"
    assert "spec.seed: Invalid value: -5" in str(raised.value)


def test_cel_rules_wait_for_type_errors_like_the_api_server() -> None:
    # A type error blocks the CEL rules (the barrier rule would fire otherwise).
    doc = changed(
        EUROPEAN_MINIMAL,
        "typed",
        spec__paths="x",
        spec__instrument__barrier={"level": 1.0, "direction": "up", "knock": "in"},
    )
    assert [e.field for e in manifest_errors(doc)] == ["spec.paths"]


@pytest.mark.parametrize(
    ("doc", "field", "fragment"),
    [
        ({"kind": "MonteCarloJob"}, "apiVersion", "must be montecarlo.io/v1alpha1"),
        ({"apiVersion": "montecarlo.io/v1alpha1", "kind": "Job"}, "kind", "must be MonteCarloJob"),
        ({**EUROPEAN_MINIMAL, "metadata": {}}, "metadata.name", "Required value"),
        ({**EUROPEAN_MINIMAL, "metadata": {"name": "SPX_Asian"}}, "metadata.name", "RFC 1123"),
        (["not", "a", "mapping"], "<manifest>", "must be a mapping"),
    ],
)
def test_envelope_is_checked(doc: Any, field: str, fragment: str) -> None:
    with pytest.raises(InvalidManifest) as raised:
        validate_manifest(doc)
    assert raised.value.field == field and fragment in raised.value.message


def test_validate_picks_the_crd_by_kind() -> None:
    assert validation.validate(PERFTUNING_EMPTY)["spec"]["postgres"]["poolSize"] == 20
    assert validation.validate(EUROPEAN_MINIMAL)["spec"]["shards"] == 1
    with pytest.raises(InvalidManifest, match="kind: must be MonteCarloJob"):
        validation.validate({**EUROPEAN_MINIMAL, "kind": "Pod"})


def test_generate_name_is_enough() -> None:
    doc = {**EUROPEAN_MINIMAL, "metadata": {"generateName": "eur-"}}
    assert validate_manifest(doc)["metadata"] == {"generateName": "eur-"}


# --------------------------------------------------------------------------- updates


IMMUTABLE_CHANGES = [
    ("model", {"spec__model__spot": 101.0}),
    ("instrument", {"spec__instrument__steps": 12}),
    ("paths", {"spec__paths": 20_000_000}),
    ("seed", {"spec__seed": 43}),
    ("varianceReduction", {"spec__varianceReduction__antithetic": False}),
    ("targetStdErr", {"spec__targetStdErr": 0.001}),
    ("targetStdErr", {"spec__targetStdErr": validation._MISSING}),
    ("sampler", {"spec__sampler": {"type": "sobol", "randomizations": 32}}),
    ("greeks", {"spec__greeks": ["delta"]}),
    ("shards", {"spec__shards": 8}),
    ("priority", {"spec__priority": "critical"}),
    ("priorityClassName", {"spec__priorityClassName": "other-class"}),
    ("resources", {"spec__resources__requests__cpu": "2"}),
    ("workerTemplate", {"spec__workerTemplate": {"nodeSelector": {"pool": "other"}}}),
    ("queueName", {"spec__queueName": "batch"}),
]


def _change_id(value: Any) -> str:
    """A test id that is the same in every process (pytest-xdist compares them): no addresses."""
    if isinstance(value, dict):
        return ",".join(
            f"{k}={'<removed>' if v is validation._MISSING else v}" for k, v in value.items()
        )
    return str(value)


@pytest.mark.parametrize(("field", "changes"), IMMUTABLE_CHANGES, ids=_change_id)
def test_numbers_and_pods_defining_fields_are_immutable(
    field: str, changes: dict[str, Any]
) -> None:

    changes = {k: (DELETE if v is validation._MISSING else v) for k, v in changes.items()}
    new = changed(ASIAN_SPEC_EXAMPLE, "spx-asian", **changes)
    with pytest.raises(InvalidManifest) as raised:
        validate_update(ASIAN_SPEC_EXAMPLE, new)
    assert raised.value.field == f"spec.{field}"
    assert (
        "immutable" in raised.value.message and "create a new MonteCarloJob" in raised.value.message
    )


def test_adding_an_immutable_optional_field_is_refused() -> None:
    new = changed(EUROPEAN_MINIMAL, "eur-min", spec__targetStdErr=0.01)
    with pytest.raises(InvalidManifest, match="targetStdErr is immutable"):
        validate_update(EUROPEAN_MINIMAL, new)


def test_operational_fields_stay_mutable() -> None:
    new = changed(
        ASIAN_SPEC_EXAMPLE,
        "spx-asian",
        spec__suspend=True,
        spec__timeoutSeconds=60,
        spec__ttlSecondsAfterFinished=0,
        spec__cache=False,
        spec__tuningRef="fast",
    )
    assert validate_update(ASIAN_SPEC_EXAMPLE, new)["spec"]["suspend"] is True


def test_writing_the_defaults_out_is_not_a_change() -> None:
    explicit = validate_manifest(EUROPEAN_MINIMAL)
    validate_update(EUROPEAN_MINIMAL, explicit)


# --------------------------------------------------------------------------- the CRDs themselves


def _rules(schema: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    yield from schema.get("x-kubernetes-validations", [])
    for sub in schema.get("properties", {}).values():
        yield from _rules(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), Mapping):
            yield from _rules(schema[key])


def test_every_creation_rule_is_exercised_by_a_bad_manifest() -> None:
    messages = [e.message for _, doc, _, _ in BAD_JOBS for e in manifest_errors(doc)]
    messages += [
        e.message
        for _, doc, _, _ in BAD_TUNINGS
        for e in manifest_errors(doc, validation.TUNING_KIND)
    ]
    for kind in (validation.JOB_KIND, validation.TUNING_KIND):
        for rule in _rules(validation.openapi_schema(kind)):
            if "oldSelf" in rule["rule"]:
                continue
            assert any(rule["message"] in m for m in messages), f"no bad manifest for {rule}"


def test_every_transition_rule_is_exercised() -> None:
    tested = {field for field, _ in IMMUTABLE_CHANGES}
    for rule in _rules(validation.openapi_schema(validation.JOB_KIND)):
        if "oldSelf" in rule["rule"]:
            assert rule["fieldPath"].lstrip(".") in tested, rule


def _fields(schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for name, sub in schema.get("properties", {}).items():
        yield f"{path}.{name}", sub
        yield from _fields(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), Mapping):
            yield f"{path}[]", schema[key]
            yield from _fields(schema[key], f"{path}[]")


@pytest.mark.parametrize("kind", [validation.JOB_KIND, validation.TUNING_KIND])
def test_every_spec_and_status_field_has_a_description(kind: str) -> None:
    schema = validation.openapi_schema(kind)
    for part in ("spec", "status"):
        for path, sub in _fields(schema["properties"][part], part):
            if path.endswith("[]") and "properties" not in sub and "items" not in sub:
                continue  # scalar items of a list or map are described by the list or map
            assert sub.get("description"), f"{kind} {path} has no description"


@pytest.mark.parametrize("kind", [validation.JOB_KIND, validation.TUNING_KIND])
def test_spec_lists_and_strings_are_bounded_for_the_cel_cost_estimator(kind: str) -> None:
    for path, sub in _fields(validation.openapi_schema(kind)["properties"]["spec"], "spec"):
        if sub.get("type") == "array":
            assert "maxItems" in sub, path
        if sub.get("type") == "string":
            assert "maxLength" in sub or "enum" in sub, path
        if sub.get("type") == "object" and "additionalProperties" in sub:
            assert "maxProperties" in sub, path


def test_names_and_printer_columns_follow_the_contract() -> None:
    job = validation.load_crd(validation.JOB_KIND)["spec"]
    assert job["group"] == "montecarlo.io"
    assert job["names"]["plural"] == "montecarlojobs" and job["names"]["shortNames"] == ["mcj"]
    assert job["names"]["categories"] == ["montecarlo"]
    (version,) = job["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"].upper(): c for c in version["additionalPrinterColumns"]}
    normal = [n for n, c in columns.items() if not c.get("priority")]
    assert normal == ["PHASE", "PROGRESS", "ESTIMATE", "STDERR", "PRIORITY", "AGE"]
    wide = [n for n, c in columns.items() if c.get("priority") == 1]
    assert wide == ["QUEUE", "PATHS", "SHARDS", "ETA"]

    tuning = validation.load_crd(validation.TUNING_KIND)["spec"]
    assert tuning["names"]["plural"] == "perftunings" and tuning["names"]["shortNames"] == ["ptune"]
    assert tuning["names"]["categories"] == ["montecarlo"]
    names = [c["name"].upper() for c in tuning["versions"][0]["additionalPrinterColumns"]]
    assert names == ["PHASE", "HIT-RATE", "DB-CONNECTIONS", "RUNNING", "QUEUED", "AGE"]


def test_printer_columns_read_fields_that_exist() -> None:
    for kind in (validation.JOB_KIND, validation.TUNING_KIND):
        schema = validation.openapi_schema(kind)
        version = validation.load_crd(kind)["spec"]["versions"][0]
        for column in version["additionalPrinterColumns"]:
            node: Mapping[str, Any] = schema
            parts = column["jsonPath"].lstrip(".").split(".")
            if parts[0] == "metadata":
                continue
            for part in parts:
                node = node["properties"][part]
            assert node["type"] == column["type"], column


def test_a_rule_that_cannot_be_evaluated_is_an_error_not_a_pass() -> None:
    schema = {"type": "object", "x-kubernetes-validations": [{"rule": "self.missing > 0"}]}
    errors = validation._cel_errors({}, schema, "spec", validation._MISSING)
    assert len(errors) == 1 and "could not be evaluated" in errors[0].message


# --------------------------------------------------------------------------- one source of truth


def test_the_package_reads_the_repository_crds() -> None:
    for name in ("montecarlojob.yaml", "perftuning.yaml"):
        assert (validation.CRD_DIR / name).read_bytes() == (ROOT / "crds" / name).read_bytes()


def test_the_wheel_ships_the_crd_files(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("montecarlo_operator-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for name in ("montecarlojob.yaml", "perftuning.yaml"):
            shipped = archive.read(f"mcop_worker/model/crds/{name}")
            assert shipped == (ROOT / "crds" / name).read_bytes()


def test_the_largest_allowed_portfolio_validates_quickly() -> None:
    import time

    n = 64
    assets = [{"name": f"A{i}", "spot": 100.0, "volatility": 0.2} for i in range(n)]
    identity = [[1.0 if i == j else 0.0 for j in range(n)] for i in range(n)]
    doc = changed(BASKET, "big", spec__model__assets=assets, spec__model__correlation=identity)
    started = time.perf_counter()
    validate_manifest(doc)
    assert time.perf_counter() - started < 30  # it once took minutes and GiBs: rules errored
    identity[5][7] = 0.1
    doc = changed(doc, "big", spec__model__correlation=identity)
    (error,) = manifest_errors(doc)
    assert error.message.endswith(
        "model.correlation must be symmetric (correlation[i][j] == correlation[j][i])"
    )


def test_an_oversized_list_is_refused_without_running_the_rules() -> None:
    n = 65
    assets = [{"name": f"A{i}", "spot": 100.0, "volatility": 0.2} for i in range(n)]
    doc = changed(BASKET, "huge", spec__model__assets=assets, spec__model__correlation=DELETE)
    errors = manifest_errors(doc)
    assert [(e.field, e.message) for e in errors] == [
        ("spec.model.assets", "Too many: 65: must have at most 64 items")
    ]


def test_status_errors_name_the_fields_the_api_server_would_drop() -> None:
    good = {
        "phase": "Running",
        "progress": "37%",
        "estimate": 5.77,
        "confidenceInterval": {"level": 0.95, "lower": 5.76, "upper": 5.78},
        "shards": {"total": 4, "active": 4, "succeeded": 0, "failed": 0},
        "result": {"valueAtRisk": {"0.99": 12.5}, "stoppedEarly": False},
        "conditions": [
            {
                "type": "Running",
                "status": "True",
                "reason": "WorkersRunning",
                "message": "4 shards",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    assert validation.status_errors(validation.JOB_KIND, good) == []
    bad = {**good, "phase": "Done", "etaSecs": 3, "result": {"valueAtRisk": {"0.99": "big"}}}
    assert [e.field for e in validation.status_errors(validation.JOB_KIND, bad)] == [
        "status.etaSecs",
        "status.phase",
        "status.result.valueAtRisk.0.99",
    ]


@pytest.mark.parametrize("doc", GOOD_JOBS, ids=lambda d: d["metadata"]["name"])
def test_the_engine_accepts_every_good_job(doc: dict[str, Any]) -> None:
    from mcop_worker.model.spec import parse_spec

    spec = parse_spec(validate_manifest(doc)["spec"])
    assert spec.instrument.type == doc["spec"]["instrument"]["type"]


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_is_valid(path: Path) -> None:
    import yaml

    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if doc and doc.get("apiVersion") == validation.API_VERSION:
            assert manifest_errors(doc, doc["kind"]) == [], path
