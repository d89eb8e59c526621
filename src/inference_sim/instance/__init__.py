"""One serving engine: the scheduler (schedule -> output), apply, and the fast path."""

from __future__ import annotations

from inference_sim.instance.config import EngineConfig
from inference_sim.instance.engine import Instance, WaitQueueOrder
from inference_sim.instance.fast_engine import FastInstance
from inference_sim.instance.lora import LoraInstance
from inference_sim.instance.stats import InstanceStats
from inference_sim.latency.base import LatencyModel

__all__ = [
    "EngineConfig",
    "FastInstance",
    "Instance",
    "InstanceStats",
    "LoraInstance",
    "make_instance",
]


def make_instance(
    index: int,
    config: EngineConfig,
    latency: LatencyModel,
    *,
    order_wait_queue: WaitQueueOrder | None = None,
) -> Instance:
    """The stepper a configuration asks for: the plain one with ``exact_steps``, else the
    fast one (same results, fewer requests touched per step); with LoRA on, the plain
    one with the adapter rules (the fast path's bulk decoding cannot skip a request);
    with speculative decoding (several tokens per decode step) the plain stepper's
    speculative subclass. The two together are refused when the run is resolved."""
    if config.speculative is not None:
        if config.lora is not None:
            raise ValueError("speculative decoding cannot be combined with LoRA adapters")
        from inference_sim.instance.speculative import SpecInstance

        return SpecInstance(index, config, latency, order_wait_queue=order_wait_queue)
    if config.lora is not None:
        return LoraInstance(index, config, latency, order_wait_queue=order_wait_queue)
    cls = Instance if config.exact_steps else FastInstance
    return cls(index, config, latency, order_wait_queue=order_wait_queue)
