"""Schedulers: the order of an instance's wait queue before each step.

``order(wait_queue, now)`` reorders the deque in place. The engine admits from the
head, so the order decides who is scheduled first (and who blocks the head of the
line). Priorities are refreshed by the priority policy just before ordering. Ties
are broken by arrival time, then by generation order (request index).

A built-in scheduler with a built-in priority policy gives an order that does not
change while requests wait (every built-in priority is a function of the arrival time
alone, monotone at any instant), so its hook keeps the queue ordered incrementally
(:class:`KeptInOrder`) instead of refreshing and re-sorting the whole queue every
step: re-sorting made an overloaded run quadratic (20 000 requests into one
instance: ``sjf`` 165 s, ``priority-fcfs`` 60 s, against 5 s for ``fcfs``). The
result is the same order the full sort gives (a property test checks it).

A user's scheduler (one not defined in this package) is checked after every call: the
queue must hold the same requests as before, so one that drops or duplicates a request
stops the run with a PolicyError naming it instead of losing the request silently.
"""

from __future__ import annotations

import bisect
import numbers
from collections import deque
from collections.abc import Callable
from typing import Any

from inference_sim.core.request import Request
from inference_sim.policies.base import PolicyError
from inference_sim.policies.priority import (
    ConstantPriority,
    InvertedSLOPriority,
    SLOBasedPriority,
)
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


class KeptInOrder:
    """A wait-queue hook that keeps the queue in a fixed total order, step after step.

    Between two calls the engine changes the queue in three ways only: it takes
    requests from the front (admission; the ones it passes over go back in their
    order), puts preempted requests back at the front, and appends arrivals at the
    back. So after one sort, only those re-queued and new requests are out of place:
    each is inserted where the order puts it (a binary search), the rest of the queue
    is not touched. ``_placed`` remembers each placed request's preemption count, which
    tells a re-queued request (its count went up) from one that never left.
    ``priority`` is evaluated when a request is placed, for the record (the order does
    not read it).
    """

    __slots__ = ("_key", "_placed", "_priority")

    #: above this many requests to place, merge by one sort of the whole queue
    _BULK = 32

    def __init__(self, key: Callable[[Request], Any], priority: Callable[[Request, int], float]):
        self._key = key
        self._priority = priority
        self._placed: dict[int, int] = {}

    def __call__(self, wait_queue: deque[Request], now: int) -> None:
        placed = self._placed
        loose: list[Request] = []
        while wait_queue:  # preempted requests, back at the front
            r = wait_queue[0]
            if placed.get(r.index) == r.num_preemptions:
                break
            loose.append(wait_queue.popleft())
        while wait_queue:  # arrivals, at the back
            r = wait_queue[-1]
            if placed.get(r.index) == r.num_preemptions:
                break
            loose.append(wait_queue.pop())
        if not loose:
            return
        priority = self._priority
        for r in loose:
            r.priority = priority(r, now)
            placed[r.index] = r.num_preemptions
        key = self._key
        if len(loose) > self._BULK:
            items = sorted(wait_queue, key=key)  # already in order: one linear pass
            items.extend(loose)
            items.sort(key=key)  # two sorted runs: a linear merge
            wait_queue.clear()
            wait_queue.extend(items)
        else:
            for r in loose:
                wait_queue.insert(bisect.bisect_right(wait_queue, key(r), key=key), r)
        if len(placed) > 2 * len(wait_queue) + 4096:  # forget requests that left
            self._placed = {r.index: r.num_preemptions for r in wait_queue}


def _fixed_order_key(priority: Any, scheduler: Any) -> Callable[[Request], Any] | None:
    """The sort key of a built-in (priority policy, scheduler) pair, as a function of
    what never changes while a request waits; None when the pair is not built in.

    The built-in priorities are 0, ``1e-6 x age`` and ``-1e-6 x age``: at any instant
    each is monotone in the arrival time (a float product keeps the order of integer
    ages below 2**53 µs), so ``priority-fcfs`` and ``reverse-priority`` order by
    arrival, oldest or newest first, ties by request index, as their keys do.
    """
    p, s = type(priority), type(scheduler)
    if p not in (ConstantPriority, SLOBasedPriority, InvertedSLOPriority):
        return None
    if s is ShortestJobFirst:
        return lambda r: (r.num_prompt_tokens, r.arrival_time, r.index)
    if s is not PriorityFCFS and s is not ReversePriority:
        return None
    newest_first = (s is PriorityFCFS and p is InvertedSLOPriority) or (
        s is ReversePriority and p is SLOBasedPriority
    )
    if newest_first:
        return lambda r: (-r.arrival_time, r.index)
    return lambda r: (r.arrival_time, r.index)


def make_wait_queue_hook(priority: Any, scheduler: Any) -> WaitQueueHook | None:
    """The instance's ``order_wait_queue`` hook: refresh priorities, then order.

    ``None`` for plain FCFS, which lets the engine skip the hook entirely; a
    :class:`KeptInOrder` for the built-in pairs whose order is fixed.
    """
    if type(scheduler) is FCFS:
        return None
    fixed = _fixed_order_key(priority, scheduler)
    if fixed is not None:
        return KeptInOrder(fixed, priority.priority)
    order = scheduler.order
    if not type(scheduler).__module__.startswith("inference_sim."):
        order = _checked_order(order, type(scheduler).__name__)
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


def _checked_order(order: Any, who: str) -> WaitQueueHook:
    """A user's scheduler may only reorder the wait queue. A request it removes would
    vanish from the run without a trace (never finished, never counted) and one it
    duplicates would be scheduled twice and break the engine far from the cause, so the
    queue is checked after every call. Built-in schedulers are trusted and not wrapped:
    the check is a pass over the queue per step.
    """

    def checked(wait_queue: deque[Request], now: int) -> None:
        before = {id(r): r for r in wait_queue}  # the engine's queue holds no duplicate
        order(wait_queue, now)
        after = {id(r) for r in wait_queue}
        if len(wait_queue) == len(after) == len(before) and after <= before.keys():
            return  # as many distinct entries, each one of the originals: a permutation
        raise PolicyError(
            f"scheduler {who}'s order(wait_queue, now) {_queue_change(before, wait_queue)} "
            f"at {now} µs; it must only reorder the wait queue in place"
        )

    return checked


def _queue_change(before: dict[int, Request], wait_queue: deque[Any]) -> str:
    """What ``order`` did to the queue besides reordering it, e.g. "removed 1 request
    (request_7)" or "duplicated a request (request_3)"."""
    count: dict[int, int] = {}
    for r in wait_queue:
        count[id(r)] = count.get(id(r), 0) + 1
    what = []
    removed = [r for k, r in before.items() if k not in count]
    if removed:
        n = len(removed)
        what.append(f"removed {'1 request' if n == 1 else f'{n} requests'} ({_names(removed)})")
    duplicated = [r for k, r in before.items() if count.get(k, 0) > 1]
    if duplicated:
        n = len(duplicated)
        what.append(
            f"duplicated {'a request' if n == 1 else f'{n} requests'} ({_names(duplicated)})"
        )
    added = list({id(r): r for r in wait_queue if id(r) not in before}.values())
    if added:
        n = len(added)
        what.append(f"added {n} item{'s' if n > 1 else ''} not in the queue ({_names(added)})")
    return " and ".join(what)


def _names(items: list[Any], limit: int = 3) -> str:
    """The first few items, by request id (anything else by its repr)."""
    names = [r.request_id if isinstance(r, Request) else f"{r!r:.40}" for r in items[:limit]]
    if len(items) > limit:
        names.append(f"{len(items) - limit} more")
    return ", ".join(names)
