"""Fixtures every test file shares."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_package_logger() -> Iterator[None]:
    """In-process ``blis run`` rebinds the package logger to the runner's stderr; undo it."""
    logger = logging.getLogger("inference_sim")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


@pytest.fixture
def sim_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """``caplog`` for the package logger at WARNING, attached to it directly: an in-process
    ``blis`` run earlier in the session may have stopped its propagation to the root."""
    logger = logging.getLogger("inference_sim")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="inference_sim"):
            yield caplog
    finally:
        logger.removeHandler(caplog.handler)
