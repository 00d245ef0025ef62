"""Input errors shared by validation (schema, CEL) and the spec parser (what only code can judge).

Both name the offending field with its path in the manifest (e.g. ``spec.model.correlation``), so
`mcop run` can exit 2 with a message that says what to fix, and the operator can put the same text
in a `Failed` condition with reason `InvalidSpec`.
"""

from __future__ import annotations


class ManifestError(ValueError):
    """A manifest the CRD (schema, defaults, CEL rules) refuses.

    ``field`` says where (``spec.instrument.strike``), ``message`` what is wrong.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidSpec(ManifestError):
    """A spec that passes the CRD but that only code can reject (e.g. a correlation matrix that is
    not positive-definite)."""
