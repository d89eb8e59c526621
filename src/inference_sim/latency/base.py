"""The latency-model protocol (the batch it prices, ``StepBatch``, lives in ``core``)."""

from __future__ import annotations

from typing import Protocol

from inference_sim.core.batch import StepBatch
from inference_sim.core.request import Request

__all__ = ["LatencyModel", "StepBatch"]


class LatencyModel(Protocol):
    """Predicts how long things take, in integer microseconds.

    ``step_time`` is the GPU time of one engine step; ``queueing_time`` is the
    server-side delay from a request's arrival at the instance to its entering the
    wait queue (tokenisation, API overhead); ``output_token_time`` is the
    per-token client-visible overhead added to TTFT and each ITL sample.
    """

    name: str

    def step_time(self, batch: StepBatch) -> int: ...

    def queueing_time(self, req: Request) -> int: ...

    def output_token_time(self) -> int: ...

    def describe(self) -> dict[str, object]: ...
