"""Goodput: completed requests per second that met every per-request latency objective.

The objectives are ``--slo`` flags, spelled as for ``blis plan`` (``ttft_p99_ms=500``).
For goodput only the metric family counts, as in vLLM's benchmark: every ``ttft_*``
objective bounds each request's TTFT, ``e2e_*`` its end-to-end latency, ``tpot_*`` its
time per output token, ``itl_*`` its mean inter-token latency (the mean gap between its
deliveries: (E2E - TTFT) / deliveries after the first token), ``scheduling_delay_*`` its
scheduling delay. Without speculative decoding every delivery carries one token and the
two per-request figures are the same number; with it one delivery carries several, so
ITL is longer than TPOT (docs/speculative-decoding.md). ``slo_met`` separately checks
the objectives as written against the summary (p99 against the summary's p99, ...), as
``blis plan`` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from inference_sim.core.errors import ConfigError
from inference_sim.core.suggest import did_you_mean
from inference_sim.metrics.outcome import SimulationOutcome
from inference_sim.metrics.request_log import RequestLog
from inference_sim.metrics.slo import Objective, meets

#: Metric-name prefix -> the per-request quantity it bounds.
FAMILIES = {
    "ttft_": "ttft",
    "e2e_": "e2e",
    "tpot_": "tpot",
    "itl_": "itl",
    "scheduling_delay_": "sched_delay",
}


#: The summary's latency metrics an objective may name.
LATENCY_METRICS = (
    *(
        f"{m}_{s}_ms"
        for m in ("ttft", "e2e", "itl", "tpot")
        for s in ("mean", "p50", "p90", "p95", "p99")
    ),
    "scheduling_delay_p99_ms",
)


def family(obj: Objective) -> str | None:
    """The per-request quantity ``obj`` bounds, or None (a throughput objective, say)."""
    if obj.op != "<=" or not obj.metric.endswith("_ms"):
        return None
    for prefix, name in FAMILIES.items():
        if obj.metric.startswith(prefix):
            return name
    return None


def check_objectives(objectives: Sequence[Objective]) -> None:
    """ConfigError naming the first objective goodput cannot apply to each request."""
    for obj in objectives:
        if obj.op == "<=" and obj.metric not in LATENCY_METRICS and family(obj) is not None:
            raise ConfigError(
                f"--slo {obj.metric}: not a latency metric of the summary; "
                f"valid: {', '.join(LATENCY_METRICS)}"
            )
        if family(obj) is None:
            # ttft_p99=500: the name without its unit; ' (did you mean "x"?)' -> '; did ...'
            hint = did_you_mean(obj.metric, LATENCY_METRICS) if obj.op == "<=" else ""
            raise ConfigError(
                f"--slo {obj}: goodput needs an upper bound on a latency in ms "
                "(ttft_*, tpot_*, itl_*, e2e_*, scheduling_delay_*, with = or <=)"
                + (f"; {hint.strip()[1:-1]}" if hint else "")
            )


def _mean_itl(
    log: RequestLog, rows: np.ndarray, e2e: np.ndarray, ttft: np.ndarray, n_out: np.ndarray
) -> np.ndarray:
    """Each request's mean gap between deliveries, (E2E - TTFT) / deliveries after the
    first token: ``num_output`` - 1 of them unless the log counted fewer (several tokens
    in one delivery, ``RequestLog.itl_gaps``)."""
    gaps = n_out - 1
    counted = log.itl_gaps
    for i, idx in enumerate(log.column("index", rows).tolist()):
        g = counted.get(idx)
        if g is not None:
            gaps[i] = g
    return np.where(gaps > 0, (e2e - ttft) / np.maximum(gaps, 1), 0.0)


def goodput_keys(
    outcome: SimulationOutcome, objectives: Sequence[Objective], summary: Mapping[str, Any]
) -> dict[str, Any]:
    """``goodput_requests_per_sec``, ``slo_attainment`` and ``slo_met`` for the summary."""
    if not objectives:
        return {}
    log = outcome.log
    rows = log.rows_for(None)
    e2e = log.column("e2e", rows)
    ttft = log.column("ttft", rows)
    n_out = log.column("num_output", rows)
    # a single-token request has no TPOT (nor ITL): it meets any such bound
    tpot = np.where(n_out > 1, (e2e - ttft) / np.maximum(n_out - 1, 1), 0.0)
    per_request = {
        "ttft": ttft.astype(np.float64),
        "e2e": e2e.astype(np.float64),
        "sched_delay": log.column("sched_delay", rows).astype(np.float64),
        "tpot": tpot,
        "itl": _mean_itl(log, rows, e2e, ttft, n_out) if log.itl_gaps else tpot,
    }
    good = e2e >= 0
    for obj in objectives:
        name = family(obj)
        assert name is not None  # checked when the options were resolved
        good &= per_request[name] <= obj.bound * 1000.0  # ms -> µs ticks
    completed = int(summary.get("completed_requests", 0))
    duration = float(summary.get("vllm_estimated_duration_s", 0.0))
    n_good = int(good.sum())
    return {
        "goodput_requests_per_sec": n_good / duration if duration > 0 and completed else 0.0,
        "slo_attainment": n_good / completed if completed else 0.0,
        "slo_met": meets(objectives, summary),
    }
