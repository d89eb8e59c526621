"""The two option checks every feature's validation repeats, with one wording: a number
that must be finite and above (or at least) a bound, and a name from a fixed list."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from inference_sim.config.errors import ConfigError


def require_finite(
    flag: str,
    value: float,
    *,
    minimum: float = 0.0,
    strict: bool = True,
    unit: str = "",
    origin: str = "",
) -> None:
    """``flag`` must be finite and > ``minimum`` (``strict``) or >= it; ``unit`` follows
    the bound in the message (" GB/s"), ``origin`` ends it (where the value came from)."""
    ok = math.isfinite(value) and (value > minimum if strict else value >= minimum)
    if not ok:
        bound = f"{'>' if strict else '>='} {minimum:g}"
        raise ConfigError(f"{flag} must be a finite number {bound}{unit}, got {value}{origin}")


def require_one_of(flag: str, value: Any, allowed: Iterable[str]) -> None:
    """``flag`` must name one of ``allowed``."""
    names = list(allowed)
    if value not in names:
        raise ConfigError(f"{flag} must be one of {', '.join(names)}, got {value!r}")
