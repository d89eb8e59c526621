"""Schedulers: the order of an instance's wait queue before each step.

``order(wait_queue, now)`` reorders the deque in place. The engine admits from the
head, so the order decides who is scheduled first (and who blocks the head of the
line). Priorities are refreshed by the priority policy just before ordering. Ties
are broken by arrival time, then by generation order (request index).
"""

from __future__ import annotations

import numbers
from collections import deque
from collections.abc import Callable
from typing import Any

from inference_sim.core.request import Request
from inference_sim.policies.base import PolicyError
from inference_sim.policies.priority import ConstantPriority
from inference_sim.policies.registry import Registry

SCHEDULERS = Registry("scheduler", "scheduler", "order", "fcfs", "order(wait_queue, now)")

WaitQueueHook = Callable[[deque[Request], int], None]


@SCHEDULERS.register("fcfs")
class FCFS:
    """Enqueue order, unchanged."""

    def order(self, wait_queue: deque[Request], now: int) -> None:
        return None


class SortKeyScheduler:
    """A scheduler defined by a sort key (stable sort, ascending)."""

    def key(self, request: Request) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def order(self, wait_queue: deque[Request], now: int) -> None:
        if len(wait_queue) > 1:
            items = sorted(wait_queue, key=self.key)
            wait_queue.clear()
            wait_queue.extend(items)


@SCHEDULERS.register("priority-fcfs")
class PriorityFCFS(SortKeyScheduler):
    """Highest priority first, then earliest arrival."""

    def key(self, request: Request) -> Any:
        return (-request.priority, request.arrival_time, request.index)


@SCHEDULERS.register("sjf")
class ShortestJobFirst(SortKeyScheduler):
    """Shortest prompt first, then earliest arrival."""

    def key(self, request: Request) -> Any:
        return (request.num_prompt_tokens, request.arrival_time, request.index)


@SCHEDULERS.register("reverse-priority")
class ReversePriority(SortKeyScheduler):
    """Lowest priority first (pathological, for testing)."""

    def key(self, request: Request) -> Any:
        return (request.priority, request.arrival_time, request.index)


def make_wait_queue_hook(priority: Any, scheduler: Any) -> WaitQueueHook | None:
    """The instance's ``order_wait_queue`` hook: refresh priorities, then order.

    ``None`` for plain FCFS, which lets the engine skip the hook entirely.
    """
    if type(scheduler) is FCFS:
        return None
    order = scheduler.order
    if type(priority) is ConstantPriority:

        def hook_constant(wait_queue: deque[Request], now: int) -> None:
            for r in wait_queue:
                r.priority = 0.0
            order(wait_queue, now)

        return hook_constant
    prio = priority.priority
    if not type(priority).__module__.startswith("inference_sim."):
        prio = _checked_priority(prio, type(priority).__name__)

    def hook(wait_queue: deque[Request], now: int) -> None:
        for r in wait_queue:
            r.priority = prio(r, now)
        order(wait_queue, now)

    return hook


def _checked_priority(prio: Any, who: str) -> Any:
    """A user's priority policy must give numbers the wait queue can order: a NaN or a
    string would sort the queue silently wrong or fail deep inside the sort."""

    def checked(r: Request, now: int) -> float:
        v = prio(r, now)
        # numbers.Real covers numpy's float32, int64, ... (numpy registers them)
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or v != v:
            raise PolicyError(
                f"priority policy {who} returned {v!r} for request {r.index}; expected a "
                "number (not NaN)"
            )
        return float(v)

    return checked
