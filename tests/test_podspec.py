"""How the pod runner turns a container spec into a program, arguments and environment (pure)."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from mcop_devcluster import podspec
from mcop_devcluster.podspec import ContainerConfigError, Programs, StartError

PROGRAMS = Programs(
    mcop=Path("/venv/bin/mcop"), python=Path("/venv/bin/python"), path=os.environ["PATH"]
)

POD: dict[str, Any] = {
    "metadata": {
        "name": "job-0-abc",
        "namespace": "ns1",
        "uid": "1234-uid",
        "labels": {"app": "mcop"},
        "annotations": {"batch.kubernetes.io/job-completion-index": "2"},
    },
    "spec": {"nodeName": "mcop-node", "serviceAccountName": "worker"},
}


def _lookup(objects: Mapping[str, Mapping[str, str]]) -> podspec.Lookup:
    return lambda namespace, name: objects.get(f"{namespace}/{name}")


def _env(container: Mapping[str, Any], secrets: Any = None, maps: Any = None) -> dict[str, str]:
    return podspec.environment(
        POD, container, secrets=_lookup(secrets or {}), config_maps=_lookup(maps or {})
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)-$(B)", "1-two"),
        ("$$(A)", "$(A)"),
        ("$(UNKNOWN)", "$(UNKNOWN)"),
        ("cost $5", "cost $5"),
        ("$(A", "$(A"),
        ("trailing $", "trailing $"),
    ],
)
def test_expand_follows_kubernetes_rules(text: str, expected: str) -> None:
    assert podspec.expand(text, {"A": "1", "B": "two"}) == expected


def test_args_only_runs_the_image_entrypoint_mcop_of_the_virtualenv() -> None:
    argv = podspec.argv({"args": ["worker", "--shard", "$(IDX)"]}, {"IDX": "3"}, PROGRAMS)
    assert argv == ["/venv/bin/mcop", "worker", "--shard", "3"]


def test_command_mcop_and_any_path_to_mcop_is_the_virtualenv_mcop() -> None:
    assert podspec.argv({"command": ["mcop", "worker"]}, {}, PROGRAMS)[0] == "/venv/bin/mcop"
    assert podspec.argv({"command": ["/usr/local/bin/mcop"]}, {}, PROGRAMS)[0] == "/venv/bin/mcop"


def test_python_is_the_virtualenv_python() -> None:
    argv = podspec.argv({"command": ["python3", "-c", "pass"]}, {}, PROGRAMS)
    assert argv == ["/venv/bin/python", "-c", "pass"]


def test_bare_names_are_found_on_path() -> None:
    assert podspec.argv({"command": ["sh", "-c", "true"]}, {}, PROGRAMS)[0].endswith("/sh")


def test_missing_programs_cannot_start() -> None:
    with pytest.raises(StartError, match='exec: "nope": executable file not found in \\$PATH'):
        podspec.argv({"command": ["nope"]}, {}, PROGRAMS)
    with pytest.raises(StartError, match="no such file"):
        podspec.argv({"command": ["/does/not/exist"]}, {}, PROGRAMS)


def test_env_values_field_refs_and_expansion() -> None:
    env = _env({
        "env": [
            {"name": "INDEX", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "LABEL", "value": "$(NAME)#$(INDEX)"},
        ]
    })  # fmt: skip
    assert env == {
        "INDEX": "2", "NAME": "job-0-abc", "NS": "ns1", "UID": "1234-uid", "APP": "mcop",
        "SA": "worker", "IP": "127.0.0.1", "LABEL": "job-0-abc#2",
    }  # fmt: skip


def test_secret_and_config_map_references() -> None:
    secrets = {"ns1/db": {"dsn": "postgresql://u:p@127.0.0.1/x"}}
    maps = {"ns1/cfg": {"level": "debug", "bad key": "skipped", "MODE": "fast"}}
    env = _env(
        {
            "envFrom": [
                {"configMapRef": {"name": "cfg"}, "prefix": "C_"},
                {"secretRef": {"name": "db"}},
            ],
            "env": [
                {"name": "DSN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "dsn"}}},
                {"name": "C_MODE", "value": "override"},
            ],
        },
        secrets,
        maps,
    )
    assert env == {
        "C_level": "debug",
        "C_MODE": "override",
        "dsn": "postgresql://u:p@127.0.0.1/x",
        "DSN": "postgresql://u:p@127.0.0.1/x",
    }


def test_missing_references_wait_unless_optional() -> None:
    key_ref: dict[str, Any] = {"name": "db", "key": "dsn"}
    ref = {"name": "DSN", "valueFrom": {"secretKeyRef": key_ref}}
    with pytest.raises(ContainerConfigError, match='secret "db" not found'):
        _env({"env": [ref]})
    with pytest.raises(ContainerConfigError, match="couldn't find key dsn in Secret ns1/db"):
        _env({"env": [ref]}, {"ns1/db": {"other": "x"}})
    optional = {"name": "DSN", "valueFrom": {"secretKeyRef": {**key_ref, "optional": True}}}
    assert _env({"env": [optional]}) == {}
    assert _env({"envFrom": [{"configMapRef": {"name": "none", "optional": True}}]}) == {}


def test_secret_lookup_decodes_base64_data() -> None:
    secret = {"data": {"k": base64.b64encode(b"v\xc3\xa9").decode()}}
    lookup = podspec.secret_lookup(lambda ns, name: secret if name == "s" else None)
    assert lookup("ns", "s") == {"k": "vé"}
    assert lookup("ns", "missing") is None


def test_resource_field_refs() -> None:
    container = {"resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}}}

    def value(resource: str, divisor: str | None = None) -> str:
        ref = {"resource": resource, **({"divisor": divisor} if divisor else {})}
        return podspec.resource_value(container, ref)

    assert value("limits.cpu") == "2"  # rounded up to whole cores, as the kubelet does
    assert value("limits.cpu", "1m") == "1500"
    assert value("limits.memory", "1Mi") == "1024"
    assert value("requests.memory") == str(2**30)  # requests default to limits
    assert podspec.resource_value({}, {"resource": "limits.cpu"}) == "64"  # node allocatable


def test_unsupported_field_refs_fail_clearly() -> None:
    with pytest.raises(StartError, match="not supported"):
        _env({"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.nope"}}}]})
