"""The scheduler output of one engine step: which requests compute how many tokens.

The instance's scheduler fills a :class:`StepBatch`; the latency model prices it; the
instance then applies the executed step (token delivery, completion, KV growth). The
same object is reused every step, so nothing is allocated per step.
"""

from __future__ import annotations

from inference_sim.core.request import Request


class StepBatch:
    """What one engine step computes, filled by batch formation and reused every step.

    ``requests[i]`` is scheduled for ``num_new[i]`` tokens; when the latency model
    runs, each request's ``num_computed_tokens`` still holds its value before the
    step, and it is in prefill iff ``num_computed_tokens < prefill_target``.
    ``prefill_tokens`` and ``decode_tokens`` are the sums blackbox models need
    without walking the lists.
    """

    __slots__ = (
        "decode_context_sum",
        "decode_tokens",
        "num_new",
        "prefill_tokens",
        "requests",
        "shared_context",
    )

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.num_new: list[int] = []
        self.prefill_tokens = 0
        self.decode_tokens = 0
        # Sum of the decoding requests' contexts (computed tokens before the step); the
        # fast stepper does not list idle decoders, so models read totals from here.
        self.decode_context_sum = 0
        # Context tokens held in KV blocks that more than one running request references
        # (prefix-cache hits on blocks in use), counted once per extra reference: the
        # step's attention reads each such block from HBM once, not once per request.
        # (Holders that do not run in the step count too: an approximation, calibration.md.)
        self.shared_context = 0

    def clear(self) -> None:
        self.requests.clear()
        self.num_new.clear()
        self.prefill_tokens = 0
        self.decode_tokens = 0
        self.decode_context_sum = 0
        self.shared_context = 0

    def add(self, req: Request, num_new: int, is_prefill: bool) -> None:
        self.requests.append(req)
        self.num_new.append(num_new)
        if is_prefill:
            self.prefill_tokens += num_new
        else:
            self.decode_tokens += num_new

    def __len__(self) -> int:
        return len(self.requests)


#: vLLM's name for what a step's ``schedule()`` produces.
SchedulerOutput = StepBatch
