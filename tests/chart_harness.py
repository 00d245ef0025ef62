"""Helpers of the chart's tests: rendering it with the built helm, running helm against a control
plane, and reading the allow-list of docs/rbac.md and `kubectl auth can-i --list`."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcop_devcluster.binaries import MissingBinary, helm_path

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "montecarlo-operator"
RBAC_DOC = ROOT / "docs" / "rbac.md"
RELEASE = "mcop"

Rule = tuple[str, str]  # (resource as `kubectl auth can-i --list` names it, verb)


def helm() -> str:
    """The helm built by scripts/build-control-plane (a failure says how to build it)."""
    try:
        return str(helm_path())
    except MissingBinary as error:
        pytest.fail(str(error), pytrace=False)


def set_args(values: Mapping[str, Any]) -> list[str]:
    """`--set-json key=value` for each dotted key (JSON keeps types: lists, booleans, numbers)."""
    args: list[str] = []
    for key, value in values.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


def run_helm(
    *args: str, env: Mapping[str, str] | None = None, check: bool = True, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [helm(), *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def template(
    values: Mapping[str, Any] | None = None, namespace: str = "mcop", check: bool = True
) -> subprocess.CompletedProcess[str]:
    return run_helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        *set_args(values or {}),
        check=check,
    )


def render(
    values: Mapping[str, Any] | None = None, namespace: str = "mcop"
) -> list[dict[str, Any]]:
    """The chart's templates as objects (not the CRDs, not the hooks' annotations stripped)."""
    return [doc for doc in yaml.safe_load_all(template(values, namespace).stdout) if doc]


def by_kind(docs: Iterable[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: Iterable[Mapping[str, Any]], kind: str, name: str | None = None) -> Mapping[str, Any]:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def is_hook(doc: Mapping[str, Any]) -> bool:
    return "helm.sh/hook" in (doc["metadata"].get("annotations") or {})


# -- the allow-list --------------------------------------------------------------------------------
def _doc_table(marker: str) -> list[dict[str, str]]:
    """The markdown table following `<!-- allow-list: marker -->` in docs/rbac.md."""
    text = RBAC_DOC.read_text()
    start = text.index(f"<!-- allow-list: {marker} -->")
    lines = []
    for line in text[start:].splitlines()[1:]:
        if not line.startswith("|"):
            break
        lines.append([cell.strip() for cell in line.strip("|").split("|")])
    header, rows = lines[0], lines[2:]
    return [dict(zip(header, row, strict=True)) for row in rows]


def _rules(row: Mapping[str, str]) -> set[Rule]:
    resource = row["resource"].strip("`")
    return {(resource, verb.strip()) for verb in row["verbs"].split(",")}


def documented_rules(mode: str, watched: bool = True, home: bool = False) -> set[Rule]:
    """What docs/rbac.md grants in `mode` ("cluster-wide" or "namespaced"), as seen from a
    namespace the operator watches (or, namespaced mode only, one it does not); `home`: the
    release's own namespace, where the leader-election rules are granted too."""
    rules: set[Rule] = set()
    if home:
        for row in _doc_table("leader-election"):
            rules |= _rules(row)
    if watched:
        for row in _doc_table("namespaced"):
            rules |= _rules(row)
    for row in _doc_table("cluster"):
        if row["mode"] in ("both", mode):
            rules |= _rules(row)
    return rules


_CAN_I_ROW = re.compile(r"^(\S*)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$")


def parse_can_i(output: str) -> set[tuple[str, str, str, str]]:
    """`kubectl auth can-i --list` rows as (resource, non-resource URL, resource name, verb)."""
    rules = set()
    for line in output.splitlines()[1:]:
        match = _CAN_I_ROW.match(line)
        assert match, f"unexpected line in kubectl auth can-i --list: {line!r}"
        resource, urls, names, verbs = match.groups()
        for verb in verbs.split():
            rules.add((resource, urls, names, verb))
    return rules


def rendered_rules(docs: Iterable[Mapping[str, Any]], kind: str) -> set[Rule]:
    """The (resource.group, verb) pairs of the chart's Roles or ClusterRoles (hooks left out)."""
    rules: set[Rule] = set()
    for role in by_kind(docs, kind):
        if is_hook(role):
            continue
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    base, _, sub = resource.partition("/")
                    name = f"{base}.{group}" if group else base
                    name = f"{name}/{sub}" if sub else name
                    rules |= {(name, verb) for verb in rule["verbs"]}
    return rules


# -- values.yaml -----------------------------------------------------------------------------------
def value_keys(values: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of values.yaml down to the documented level (maps of settings are one key)."""
    keys = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        leaf_maps = (
            "resources",
            "podAnnotations",
            "podLabels",
            "nodeSelector",
            "affinity",
            "annotations",
            "spec",
        )
        if isinstance(value, dict) and value and key not in leaf_maps:
            keys += value_keys(value, f"{path}.")
        else:
            keys.append(path)
    return keys
