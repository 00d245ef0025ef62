"""Validate manifests with the CRDs in ``crds/``, the way the Kubernetes API server does.

The CRD files are the one source of truth: ``mcop run`` and the operator call this module, the API
server reads the same files, so both refuse the same manifests with the same messages and field
paths. The steps follow the API server's order for a create:

1. ``apiVersion``/``kind`` and ``metadata.name`` (an RFC 1123 subdomain), ``status`` dropped;
2. structural defaulting: nulls of non-nullable fields pruned, ``default`` values filled in wherever
   the parent object exists (recursively, also inside defaults);
3. the OpenAPI schema (types, enums, ranges, patterns, sizes; unknown fields refused as
   ``kubectl apply``'s strict field validation does), with jsonschema;
4. every CEL rule (``x-kubernetes-validations``) at the node it is attached to, with cel-python;
   skipped after the errors the API server calls blocking (a wrong type, a missing required
   field, a value outside an enum, a list or string above its size limit).
   Transition rules (``oldSelf``) only run in :func:`validate_update`.

Numbers come back normalised: ``type: number`` fields are floats, ``type: integer`` fields ints.
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import celpy
import jsonschema
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from .errors import ManifestError

API_VERSION: Final = "montecarlo.io/v1alpha1"
JOB_KIND: Final = "MonteCarloJob"
TUNING_KIND: Final = "PerfTuning"
_CRD_FILES: Final = {JOB_KIND: "montecarlojob.yaml", TUNING_KIND: "perftuning.yaml"}

# In the source tree mcop_worker/model/crds is a symlink to the repository's crds/; an installed
# wheel carries a copy of the same files as package data.
CRD_DIR: Final = Path(__file__).resolve().parent / "crds"

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_SUBDOMAIN_MESSAGE: Final = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com')"
)
# Schema errors after which the API server skips the CEL rules (wrong type, missing required
# field, value outside an enum, too long or too many: hasBlockingErr in apiextensions-apiserver).
_BLOCKING: Final = frozenset(
    {"type", "anyOf", "required", "enum", "maxLength", "maxItems", "maxProperties"}
)
# How the API server words the reason of a CEL rule before its message.
_REASON_PREFIX: Final = {
    "FieldValueRequired": "Required value: ",
    "FieldValueForbidden": "Forbidden: ",
    "FieldValueDuplicate": "Duplicate value: ",
    "FieldValueInvalid": "Invalid value: ",
}
_OLD_SELF = re.compile(r"\b(oldSelf|optionalOldSelf)\b")
_MISSING: Final = object()


@dataclass(frozen=True)
class FieldError:
    """One refusal: ``field`` is the path in the manifest (``spec.model.assets[0].spot``)."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InvalidManifest(ManifestError):
    """All the refusals of one manifest; ``field`` and the first line name the first one."""

    def __init__(self, errors: list[FieldError]) -> None:
        first, rest = errors[0], errors[1:]
        message = "\n".join([first.message, *(str(e) for e in rest)])
        super().__init__(first.field, message)
        self.errors = tuple(errors)


# --------------------------------------------------------------------------- the CRD files


@functools.cache
def load_crd(kind: str) -> dict[str, Any]:
    """The CustomResourceDefinition of ``kind`` (MonteCarloJob or PerfTuning) as a dict."""
    path = CRD_DIR / _CRD_FILES[kind]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the CRDs ship as package data of mcop_worker (in a source tree "
            "worker/mcop_worker/model/crds must be the symlink ../../../crds)"
        )
    # libyaml's loader when PyYAML has it: every worker, operator and `mcop run` reads the CRD at
    # start, 0.37 s in pure Python, 0.04 s with libyaml (the same dict: plain YAML, no tags).
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd: dict[str, Any] = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    return crd


def openapi_schema(kind: str) -> dict[str, Any]:
    """The storage version's ``openAPIV3Schema`` of ``kind``."""
    versions = load_crd(kind)["spec"]["versions"]
    storage = next(v for v in versions if v.get("storage"))
    schema: dict[str, Any] = storage["schema"]["openAPIV3Schema"]
    return schema


# --------------------------------------------------------------------------- public entry points


