"""Priority policies: a number per queued request, recomputed before every step.

``priority(request, now)`` returns a float; higher means "serve sooner" for the
``priority-fcfs`` scheduler (``reverse-priority`` serves lower first). ``age`` below is
``now - arrival_time`` in ticks (µs).
"""

from __future__ import annotations

from inference_sim.core.request import Request
from inference_sim.policies.registry import Registry

PRIORITY = Registry("priority", "priority policy", "priority", "constant", "priority(request, now)")


@PRIORITY.register("constant")
class ConstantPriority:
    """Everyone 0."""

    def priority(self, request: Request, now: int) -> float:
        return 0.0


@PRIORITY.register("slo-based")
class SLOBasedPriority:
    """``1e-6 * age``: older requests first. Despite the name, the SLO class is not used."""

    def priority(self, request: Request, now: int) -> float:
        return 1e-6 * (now - request.arrival_time)


@PRIORITY.register("inverted-slo")
class InvertedSLOPriority:
    """``-1e-6 * age``: newest first (pathological, for testing)."""

    def priority(self, request: Request, now: int) -> float:
        return -1e-6 * (now - request.arrival_time)
