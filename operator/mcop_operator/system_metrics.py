"""CPU, memory, disk and network of the operator's container, from psutil and the cgroup limits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psutil

CGROUP = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_memory_limit() -> int | None:
    """cgroup v2 memory.max (or v1 limit_in_bytes); None where no limit is set."""
    for path in (CGROUP / "memory.max", CGROUP / "memory/memory.limit_in_bytes"):
        raw = _read(path)
        if raw and raw != "max" and raw.isdigit() and int(raw) < 1 << 60:
            return int(raw)
    return None


def cgroup_memory_usage() -> int | None:
    for path in (CGROUP / "memory.current", CGROUP / "memory/memory.usage_in_bytes"):
        raw = _read(path)
        if raw and raw.isdigit():
            return int(raw)
    return None


def cgroup_cpu_limit() -> float | None:
    """CPUs the cgroup may use (cpu.max quota/period); None where unlimited."""
    raw = _read(CGROUP / "cpu.max")
    if raw:
        quota, _, period = raw.partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
    return None


def system_snapshot(disk_path: str = "/") -> dict[str, Any]:
    """The `status.system` block of a PerfTuning. Percentages are of the container's limits
    where a cgroup sets them, else of the machine."""
    cpu = psutil.cpu_percent(interval=None)
    cpus = cgroup_cpu_limit()
    if cpus:
        cpu = min(100.0, cpu * (os.cpu_count() or 1) / cpus)
    limit, usage = cgroup_memory_limit(), cgroup_memory_usage()
    memory = (
        100.0 * usage / limit if limit and usage is not None else psutil.virtual_memory().percent
    )
    net = psutil.net_io_counters()
    return {
        "cpuPercent": round(cpu, 1),
        "memoryPercent": round(memory, 1),
        "diskPercent": round(psutil.disk_usage(disk_path).percent, 1),
        "networkBytesSent": int(net.bytes_sent) if net else 0,
        "networkBytesReceived": int(net.bytes_recv) if net else 0,
    }
