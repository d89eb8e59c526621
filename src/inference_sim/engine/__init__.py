"""The event kernel: integer-microsecond time, event order and named random streams."""

from inference_sim.engine.events import NEVER, EventClass
from inference_sim.engine.rng import RandomStreams

__all__ = ["NEVER", "EventClass", "RandomStreams"]
