"""The latency-model protocol (the batch it prices, ``StepBatch``, lives in ``core``)."""

from __future__ import annotations

from collections.abc import Mapping
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

    No ``name`` attribute is required (the built-ins have one; the run labels a model by
    the name it was asked for when it has none), so the plug-in of docs/python-api.md
    type-checks as a factory of this protocol. ``describe()`` may return any mapping
    (``dict[str, float]`` too): nothing in the run reads it but the user.
    """

    def step_time(self, batch: StepBatch) -> int: ...

    def queueing_time(self, req: Request) -> int: ...

    def output_token_time(self) -> int: ...

    def describe(self) -> Mapping[str, object]: ...
