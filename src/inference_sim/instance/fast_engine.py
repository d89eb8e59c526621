"""The fast stepper: the same engine as :class:`Instance`, touching fewer requests per step.

The rules (chunk sizing, preemption, admission, token delivery, completion, step
accounting) are :class:`~inference_sim.instance.engine.Instance`'s own methods; this class
only decides which requests a step handles one by one.

A running request that is decoding advances by exactly one token in every step that
schedules it, so its progress need not be written every step. Decoders keep their
progress implicitly: ``computed(epoch) = num_computed_tokens + epoch - base_epoch``,
where ``epoch`` counts this instance's steps (the per-request record is a
:class:`_Track` in ``Request.engine_state``). A decoder only needs individual attention
in the step where it

* fills a KV block whose prefix-cache registration others could observe, or opens a
  block in a step where opening the decoders' blocks in bulk is not provably exact
  (:meth:`FastInstance._can_open_in_bulk`; otherwise the openers of a step, counted by
  residue of their progress mod the block size, get their blocks in one pool call),
* delivers its last token (completion), or
* resumes after skipping a step, so its ITL sample spans a gap.

Those steps are found in a heap keyed by ``(epoch, admission order)``. Each step walks
only the prefilling requests and the decoders due for attention, in the running batch's
order (which is admission order), and counts the other decoders in bulk between them
so the token budget is spent exactly as the plain stepper spends it. Steps in which
nothing needs attention and no outside event can intervene are fast-forwarded in a
tight loop. The results are identical to :class:`Instance` (property-tested).

The fast path assumes one token per decode step and no request leaving after its
prefill; an instance that breaks either is a subclass of the plain stepper instead:
:func:`~inference_sim.instance.make_instance` builds one for speculative decoding and
LoRA, and a disaggregated cluster builds :class:`~inference_sim.instance.pd.PDInstance`
(``config/pd.py``).
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left

from inference_sim.core.request import Request, RequestState
from inference_sim.core.time import NEVER
from inference_sim.instance.engine import Instance, prefill_chunk, record_itl_break


class _Track:
    """The fast stepper's bookkeeping of one running request (``Request.engine_state``)."""

    __slots__ = ("admit_seq", "base_epoch", "gap", "lazy_r", "run_from", "runs", "version")

    def __init__(self) -> None:
        self.admit_seq = -1  # position in the running batch order (admission order)
        self.base_epoch = -1  # >= 0: a decoder whose progress is implicit
        self.version = 0  # invalidates stale entries in the attention heap
        self.gap = False  # its next ITL sample does not start at the previous step
        self.lazy_r = -1  # >= 0: an implicit decoder whose blocks open in bulk (residue)
        # ITL samples counted in bulk: since epoch ``run_from`` (>= 0 while it lasts), and
        # the closed runs as (start, end) epoch pairs, flat. The values are the steps'
        # (``FastInstance._epoch_values``); kept in case the request never completes.
        self.run_from = -1
        self.runs: list[int] | None = None


class _Walk:
    """What the walk over a step's explicit requests found. One per instance, reset at
    the start of every step (no allocation per step: fewer garbage-collector passes)."""

    __slots__ = (
        "completing",
        "cut_rank",
        "explicit_decodes",
        "gap_decoders",
        "implicit_sched",
        "preempted",
        "prefill_tokens",
        "sched_decoders",
    )

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefill_tokens = 0
        self.implicit_sched = 0
        self.explicit_decodes = 0
        self.gap_decoders: list[Request] = []
        self.sched_decoders: list[Request] = []
        self.completing: list[Request] = []
        self.preempted = False
        self.cut_rank = -1


