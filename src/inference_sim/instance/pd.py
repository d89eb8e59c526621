"""An instance in a prefill/decode-disaggregated cluster (docs/disaggregation.md).

Same scheduling rules as :class:`~inference_sim.instance.engine.Instance` (it is the
plain stepper: requests join its running batch from outside, which the fast stepper's
bookkeeping does not allow), with three additions that follow vLLM's NIXL connector:

* a request marked *prefill only* (``engine_state is PREFILL_ONLY``) leaves the running
  batch when its prompt is computed (its first token exists on this side) and is handed
  to the cluster, but its KV blocks stay held until :meth:`release` (the transfer ends);
* :meth:`reserve` allocates KV on the decode side before a transfer starts, reusing the
  blocks already in this instance's prefix cache, and says how many blocks to pull;
* :meth:`accept` puts a transferred request into the running batch with all its prompt
  but the last token computed, so the next step produces the first token the client sees.

Requests held for a transfer (either side) occupy KV while in no queue; an instance
whose wait queue cannot be admitted because of them goes idle instead of spinning and
is woken by :meth:`release` / :meth:`accept`.
"""

from __future__ import annotations

from collections.abc import Callable

from inference_sim.core.batch import StepBatch
from inference_sim.core.request import Request, RequestState
from inference_sim.instance.engine import Instance, forget_itl_runs

__all__ = ["PREFILL_ONLY", "PDInstance"]


class _PrefillOnly:
    """Marker in ``Request.engine_state``: run the prompt here, then hand the request off."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PREFILL_ONLY"


PREFILL_ONLY = _PrefillOnly()

HandoffHook = Callable[[Request, int], None]  # (request, time its prompt finished)


class PDInstance(Instance):
    """A prefill, decode or dual-role instance of a disaggregated cluster."""

    role = "both"  # "prefill", "decode" or "both" (set by the builder)
    on_handoff: HandoffHook | None = None
    on_step_end: Callable[[PDInstance, int], None] | None = None

    handed_off = 0  # prompts computed here for another instance
    accepted = 0  # requests that arrived by KV transfer

    def apply(self, batch: StepBatch, end: int) -> None:
        """As :meth:`Instance.apply`, but a prefill-only request whose prompt is done is
        handed off (KV kept) instead of delivering a token."""
        handoffs: list[Request] = []
        delivering: list[Request] = []
        for req, n in zip(batch.requests, batch.num_new, strict=True):
            computed = req.num_computed_tokens + n
            req.num_computed_tokens = computed
            if computed != req.num_prompt_tokens + req.delivered:
                continue
            req.prefill_target = computed
            if req.engine_state is PREFILL_ONLY:
                handoffs.append(req)
            else:
                delivering.append(req)
        finished = self._deliver_all(delivering, end)
        if finished or handoffs:
            gone = {id(r) for r in handoffs}
            keep = []
            for req in self.running:
                if id(req) in gone:
                    continue
                if req.delivered >= req.num_output_tokens and req.last_token_time == end:
                    self._finish(req, end, len(keep))
                else:
                    keep.append(req)
            self.running = keep
        for req in handoffs:
            req.engine_state = None
            self.held += 1
            self.handed_off += 1
            if self.on_handoff is not None:
                self.on_handoff(req, end)
        if self.on_step_end is not None:
            self.on_step_end(self, end)

    def _next_step(self, end: int) -> int | None:
        if not self.running and self.waiting and self.held:
            # The queue head waits for KV held by transfers: idle until one ends.
            self._go_idle()
            return None
        return super()._next_step(end)

    def _settle_held_over(self) -> None:
        """A transfer takes or frees blocks between two steps: the blocks of requests that
        finished in the last step stop being held over (async scheduling), so the free
        queue's tail is the transfer's; the next batch finds them free (not modelled)."""
        if self.kv.held_over:
            self.kv.end_held_over()

    def _wake(self) -> bool:
        """True when a step must be scheduled now (work to do and no step pending)."""
        if self.step_pending or not (self.running or self.waiting):
            return False
        self.step_pending = True
        return True

    # --- the prefill side ----------------------------------------------------------
    def release(self, req: Request, now: int) -> bool:
        """The transfer of ``req`` ended: free its blocks into the prefix cache.
        Returns True when a step must be scheduled now."""
        self.clock = now
        self._settle_held_over()
        self.kv.free(req, now)  # its offloads happen now, not in the next step
        self.held -= 1
        return self._wake()

    # --- the decode side -----------------------------------------------------------
    def reserve(self, req: Request) -> int | None:
        """Allocate KV for ``req``'s prompt before its transfer; the number of blocks to
        pull (those not in this instance's prefix cache), or None when there is no room."""
        if len(self.running) >= self.config.max_num_seqs:
            return None  # vLLM starts a KV read only while the running batch has a slot
        waiting = self.waiting
        if waiting and (self.role == "decode" or waiting[0].num_preemptions):
            # vLLM keeps remote-KV requests in the one FCFS waiting queue, a preempted
            # request back at its front, and stops at the first that cannot allocate:
            # a later transfer never takes the blocks a preempted decoder waits for.
            return None
        req.num_computed_tokens = 0
        req.prefill_target = req.num_prompt_tokens
        self._settle_held_over()
        kv = self.kv
        cached = kv.find_cached_prefix(req, touch=False)
        if cached and cached[-1] < 0:  # a CPU-tier hit: pulled from the prefill side
            cached = [b for b in cached if b >= 0]
        n_cached = len(cached)
        new_tokens = req.num_prompt_tokens - n_cached * kv.block_size
        if not kv.allocate_slots(req, new_tokens, cached, delay_cache=True, cpu_lookup=False):
            return None  # (its blocks join the cache when the KV has arrived: accept)
        self.held += 1
        # The decode engine looks the prompt up in its own prefix cache (vLLM's
        # get_computed_blocks for a remote-prefill request) and reports the hits.
        self.stats.prefix_lookup_tokens += req.num_prompt_tokens
        self.stats.cached_prompt_tokens += n_cached * kv.block_size
        return kv.blocks_needed(req.num_prompt_tokens) - n_cached

    def unservable(self, req: Request) -> bool:
        """True when ``req``'s prompt can never fit this instance's KV cache."""
        return self.kv.blocks_needed(req.num_prompt_tokens) > self.config.num_gpu_blocks

    def accept(self, req: Request, now: int, *, local: bool = False) -> bool:
        """The transfer of ``req`` ended: it joins the running batch with all but its
        last prompt token computed. Returns True when a step must be scheduled now.

        ``local``: no transfer; a request this dual-role instance prefilled is decoded
        here after all (its decode instance could never make room, see cluster/pd.py)."""
        self.clock = now
        self._settle_held_over()
        self.held -= 1
        if not local:
            self.accepted += 1
        req.handled_by = self.index
        req.state = RequestState.RUNNING
        req.num_computed_tokens = req.num_prompt_tokens - 1
        req.prefill_target = req.num_prompt_tokens
        forget_itl_runs(req)  # ITL runs are per instance
        self.kv.cache_blocks(req, req.num_computed_tokens)  # the pulled KV has arrived
        self.running.append(req)
        return self._wake()