def validate_manifest(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A MonteCarloJob manifest with the CRD's defaults applied; raises :class:`InvalidManifest`."""
    return _raise_or_return(_check(doc, JOB_KIND, old=None))


def validate_perftuning(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A PerfTuning manifest with the CRD's defaults applied; raises :class:`InvalidManifest`."""
    return _raise_or_return(_check(doc, TUNING_KIND, old=None))


def validate(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A MonteCarloJob or PerfTuning manifest (by its ``kind``) with the CRD's defaults applied."""
    kind = str(doc.get("kind", "")) if isinstance(doc, Mapping) else ""
    return _raise_or_return(_check(doc, kind if kind in _CRD_FILES else JOB_KIND, old=None))


def validate_update(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``new`` as an update of ``old`` (same kind), with the transition rules (immutability)."""
    kind = str(new.get("kind", ""))
    old_doc, old_errors = _check(old, kind, old=None)
    if old_errors:
        raise InvalidManifest(old_errors)
    return _raise_or_return(_check(new, kind, old=old_doc))


def manifest_errors(doc: Mapping[str, Any], kind: str = JOB_KIND) -> list[FieldError]:
    """Every refusal of ``doc`` as a ``kind`` (empty when it is valid), without raising."""
    return _check(doc, kind, old=None)[1]


def status_errors(kind: str, status: Mapping[str, Any]) -> list[FieldError]:
    """What is wrong with a ``status`` the operator is about to write: the API server silently
    drops fields its schema does not know, so a test of the status builder should call this."""
    doc = {"status": _plain_json(status)}
    return _schema_errors(doc, kind, part="status")[0]


def _raise_or_return(result: tuple[dict[str, Any], list[FieldError]]) -> dict[str, Any]:
    doc, errors = result
    if errors:
        raise InvalidManifest(errors)
    return doc


def _check(
    doc: Mapping[str, Any], kind: str, old: dict[str, Any] | None
) -> tuple[dict[str, Any], list[FieldError]]:
    if not isinstance(doc, Mapping):
        return {}, [
            FieldError("<manifest>", f"must be a mapping (a YAML object), not {_json_type(doc)}")
        ]
    if doc.get("apiVersion") != API_VERSION:
        return {}, [
            FieldError("apiVersion", f"must be {API_VERSION}, not {doc.get('apiVersion')!r}")
        ]
    if kind not in _CRD_FILES or doc.get("kind") != kind:
        return {}, [FieldError("kind", f"must be {kind}, not {doc.get('kind')!r}")]

    manifest = _plain_json(doc)
    errors = _metadata_errors(manifest.get("metadata"))
    manifest.pop("status", None)  # the status subresource: the API server ignores it on writes
    schema = openapi_schema(kind)
    prune_nulls_and_default(manifest, schema)
    normalise_numbers(manifest, schema)

    schema_errors, blocking = _schema_errors(manifest, kind)
    errors += schema_errors
    if not blocking:
        errors += _cel_errors(manifest, schema, "", old if old is not None else _MISSING)
    return manifest, errors


# --------------------------------------------------------------------------- metadata


def _metadata_errors(metadata: Any) -> list[FieldError]:
    if metadata is None:
        return [FieldError("metadata.name", "Required value: name or generateName is required")]
    if not isinstance(metadata, dict):
        return [FieldError("metadata", f"must be of type object, not {_json_type(metadata)}")]
    name = metadata.get("name")
    if not name and not metadata.get("generateName"):
        return [FieldError("metadata.name", "Required value: name or generateName is required")]
    if name and (not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name)):
        return [
            FieldError("metadata.name", f"Invalid value: {_show(name)}: {_DNS_SUBDOMAIN_MESSAGE}")
        ]
    return []


# --------------------------------------------------------------------------- defaulting


def prune_nulls_and_default(value: Any, schema: Mapping[str, Any]) -> None:
    """The API server's structural defaulting, in place: a null of a non-nullable field takes the
    default or is dropped; an absent field with a default gets a deep copy of it; then recurse,
    also into the values just defaulted."""
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties", {})
        for key in [k for k, v in value.items() if v is None]:
            sub = properties.get(key) or _additional(schema)
            if sub is not None and not sub.get("nullable", False) and "default" not in sub:
                del value[key]
        for key, sub in properties.items():
            if "default" in sub and (
                key not in value or (value[key] is None and not sub.get("nullable", False))
            ):
                value[key] = copy.deepcopy(sub["default"])
        for key, item in value.items():
            sub = properties.get(key) or _additional(schema)
            if sub is not None:
                prune_nulls_and_default(item, sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for item in value:
            prune_nulls_and_default(item, schema["items"])


def normalise_numbers(value: Any, schema: Mapping[str, Any]) -> None:
    """In place: ``type: number`` values become floats, integral floats of ``type: integer`` ints,
    so the engine and the spec hash never see 100 and 100.0 as different inputs."""
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties", {})
        for key, item in value.items():
            sub = properties.get(key) or _additional(schema)
            if sub is None:
                continue
            value[key] = _normalised(item, sub)
            normalise_numbers(value[key], sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            value[i] = _normalised(item, schema["items"])
            normalise_numbers(value[i], schema["items"])


def _normalised(value: Any, schema: Mapping[str, Any]) -> Any:
    if isinstance(value, bool):
        return value
    if schema.get("type") == "number" and isinstance(value, int):
        return float(value)
    if schema.get("type") == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _additional(schema: Mapping[str, Any]) -> Mapping[str, Any] | None:
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, Mapping) else None


# --------------------------------------------------------------------------- OpenAPI schema


@functools.cache
def _validator(kind: str) -> jsonschema.Draft4Validator:
    # OpenAPI v3.0 schemas are Draft 4 in these respects (boolean exclusiveMinimum/Maximum).
    return jsonschema.Draft4Validator(_strict(openapi_schema(kind), root=True))


def _strict(schema: Mapping[str, Any], root: bool = False) -> dict[str, Any]:
    """The CRD schema as plain JSON Schema, refusing unknown fields like strict field validation."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key in ("default", "description", "nullable"):
            continue
        if key == "properties":
            out[key] = {
                name: ({"type": "object"} if root and name == "metadata" else _strict(sub))
                for name, sub in value.items()
            }
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping):
            out[key] = _strict(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [_strict(s) for s in value]
        else:
            out[key] = value
    preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in schema and "additionalProperties" not in schema and not preserve:
        out["additionalProperties"] = False
    if schema.get("nullable"):
        out["type"] = [schema["type"], "null"]
    return out


def _schema_errors(
    manifest: dict[str, Any], kind: str, part: str | None = None
) -> tuple[list[FieldError], bool]:
    errors: list[FieldError] = []
    blocking = False
    validator = _validator(kind)
    if part is not None:  # one top-level part alone (status), not a whole manifest
        schema = validator.schema["properties"][part]
        validator = jsonschema.Draft4Validator({"type": "object", "properties": {part: schema}})
    found = sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.path)))
    for error in found:
        # The API server's blocking errors: after these it does not run the CEL rules.
        blocking |= error.validator in _BLOCKING
        errors.extend(_translate(error))
    return errors, blocking


def _translate(error: jsonschema.ValidationError) -> Iterator[FieldError]:
    """A jsonschema error in the words and field paths of the API server."""
    path = _path(error.absolute_path)
    value, rule, keyword = error.instance, error.validator_value, str(error.validator)
    shown = _show(value)
    invalid = f"Invalid value: {shown}: {path} in body"
    if keyword == "required":
        for name in rule:
            if isinstance(value, dict) and name not in value:
                yield FieldError(_join(path, name), "Required value")
    elif keyword == "additionalProperties":
        allowed = error.schema.get("properties", {})
        for name in value:
            if name not in allowed:
                field = _join(path, name)
                yield FieldError(field, f'unknown field "{field}"')
    elif keyword == "type" or keyword == "anyOf":
        wanted = rule if keyword == "type" else "integer or string"
        if isinstance(wanted, list):
            wanted = wanted[0]
        actual = _json_type(value)
        yield FieldError(
            path, f'Invalid value: "{actual}": {path} in body must be of type {wanted}: "{actual}"'
        )
    elif keyword == "enum":
        supported = ", ".join(_show(v) for v in rule)
        yield FieldError(path, f"Unsupported value: {shown}: supported values: {supported}")
    elif keyword in ("minimum", "maximum"):
        exclusive = error.schema.get(
            "exclusiveMinimum" if keyword == "minimum" else "exclusiveMaximum"
        )
        relation = "greater than" if keyword == "minimum" else "less than"
        relation += "" if exclusive else " or equal to"
        yield FieldError(path, f"{invalid} should be {relation} {_number(rule)}")
    elif keyword == "minLength":
        yield FieldError(path, f"{invalid} should be at least {rule} chars long")
    elif keyword == "maxLength":
        yield FieldError(path, f"Too long: may not be more than {rule} bytes")
    elif keyword == "pattern":
        yield FieldError(path, f"{invalid} should match '{rule}'")
    elif keyword == "minItems":
        yield FieldError(
            path, f"Invalid value: {len(value)}: {path} in body should have at least {rule} items"
        )
    elif keyword in ("maxItems", "maxProperties"):
        yield FieldError(path, f"Too many: {len(value)}: must have at most {rule} items")
    else:
        yield FieldError(path, f"Invalid value: {shown}: {error.message}")


def _path(parts: Iterator[Any] | Any) -> str:
    field = ""
    for part in parts:
        field = f"{field}[{part}]" if isinstance(part, int) else _join(field, str(part))
    return field


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _show(value: Any) -> str:
    if isinstance(value, dict | list):
        return f'"{_json_type(value)}"'
    if isinstance(value, float) and value.is_integer():
        return _number(value)  # as Go prints a JSON number: 1, not 1.0
    return json.dumps(value)


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _json_type(value: Any) -> str:
    for python_type, name in (
        (bool, "boolean"),
        (int, "integer"),
        (float, "number"),
        (str, "string"),
        (list, "array"),
        (dict, "object"),
        (type(None), "null"),
    ):
        if isinstance(value, python_type):
            return name
    return type(value).__name__


# --------------------------------------------------------------------------- CEL rules


@functools.cache
def _program(rule: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _cel_errors(value: Any, schema: Mapping[str, Any], path: str, old: Any) -> list[FieldError]:
    """Evaluate the rules attached to this node, then those of its children (depth first)."""
    errors: list[FieldError] = []
    for rule in schema.get("x-kubernetes-validations", []):
        transition = bool(_OLD_SELF.search(rule["rule"]))
        if transition and old is _MISSING:
            continue
        activation = {"self": _to_cel(value, schema, root=path == "")}
        if transition:
            activation["oldSelf"] = _to_cel(old, schema, root=path == "")
        field = path + rule.get("fieldPath", "") if rule.get("fieldPath") else path
        field = field.lstrip(".")
        outcome = _evaluate(rule["rule"], activation)
        if outcome is not True:
            message = rule.get("message") or f"failed rule: {rule['rule']}"
            message = _REASON_PREFIX[rule.get("reason", "FieldValueInvalid")] + message
            if isinstance(outcome, str):
                message = f"{message} ({outcome})"
            errors.append(FieldError(field or "<root>", message))

    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties", {})
        for key, item in value.items():
            sub = properties.get(key) or _additional(schema)
            if sub is None:
                continue
            child = _join(path, key)
            child_old = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
            errors += _cel_errors(item, sub, child, child_old)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            # Atomic lists: the API server correlates no old items, so no transition rules here.
            errors += _cel_errors(item, schema["items"], f"{path}[{i}]", _MISSING)
    return errors


def _evaluate(rule: str, activation: dict[str, Any]) -> bool | str:
    """True when the rule holds, False when it does not, a string when it cannot be evaluated."""
    try:
        result = _program(rule).evaluate(activation)
    except CELEvalError as error:
        return f"rule could not be evaluated: {error.args[0] if error.args else error}"
    if isinstance(result, CELEvalError):
        return f"rule could not be evaluated: {result.args[0] if result.args else result}"
    return bool(result) if isinstance(result, celtypes.BoolType) else f"rule gave {result!r}"


def _to_cel(value: Any, schema: Mapping[str, Any], root: bool = False) -> Any:
    """A JSON value as the API server hands it to CEL: typed by the schema, not by the JSON
    (a ``type: number`` 100 is a double, so rules compare it with 0.0)."""
    if value is None:
        return None
    kind = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        return celtypes.IntType(value) if isinstance(value, int) else celtypes.StringType(value)
    if kind == "number":
        return celtypes.DoubleType(float(value))
    if kind == "integer":
        return celtypes.IntType(value)
    if kind == "boolean":
        return celtypes.BoolType(value)
    if kind == "string":
        return celtypes.StringType(value)
    if kind == "array":
        items = schema.get("items", {})
        return celtypes.ListType([_to_cel(v, items) for v in value])
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties", {})
        entries: dict[Any, Any] = {}
        for key, item in value.items():
            if root and key == "metadata":
                # Only name and generateName of metadata are visible to rules at the root.
                meta = {k: v for k, v in item.items() if k in ("name", "generateName")}
                entries[celtypes.StringType(key)] = json_to_cel(meta)
                continue
            sub = properties.get(key) or _additional(schema)
            converted = _to_cel(item, sub) if sub is not None else json_to_cel(item)
            entries[celtypes.StringType(key)] = converted
        return celtypes.MapType(entries)
    return json_to_cel(value)


# --------------------------------------------------------------------------- input hygiene


def _plain_json(value: Any) -> Any:
    """A deep copy made of dict/list/str/int/float/bool/None (YAML dates become ISO strings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_json(v) for v in value]
    if isinstance(value, datetime.date | datetime.datetime):
        return value.isoformat()
    return value
