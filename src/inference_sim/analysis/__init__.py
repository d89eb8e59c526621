"""Why a policy did well or badly, and one number to compare policies.

* :mod:`~inference_sim.analysis.trace`: decision tracing (``--trace-level decisions``)
  and counterfactual top-k regret (``--counterfactual-k``);
* :mod:`~inference_sim.analysis.fitness`: the reference's fitness score
  (``--fitness-weights``);
* :mod:`~inference_sim.analysis.fairness`: per-SLO-class latency distributions,
  per-tenant throughput and Jain's fairness index;
* :mod:`~inference_sim.analysis.run`: the wiring into a run (option checks, the decision
  hook, summary keys, stdout blocks).

See docs/analysis.md.
"""

from __future__ import annotations

from inference_sim.analysis.fairness import (
    jain_index,
    slo_attainment,
    slo_distributions,
    tenant_metrics,
)
from inference_sim.analysis.fitness import (
    FITNESS_KEYS,
    Distribution,
    FitnessError,
    FitnessResult,
    RawMetrics,
    evaluate_fitness,
    parse_fitness_weights,
)
from inference_sim.analysis.trace import (
    DECISION_COLUMNS,
    TRACE_LEVELS,
    DecisionTrace,
    counterfactual,
    rank_instances,
)

__all__ = [
    "DECISION_COLUMNS",
    "FITNESS_KEYS",
    "TRACE_LEVELS",
    "DecisionTrace",
    "Distribution",
    "FitnessError",
    "FitnessResult",
    "RawMetrics",
    "counterfactual",
    "evaluate_fitness",
    "jain_index",
    "parse_fitness_weights",
    "rank_instances",
    "slo_attainment",
    "slo_distributions",
    "tenant_metrics",
]
