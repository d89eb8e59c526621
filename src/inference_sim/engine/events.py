"""Event classes and their order at one tick.

The cluster loop (:mod:`inference_sim.cluster.simulator`) merges three sources by time
and, at one tick, takes them in this order: arrivals (``ARRIVAL``, read lazily from the
request stream), then the cluster events kept in one heap as ``(time, event_class,
instance_index, sequence, request)`` -- admission decisions, routing decisions, a
request entering an instance's wait queue (``ENQUEUE``) -- and last the engine steps
(``STEP``, in a second heap ordered by ``(time, instance_index, sequence)``), so a request
enqueued at a tick can join the step starting at that tick. Remaining ties run in push
order (the sequence number): simultaneous events always run the same way.
"""

from __future__ import annotations

from enum import IntEnum

from inference_sim.core.time import NEVER

__all__ = ["NEVER", "EventClass"]


class EventClass(IntEnum):
    ARRIVAL = 0
    ADMISSION = 1
    ROUTING = 2
    ENQUEUE = 3
    STEP = 4
