"""metav1.Condition bookkeeping: a transition time that moves only when the status does."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

Condition = dict[str, Any]


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Iterable[Mapping[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: str | None = None,
) -> list[Condition]:
    """Return a new list with condition ``type_`` set; other conditions are kept as they are."""
    status_str = "True" if status else "False"
    result: list[Condition] = []
    found = False
    for old in conditions:
        if old.get("type") != type_:
            result.append(dict(old))
            continue
        found = True
        changed = old.get("status") != status_str
        result.append(
            {
                "type": type_,
                "status": status_str,
                "reason": reason,
                "message": message,
                "observedGeneration": generation,
                "lastTransitionTime": (now or now_rfc3339())
                if changed
                else old.get("lastTransitionTime") or now or now_rfc3339(),
            }
        )
    if not found:
        result.append(
            {
                "type": type_,
                "status": status_str,
                "reason": reason,
                "message": message,
                "observedGeneration": generation,
                "lastTransitionTime": now or now_rfc3339(),
            }
        )
    return result


def get_condition(conditions: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    for condition in conditions:
        if condition.get("type") == type_:
            return condition
    return None


def is_true(conditions: Iterable[Mapping[str, Any]], type_: str) -> bool:
    condition = get_condition(conditions, type_)
    return condition is not None and condition.get("status") == "True"
