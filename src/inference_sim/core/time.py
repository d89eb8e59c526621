"""Simulated time: integer microseconds ("ticks") and the conversions every layer uses."""

from __future__ import annotations

#: "No horizon" / "never": the largest tick.
NEVER = 2**63 - 1
US_PER_MS = 1_000
US_PER_S = 1_000_000


def seconds_to_ticks(seconds: float) -> int:
    """Seconds as whole microseconds (rounded to the nearest tick)."""
    return round(seconds * US_PER_S)


def ticks_to_ms(ticks: int | float) -> float:
    """Microseconds as milliseconds (what summaries report)."""
    return ticks / US_PER_MS
