"""What the pod runner runs for a container: its program and arguments, and its environment.

Pure functions over the pod as a dict (the API's JSON): Secrets and ConfigMaps are fetched through
the callables given, so these rules are tested without a cluster.

How a container's program is found (there are no images here, so this stands in for one):

1. The argv is ``command + args`` when ``command`` is set, else the image's entrypoint plus
   ``args``. Every image is taken to be the project's image, whose entrypoint is ``mcop``.
2. ``$(VAR)`` references in command and args are expanded from the container's environment, as
   the kubelet does (``$$`` escapes a dollar; unknown references stay as written).
3. The program (argv[0]) is resolved explicitly:
   - ``mcop`` (or any path ending in ``/mcop``) is the ``mcop`` of the runner's virtualenv;
   - ``python``/``python3`` (or paths ending so) is the runner's virtualenv Python;
   - another absolute path is used as is when it is an executable file;
   - a bare name is looked up on the runner's ``PATH`` (so ``sh``, ``sleep``, ``true`` work).
   Anything else cannot be started: the pod ends Failed with reason ``StartError``, like a
   container whose executable is missing.
"""

from __future__ import annotations

import base64
import decimal
import math
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_ENTRYPOINT = ("mcop",)
POD_IP = "127.0.0.1"
NODE_ALLOCATABLE = {"cpu": "64", "memory": "256Gi"}

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")

Lookup = Callable[[str, str], Mapping[str, str] | None]
"""(namespace, name) -> the object's data as text, or None when it does not exist."""


class ContainerConfigError(Exception):
    """The container cannot be configured yet (a missing Secret or key): retried, as kubelets do."""


class StartError(Exception):
    """The container's program cannot be started: the pod fails with this message."""


@dataclass(frozen=True)
class Programs:
    """The programs that stand for ``mcop`` and ``python`` and the PATH used for bare names."""

    mcop: Path
    python: Path
    path: str

    def resolve(self, program: str) -> str:
        base = os.path.basename(program)
        if base == "mcop":
            return str(self.mcop)
        if base in ("python", "python3"):
            return str(self.python)
        if os.path.isabs(program):
            if os.path.isfile(program) and os.access(program, os.X_OK):
                return program
            raise StartError(f'exec: "{program}": no such file or directory')
        if "/" not in program:
            found = shutil.which(program, path=self.path)
            if found:
                return found
        raise StartError(f'exec: "{program}": executable file not found in $PATH')


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: ``$$`` is a dollar, unknown references stay as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "$" and i + 1 < len(text):
            following = text[i + 1]
            if following == "$":
                out.append("$")
                i += 2
                continue
            if following == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(env[name] if name in env else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(char)
        i += 1
    return "".join(out)


def argv(container: Mapping[str, Any], env: Mapping[str, str], programs: Programs) -> list[str]:
    """The resolved argv of a container (see the module's docstring)."""
    command = list(container.get("command") or IMAGE_ENTRYPOINT)
    words = [expand(word, env) for word in command + list(container.get("args") or [])]
    return [programs.resolve(words[0]), *words[1:]]


def _subscript(path: str, prefix: str) -> str | None:
    """The key of ``metadata.labels['key']`` style paths."""
    match = re.fullmatch(re.escape(prefix) + r"\['(.*)'\]", path)
    return match.group(1) if match else None


def field_value(pod: Mapping[str, Any], path: str) -> str:
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
        "status.hostIP": POD_IP,
        "status.hostIPs": POD_IP,
        "status.podIP": POD_IP,
        "status.podIPs": POD_IP,
    }
    if path in simple:
        return str(simple[path])
    for prefix, values in (
        ("metadata.labels", meta.get("labels") or {}),
        ("metadata.annotations", meta.get("annotations") or {}),
    ):
        key = _subscript(path, prefix)
        if key is not None:
            return str(values.get(key, ""))
        if path == prefix:
            return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
    raise StartError(f"fieldRef {path!r} is not supported by the pod runner")


