"""Which waiting jobs may start: at most ``maxConcurrentJobs`` per namespace, highest priority
first, then oldest. Pure: the caller passes what kopf's index knows about the namespace, merged
with what this process admitted a moment ago (the index learns of it only through the watch)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from .priority import PRIORITIES


@dataclasses.dataclass(frozen=True)
class QueueEntry:
    uid: str
    name: str
    rank: int  # higher runs first
    created: str  # RFC 3339; sorts chronologically as a string
    admitted: bool  # its workers were launched (status.workerJob is set)
    suspended: bool

    @property
    def holds_slot(self) -> bool:
        """Suspended jobs free their slot; resuming one does not wait in the queue again."""
        return self.admitted and not self.suspended


def queue_order(entry: QueueEntry) -> tuple[int, str, str]:
    return (-entry.rank, entry.created, entry.name)


def merge_local(entries: Iterable[QueueEntry], admitted_here: set[str]) -> list[QueueEntry]:
    """Entries with the admissions this process made that the index may not show yet."""
    return [
        dataclasses.replace(e, admitted=True) if e.uid in admitted_here and not e.admitted else e
        for e in entries
    ]


def may_start(uid: str, entries: Iterable[QueueEntry], limit: int) -> tuple[bool, int]:
    """(admitted now?, position in the queue counting from 1) for the waiting job ``uid``."""
    report = queue_report(uid, entries, limit)
    return report.admitted, report.position


@dataclasses.dataclass(frozen=True)
class QueueReport:
    """Why a waiting job waits: who is ahead of it, and how full the namespace is."""

    position: int  # 1 = next
    ahead: tuple[int, ...]  # waiting jobs ahead of it, by rank (index = rank, as PRIORITIES)
    running: int  # jobs holding a slot, this one excluded
    limit: int

    @property
    def admitted(self) -> bool:
        return self.position <= max(self.limit - self.running, 0)

    def message(self) -> str:
        """ "2 jobs ahead (1 critical, 1 high); 10 of 10 running (workers.maxConcurrentJobs)"."""
        total = sum(self.ahead)
        if total == 0:
            head = "next in line"
        else:
            by_rank = ", ".join(
                f"{n} {PRIORITIES[rank]}" for rank, n in reversed(list(enumerate(self.ahead))) if n
            )
            head = f"{total} job{'s' if total != 1 else ''} ahead ({by_rank})"
        return f"{head}; {self.running} of {self.limit} running (workers.maxConcurrentJobs)"


def queue_report(uid: str, entries: Iterable[QueueEntry], limit: int) -> QueueReport:
    """The waiting job ``uid``'s place: what may_start decides on, spelled out."""
    entries = list(entries)
    running = sum(1 for e in entries if e.holds_slot and e.uid != uid)
    waiting = sorted((e for e in entries if not e.admitted or e.uid == uid), key=queue_order)
    index = next((i for i, e in enumerate(waiting) if e.uid == uid), len(waiting))
    ahead = [0] * len(PRIORITIES)
    for e in waiting[:index]:
        ahead[min(max(e.rank, 0), len(PRIORITIES) - 1)] += 1
    return QueueReport(index + 1, tuple(ahead), running, limit)


def job_counts(entries: Iterable[QueueEntry]) -> dict[str, int]:
    """The PerfTuning's status.jobs: jobs holding a slot, and jobs waiting for one."""
    entries = list(entries)
    return {
        "running": sum(1 for e in entries if e.holds_slot),
        "queued": sum(1 for e in entries if not e.admitted),
    }
