"""One vLLM-style serving instance: wait queue, continuous batching, step execution.

Each engine iteration has vLLM v1's shape: :meth:`Instance.schedule` produces the step's
scheduler output (a :class:`~inference_sim.core.batch.StepBatch`), :meth:`Instance.execute`
prices it with the latency model, and :meth:`Instance.apply` applies the executed step.

Scheduling:

1. Running requests are served first, in order, each taking the tokens it still
   needs (a prefill chunk or one decode token) from the step's token budget. When
   the KV cache cannot hold them, the newest running request is preempted (its
   blocks freed, recompute later) until room appears (:meth:`Instance._make_room`).
2. If nothing was preempted, waiting requests are admitted from the queue head
   while the running cap and the budget allow, reusing cached prompt blocks.
   The first request that does not fit stops admission (head-of-line blocking); with
   chunked prefill off, so does the first whose new tokens exceed the budget left.

Applying: every scheduled request advances; a request whose computed tokens reach its
known sequence length delivers a token (:meth:`Instance._deliver`) and, with its last
token, completes (:meth:`Instance._finish`). Per-token times: a token is delivered at the
end of its step plus the model's per-token overhead.

These rules exist once. :class:`~inference_sim.instance.fast_engine.FastInstance` only
changes *which* requests a step touches individually; it calls the same helpers.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Callable

from inference_sim.core.batch import StepBatch
from inference_sim.core.request import Request, RequestState
from inference_sim.core.time import NEVER
from inference_sim.instance.config import EngineConfig
from inference_sim.instance.stats import InstanceStats
from inference_sim.kv.manager import KVCacheManager
from inference_sim.latency.base import LatencyModel
from inference_sim.metrics.request_log import RequestLog

WaitQueueOrder = Callable[[deque[Request], int], None]


def forget_itl_runs(req: Request) -> None:
    """Clear what a stepper keeps to retract ``req``'s ITL samples (``_note_break``):
    it completed, was retracted, or starts afresh on another instance."""
    req.itl_pending = None
    req.itl_run = -1
    req.itl_step = -2


def record_itl_break(req: Request, sample: int, first: int, last: int) -> None:
    """Append one ``itl_pending`` record: a sample counted on its own, and the run of
    consecutive-step deliveries (steps ``first``..``last``; -1: none) it ended."""
    record = (sample, first, last)
    pending = req.itl_pending
    if pending is None:
        req.itl_pending = array("q", record)
    else:
        pending.extend(record)


__all__ = ["Instance", "InstanceStats", "WaitQueueOrder", "prefill_chunk"]


def prefill_chunk(remaining: int, threshold: int, budget: int) -> int:
    """Tokens of a prefill scheduled in one step: capped by the long-prefill threshold
    (``long_prefill_token_threshold``, 0 = no cap) and by the step's token budget."""
    n = remaining
    if 0 < threshold < n:
        n = threshold
    if n > budget:
        n = budget
    return n


