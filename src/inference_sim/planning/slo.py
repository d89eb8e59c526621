"""SLO objectives for ``blis plan``: defined in :mod:`inference_sim.metrics.slo`, which
``blis run --slo`` (goodput) shares; re-exported here for the planner and old imports."""

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
]
