"""The fitness score ``blis tune`` maximises: one number in [0, 1] from a run's summary.

``--fitness-weights "p99_ttft:3,mean_e2e:1,throughput:2"`` weighs normalised metrics:

* lower-is-better latencies (ms): ``1 / (1 + value / latency_ref_ms)``
  (``latency_ref_ms`` defaults to 1000 ms: a 1 s latency scores 0.5);
* higher-is-better rates: ``value / (value + ref)`` with ``ref`` 100 requests/s for
  ``throughput`` and 10,000 tokens/s for ``tokens_per_sec``.

The score is the weighted mean (weights are normalised), so 1 is perfect and scores of
runs on the same workload compare directly. A run that does not serve every request
(rejected or unfinished) scores its fraction served times that mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from inference_sim.config.errors import ConfigError

DEFAULT_WEIGHTS = "p99_ttft:3,mean_e2e:1,throughput:2"
LATENCY_REF_MS = 1000.0
THROUGHPUT_REF = 100.0
TOKENS_REF = 10_000.0

#: fitness key -> (summary metric, "lower" or "higher")
FITNESS_METRICS: dict[str, tuple[str, str]] = {
    "throughput": ("responses_per_sec", "higher"),
    "tokens_per_sec": ("tokens_per_sec", "higher"),
    "mean_ttft": ("ttft_mean_ms", "lower"),
    "p90_ttft": ("ttft_p90_ms", "lower"),
    "p95_ttft": ("ttft_p95_ms", "lower"),
    "p99_ttft": ("ttft_p99_ms", "lower"),
    "mean_e2e": ("e2e_mean_ms", "lower"),
    "p90_e2e": ("e2e_p90_ms", "lower"),
    "p95_e2e": ("e2e_p95_ms", "lower"),
    "p99_e2e": ("e2e_p99_ms", "lower"),
    "mean_itl": ("itl_mean_ms", "lower"),
    "p99_itl": ("itl_p99_ms", "lower"),
    "p99_scheduling_delay": ("scheduling_delay_p99_ms", "lower"),
}


def parse_weights(text: str) -> dict[str, float]:
    """``key:weight,...`` -> {key: weight}; ConfigError naming a bad entry."""
    out: dict[str, float] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        key, sep, raw = item.partition(":")
        key = key.strip()
        if key not in FITNESS_METRICS:
            raise ConfigError(
                f"--fitness-weights: unknown key {key!r}; valid: {', '.join(FITNESS_METRICS)}"
            )
        try:
            weight = float(raw) if sep else 1.0
        except ValueError:
            raise ConfigError(f"--fitness-weights: {item!r}: weight is not a number") from None
        if not (math.isfinite(weight) and weight >= 0):
            raise ConfigError(f"--fitness-weights: {item!r}: weight must be >= 0")
        out[key] = out.get(key, 0.0) + weight
    if not out or sum(out.values()) <= 0:
        raise ConfigError("--fitness-weights: give at least one positive weight")
    return out


def fitness(
    summary: Mapping[str, Any],
    weights: Mapping[str, float],
    *,
    latency_ref_ms: float = LATENCY_REF_MS,
) -> float:
    total = sum(weights.values())
    score = 0.0
    for key, w in weights.items():
        metric, direction = FITNESS_METRICS[key]
        value = float(summary.get(metric, 0.0) or 0.0)
        if direction == "lower":
            norm = 1.0 / (1.0 + max(value, 0.0) / latency_ref_ms)
        else:
            ref = TOKENS_REF if key == "tokens_per_sec" else THROUGHPUT_REF
            norm = value / (value + ref) if value > 0 else 0.0
        score += w * norm
    score /= total
    injected = int(summary.get("injected_requests", 0) or 0)
    generated = injected + int(summary.get("rejected_requests", 0) or 0)
    if generated > 0:
        score *= int(summary.get("completed_requests", 0) or 0) / generated
    return score
