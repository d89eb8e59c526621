"""Event classes and their order at one tick.

The simulator's heap holds tuples ``(time, event_class, instance_index, sequence,
payload)``: a total order, so simultaneous events always run the same way. At one
tick cluster arrivals run first, then admission decisions, then routing decisions,
then instance events; inside an instance a request entering the wait queue runs
before a step starting at that tick (so it can join the step). Remaining ties run
in push order (the sequence number).
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
