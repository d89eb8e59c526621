"""Pause the cyclic garbage collector while building large request lists.

Generating or loading a million requests allocates millions of lists; each allocation
burst triggers a full-heap collection that finds nothing (requests form no cycles), which
more than doubled generation time in measurements. Reference counting still frees memory
while the collector is paused, and the previous state is restored afterwards.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector for the block, re-enabling it only if it was on."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
