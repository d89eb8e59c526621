"""A progress bar on stderr: simulated time, requests done, rate.

Shown only for runs that last longer than ``min_seconds`` of wall-clock time. On a
terminal it redraws one line; elsewhere (``--progress`` forced into a file or pipe)
it prints a line every few seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

_WIDTH = 24


class ProgressBar:
    """Progress callback for ``run_plan(progress=...)``; call :meth:`close` at the end."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        min_seconds: float = 1.0,
        clock: Callable[[], float] = time.perf_counter,
        tty: bool | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.min_seconds = min_seconds
        self.clock = clock
        self.start = clock()
        self.tty = self.stream.isatty() if tty is None else tty
        self.instances: list[Any] = []
        self.total: int | None = None
        self.shown = False
        self._last_line = 0.0
        self.every_events = 5_000  # how often the simulator calls back (redraws are throttled)

    def attach(self, instances: Sequence[Any], total_requests: int | None) -> None:
        """Called by the runner with the simulator's instances and the expected count."""
        self.instances = list(instances)
        self.total = total_requests if total_requests else None

    def line(self, events: int, now: int) -> str:
        elapsed = self.clock() - self.start
        done = sum(inst.stats.completed for inst in self.instances)
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = []
        if self.total:
            frac = min(1.0, done / self.total)
            filled = int(frac * _WIDTH)
            parts.append(f"[{'#' * filled}{'.' * (_WIDTH - filled)}] {frac * 100:3.0f}%")
            parts.append(f"{done:,}/{self.total:,} requests")
        else:
            parts.append(f"{done:,} requests")
        parts.append(f"simulated {now / 1e6:,.1f} s")
        parts.append(f"{rate:,.0f} req/s")
        parts.append(f"{events:,} events")
        parts.append(f"{elapsed:,.1f} s")
        return " | ".join(parts)

    def __call__(self, events: int, now: int) -> None:
        elapsed = self.clock() - self.start
        if elapsed < self.min_seconds:
            return
        if self.shown and elapsed - self._last_line < (0.1 if self.tty else 5.0):
            return
        text = self.line(events, now)
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.shown = True
        self._last_line = elapsed

    def close(self) -> None:
        """End the bar's line (nothing if it was never shown)."""
        if self.shown and self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
