"""The one-line live progress display of `mcop run` (stderr).

On a terminal the line is redrawn in place at most `interval` seconds apart; elsewhere (a log
file, CI) `always` mode prints a new line at most every few seconds and `auto` prints nothing.
"""

from __future__ import annotations

import math
import shutil
import time
from typing import TextIO

from mcop_worker.engine.aggregate import Progress

_BAR_WIDTH = 24


def human(n: float) -> str:
    """12345678 -> '12.3M'."""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.3g}{suffix}"
    return f"{n:.0f}"


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def render(progress: Progress, elapsed: float, width: int = 100, rate: float | None = None) -> str:
    """One line: bar, percentage, paths, running estimate +- stdErr, throughput, ETA.
    `rate` (paths/s) defaults to the average since the start."""
    fraction = progress.fraction
    filled = round(fraction * _BAR_WIDTH)
    bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
    if rate is None:
        rate = progress.paths_done / elapsed if elapsed > 0 else 0.0
    remaining = progress.paths_total - progress.paths_done
    eta = 0.0 if progress.final else (remaining / rate if rate > 0 else math.inf)
    parts = [
        f"[{bar}] {fraction * 100:5.1f}%",
        f"{human(progress.paths_done)}/{human(progress.paths_total)} paths",
    ]
    running = progress.running
    if running is not None:
        err = f" ± {running.std_err:.4g}" if math.isfinite(running.std_err) else ""
        parts.append(f"est {running.estimate:.6g}{err}")
    parts.append(f"{human(rate)} paths/s")
    parts.append(f"ETA {duration(eta)}")
    line = "  ".join(parts)
    return line[: max(width - 1, 20)]


class ProgressBar:
    """Throttled writer of `render` lines; `mode` is auto (terminal only), always or never."""

    def __init__(self, stream: TextIO, mode: str = "auto", interval: float = 0.1) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.enabled = mode == "always" or (mode == "auto" and self.tty)
        self.interval = interval if self.tty else max(interval, 2.0)
        self._last = -math.inf
        self._drawn = False
        self._finished = False  # the final line (100%) is always drawn, once
        self._first: tuple[float, int] | None = None  # (elapsed, paths) at the first block

    def update(self, progress: Progress, elapsed: float, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        finishing = progress.final is not None and not self._finished
        if not (force or finishing) and now - self._last < self.interval:
            return
        self._finished = self._finished or finishing
        self._last = now
        width = shutil.get_terminal_size((100, 20)).columns if self.tty else 1000
        line = render(progress, elapsed, width, self._rate(progress, elapsed))
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
            self._drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _rate(self, progress: Progress, elapsed: float) -> float | None:
        """Throughput since the first finished block: process start-up is not simulation."""
        if self._first is None:
            if progress.paths_done > 0:
                self._first = (elapsed, progress.paths_done)
            return None
        dt = elapsed - self._first[0]
        return (progress.paths_done - self._first[1]) / dt if dt > 0.5 else None

    def close(self) -> None:
        """End the live line so that what follows starts on a fresh line."""
        if self.enabled and self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
