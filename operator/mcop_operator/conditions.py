"""metav1.Condition bookkeeping: a transition time that moves only when the status does."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Condition = dict[str, Any]


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: str | None = None,
) -> list[Condition]:
    """Return a new list with condition ``type_`` set; other conditions are kept as they are."""
    status_str = "True" if status else "False"
    result = [dict(c) for c in conditions if c.get("type") != type_]
    old = get_condition(conditions, type_)
    unchanged = old is not None and old.get("status") == status_str
    since = old.get("lastTransitionTime") if unchanged and old is not None else None
    new: Condition = {
        "type": type_,
        "status": status_str,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since or now or now_rfc3339(),
    }
    # Keep the condition where it was, so a status diff shows what changed and nothing else.
    position = next((i for i, c in enumerate(conditions) if c.get("type") == type_), len(result))
    result.insert(position, new)
    return result


def get_condition(conditions: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    for condition in conditions:
        if condition.get("type") == type_:
            return condition
    return None


def is_true(conditions: Iterable[Mapping[str, Any]], type_: str) -> bool:
    condition = get_condition(conditions, type_)
    return condition is not None and condition.get("status") == "True"
