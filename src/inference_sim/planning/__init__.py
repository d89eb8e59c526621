"""Capacity planning (``blis plan``) and policy tuning (``blis tune``).

See docs/planning.md.
"""

from __future__ import annotations

from inference_sim.planning.plan import (
    CandidatePlan,
    Deployment,
    PlanOutcome,
    format_plan,
    parse_prices,
    plan_capacity,
)
from inference_sim.planning.slo import Objective, meets, parse_slo, parse_slos, violations

__all__ = [
    "CandidatePlan",
    "Deployment",
    "Objective",
    "PlanOutcome",
    "format_plan",
    "meets",
    "parse_prices",
    "parse_slo",
    "parse_slos",
    "plan_capacity",
    "violations",
]
