"""One serving engine: the scheduler (schedule -> output), apply, and the fast path."""

from __future__ import annotations

from inference_sim.instance.config import EngineConfig
from inference_sim.instance.engine import Instance, WaitQueueOrder
from inference_sim.instance.fast_engine import FastInstance
from inference_sim.instance.stats import InstanceStats
from inference_sim.latency.base import LatencyModel

__all__ = ["EngineConfig", "FastInstance", "Instance", "InstanceStats", "make_instance"]


def make_instance(
    index: int,
    config: EngineConfig,
    latency: LatencyModel,
    *,
    order_wait_queue: WaitQueueOrder | None = None,
) -> Instance:
    """The stepper a configuration asks for: the plain one with ``exact_steps``, else the
    fast one (same results, fewer requests touched per step). Speculative decoding
    (several tokens per decode step) always uses the plain stepper's subclass."""
    if config.speculative is not None:
        from inference_sim.instance.speculative import SpecInstance

        return SpecInstance(index, config, latency, order_wait_queue=order_wait_queue)
    cls = Instance if config.exact_steps else FastInstance
    return cls(index, config, latency, order_wait_queue=order_wait_queue)