class Instance:
    """A single serving engine driven by the simulator's event loop (the plain stepper)."""

    #: Requests holding KV here while in neither queue (a P/D transfer's either side,
    #: instance/pd.py); they can free blocks later, so no one is unservable meanwhile.
    held = 0
    #: A decode step writes one token per request (not so with speculative decoding):
    #: what the async rule of :meth:`_preempt` assumes of the token in flight.
    one_token_decodes = True

    def __init__(
        self,
        index: int,
        config: EngineConfig,
        latency: LatencyModel,
        *,
        order_wait_queue: WaitQueueOrder | None = None,
    ) -> None:
        self.index = index
        self.name = f"instance_{index}"
        self.config = config
        self.latency = latency
        self.kv = KVCacheManager(
            config.num_gpu_blocks,
            config.block_size,
            enable_prefix_caching=config.enable_prefix_caching,
            cpu_blocks=config.kv_cpu_blocks,
            offload_threshold=config.kv_offload_threshold,
            transfer_bandwidth=config.kv_transfer_bandwidth,
            transfer_base_latency=config.kv_transfer_base_latency,
        )
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.step_pending = False
        self.stats = InstanceStats()
        self.order_wait_queue = order_wait_queue
        self.clock = 0  # time of the last event this instance executed
        self.busy_until = 0  # end of the last step it ran
        self._batch = StepBatch()
        self._otp = latency.output_token_time()
        self.log: RequestLog | None = None  # where finished requests are written
        # Async scheduling (vLLM v0.15.1's default): the batch of step N+1 is formed
        # when step N starts, so it sees requests and freed slots one step late.
        self.async_scheduling = config.async_scheduling or bool(
            getattr(latency, "async_scheduling", False)
        )
        self._wake_step = -1  # steps run when an idle instance was last woken
        self._hidden: dict[int, int] = {}  # request index -> first step that may admit it
        self._late_slots = 0  # requests that finished in step _late_step - 1 ...
        self._late_step = -1  # ... and still hold a running slot in step _late_step
        # End of every step (plain stepper), for ITL samples of unfinished requests.
        self._step_ends = array("q")

    def restart(self) -> None:
        """A new server process on this instance's GPUs (an autoscaled replica that left
        and is started again): empty caches, counters kept. The instance must be idle."""
        self.kv.end_held_over()
        self.kv.clear()
        self._late_step = -1
        self._hidden.clear()

    # --- signals read by routing ---------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return len(self.waiting)

    @property
    def batch_size(self) -> int:
        return len(self.running)

    @property
    def kv_utilization(self) -> float:
        return self.kv.num_used / self.kv.num_blocks

    # --- events --------------------------------------------------------------------
    def enqueue(self, req: Request, now: int) -> bool:
        """A request enters the wait queue. Returns True when a step must be scheduled now."""
        self.clock = now
        req.handled_by = self.index
        if self.kv.blocks_needed(req.num_prompt_tokens) > self.config.num_gpu_blocks:
            req.state = RequestState.DROPPED
            self.stats.count_drop(req)
            return False
        req.state = RequestState.WAITING
        self.waiting.append(req)
        self.stats.total_input_tokens += req.num_prompt_tokens
        forget_itl_runs(req)  # ITL runs are per instance (step numbers are)
        if self.step_pending:
            if self.async_scheduling and self._wake_step != self.stats.step_count:
                # A step is in flight and the next one is already formed: the request
                # is seen when the step in flight ends, for the step after the next.
                self._hidden[req.index] = self.stats.step_count + 2
            return False
        # Idle: a step starts now, or when the step still running ends (busy_until).
        # With async scheduling the batch formed ahead of that step was empty, so vLLM
        # blocks on the last step, whose output removes its finished requests from the
        # running set before this one is seen: their slots are free again.
        self._late_step = -1
        self.step_pending = True
        self._wake_step = self.stats.step_count
        return True

    def step(self, now: int, t_limit: int = NEVER, horizon: int = NEVER) -> int | None:
        """Run one engine iteration starting at ``now``; return the next step's time or None.

        ``t_limit`` and ``horizon`` bound how far a stepper may run ahead on its own (the
        next outside event, the end of simulated time); this plain stepper runs one step.
        """
        batch = self.schedule(now)
        # A step that schedules nothing launches nothing and costs no time (vLLM's model
        # runner returns at once for an empty schedule): every request of it dropped as
        # unservable, or a P/D prefill side whose queue waits for KV held by transfers.
        end = self.execute(batch, now) if batch.requests else self._launch_nothing(now)
        self.apply(batch, end)
        self._step_ends.append(end)  # step k ended at _step_ends[k - 1]
        return self._next_step(end)

    # --- schedule ------------------------------------------------------------------
    def schedule(self, now: int) -> StepBatch:
        """Form this step's batch (vLLM's ``schedule()``): running first, then admission."""
        self.clock = now
        self.stats.step_count += 1
        batch = self._batch
        batch.clear()
        if self.order_wait_queue is not None and self.waiting:
            self.order_wait_queue(self.waiting, now)
        budget, preempted = self._schedule_running(batch, now)
        if not preempted:
            budget, batch.prefill_tokens = self._admit_waiting(now, budget, batch.prefill_tokens)
        if self.kv.held_over:
            self.kv.end_held_over()  # the batch is formed: vLLM processes the last output
        return batch

    def _schedule_running(self, batch: StepBatch, now: int) -> tuple[int, bool]:
        """Part A: every running request in order takes what it needs from the budget.

        Returns the budget left and whether anybody was preempted. Also sets the batch's
        token sums and decode context (before admission adds prefills).
        """
        cfg = self.config
        running = self.running
        budget = cfg.max_num_batched_tokens
        threshold = cfg.long_prefill_token_threshold
        bs = cfg.block_size
        decode_slot = self.kv.decode_slot
        sched_reqs = batch.requests
        sched_new = batch.num_new
        prefill_tokens = decode_tokens = ctx = 0
        preempted = False
        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            computed = req.num_computed_tokens
            if computed >= req.prefill_target:
                # Decode: one token. Its KV slot exists unless it opens a new block,
                # and the KV manager only matters when a block opens or fills
                # (decode_slot; _make_room preempts when it finds no free block).
                if (computed % bs and (computed + 1) % bs) or decode_slot(req, computed):
                    sched_reqs.append(req)
                    sched_new.append(1)
                    decode_tokens += 1
                    ctx += computed
                    budget -= 1
                    i += 1
                    continue
                is_prefill = False
                n = 1
            else:
                is_prefill = True
                n = prefill_chunk(req.prefill_target - computed, threshold, budget)
            scheduled, evicted = self._make_room(req, n, now)
            preempted = preempted or evicted
            if not scheduled:
                break
            sched_reqs.append(req)
            sched_new.append(n)
            if is_prefill:
                prefill_tokens += n
            else:
                decode_tokens += n
                ctx += computed
            budget -= n
            i += 1
        batch.prefill_tokens = prefill_tokens
        batch.decode_tokens = decode_tokens
        batch.decode_context_sum = ctx
        return budget, preempted

    def _make_room(self, req: Request, n: int, now: int) -> tuple[bool, bool]:
        """Allocate KV for ``n`` more tokens of ``req``, preempting from the batch's tail.

        Returns ``(scheduled, preempted)``. When ``req`` is alone and still cannot grow,
        it can never finish here and is dropped as unservable, unless requests ``held``
        for P/D transfers or held over (async scheduling) will free blocks: then it
        preempts itself and waits for them. When it is itself the newest member it
        preempts itself and is not scheduled this step. With async scheduling a request
        whose last token is in flight is still in vLLM's running batch, at its place, and
        may be the victim (:meth:`KVCacheManager.release_last_held_over`).
        """
        preempted = False
        kv = self.kv
        while not kv.allocate_slots(req, n):
            self.stats.kv_allocation_failures += 1
            held_over = kv.held_over
            if held_over and held_over[-1].rank >= len(self.running):
                # Async scheduling: vLLM's newest running request is one whose last token
                # is in flight (finished here, its blocks held over): it is the victim,
                # counted as preempted as vLLM counts it (it still finishes).
                kv.release_last_held_over().num_preemptions += 1
                self.stats.preemption_count += 1
                preempted = True
                continue
            alone = len(self.running) == 1
            victim = self._pop_running_tail(now)
            if alone and not self.held and not held_over:
                self._drop_running(victim)
                return False, preempted
            self._preempt(victim)
            preempted = True
            if victim is req:
                return False, True
        return True, preempted

    def _pop_running_tail(self, now: int) -> Request:
        """Remove the newest running request (a preemption or drop victim)."""
        return self.running.pop()

    def _admit_waiting(self, now: int, budget: int, prefill_tokens: int) -> tuple[int, int]:
        """Admit requests from the head of the wait queue into this step's batch.

        Stops at the running cap, an exhausted budget, or the first request whose KV
        does not fit (head-of-line blocking), or, with chunked prefill off, whose new
        tokens do not all fit the budget left (it is never given a partial chunk). A
        request that cannot fit even with nothing else running is dropped as
        unservable. Returns the budget left and the updated prefill token count.

        With async scheduling the batch was formed one step ago: requests that arrived
        since (``_hidden``) are not seen, and slots and KV blocks freed by the last step
        are still held (``kv.held_over``). When no running request is in this step, that
        batch formed in advance is empty only if this one-step-late view admits nothing
        either; then vLLM launches nothing and forms the batch again once the step in
        flight is processed, seeing everything.
        """
        cfg = self.config
        max_seqs = cfg.max_num_seqs
        if self._late_step == self.stats.step_count:
            max_seqs -= self._late_slots  # finished last step, slots not yet freed
        hidden = self._hidden
        kv = self.kv
        lagged = bool(hidden) or max_seqs < cfg.max_num_seqs or bool(kv.held_over)
        if not lagged or budget < cfg.max_num_batched_tokens:
            return self._admit_pass(now, budget, prefill_tokens, hidden, max_seqs)
        mark = self._admission_mark()
        admitted = len(self._batch.requests)
        left, tokens = self._admit_pass(now, budget, prefill_tokens, hidden, max_seqs)
        if len(self._batch.requests) > admitted:
            return left, tokens
        self._admission_rewind(mark)  # that attempt launched nothing: count it once
        if kv.held_over:
            kv.end_held_over()
        return self._admit_pass(now, budget, prefill_tokens, {}, cfg.max_num_seqs)

    def _admission_mark(self) -> tuple[int, ...]:
        """Counters an admission attempt moves without admitting anything."""
        return (self.stats.kv_allocation_failures,)

    def _admission_rewind(self, mark: tuple[int, ...]) -> None:
        self.stats.kv_allocation_failures = mark[0]

    def _admit_pass(
        self, now: int, budget: int, prefill_tokens: int, hidden: dict[int, int], max_seqs: int
    ) -> tuple[int, int]:
        """One admission attempt: ``hidden`` requests are not seen yet, at most
        ``max_seqs`` requests may run (see :meth:`_admit_waiting`)."""
        cfg = self.config
        kv = self.kv
        waiting = self.waiting
        running = self.running
        stats = self.stats
        batch = self._batch
        threshold = cfg.long_prefill_token_threshold
        block_size = cfg.block_size
        whole = not cfg.enable_chunked_prefill  # a new prefill is never cut by the budget
        skip = self._skip_admission  # None unless a subclass holds requests back (LoRA)
        skipped: list[Request] | None = None
        while waiting and len(running) < max_seqs and budget > 0:
            req = waiting[0]
            if hidden and hidden.get(req.index, 0) > stats.step_count:
                # Async scheduling: not seen by the scheduler yet (it reached the engine
                # after this step was formed); the requests behind it may have been.
                if skipped is None:
                    skipped = []
                skipped.append(waiting.popleft())
                continue
            if skip is not None and skip(req):
                # Not admissible this step (not a KV shortage): it keeps its place at
                # the queue's front, and the requests behind it may still be admitted.
                if skipped is None:
                    skipped = []
                skipped.append(waiting.popleft())
                continue
            cached = kv.find_cached_prefix(req)
            cached_tokens = len(cached) * block_size
            n = prefill_chunk(req.prefill_target - cached_tokens, threshold, budget)
            if (
                whole
                and n == budget
                and prefill_chunk(req.prefill_target - cached_tokens, threshold, NEVER) > n
            ):
                # Chunked prefill off (vLLM's waiting loop: "if not enable_chunked_prefill
                # and num_new_tokens > token_budget: break", the threshold applied first):
                # its new tokens exceed what is left of the budget, so admission stops.
                if budget == cfg.max_num_batched_tokens:
                    # More than a whole step's budget: it can never be admitted. Only
                    # without the length limit a resolved run sets (config/resolve.py).
                    self._drop_waiting_head(req)
                    continue
                break
            if not kv.allocate_slots(req, n, cached):
                if not running and not self.held and not kv.held_over:
                    # Nothing else holds blocks, so it can never fit: unservable.
                    self._drop_waiting_head(req)
                    continue
                stats.kv_allocation_failures += 1
                break
            waiting.popleft()
            if self._hidden:
                self._hidden.pop(req.index, None)
            running.append(req)
            self._on_admitted(req)
            req.state = RequestState.RUNNING
            req.num_computed_tokens = cached_tokens
            if req.first_scheduled_time < 0:
                req.first_scheduled_time = now
                stats.cached_prompt_tokens += cached_tokens
                stats.prefix_lookup_tokens += req.num_prompt_tokens
            batch.requests.append(req)
            batch.num_new.append(n)
            prefill_tokens += n
            budget -= n
        if skipped:
            waiting.extendleft(reversed(skipped))
        return budget, prefill_tokens

    def _drop_waiting_head(self, req: Request) -> None:
        """The queue's head ``req`` can never be admitted here: drop it as unservable."""
        self.waiting.popleft()
        if self._hidden:
            self._hidden.pop(req.index, None)
        req.state = RequestState.DROPPED
        self.stats.count_drop(req)
        self._retract_itl(req)  # a preempted request may have delivered

    #: ``skip(request) -> bool`` for requests admission passes over this step without
    #: blocking the queue (vLLM's ``max_loras`` rule); None: every request is a candidate.
    _skip_admission: Callable[[Request], bool] | None = None

    def _on_admitted(self, req: Request) -> None:
        """Hook for steppers that track the batch order (nothing to do here)."""

    # --- execute -------------------------------------------------------------------
    def execute(self, batch: StepBatch, now: int) -> int:
        """Price the step (GPU time plus KV loads from the CPU tier) and book it: busy
        time, peak KV use and KV use over time. Returns the step's end."""
        kv = self.kv
        batch.shared_context = kv.pool.shared_refs * kv.block_size
        step_time = self.latency.step_time(batch) + kv.take_transfer_time(now)
        end = now + step_time
        self.busy_until = end
        stats = self.stats
        used = kv.num_used
        if used > stats.peak_kv_blocks:
            stats.peak_kv_blocks = used
        stats.kv_block_time += used * step_time
        return end

    def _launch_nothing(self, now: int) -> int:
        """An empty step: it ends where it starts (no GPU time, no KV time)."""
        self.busy_until = now
        return now

    # --- apply ---------------------------------------------------------------------
    def apply(self, batch: StepBatch, end: int) -> None:
        """Advance every scheduled request by its scheduled tokens; deliver and complete."""
        delivering = []
        for req, n in zip(batch.requests, batch.num_new, strict=True):
            computed = req.num_computed_tokens + n
            req.num_computed_tokens = computed
            if computed != req.num_prompt_tokens + req.delivered:
                continue  # a prefill chunk that does not finish the prefill
            req.prefill_target = computed  # from now on it decodes
            delivering.append(req)
        if self._deliver_all(delivering, end):
            self._finish_completed(end)

    def _deliver_all(self, reqs: list[Request], end: int) -> bool:
        """:meth:`_deliver` one token to each of ``reqs``, in order; True when any is
        done. The common case (a decoder's next token in consecutive steps, no ITL group)
        is inlined: a step delivers to every decoder of the batch."""
        otp = self._otp
        stats = self.stats
        hist = stats.itl_histogram
        step = stats.step_count
        finished = False
        common = 0
        for req in reqs:
            delivered = req.delivered
            if delivered and req.itl_step == step and req.itl_group < 0:
                sample = end - req.last_token_time + otp
                req.itl_sum += sample
                hist[sample] = hist.get(sample, 0) + 1
                req.itl_step = step + 1
                req.last_token_time = end
                delivered = req.delivered = delivered + 1
                common += 1
                if delivered >= req.num_output_tokens:
                    finished = True
            elif self._deliver(req, end):
                finished = True
        stats.total_output_tokens += common
        return finished

    def _finish_completed(self, end: int) -> None:
        """Finish every running request that delivered its last token at ``end``, keeping
        the others in batch order."""
        keep: list[Request] = []
        for req in self.running:
            if req.delivered >= req.num_output_tokens and req.last_token_time == end:
                self._finish(req, end, len(keep))
            else:
                keep.append(req)
        self.running = keep

    def _deliver(self, req: Request, end: int, tokens: int = 1) -> bool:
        """``req`` delivers ``tokens`` output tokens at the end of a step; True when done.

        One ITL sample per delivery event (the gap a streaming client sees since the
        previous one): a step that delivers several tokens at once (speculative decoding)
        gives one sample. A request without output tokens completes at its prefill.
        """
        otp = self._otp
        if req.num_output_tokens == 0:
            req.first_token_time = end + otp
            req.last_token_time = end
            return True
        stats = self.stats
        step = stats.step_count
        if req.delivered == 0:
            req.first_token_time = end + otp
            req.itl_run = step  # a run of deliveries starts here
        else:
            sample = end - req.last_token_time + otp
            req.itl_sum += sample
            hist = stats.itl_histogram
            hist[sample] = hist.get(sample, 0) + 1
            if req.itl_group >= 0:
                stats.add_group_samples(req.itl_group, sample, 1)
            if req.itl_step != step:  # not in the previous step: the run breaks here
                self._note_break(req, sample, step)
        req.itl_step = step + 1  # a delivery in the next step continues the run
        req.last_token_time = end
        delivered = req.delivered = req.delivered + tokens
        stats.total_output_tokens += tokens
        return delivered >= req.num_output_tokens

    def _finish(self, req: Request, end: int, rank: int = -1) -> None:
        """``req`` delivered its last token at ``end``: free its KV, count and log it.

        ``rank``: how many requests of the running batch, not finishing, came before it.
        With async scheduling its blocks are held over into the next batch's formation
        (:meth:`KVCacheManager.free_held_over`; not with a CPU tier, whose offloads at
        the release cannot be undone).
        """
        req.state = RequestState.FINISHED
        req.finish_time = end
        kv = self.kv
        if self.async_scheduling and kv.cpu is None:
            # Its last step's token was delivered by the step before: not registered yet.
            in_flight = self.one_token_decodes and 0 <= req.itl_run < self.stats.step_count
            kv.free_held_over(req, rank, req.num_computed_tokens - 1 if in_flight else -1)
        else:
            kv.free(req)
        forget_itl_runs(req)  # completed: its samples stay counted
        kv.forget_hashes(req)
        self.stats.completed += 1
        if self.async_scheduling:
            # The next step was formed before this one ended: the request still held
            # its running slot then (vLLM frees it when the step's output is processed).
            nxt = self.stats.step_count + 1
            if self._late_step != nxt:
                self._late_step = nxt
                self._late_slots = 0
            self._late_slots += 1
        if self.log is not None:
            self.log.add(req)

    def _next_step(self, end: int) -> int | None:
        """The next step starts at ``end`` while there is work (work conservation)."""
        if self.running or self.waiting:
            return end
        self._go_idle()
        return None

    def _go_idle(self) -> None:
        """No step pending. With async scheduling the batch formed ahead is empty: vLLM
        waits for the step in flight and frees what it held over."""
        self.step_pending = False
        if self.kv.held_over:
            self.kv.end_held_over()

    def finalize(self) -> None:
        """Bring per-request state up to date at the end of a run: requests that did not
        complete take their ITL samples back (ITL is over completed requests)."""
        for req in self.running:
            self._retract_itl(req)
        for req in self.waiting:
            self._retract_itl(req)
        if self.kv.held_over:
            self.kv.end_held_over()

    @staticmethod
    def _note_break(req: Request, sample: int, step: int) -> None:
        """A delivery that does not follow one in the previous step (after a preemption,
        a skipped step, on arrival from another instance).

        ``req.itl_pending`` holds one record per break: (the break's sample, first and
        last step of the run it ended; -1 when the request had no run here: it arrived
        after its first token elsewhere). A run's other samples are its steps' durations
        plus the output overhead, so they need no record: the per-token cost is one
        compare. ``req.itl_run`` is the first step of the run still open.
        """
        record_itl_break(req, sample, req.itl_run, req.itl_step - 1)
        req.itl_run = step

    def _itl_samples(self, req: Request) -> list[int]:
        """The ITL samples ``req`` added to the histograms on this instance."""
        pending = req.itl_pending or array("q")
        ends = self._step_ends
        otp = self._otp
        out = list(pending[0::3])  # the breaks' own samples
        spans = [(pending[i + 1], pending[i + 2]) for i in range(0, len(pending), 3)]
        spans.append((req.itl_run, req.itl_step - 1))  # the run still open
        for first, last in spans:
            if first >= 0:  # steps are numbered from 1: step k ended at ends[k - 1]
                out.extend(ends[k - 1] - ends[k - 2] + otp for k in range(first + 1, last + 1))
        return out

    def _retract_itl(self, req: Request) -> None:
        """``req`` will not complete here: its ITL samples leave the histograms (engine
        spec 4.5: ``all_itls`` grows at completion). Its delivered tokens stay counted."""
        samples = self._itl_samples(req)
        if samples:
            self.stats.retract_samples(samples, req.itl_group)
        forget_itl_runs(req)

    # --- helpers -------------------------------------------------------------------
    def _preempt(self, victim: Request) -> None:
        """Recompute-style preemption: free the victim's blocks, requeue it at the front.

        With async scheduling, when the victim's last step wrote the KV of a token that
        the step before delivered, vLLM formed that step without knowing the token (its
        output was in flight), so it registers the block the token fills only when the
        output is processed, and not for a request preempted meanwhile: that block
        leaves the cache.
        """
        cacheable = -1
        step = self.stats.step_count
        if (
            self.async_scheduling
            and self.one_token_decodes
            and victim.itl_step == step  # delivered in the last step ...
            and 0 <= victim.itl_run < step - 1  # ... and in the one before
        ):
            cacheable = victim.num_computed_tokens - 1
        self.kv.free(victim, cacheable=cacheable)
        victim.state = RequestState.WAITING
        victim.num_computed_tokens = 0
        victim.prefill_target = victim.num_prompt_tokens + victim.delivered
        victim.num_preemptions += 1
        self.stats.preemption_count += 1
        self.waiting.appendleft(victim)

    def _drop_running(self, req: Request) -> None:
        self.kv.free(req)
        req.state = RequestState.DROPPED
        self.stats.count_drop(req)
        self._retract_itl(req)