def _quantity(text: str) -> decimal.Decimal:
    suffixes = {
        "Ki": "1024", "Mi": "1048576", "Gi": "1073741824", "Ti": "1099511627776",
        "Pi": "1125899906842624", "Ei": "1152921504606846976",
        "n": "1e-9", "u": "1e-6", "m": "1e-3",
        "k": "1e3", "M": "1e6", "G": "1e9", "T": "1e12", "P": "1e15", "E": "1e18",
    }  # fmt: skip
    match = re.fullmatch(r"([0-9.]+(?:[eE][-+]?[0-9]+)?)([a-zA-Z]*)", text.strip())
    if not match or (match.group(2) and match.group(2) not in suffixes):
        raise StartError(f"cannot read the quantity {text!r}")
    number = decimal.Decimal(match.group(1))
    return number * decimal.Decimal(suffixes[match.group(2)]) if match.group(2) else number


def resource_value(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    """``resourceFieldRef``: the limit or request, the node's allocatable when no limit is set."""
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or name not in ("cpu", "memory", "ephemeral-storage"):
        raise StartError(f"resourceFieldRef {resource!r} is not supported by the pod runner")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None and kind == "requests":
        value = (resources.get("limits") or {}).get(name)
    if value is None:
        value = NODE_ALLOCATABLE.get(name, "0") if kind == "limits" else "0"
    divisor = _quantity(str(ref.get("divisor") or "1"))
    return str(math.ceil(_quantity(str(value)) / divisor))


def _decode_secret(data: Mapping[str, str]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in data.items()}


def secret_lookup(get: Callable[[str, str], Mapping[str, Any] | None]) -> Lookup:
    """Turns a getter of Secret objects (dicts) into a lookup of their decoded data."""

    def lookup(namespace: str, name: str) -> Mapping[str, str] | None:
        secret = get(namespace, name)
        if secret is None:
            return None
        return _decode_secret(secret.get("data") or {}) | dict(secret.get("stringData") or {})

    return lookup


def _referenced(
    kind: str, lookup: Lookup, namespace: str, ref: Mapping[str, Any]
) -> Mapping[str, str] | None:
    name = ref.get("name", "")
    data = lookup(namespace, name)
    if data is None and not ref.get("optional"):
        raise ContainerConfigError(f'{kind} "{name}" not found')
    return data


def environment(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    secrets: Lookup,
    config_maps: Lookup,
) -> dict[str, str]:
    """The variables the container's spec defines: envFrom first, then env (which wins)."""
    namespace = pod.get("metadata", {}).get("namespace", "default")
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            data = _referenced("configmap", config_maps, namespace, source["configMapRef"])
        elif "secretRef" in source:
            data = _referenced("secret", secrets, namespace, source["secretRef"])
        else:
            continue
        for key, text in (data or {}).items():
            if _ENV_NAME.match(prefix + key):  # the kubelet skips invalid names too
                env[prefix + key] = text
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(var.get("value", ""), env)
            continue
        source = var["valueFrom"]
        value: str | None
        if "secretKeyRef" in source or "configMapKeyRef" in source:
            kind, lookup, ref = (
                ("secret", secrets, source["secretKeyRef"])
                if "secretKeyRef" in source
                else ("configmap", config_maps, source["configMapKeyRef"])
            )
            data = _referenced(kind, lookup, namespace, ref)
            value = None if data is None else data.get(ref["key"])
            if value is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(
                    f"couldn't find key {ref['key']} in {kind.capitalize()} "
                    f"{namespace}/{ref.get('name', '')}"
                )
        elif "fieldRef" in source:
            value = field_value(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            value = resource_value(container, source["resourceFieldRef"])
        else:
            raise StartError(f"env {name}: unsupported valueFrom {sorted(source)}")
        env[name] = value
    return env
