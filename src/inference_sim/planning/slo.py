"""SLO objectives for ``blis plan``: defined in :mod:`inference_sim.metrics.slo`, which
``blis run --slo`` (goodput) shares; re-exported here for the planner and old imports.
:func:`violations_at` (replicated runs, confidence and headroom) is the planner's own."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from inference_sim.metrics.slo import (
    Objective,
    check_metrics,
    meets,
    parse_slo,
    parse_slos,
    served_everything,
    violations,
)

__all__ = [
    "Objective",
    "check_metrics",
    "meets",
    "parse_slo",
    "parse_slos",
    "served_everything",
    "violations",
    "violations_at",
]


def violations_at(
    objectives: Sequence[Objective],
    summaries: Sequence[Mapping[str, Any]],
    *,
    confidence: float | None = None,
    headroom: float = 1.0,
) -> list[str]:
    """Why replicated runs miss the objectives with a margin and a confidence (empty: met).

    Every run must serve its whole workload. An "at most" objective holds when the
    metric, times nothing, stays below ``bound * headroom`` (``--headroom 0.8``: 20 %
    to spare); an "at least" one when it reaches ``bound / headroom``. The metric is
    the mean over the runs, or with ``confidence`` and 2+ runs the one-sided Student-t
    bound of the mean on the unsafe side (upper for "at most", lower for "at least"):
    the objective then holds with that confidence.
    """
    from inference_sim.replicates import one_sided_bound

    out: list[str] = []
    unserved = [s for s in summaries if not served_everything(s)]
    if unserved:
        first = unserved[0]
        out.append(
            f"{len(unserved)} of {len(summaries)} run(s) did not serve the workload (one "
            f"served {first.get('completed_requests', 0)} of "
            f"{first.get('injected_requests', 0)} requests, "
            f"{first.get('rejected_requests', 0)} rejected)"
        )
    for obj in objectives:
        values = [s.get(obj.metric) for s in summaries]
        if not all(isinstance(v, int | float) for v in values):
            out.append(f"{obj.metric} missing (want {obj.op} {obj.bound:g})")
            continue
        floats = [float(v) for v in values]  # type: ignore[arg-type]
        limit = obj.bound * headroom if obj.op == "<=" else obj.bound / headroom
        upper = obj.op == "<="
        if confidence is not None and len(floats) > 1:
            value = one_sided_bound(floats, confidence, upper)
            what = f"{obj.metric} {'upper' if upper else 'lower'} {confidence:.0%} bound"
        else:
            value = sum(floats) / len(floats)
            what = obj.metric if len(floats) == 1 else f"{obj.metric} mean"
        if not (value <= limit if upper else value >= limit):
            margin = f" ({obj.bound:g} x headroom {headroom:g})" if headroom != 1.0 else ""
            out.append(f"{what} = {value:.6g} (want {obj.op} {limit:g}{margin})")
    return out
