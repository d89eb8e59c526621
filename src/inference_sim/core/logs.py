"""Warnings said once: commands that resolve the same options many times (a sweep, a
plan's probes, a tune's trials, ``--seeds``) would otherwise repeat each warning per run."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

#: The logger every module of the package writes to.
LOGGER_NAME = "inference_sim"


class _EachOnce(logging.Filter):
    """Drops a warning whose text this process has already given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        text = record.getMessage()
        if text in self.seen:
            return False
        self.seen.add(text)
        return True


@contextmanager
def each_warning_once() -> Iterator[None]:
    """Inside it, the package's logger gives each distinct warning once (also usable as a
    decorator: each call of the decorated command gets its own memory)."""
    log = logging.getLogger(LOGGER_NAME)
    once = _EachOnce()
    log.addFilter(once)
    try:
        yield
    finally:
        log.removeFilter(once)
