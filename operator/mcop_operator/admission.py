"""Which waiting jobs may start: at most ``maxConcurrentJobs`` per namespace, highest priority
first, then oldest. Pure: the caller passes what kopf's index knows about the namespace."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable


@dataclasses.dataclass(frozen=True)
class QueueEntry:
    uid: str
    name: str
    rank: int  # higher runs first
    created: str  # RFC 3339; sorts chronologically as a string
    holds_slot: bool  # admitted, not suspended, not finished


def queue_order(entry: QueueEntry) -> tuple[int, str, str]:
    return (-entry.rank, entry.created, entry.name)


def may_start(uid: str, entries: Iterable[QueueEntry], limit: int) -> tuple[bool, int]:
    """(admitted now?, position in the queue counting from 1) for the waiting job ``uid``."""
    entries = list(entries)
    running = sum(1 for e in entries if e.holds_slot and e.uid != uid)
    waiting = sorted((e for e in entries if not e.holds_slot or e.uid == uid), key=queue_order)
    position = next((i for i, e in enumerate(waiting) if e.uid == uid), len(waiting)) + 1
    free = max(limit - running, 0)
    return position <= free, position
