"""One vLLM-style serving instance: wait queue, continuous batching, step execution.

Each call to :meth:`Instance.step` is one engine iteration, following vLLM v1's
scheduler:

1. Running requests are served first, in order, each taking the tokens it still
   needs (a prefill chunk or one decode token) from the step's token budget. When
   the KV cache cannot hold them, the newest running request is preempted (its
   blocks freed, recompute later) until room appears.
2. If nothing was preempted, waiting requests are admitted from the queue head
   while the running cap and the budget allow, reusing cached prompt blocks.
   The first request that does not fit stops admission (head-of-line blocking).
3. The latency model prices the batch; every scheduled request advances; a request
   whose computed tokens reach its known sequence length delivers one token.

Only requests scheduled in a step advance in it. Per-token times: a token is
delivered at the end of its step plus the model's per-token overhead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from inference_sim.engine.events import NEVER
from inference_sim.instance.config import EngineConfig
from inference_sim.instance.request import Request, RequestState
from inference_sim.kv.manager import KVCacheManager
from inference_sim.latency.base import LatencyModel, StepBatch
from inference_sim.metrics.request_log import RequestLog

WaitQueueOrder = Callable[[deque[Request], int], None]


class InstanceStats:
    """Counters and distributions one instance accumulates over a run."""

    __slots__ = (
        "cached_prompt_tokens",
        "completed",
        "dropped_unservable",
        "itl_group_histograms",
        "itl_histogram",
        "kv_allocation_failures",
        "kv_block_time",
        "peak_kv_blocks",
        "preemption_count",
        "prefix_lookup_tokens",
        "step_count",
        "total_input_tokens",
        "total_output_tokens",
    )

    def __init__(self) -> None:
        self.completed = 0
        self.total_input_tokens = 0
        self.total_output_tokens = 0
        self.preemption_count = 0
        self.dropped_unservable = 0
        self.kv_allocation_failures = 0
        self.step_count = 0
        self.peak_kv_blocks = 0
        self.kv_block_time = 0.0
        # ITL samples as value -> count: exact percentiles without one float per token.
        self.itl_histogram: dict[int, int] = {}
        # The same, split by Request.itl_group (requests with a group >= 0 only):
        # group -> value -> count. Per-stage ITL percentiles (metrics/summary.py).
        self.itl_group_histograms: dict[int, dict[int, int]] = {}
        # Prefix-cache hit rate: cached prompt tokens / prompt tokens at first admission.
        self.cached_prompt_tokens = 0
        self.prefix_lookup_tokens = 0

    def add_group_samples(self, group: int, value: int, count: int) -> None:
        """Count ``count`` ITL samples of ``value`` ticks for ITL group ``group``."""
        hist = self.itl_group_histograms.get(group)
        if hist is None:
            hist = self.itl_group_histograms[group] = {}
        hist[value] = hist.get(value, 0) + count


class Instance:
    """A single serving engine driven by the simulator's event loop."""

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
            self.stats.dropped_unservable += 1
            return False
        req.state = RequestState.WAITING
        self.waiting.append(req)
        self.stats.total_input_tokens += req.num_prompt_tokens
        if self.step_pending:
            return False
        self.step_pending = True
        return True

    def step(self, now: int, t_limit: int = NEVER, horizon: int = NEVER) -> int | None:
        """Run one engine iteration starting at ``now``; return the next step's time or None.

        ``t_limit`` and ``horizon`` bound how far a stepper may run ahead on its own (the
        next outside event, the end of simulated time); this plain stepper runs one step.
        """
        self.clock = now
        stats = self.stats
        stats.step_count += 1
        cfg = self.config
        kv = self.kv
        waiting = self.waiting
        running = self.running
        batch = self._batch
        batch.clear()
        budget = cfg.max_num_batched_tokens
        threshold = cfg.long_prefill_token_threshold

        if self.order_wait_queue is not None and waiting:
            self.order_wait_queue(waiting, now)

        # Part A: running requests, in order, preempting from the tail on KV pressure.
        preempted = False
        bs = cfg.block_size
        sched_reqs = batch.requests
        sched_new = batch.num_new
        prefill_tokens = 0
        decode_tokens = 0
        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            computed = req.num_computed_tokens
            if computed >= req.prefill_target:
                # Decode: one token. Its KV slot exists unless it opens a new block,
                # and the KV manager only matters when a block opens or fills.
                if computed % bs and (computed + 1) % bs:
                    sched_reqs.append(req)
                    sched_new.append(1)
                    decode_tokens += 1
                    budget -= 1
                    i += 1
                    continue
                is_prefill = False
                n = 1
            else:
                is_prefill = True
                n = req.prefill_target - computed
                if 0 < threshold < n:
                    n = threshold
                if n > budget:
                    n = budget
            scheduled = True
            while not kv.allocate_slots(req, n):
                stats.kv_allocation_failures += 1
                if len(running) == 1:
                    # Alone and still unable to grow: it can never finish here.
                    running.pop()
                    self._drop_running(req)
                    scheduled = False
                    break
                victim = running.pop()
                self._preempt(victim)
                preempted = True
                if victim is req:
                    scheduled = False
                    break
            if not scheduled:
                break
            sched_reqs.append(req)
            sched_new.append(n)
            if is_prefill:
                prefill_tokens += n
            else:
                decode_tokens += n
            budget -= n
            i += 1
        batch.prefill_tokens = prefill_tokens
        batch.decode_tokens = decode_tokens
        ctx = 0
        for req in sched_reqs:
            if req.num_computed_tokens >= req.prefill_target:
                ctx += req.num_computed_tokens

        # Part B: admit waiting requests unless this step preempted.
        if not preempted:
            budget, batch.prefill_tokens = self._admit_waiting(now, budget, batch.prefill_tokens)

        # Execute: price the batch, then advance every scheduled request.
        batch.decode_context_sum = ctx
        step_time = self.latency.step_time(batch) + kv.take_transfer_time(now)
        end = now + step_time
        self.busy_until = end
        used = kv.num_used
        if used > stats.peak_kv_blocks:
            stats.peak_kv_blocks = used
        stats.kv_block_time += used * step_time
        finished = False
        otp = self._otp
        hist = stats.itl_histogram
        for req, n in zip(sched_reqs, sched_new, strict=True):
            computed = req.num_computed_tokens + n
            req.num_computed_tokens = computed
            if computed != req.num_prompt_tokens + req.delivered:
                continue  # a prefill chunk that does not finish the prefill
            req.prefill_target = computed  # from now on it decodes
            if req.num_output_tokens == 0:
                req.first_token_time = end + otp
                req.last_token_time = end
                finished = True
                continue
            if req.delivered == 0:
                req.first_token_time = end + otp
            else:
                sample = end - req.last_token_time + otp
                req.itl_sum += sample
                hist[sample] = hist.get(sample, 0) + 1
                if req.itl_group >= 0:
                    stats.add_group_samples(req.itl_group, sample, 1)
            req.last_token_time = end
            req.delivered += 1
            stats.total_output_tokens += 1
            if req.delivered >= req.num_output_tokens:
                finished = True

        if finished:
            keep = []
            for req in running:
                if req.delivered >= req.num_output_tokens and req.last_token_time == end:
                    req.state = RequestState.FINISHED
                    req.finish_time = end
                    kv.free(req)
                    stats.completed += 1
                    if self.log is not None:
                        self.log.add(req)
                else:
                    keep.append(req)
            self.running = running = keep

        if running or waiting:
            return end
        self.step_pending = False
        return None

    def _admit_waiting(self, now: int, budget: int, prefill_tokens: int) -> tuple[int, int]:
        """Admit requests from the head of the wait queue into this step's batch.

        Stops at the running cap, an exhausted budget, or the first request whose KV
        does not fit (head-of-line blocking). A request that cannot fit even with
        nothing else running is dropped as unservable. Returns the budget left and the
        updated prefill token count.
        """
        cfg = self.config
        kv = self.kv
        waiting = self.waiting
        running = self.running
        stats = self.stats
        batch = self._batch
        threshold = cfg.long_prefill_token_threshold
        block_size = cfg.block_size
        max_seqs = cfg.max_num_seqs
        while waiting and len(running) < max_seqs and budget > 0:
            req = waiting[0]
            cached = kv.find_cached_prefix(req)
            cached_tokens = len(cached) * block_size
            n = req.prefill_target - cached_tokens
            if 0 < threshold < n:
                n = threshold
            if n > budget:
                n = budget
            if not kv.allocate_slots(req, n, cached):
                if not running:
                    # Nothing else holds blocks, so it can never fit: unservable.
                    waiting.popleft()
                    req.state = RequestState.DROPPED
                    stats.dropped_unservable += 1
                    continue
                stats.kv_allocation_failures += 1
                break
            waiting.popleft()
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
        return budget, prefill_tokens

    def _on_admitted(self, req: Request) -> None:
        """Hook for steppers that track the batch order (nothing to do here)."""

    def finalize(self) -> None:
        """Bring per-request state up to date at the end of a run (nothing to do here)."""

    # --- helpers -------------------------------------------------------------------
    def _preempt(self, victim: Request) -> None:
        """Recompute-style preemption: free the victim's blocks, requeue it at the front."""
        self.kv.free(victim)
        victim.state = RequestState.WAITING
        victim.num_computed_tokens = 0
        victim.prefill_target = victim.num_prompt_tokens + victim.delivered
        victim.num_preemptions += 1
        self.stats.preemption_count += 1
        self.waiting.appendleft(victim)

    def _drop_running(self, req: Request) -> None:
        self.kv.free(req)
        req.state = RequestState.DROPPED
        self.stats.dropped_unservable += 1
