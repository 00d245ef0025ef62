"""Which PriorityClass a job's worker pods get, and the order in which queued jobs are admitted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PRIORITIES = ("low", "normal", "high", "critical")
DEFAULT_PRIORITY = "normal"


def priority_class_name(spec: Mapping[str, Any]) -> str:
    """An explicit ``priorityClassName`` wins; otherwise ``montecarlo-<priority>``."""
    explicit = spec.get("priorityClassName") or ""
    if explicit:
        return str(explicit)
    return f"montecarlo-{spec.get('priority') or DEFAULT_PRIORITY}"


def priority_rank(spec: Mapping[str, Any]) -> int:
    """Higher runs first. Jobs with an explicit class rank by their ``priority`` field."""
    priority = spec.get("priority") or DEFAULT_PRIORITY
    return PRIORITIES.index(priority) if priority in PRIORITIES else 1
