"""Fitness evaluation: one number per run from weighted, normalised metrics (cluster spec 16).

``--fitness-weights "p99_ttft:2,throughput:1"``: comma-separated ``key:weight`` pairs.
Every component is normalised so that higher is better:

=====================================  ==========================================
key                                    component
=====================================  ==========================================
``throughput``                         ``rps / (rps + 100)``
``tokens_per_sec``                     ``tps / (tps + 10000)``
``p99_ttft``, ``p50_ttft``,            ``1 / (1 + x / 1000)``, ``x`` the statistic
``mean_ttft``                          in µs (ticks), over every first token
``p99_e2e``, ``p50_e2e``, ``mean_e2e`` the same over completed requests' E2E
=====================================  ==========================================

``score = sum(component[k] * weight[k])`` over the keys in sorted order; weights are
NOT normalised (the reference's rule), zero weights are allowed. This is the
reference's fitness; ``blis tune`` has its own, normalised variant
(:mod:`inference_sim.planning.fitness`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The reference's keys, in its order (error messages list them so).
FITNESS_KEYS: tuple[str, ...] = (
    "throughput",
    "tokens_per_sec",
    "p99_ttft",
    "p50_ttft",
    "mean_ttft",
    "p99_e2e",
    "p50_e2e",
    "mean_e2e",
)
THROUGHPUT_REF = 100.0
TOKENS_REF = 10_000.0
LATENCY_REF_TICKS = 1000.0

# Plain decimal or exponent numbers (and inf/nan, rejected later with a clear message).
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.I)


class FitnessError(ValueError):
    """Bad ``--fitness-weights`` text (one-line message, the reference's wording)."""


def parse_fitness_weights(text: str) -> dict[str, float]:
    """``"key:value,..."`` -> ``{key: weight}`` (cluster spec 16; FitnessError on bad input).

    Pairs are split on ``,`` and trimmed, then split on the first ``:``; a repeated key
    overwrites the earlier one; an empty pair is an error; weights must be finite and
    >= 0. Keys are checked (in sorted order) after every pair has parsed.
    """
    weights: dict[str, float] = {}
    for pair in text.split(","):
        pair = pair.strip()
        key, sep, raw = pair.partition(":")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise FitnessError(f'invalid fitness weight "{pair}": expected key:value')
        if not _NUMBER.fullmatch(raw):
            raise FitnessError(f'invalid fitness weight value for "{key}": "{raw}" is not a number')
        value = float(raw)
        if not (math.isfinite(value) and value >= 0):
            raise FitnessError(
                f'invalid weight for "{key}": must be a finite non-negative number, got {value:g}'
            )
        weights[key] = value
    check_fitness_keys(weights)
    return weights


def check_fitness_keys(weights: Mapping[str, float]) -> None:
    for key in sorted(weights):
        if key not in FITNESS_KEYS:
            raise FitnessError(
                f'unknown fitness metric key "{key}"; valid keys: {", ".join(FITNESS_KEYS)}'
            )


@dataclass(frozen=True)
class Distribution:
    """Summary statistics of tick values (cluster spec 15.2); all zero when empty."""

    mean: float = 0.0
    p50: float = 0.0
    p90: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    min: float = 0.0
    max: float = 0.0
    count: int = 0

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution:
        v = sorted(values)
        n = len(v)
        if n == 0:
            return cls()
        total = 0.0
        for x in v:
            total += float(x)
        return cls(
            mean=total / n,
            p50=percentile(v, 50),
            p90=percentile(v, 90),
            p95=percentile(v, 95),
            p99=percentile(v, 99),
            min=float(v[0]),
            max=float(v[-1]),
            count=n,
        )

    def as_ms(self) -> dict[str, Any]:
        """The statistics in milliseconds, keys ``mean_ms``, ``p50_ms``, ... and ``count``."""
        return {
            "mean_ms": self.mean / 1000.0,
            "p50_ms": self.p50 / 1000.0,
            "p90_ms": self.p90 / 1000.0,
            "p95_ms": self.p95 / 1000.0,
            "p99_ms": self.p99 / 1000.0,
            "min_ms": self.min / 1000.0,
            "max_ms": self.max / 1000.0,
            "count": self.count,
        }


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (the reference's formula)."""
    n = len(sorted_values)
    if n == 0:
        return 0.0
    rank = p / 100.0 * (n - 1)
    lo = math.floor(rank)
    hi = math.ceil(rank)
    if lo == hi:
        return float(sorted_values[lo])
    return float(sorted_values[lo]) + (rank - lo) * (
        float(sorted_values[hi]) - float(sorted_values[lo])
    )


@dataclass(frozen=True)
class RawMetrics:
    """What fitness reads: TTFT and E2E distributions in ticks, and throughput."""

    ttft: Distribution = field(default_factory=Distribution)
    e2e: Distribution = field(default_factory=Distribution)
    requests_per_sec: float = 0.0
    tokens_per_sec: float = 0.0


def _latency(x: float) -> float:
    return 1.0 / (1.0 + x / LATENCY_REF_TICKS)


def component(key: str, m: RawMetrics) -> float:
    """The normalised (higher is better) value of one fitness key."""
    if key == "throughput":
        rps = m.requests_per_sec
        return rps / (rps + THROUGHPUT_REF) if rps > 0 else 0.0
    if key == "tokens_per_sec":
        tps = m.tokens_per_sec
        return tps / (tps + TOKENS_REF) if tps > 0 else 0.0
    stat, _, which = key.partition("_")
    dist = m.ttft if which == "ttft" else m.e2e
    return _latency(getattr(dist, stat))


@dataclass(frozen=True)
class FitnessResult:
    score: float
    components: dict[str, float]
    weights: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {"score": self.score, "components": dict(self.components)}


def evaluate_fitness(metrics: RawMetrics, weights: Mapping[str, float]) -> FitnessResult:
    """Score ``metrics`` with ``weights`` (keys checked first, in sorted order)."""
    check_fitness_keys(weights)
    components: dict[str, float] = {}
    score = 0.0
    for key in sorted(weights):
        c = component(key, metrics)
        components[key] = c
        score += c * weights[key]
    return FitnessResult(score, components, {k: weights[k] for k in sorted(weights)})


def fitness_block(score: float, components: Mapping[str, float]) -> str:
    """The reference's ``=== Fitness Evaluation ===`` block."""
    lines = ["=== Fitness Evaluation ===", f"Score: {score:.6f}"]
    lines += [f"  {key}: {components[key]:.6f}" for key in sorted(components)]
    return "\n".join(lines) + "\n"
