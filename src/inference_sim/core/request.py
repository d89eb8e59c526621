"""The request: what the workload produces and what the engine advances.

One mutable object per request, with ``__slots__`` so a million of them stay compact.
Workload fields are set once at generation; simulation fields are written by the
engine. Times are integer microseconds (ticks); ``-1`` means "not yet".
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

TokenArray = NDArray[np.int32]


def as_token_array(tokens: Sequence[int] | NDArray[np.integer]) -> TokenArray:
    """Token ids as a compact int32 array (4 bytes a token instead of ~36 in a list)."""
    if isinstance(tokens, np.ndarray) and tokens.dtype == np.int32:
        return tokens
    arr = np.asarray(tokens, dtype=np.int64).reshape(-1)
    if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(np.int32).max):
        raise ValueError("token ids must lie in [0, 2**31 - 1]")
    return arr.astype(np.int32)


class RequestState(IntEnum):
    """Lifecycle of a request inside an instance (INV-2)."""

    PENDING = 0  # generated, not yet in any wait queue
    WAITING = 1  # in an instance's wait queue (new or preempted)
    RUNNING = 2  # in an instance's running batch
    FINISHED = 3  # all output tokens delivered
    DROPPED = 4  # can never fit the KV cache (dropped_unservable)
    REJECTED = 5  # refused by admission or by --max-model-len


class Request:
    """A single inference request and its simulated progress.

    Token accounting follows vLLM: ``num_computed_tokens`` counts tokens whose KV is
    computed; the request needs ``num_prompt_tokens + num_delivered`` computed tokens
    to produce its next output token. After a preemption it recomputes prompt plus
    delivered tokens (a prefill of that length, helped by the prefix cache).
    """

    __slots__ = (
        "_block_hashes",
        "_hash_block_size",
        "adapter",
        "adapter_rank",
        "arrival_time",
        "delivered",
        "engine_state",
        "finish_time",
        "first_scheduled_time",
        "first_token_time",
        "handled_by",
        "index",
        "input_tokens",
        "itl_group",
        "itl_pending",
        "itl_run",
        "itl_step",
        "itl_sum",
        "last_token_time",
        "metadata",
        "model",
        "num_computed_tokens",
        "num_output_tokens",
        "num_preemptions",
        "num_prompt_tokens",
        "output_tokens",
        "prefill_target",
        "priority",
        "private_from",
        "slo_class",
        "state",
        "tenant_id",
    )

    def __init__(
        self,
        index: int,
        arrival_time: int,
        input_tokens: Sequence[int] | NDArray[np.integer],
        output_tokens: Sequence[int] | NDArray[np.integer],
        *,
        slo_class: str = "",
        tenant_id: str = "",
        model: str = "",
        metadata: dict[str, object] | None = None,
        private_from: int = -1,
        adapter: str = "",
        adapter_rank: int = 0,
    ) -> None:
        self.index = index
        self.arrival_time = arrival_time
        self.input_tokens = as_token_array(input_tokens)
        self.output_tokens = as_token_array(output_tokens)
        self.num_prompt_tokens = len(self.input_tokens)
        self.num_output_tokens = len(self.output_tokens)
        # -1: any of this request's tokens (outputs too) may appear in another request's
        # prompt. Otherwise the tokens from position ``private_from`` on (and so every
        # output token) appear in no other prompt, as for one-shot synthetic requests
        # whose prompt is a shared prefix followed by fresh random ids. Blocks holding
        # such tokens cannot be a prefix hit for anyone else, so the KV manager neither
        # hashes them at lookup nor registers them until the request is preempted (it
        # may then look them up itself) - results are the same, the work much smaller.
        self.private_from = min(private_from, self.num_prompt_tokens)
        self.slo_class = slo_class
        self.tenant_id = tenant_id
        self.model = model
        self.metadata = metadata
        # The LoRA adapter the request runs with ("" = the base model) and its rank
        # (0 = the adapter's catalog rank, else --max-lora-rank); docs/lora.md.
        self.adapter = adapter
        self.adapter_rank = adapter_rank
        # >= 0: the request's ITL samples are also counted in the instances'
        # per-group histograms (InstanceStats.itl_group_histograms), e.g. its load stage.
        self.itl_group = -1
        self.reset_simulation_state()

    def reset_simulation_state(self) -> None:
        """Clear everything the engine writes, so a request list can be re-simulated."""
        self.state = RequestState.PENDING
        self.num_computed_tokens = 0
        self.prefill_target = self.num_prompt_tokens
        self.delivered = 0
        self.first_scheduled_time = -1
        self.first_token_time = -1
        self.last_token_time = -1
        self.finish_time = -1
        self.itl_sum = 0
        # What the engine needs to take the request's ITL samples back out of the
        # histograms should it never complete (horizon, dropped): their statistics are
        # over completed requests (engine spec 4.5). The stepper's own compact record
        # (instance/engine.py ``Instance._deliver``): the first step of its current run of
        # deliveries in consecutive steps, and the step after its last delivery.
        self.itl_pending: array[int] | None = None
        self.itl_run = -1
        self.itl_step = -2
        self.num_preemptions = 0
        self.priority = 0.0
        self.handled_by = -1
        self._block_hashes = None
        self._hash_block_size = 0
        # Bookkeeping private to the stepper that holds the request (the fast stepper's
        # per-decoder record, say); None outside an engine. The request itself only
        # carries what every layer shares.
        self.engine_state: object = None

    @property
    def request_id(self) -> str:
        """The reference's id form, ``request_<generation index>``."""
        return f"request_{self.index}"

    def __repr__(self) -> str:
        return (
            f"Request({self.request_id}, t={self.arrival_time}, in={self.num_prompt_tokens}, "
            f"out={self.num_output_tokens}, state={self.state.name})"
        )