class FastInstance(Instance):
    """Drop-in replacement for :class:`Instance` whose step cost ignores idle decoders."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.epoch = 0
        # The common ITL sample of each epoch's decoders (step time + output overhead),
        # by epoch: what a request's bulk samples were, should it not complete.
        self._epoch_values = array("q")
        self._attention: list[tuple[int, int, int, Request]] = []
        self._running_seqs: list[int] = []  # admission order of self.running
        self._prefilling: list[Request] = []  # running requests still in prefill, in order
        self._num_decoders = 0
        # Implicit decoders per ITL group (Request.itl_group >= 0), so the samples
        # counted in bulk can be split by group; no entry is ever 0.
        self._group_decoders: dict[int, int] = {}
        self._decode_ctx = 0  # sum of decoders' computed tokens at the current epoch
        self._next_seq = 0
        bs = self.config.block_size
        self._bs = bs
        self._caching = self.kv.hashing  # blocks are registered (GPU hits or a CPU tier)
        self._defer = self.kv.defer_private_hashes  # no fill events (Request.private_from)
        # Bulk block opens (_can_open_in_bulk): implicit decoders without fill events get
        # no per-block attention; they are counted by residue (num_computed_tokens -
        # base_epoch) mod block size, so the decoders opening a block at epoch e are
        # those of residue -e, and their blocks are taken from the pool in one call.
        self._lazy_ok = self.kv.cpu is None
        self._open_counts = [0] * bs
        self._applied_epoch = -1  # the last epoch whose bulk opens were taken
        self._fill_seen = False  # a decoder with fill events was admitted: no bulk opens
        self._spare_tracks: list[_Track] = []  # records of completed requests, for reuse
        self._walk_state = _Walk()

    # --- decoder bookkeeping -------------------------------------------------------
    def _push_attention(self, req: Request, from_epoch: int) -> None:
        """Schedule the next epoch >= from_epoch at which ``req`` needs attention."""
        tr: _Track = req.engine_state  # type: ignore[assignment]
        c = req.num_computed_tokens + from_epoch - tr.base_epoch
        if tr.gap:
            d = 0
        else:
            bs = self._bs
            if self._lazy_ok and not (self._caching and req.private_from < 0):
                d = NEVER  # its blocks open in bulk (_can_open_in_bulk)
                r = (req.num_computed_tokens - tr.base_epoch) % bs
                tr.lazy_r = r
                self._open_counts[r] += 1
            else:
                d = (-c) % bs  # opens a new block
                if self._caching and (req.private_from < 0 or not self._defer):
                    fill = (bs - 1 - c) % bs  # fills a block (prefix-cache registration)
                    if fill < d:
                        d = fill
            done = req.num_prompt_tokens + req.num_output_tokens - 2 - c  # last token
            if done < d:
                d = done
        tr.version += 1
        heapq.heappush(self._attention, (from_epoch + d, tr.admit_seq, tr.version, req))

    def _unlazy(self, req: Request, tr: _Track) -> None:
        """Stop opening ``req``'s blocks in bulk: hand it the blocks opened for it so far."""
        r = tr.lazy_r
        if r < 0:
            return
        self._open_counts[r] -= 1
        tr.lazy_r = -1
        epoch = self.epoch
        # Positions with a block: the computed tokens, plus the one this step computes
        # when this epoch's bulk opens were already taken.
        covered = req.num_computed_tokens + epoch - tr.base_epoch
        if self._applied_epoch == epoch:
            covered += 1
        need = -(-covered // self._bs) - len(self.kv.tables[req.index])
        if need > 0:
            self.kv.claim_lazy(req, need)

    def _can_open_in_bulk(self, k: int, budget: int, n_due: int) -> bool:
        """Whether this step's ``k`` bulk opens can be taken before the walk, exactly.

        True when no allocation in the step can fail (so nobody is preempted), every
        decoder is scheduled (no budget cut), and no prefix-cache registration comes
        before a bulk-opening decoder in batch order (prefillers are the batch's tail
        and no decoder has fill events); then taking the blocks first differs from
        taking them one by one in batch order only in which decoder holds which block.
        """
        if self._fill_seen:
            return False
        pre = self._prefilling
        running = self.running
        if pre:
            first = bisect_left(self._running_seqs, pre[0].engine_state.admit_seq)  # type: ignore[attr-defined]
            if first + len(pre) != len(running) or first >= budget:
                return False
        elif len(running) > budget:
            return False
        bound = k + budget // self._bs + 2 * (len(pre) + n_due) + 2
        kv = self.kv
        return kv.pool.num_free - kv.held_over_free >= bound

    def _become_decoder(self, req: Request, computed: int, epoch: int) -> None:
        req.num_computed_tokens = computed
        tr: _Track = req.engine_state  # type: ignore[assignment]
        tr.base_epoch = epoch
        tr.run_from = epoch
        self._num_decoders += 1
        g = req.itl_group
        if g >= 0:
            self._group_decoders[g] = self._group_decoders.get(g, 0) + 1
        self._push_attention(req, epoch)

    def _leave_decoders(self, req: Request, tr: _Track, computed: int) -> None:
        """``req`` stops being an implicit decoder with ``computed`` tokens written out."""
        req.num_computed_tokens = computed
        tr.base_epoch = -1
        self._close_run(tr, self.epoch)
        tr.version += 1
        self._num_decoders -= 1
        self._decode_ctx -= computed
        g = req.itl_group
        if g >= 0:
            groups = self._group_decoders
            n = groups[g] - 1
            if n:
                groups[g] = n
            else:
                del groups[g]

    @staticmethod
    def _close_run(tr: _Track, end: int) -> None:
        """The request's bulk ITL samples stop before epoch ``end``: keep the run."""
        start = tr.run_from
        if start >= 0:
            tr.run_from = -1
            if end > start:
                if tr.runs is None:
                    tr.runs = [start, end]
                else:
                    tr.runs += (start, end)

    def _itl_samples(self, req: Request) -> list[int]:
        """The samples ``req`` got one by one (``Instance._note_break`` records) and in
        bulk (its runs of epochs, at each epoch's common value)."""
        pending = req.itl_pending
        out = list(pending[0::3]) if pending else []
        tr = req.engine_state
        if isinstance(tr, _Track) and tr.runs:
            values = self._epoch_values
            runs = tr.runs
            for i in range(0, len(runs), 2):
                out.extend(values[e] for e in range(runs[i], runs[i + 1]))
            tr.runs = None
        return out

    def _materialize(self, req: Request, now: int) -> None:
        """Write an implicit decoder's progress out at the current epoch."""
        tr: _Track = req.engine_state  # type: ignore[assignment]
        self._unlazy(req, tr)
        c = req.num_computed_tokens + self.epoch - tr.base_epoch
        req.delivered = c - req.num_prompt_tokens + 1
        if not tr.gap:
            req.last_token_time = now
            # As the plain stepper has them: it delivered in the last step, in a run of
            # consecutive deliveries since step run_from (epoch e is step e + 1).
            req.itl_step = self.stats.step_count
            req.itl_run = tr.run_from
        tr.gap = False
        self._leave_decoders(req, tr, c)

    def _pop_running_tail(self, now: int) -> Request:
        """Pop the newest running request, writing out its state."""
        victim = self.running.pop()
        self._running_seqs.pop()
        if victim.engine_state.base_epoch >= 0:  # type: ignore[attr-defined]
            self._materialize(victim, now)
        else:
            self._prefilling.remove(victim)
        return victim

    def _on_admitted(self, req: Request) -> None:
        """New batch members are prefillers at the end of the admission order."""
        tr = req.engine_state
        if tr is None:
            spare = self._spare_tracks
            tr = req.engine_state = spare.pop() if spare else _Track()
            tr.base_epoch = -1
            tr.gap = False
            tr.lazy_r = -1
            tr.run_from = -1
            tr.runs = None
        tr.admit_seq = self._next_seq  # type: ignore[attr-defined]
        self._next_seq += 1
        if self._caching and req.private_from < 0:
            self._fill_seen = True
        self._running_seqs.append(self._next_seq - 1)
        self._prefilling.append(req)

    def finalize(self) -> None:
        """Write out every implicit decoder (end of run), so records are complete, then
        take back the ITL samples of what did not complete."""
        for req in self.running:
            if req.engine_state.base_epoch >= 0:  # type: ignore[attr-defined]
                self._materialize(req, self.busy_until)
        super().finalize()

    # --- the step ------------------------------------------------------------------
    def step(self, now: int, t_limit: int = NEVER, horizon: int = NEVER) -> int | None:
        self.clock = now
        self.stats.step_count += 1
        batch = self._batch
        batch.clear()
        if self.order_wait_queue is not None and self.waiting:
            self.order_wait_queue(self.waiting, now)
        budget = self.config.max_num_batched_tokens
        explicit = self._explicit_requests(budget)
        walk = self._walk_state
        walk.reset()
        budget = self._walk(explicit, budget, walk, now)
        skipped_ctx = 0
        skipped_grouped: list[Request] = []
        if walk.cut_rank >= 0:
            skipped_ctx, skipped_grouped = self._skip_cut(walk.cut_rank, now)
        if not walk.preempted:
            budget, walk.prefill_tokens = self._admit_waiting(now, budget, walk.prefill_tokens)
        if self.kv.held_over:
            self.kv.end_held_over()  # the batch is formed: vLLM processes the last output
        decodes = walk.implicit_sched + walk.explicit_decodes
        batch.prefill_tokens = walk.prefill_tokens
        batch.decode_tokens = decodes
        batch.decode_context_sum = self._decode_ctx - skipped_ctx
        launched = decodes or walk.prefill_tokens
        end = self.execute(batch, now) if launched else self._launch_nothing(now)
        self._apply_explicit(walk, decodes, end, end - now, skipped_grouped)
        if not self.running and not self.waiting:
            self._go_idle()
            return None
        return self._fast_forward(end, t_limit, horizon)

    def _explicit_requests(self, budget: int) -> list[Request]:
        """Prefillers and the decoders due for attention this step, in batch order."""
        epoch = self.epoch
        heap = self._attention
        due: list[Request] = []
        while heap and heap[0][0] <= epoch:
            _e, _s, version, req = heapq.heappop(heap)
            tr = req.engine_state
            if tr is not None and version == tr.version:  # type: ignore[attr-defined]
                if tr.lazy_r >= 0:  # type: ignore[attr-defined]
                    self._unlazy(req, tr)  # type: ignore[arg-type]
                due.append(req)
        # Decoders opening a block now without individual attention: in bulk when that
        # is exact, else they join the walk as explicit decoders.
        target = -epoch % self._bs
        k = self._open_counts[target]
        if k:
            if self._can_open_in_bulk(k, budget, len(due)):
                self.kv.reserve_lazy(k)
                self._applied_epoch = epoch
            else:
                for req in self.running:
                    tr = req.engine_state
                    if tr.lazy_r == target:  # type: ignore[attr-defined]
                        self._unlazy(req, tr)  # type: ignore[arg-type]
                        due.append(req)
        if not due:
            return list(self._prefilling)
        explicit = self._prefilling + due if self._prefilling else due
        if len(explicit) > 1:
            explicit.sort(key=_admit_order)
        return explicit

    def _walk(self, explicit: list[Request], budget: int, walk: _Walk, now: int) -> int:
        """Part A of :meth:`Instance.schedule` over the explicit requests only.

        The implicit decoders between two explicit ones (by rank in the running batch)
        each take one token of the budget in bulk. Returns the budget left.
        """
        seqs = self._running_seqs
        running = self.running
        kv = self.kv
        epoch = self.epoch
        threshold = self.config.long_prefill_token_threshold
        sched_reqs = self._batch.requests
        sched_new = self._batch.num_new
        last_rank = -1
        for req in explicit:
            if req.state is not RequestState.RUNNING:
                continue  # preempted earlier in this step
            tr: _Track = req.engine_state  # type: ignore[assignment]
            rank = bisect_left(seqs, tr.admit_seq)
            between = rank - last_rank - 1
            if between > 0:
                if between >= budget:
                    walk.implicit_sched += budget
                    walk.cut_rank = last_rank + 1 + budget
                    return 0
                walk.implicit_sched += between
                budget -= between
            if budget <= 0:
                walk.cut_rank = rank
                return budget
            is_decoder = tr.base_epoch >= 0
            if is_decoder:
                c = req.num_computed_tokens + epoch - tr.base_epoch
                n = 1
                req.num_computed_tokens = c
                tr.base_epoch = epoch
                fits = kv.decode_slot(req, c)
            else:
                c = req.num_computed_tokens
                n = prefill_chunk(req.prefill_target - c, threshold, budget)
                fits = kv.allocate_slots(req, n)
            if not fits:
                scheduled, evicted = self._make_room(req, n, now)
                walk.preempted = walk.preempted or evicted
                if not scheduled:
                    return budget  # nothing after it remains
            sched_reqs.append(req)
            sched_new.append(n)
            budget -= n
            last_rank = rank
            if is_decoder:
                walk.explicit_decodes += 1
                walk.sched_decoders.append(req)
                if tr.gap:
                    walk.gap_decoders.append(req)
                if c == req.num_prompt_tokens + req.num_output_tokens - 2:
                    walk.completing.append(req)
            else:
                walk.prefill_tokens += n
        # Decoders after the last explicit request.
        tail = len(running) - last_rank - 1
        if tail > 0:
            if tail > budget:
                walk.implicit_sched += budget
                walk.cut_rank = last_rank + 1 + budget
                return 0
            walk.implicit_sched += tail
            budget -= tail
        return budget

    def _skip_cut(self, cut_rank: int, now: int) -> tuple[int, list[Request]]:
        """Decoders past the budget cut do not advance this step: their next sample spans
        the gap. Returns their context (to leave out of the step's price) and those with
        an ITL group."""
        epoch = self.epoch
        skipped_ctx = 0
        skipped_grouped: list[Request] = []
        for req in self.running[cut_rank:]:
            tr: _Track = req.engine_state  # type: ignore[assignment]
            if tr.base_epoch >= 0:
                if tr.lazy_r >= 0:
                    self._unlazy(req, tr)
                if req.itl_group >= 0:
                    skipped_grouped.append(req)
                c = req.num_computed_tokens + epoch - tr.base_epoch
                skipped_ctx += c
                req.num_computed_tokens = c
                tr.base_epoch = epoch + 1
                self._close_run(tr, epoch)  # no sample this step; the next spans a gap
                if not tr.gap:
                    req.last_token_time = now
                    tr.gap = True
                self._push_attention(req, epoch + 1)
        return skipped_ctx, skipped_grouped

    def _apply_explicit(
        self,
        walk: _Walk,
        decodes: int,
        end: int,
        step_time: int,
        skipped_grouped: list[Request],
    ) -> None:
        """:meth:`Instance.apply` for the requests the step touched one by one; implicit
        decoders advance by the epoch.

        ITL samples of the step's decoders come first: one value for all but those with a
        gap (counted in bulk), then one sample each for those with a gap.
        """
        stats = self.stats
        hist = stats.itl_histogram
        otp = self._otp
        gap_decoders = walk.gap_decoders
        common = decodes - len(gap_decoders)
        v = step_time + otp
        self._epoch_values.append(v)  # the bulk sample of this epoch
        if common:
            hist[v] = hist.get(v, 0) + common
            if self._group_decoders:
                # Per group: its decoders, less those skipped and those with a gap.
                counts = dict(self._group_decoders)
                for req in skipped_grouped:
                    counts[req.itl_group] -= 1
                for req in gap_decoders:
                    if req.itl_group >= 0:
                        counts[req.itl_group] -= 1
                for g, n in counts.items():
                    if n:
                        stats.add_group_samples(g, v, n)
        for req in gap_decoders:
            sample = end - req.last_token_time + otp
            hist[sample] = hist.get(sample, 0) + 1
            if req.itl_group >= 0:
                stats.add_group_samples(req.itl_group, sample, 1)
            record_itl_break(req, sample, -1, -1)  # its own sample; bulk runs are epochs
            tr = req.engine_state
            tr.gap = False  # type: ignore[attr-defined]
            tr.run_from = self.epoch + 1  # type: ignore[attr-defined]  # bulk from the next step
        completing = walk.completing
        new_decoders: list[tuple[Request, int]] = []
        batch = self._batch
        for req, n in zip(batch.requests, batch.num_new, strict=True):
            if req.engine_state.base_epoch >= 0:  # type: ignore[attr-defined]
                continue  # decoders were handled in bulk
            computed = req.num_computed_tokens + n
            req.num_computed_tokens = computed
            if computed != req.num_prompt_tokens + req.delivered:
                continue
            req.prefill_target = computed
            self._prefilling.remove(req)
            if self._deliver(req, end):
                completing.append(req)
            else:
                new_decoders.append((req, computed))
        stats.total_output_tokens += decodes
        # Every scheduled decoder advanced by one token.
        self._decode_ctx += decodes
        self.epoch = epoch = self.epoch + 1
        for req, computed in new_decoders:
            self._become_decoder(req, computed, epoch)
            self._decode_ctx += computed
        for req in walk.sched_decoders:
            if req.num_computed_tokens + epoch - req.engine_state.base_epoch < (  # type: ignore[attr-defined]
                req.num_prompt_tokens + req.num_output_tokens - 1
            ):
                self._push_attention(req, epoch)
        if completing:
            if len(completing) > 1:
                completing.sort(key=_admit_order)
            for req in completing:
                self._complete(req, end)

    def _complete(self, req: Request, end: int) -> None:
        """A request of this step delivered its last token: write it out and finish it."""
        tr: _Track = req.engine_state  # type: ignore[assignment]
        if tr.base_epoch >= 0:
            req.itl_run = tr.run_from  # its run of deliveries, as the plain stepper has it
        tr.run_from = -1  # completed: its bulk ITL samples stay, no run to keep
        if tr.base_epoch >= 0:
            self._leave_decoders(req, tr, req.num_computed_tokens + self.epoch - tr.base_epoch)
        otp = self._otp
        req.delivered = req.num_output_tokens
        req.last_token_time = end
        # The sum of its ITL samples telescopes (every sample is a gap plus the overhead).
        req.itl_sum = (
            end - req.first_token_time + req.num_output_tokens * otp if req.num_output_tokens else 0
        )
        idx = bisect_left(self._running_seqs, tr.admit_seq)
        self._finish(req, end, idx)  # (those before it in the batch that finished are gone)
        req.engine_state = None
        self._spare_tracks.append(tr)  # its version keeps counting: stale heap entries stay stale
        del self._running_seqs[idx]
        del self.running[idx]

    def _fast_forward(self, start: int, t_limit: int, horizon: int) -> int:
        """Run pure decode steps (nothing due, nothing to admit) in a tight loop.

        Returns the start time of the next step that needs the full treatment.
        """
        if self._prefilling or (self.order_wait_queue is not None and self.waiting):
            return start
        if self.kv.stores_refused:  # a CPU-tier store is retried at every step
            return start
        if self.waiting and len(self.running) < self.config.max_num_seqs:
            return start
        decodes = self._num_decoders
        if decodes == 0 or decodes > self.config.max_num_batched_tokens:
            return start
        heap = self._attention
        stop_epoch = heap[0][0] if heap else NEVER
        epoch = self.epoch
        if stop_epoch <= epoch:
            return start
        stats = self.stats
        hist = stats.itl_histogram
        otp = self._otp
        kv = self.kv
        pool = kv.pool
        used = kv.num_used
        peak = stats.peak_kv_blocks
        counts = self._open_counts
        bs = self._bs
        batch = self._batch
        batch.clear()
        batch.decode_tokens = decodes
        batch.shared_context = pool.shared_refs * bs  # no prefix hits in bulk steps
        latency = self.latency
        ctx = self._decode_ctx
        t = start
        steps = 0
        block_time = 0
        # With ITL groups, the step samples are split by group after the loop.
        values: list[int] | None = [] if self._group_decoders else None
        epoch_values = self._epoch_values
        # Blocks the first step's batch must leave alone (held over, async scheduling).
        reserved = kv.held_over_free
        while epoch < stop_epoch and t < t_limit and t <= horizon:
            k = counts[-epoch % bs]
            if k:  # decoders opening a block in this step, in bulk (see _can_open_in_bulk)
                if pool.num_free - reserved < k:
                    break  # the full step decides who gets a block and who is preempted
                kv.reserve_lazy(k)
                self._applied_epoch = epoch
                used += k
                if used > peak:
                    peak = used
            batch.decode_context_sum = ctx
            step_time = latency.step_time(batch)
            v = step_time + otp
            hist[v] = hist.get(v, 0) + decodes
            epoch_values.append(v)
            if values is not None:
                values.append(v)
            block_time += used * step_time
            ctx += decodes
            epoch += 1
            steps += 1
            t += step_time
            reserved = 0
        if steps and kv.held_over:
            kv.end_held_over()  # the first step's batch was formed
        if steps:
            self.clock = t - step_time
            self.busy_until = t
            stats.step_count += steps
            stats.total_output_tokens += steps * decodes
            stats.kv_block_time += block_time
            stats.peak_kv_blocks = peak
            self._decode_ctx = ctx
            self.epoch = epoch
        if values:
            for g, n in self._group_decoders.items():
                for v in values:
                    stats.add_group_samples(g, v, n)
        return t


def _admit_order(req: Request) -> int:
    return req.engine_state.admit_seq  # type: ignore[attr-defined,no-any-return]
