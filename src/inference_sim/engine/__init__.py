"""The event kernel: event order at one tick and runtime invariant checks."""

from inference_sim.engine.events import NEVER, EventClass

__all__ = ["NEVER", "EventClass"]
