"""Reading a manifest's YAML as `kubectl apply` does, so its numbers mean the same to `mcop run`.

kubectl turns YAML into JSON with sigs.k8s.io/yaml (go-yaml): `1e-3`, `1e7`, `1.0e-3` and `.5` are
numbers there. PyYAML follows YAML 1.1, whose float needs a dot and a signed exponent, so it reads
`1e-3` as the string "1e-3" (then refused as "must be of type number"). This loader is PyYAML's
safe loader with go-yaml's float rule; everything else (booleans, ints, nulls) already agrees.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_FLOAT_TAG = "tag:yaml.org,2002:float"
# go-yaml's float: a dot or an exponent (a plain integer stays an int), or .inf/.nan.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:\.[0-9_]+|[0-9][0-9_]*\.[0-9_]*)(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class ManifestLoader(yaml.SafeLoader):
    """yaml.SafeLoader with go-yaml's (and so kubectl's) floats."""


ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ManifestLoader.add_implicit_resolver(_FLOAT_TAG, _FLOAT, list("-+0123456789."))


def load_all(text: str) -> list[Any]:
    """Every document of `text` (yaml.YAMLError if it is not YAML)."""
    return list(yaml.load_all(text, Loader=ManifestLoader))
