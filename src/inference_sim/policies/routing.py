"""Routing policies: pick the instance that serves an admitted request."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from inference_sim.instance.engine import Instance
from inference_sim.instance.request import Request


class RoutingPolicy(Protocol):
    name: str

    def route(self, req: Request, instances: Sequence[Instance], now: int) -> int: ...


class RoundRobin:
    name = "round-robin"

    def __init__(self) -> None:
        self._next = 0

    def route(self, req: Request, instances: Sequence[Instance], now: int) -> int:
        i = self._next % len(instances)
        self._next += 1
        return i


class LeastLoaded:
    """Fewest queued plus running requests; ties go to the lowest index."""

    name = "least-loaded"

    def route(self, req: Request, instances: Sequence[Instance], now: int) -> int:
        best = 0
        best_load = None
        for i, inst in enumerate(instances):
            load = inst.queue_depth + inst.batch_size
            if best_load is None or load < best_load:
                best, best_load = i, load
        return best


ROUTING_POLICIES: dict[str, Callable[..., Any]] = {
    "round-robin": RoundRobin,
    "least-loaded": LeastLoaded,
}
