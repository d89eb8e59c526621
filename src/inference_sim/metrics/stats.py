"""Means and percentiles in milliseconds from tick values, exact and order-stable.

Percentiles interpolate linearly between closest ranks (NumPy's default
"linear" method); the histogram form gives the same numbers as the flat list it
summarises, without storing one value per token.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def mean_ms(sorted_ticks: Sequence[float]) -> float:
    """Mean in ms; the sum runs over the values in ascending order."""
    if not sorted_ticks:
        return 0.0
    total = 0.0
    for v in sorted_ticks:
        total += float(v)
    return total / len(sorted_ticks) / 1000.0


def percentile_ms(sorted_ticks: Sequence[float], p: float) -> float:
    """The p-th percentile in ms of ascending tick values (0 for no values)."""
    n = len(sorted_ticks)
    if n == 0:
        return 0.0
    rank = p / 100.0 * (n - 1)
    lo = math.floor(rank)
    hi = math.ceil(rank)
    if lo == hi:
        return sorted_ticks[lo] / 1000.0
    return sorted_ticks[lo] / 1000.0 + (sorted_ticks[hi] - sorted_ticks[lo]) * (rank - lo) / 1000.0


class TickHistogram:
    """A multiset of integer tick values stored as value -> count."""

    __slots__ = ("_counts", "_cumulative", "_values", "count")

    def __init__(self, counts: Mapping[int, int]) -> None:
        self._values = sorted(v for v, c in counts.items() if c > 0)
        self._counts = [counts[v] for v in self._values]
        self._cumulative = []
        running = 0
        for c in self._counts:
            running += c
            self._cumulative.append(running)
        self.count = running

    def _at(self, k: int) -> int:
        """The k-th smallest value (0-based)."""
        lo, hi = 0, len(self._cumulative) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self._cumulative[mid] > k:
                hi = mid
            else:
                lo = mid + 1
        return self._values[lo]

    def mean_ms(self) -> float:
        if self.count == 0:
            return 0.0
        total = 0
        for v, c in zip(self._values, self._counts, strict=True):
            total += v * c  # exact in integers
        return total / self.count / 1000.0

    def percentile_ms(self, p: float) -> float:
        n = self.count
        if n == 0:
            return 0.0
        rank = p / 100.0 * (n - 1)
        lo = math.floor(rank)
        hi = math.ceil(rank)
        v_lo = self._at(lo)
        if lo == hi:
            return v_lo / 1000.0
        v_hi = self._at(hi)
        return v_lo / 1000.0 + (v_hi - v_lo) * (rank - lo) / 1000.0


def merge_histograms(hists: Sequence[Mapping[int, int]]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for h in hists:
        for v, c in h.items():
            merged[v] = merged.get(v, 0) + c
    return merged
