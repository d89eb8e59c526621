"""The incremental wait-queue order of the built-in schedulers equals a full re-sort.

``KeptInOrder`` only re-places the requests the engine moved since the last step
(arrivals at the back, preempted requests at the front); these tests drive it with
random engine-like edits of the queue and compare every step with the full sort the
general hook performs (refresh every priority, stable sort by the scheduler's key).
"""

from __future__ import annotations

from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from inference_sim.core.request import Request
from inference_sim.policies import (
    ConstantPriority,
    InvertedSLOPriority,
    PriorityFCFS,
    ReversePriority,
    ShortestJobFirst,
    SLOBasedPriority,
    make_wait_queue_hook,
)
from inference_sim.policies.scheduler import KeptInOrder
from simhelpers import make_request

PRIORITIES = [ConstantPriority, SLOBasedPriority, InvertedSLOPriority]
SCHEDULERS = [PriorityFCFS, ShortestJobFirst, ReversePriority]


def _full_sort(priority, scheduler, queue: deque[Request], now: int) -> list[int]:
    """What the general hook does: refresh every priority, sort by the key."""
    for r in queue:
        r.priority = priority.priority(r, now)
    return [r.index for r in sorted(queue, key=scheduler.key)]


# one engine step: (arrivals: [(arrival gap, prompt)], admitted from the front, preempted)
step = st.tuples(
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 6)), max_size=40),
    st.integers(0, 6),
    st.integers(0, 3),
    st.integers(0, 2),  # how many of the front requests admission passes over (LoRA, async)
)


@settings(max_examples=150, deadline=None)
@given(
    p=st.sampled_from(PRIORITIES),
    s=st.sampled_from(SCHEDULERS),
    steps=st.lists(step, min_size=1, max_size=25),
)
def test_kept_in_order_equals_a_full_sort(p, s, steps):
    priority, scheduler = p(), s()
    hook = make_wait_queue_hook(priority, scheduler)
    assert isinstance(hook, KeptInOrder)
    queue: deque[Request] = deque()
    running: list[Request] = []
    clock, index = 0, 0
    for arrivals, admit, preempt, passed_over in steps:
        for gap, prompt in arrivals:
            clock += gap  # equal arrival times happen: ties go by index
            queue.append(make_request(index, clock, prompt, 2))
            index += 1
        clock += 1
        # the engine's order of events within a step: order, preempt (to the
        # front, newest victim first), else admit from the front (passing over some)
        expected = _full_sort(priority, scheduler, queue, clock) if queue else []
        hook(queue, clock)
        assert [r.index for r in queue] == expected
        if preempt and running:
            for _ in range(min(preempt, len(running))):
                victim = running.pop()
                victim.num_preemptions += 1
                queue.appendleft(victim)
            continue
        skipped = [queue.popleft() for _ in range(min(passed_over, len(queue)))]
        for _ in range(min(admit, len(queue))):
            running.append(queue.popleft())
        queue.extendleft(reversed(skipped))


def test_preempted_request_takes_its_place_by_key():
    hook = make_wait_queue_hook(ConstantPriority(), ShortestJobFirst())
    q = deque([make_request(0, 0, 5, 2), make_request(1, 1, 9, 2)])
    hook(q, 10)
    admitted = q.popleft()  # request 0 runs, then is preempted
    q.append(make_request(2, 12, 3, 2))
    admitted.num_preemptions += 1
    q.appendleft(admitted)
    hook(q, 20)
    assert [r.index for r in q] == [2, 0, 1]


def test_a_large_batch_of_arrivals_is_merged_in_one_sort():
    hook = make_wait_queue_hook(ConstantPriority(), ShortestJobFirst())
    q = deque(make_request(i, i, 100 - i, 2) for i in range(100))
    hook(q, 200)
    assert [r.num_prompt_tokens for r in q] == list(range(1, 101))
    assert q[0].priority == 0.0


def test_user_subclass_keeps_the_full_sort():
    class Longest(ShortestJobFirst):
        def key(self, request: Request):
            return (-request.num_prompt_tokens, request.index)

    hook = make_wait_queue_hook(ConstantPriority(), Longest())
    assert not isinstance(hook, KeptInOrder)
    q = deque(make_request(i, i, 10 + i, 2) for i in range(3))
    hook(q, 5)
    assert [r.index for r in q] == [2, 1, 0]
