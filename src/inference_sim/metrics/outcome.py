"""What a run leaves behind for metrics aggregation, as metrics sees it.

The cluster builds a :class:`SimulationOutcome`; metrics reads instances only through
:class:`InstanceView` (the attributes aggregation needs), so ``metrics`` never imports
``instance`` or ``cluster``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from inference_sim.core.request import Request
from inference_sim.metrics.request_log import RequestLog


class InstanceView(Protocol):
    """The parts of a serving instance that metrics and time series read."""

    index: int
    name: str
    config: Any  # instance.config.EngineConfig
    kv: Any  # kv.manager.KVCacheManager
    stats: Any  # instance.stats.InstanceStats
    waiting: deque[Request]
    running: Sequence[Request]
    clock: int  # time of the last event the instance executed
    busy_until: int  # end of the last step it ran


@dataclass
class SimulationOutcome:
    """Everything a run leaves behind for metrics aggregation.

    ``log`` holds one row per request that reached an instance (finished or not);
    ``requests`` is the caller's list when one was given (None for a stream).
    ``in_flight`` counts requests admitted or routed but not yet in a wait queue when
    the horizon was reached, per target instance (-1: not yet routed).
    ``queue_length_sums[i]`` is the sum over instance i's steps of its wait-queue
    length after batch formation (one sample per step; tracked with 2+ instances);
    ``priority_policy`` names the instances' priority policy (for anomaly counters);
    ``interrupted`` is True when the run was stopped early (``stop_requested``).
    """

    requests: list[Request] | None
    instances: list[InstanceView]
    horizon: int
    end_time: int
    log: RequestLog
    rejected: int = 0
    rejected_too_long: int = 0
    events_executed: int = 0
    generated: int = 0
    in_flight: dict[int, int] = field(default_factory=dict)
    queue_length_sums: list[int] = field(default_factory=list)
    priority_policy: str = "constant"
    interrupted: bool = False  # stopped early on request (Ctrl-C): partial results
    #: Autoscaled runs: the instances that existed at some time (ready, loading or
    #: draining), ascending; None: every instance built ran for the whole run.
    provisioned: list[int] | None = None
    #: Per ITL group (a load stage, see ``summary.stage_groups``): every arrival, and
    #: those refused before reaching an instance, by admission or as longer than
    #: --max-model-len. The request log holds only requests that reached an instance,
    #: so per-stage arrivals counted from it alone miss these. Empty: not counted (an
    #: outcome built by hand), and the stage rows count the logged requests only.
    arrived_by_group: dict[int, int] = field(default_factory=dict)
    rejected_by_group: dict[int, int] = field(default_factory=dict)
    too_long_by_group: dict[int, int] = field(default_factory=dict)
