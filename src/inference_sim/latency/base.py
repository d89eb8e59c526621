"""The latency-model protocol and the per-step batch description it reads."""

from __future__ import annotations

from typing import Protocol

from inference_sim.instance.request import Request


class StepBatch:
    """What one engine step computes, built by batch formation and reused every step.

    ``entries`` holds ``(request, num_new_tokens, num_computed_before, is_prefill)``
    for each scheduled request; ``prefill_tokens`` and ``decode_tokens`` are the
    running sums blackbox models need without walking the entries.
    """

    __slots__ = ("decode_tokens", "entries", "prefill_tokens")

    def __init__(self) -> None:
        self.entries: list[tuple[Request, int, int, bool]] = []
        self.prefill_tokens = 0
        self.decode_tokens = 0

    def clear(self) -> None:
        self.entries.clear()
        self.prefill_tokens = 0
        self.decode_tokens = 0

    def add(self, req: Request, num_new: int, is_prefill: bool) -> None:
        self.entries.append((req, num_new, req.num_computed_tokens, is_prefill))
        if is_prefill:
            self.prefill_tokens += num_new
        else:
            self.decode_tokens += num_new

    def __len__(self) -> int:
        return len(self.entries)


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
