"""The fast stepper: the same engine as :class:`Instance`, without per-decoder work per step.

A running request that is decoding advances by exactly one token in every step that
schedules it, so its progress need not be written every step. Decoders keep their
progress implicitly: ``computed(epoch) = num_computed_tokens + epoch - base_epoch``,
where ``epoch`` counts this instance's steps. A decoder only needs individual
attention in the step where it

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
"""

from __future__ import annotations

import heapq
from bisect import bisect_left

from inference_sim.engine.events import NEVER
from inference_sim.instance.engine import Instance
from inference_sim.instance.request import Request, RequestState


class FastInstance(Instance):
    """Drop-in replacement for :class:`Instance` whose step cost ignores idle decoders."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.epoch = 0
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
        self._caching = self.config.enable_prefix_caching
        self._defer = self.kv.defer_private_hashes  # no fill events (Request.private_from)
        # Bulk block opens (_can_open_in_bulk): implicit decoders without fill events get
        # no per-block attention; they are counted by residue (num_computed_tokens -
        # base_epoch) mod block size, so the decoders opening a block at epoch e are
        # those of residue -e, and their blocks are taken from the pool in one call.
        self._lazy_ok = self.kv.cpu is None
        self._open_counts = [0] * bs
        self._applied_epoch = -1  # the last epoch whose bulk opens were taken
        self._fill_seen = False  # a decoder with fill events was admitted: no bulk opens

    # --- decoder bookkeeping -------------------------------------------------------
    def _computed(self, req: Request) -> int:
        return req.num_computed_tokens + self.epoch - req.base_epoch

    def _push_attention(self, req: Request, from_epoch: int) -> None:
        """Schedule the next epoch >= from_epoch at which ``req`` needs attention."""
        c = req.num_computed_tokens + from_epoch - req.base_epoch
        if req.gap:
            d = 0
        else:
            bs = self._bs
            if self._lazy_ok and not (self._caching and req.private_from < 0):
                d = NEVER  # its blocks open in bulk (_can_open_in_bulk)
                r = (req.num_computed_tokens - req.base_epoch) % bs
                req.lazy_r = r
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
        req.version += 1
        heapq.heappush(self._attention, (from_epoch + d, req.admit_seq, req.version, req))

    def _unlazy(self, req: Request) -> None:
        """Stop opening ``req``'s blocks in bulk: hand it the blocks opened for it so far."""
        r = req.lazy_r
        if r < 0:
            return
        self._open_counts[r] -= 1
        req.lazy_r = -1
        epoch = self.epoch
        # Positions with a block: the computed tokens, plus the one this step computes
        # when this epoch's bulk opens were already taken.
        covered = req.num_computed_tokens + epoch - req.base_epoch
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
            first = bisect_left(self._running_seqs, pre[0].admit_seq)
            if first + len(pre) != len(running) or first >= budget:
                return False
        elif len(running) > budget:
            return False
        bound = k + budget // self._bs + 2 * (len(pre) + n_due) + 2
        return self.kv.pool.num_free >= bound

    def _become_decoder(self, req: Request, computed: int, epoch: int) -> None:
        req.num_computed_tokens = computed
        req.base_epoch = epoch
        self._num_decoders += 1
        g = req.itl_group
        if g >= 0:
            self._group_decoders[g] = self._group_decoders.get(g, 0) + 1
        self._push_attention(req, epoch)

    def _leave_group(self, req: Request) -> None:
        """A decoder of ITL group ``req.itl_group`` (>= 0) stops being implicit."""
        groups = self._group_decoders
        g = req.itl_group
        n = groups[g] - 1
        if n:
            groups[g] = n
        else:
            del groups[g]

    def _materialize(self, req: Request, now: int) -> int:
        """Write an implicit decoder's progress out at the current epoch; returns computed."""
        self._unlazy(req)
        c = self._computed(req)
        req.num_computed_tokens = c
        req.delivered = c - req.num_prompt_tokens + 1
        if not req.gap:
            req.last_token_time = now
        req.base_epoch = -1
        req.gap = False
        req.version += 1
        self._num_decoders -= 1
        if req.itl_group >= 0:
            self._leave_group(req)
        self._decode_ctx -= c
        return c

    def _leave_running_tail(self, now: int) -> Request:
        """Pop the newest running request, writing out its state."""
        victim = self.running.pop()
        self._running_seqs.pop()
        if victim.base_epoch >= 0:
            self._materialize(victim, now)
        else:
            self._prefilling.remove(victim)
        return victim

    def _on_admitted(self, req: Request) -> None:
        """New batch members are prefillers at the end of the admission order."""
        req.admit_seq = self._next_seq
        self._next_seq += 1
        if self._caching and req.private_from < 0:
            self._fill_seen = True
        self._running_seqs.append(req.admit_seq)
        self._prefilling.append(req)

    def finalize(self) -> None:
        """Write out every implicit decoder (end of run), so records are complete."""
        for req in self.running:
            if req.base_epoch >= 0:
                self._materialize(req, self.busy_until)

    # --- the step ------------------------------------------------------------------
    def step(self, now: int, t_limit: int = NEVER, horizon: int = NEVER) -> int | None:
        if self.config.exact_steps:
            return super().step(now)
        self.clock = now
        stats = self.stats
        stats.step_count += 1
        cfg = self.config
        kv = self.kv
        waiting = self.waiting
        running = self.running
        seqs = self._running_seqs
        batch = self._batch
        batch.clear()
        budget = cfg.max_num_batched_tokens
        threshold = cfg.long_prefill_token_threshold
        epoch = self.epoch
        if self.order_wait_queue is not None and waiting:
            self.order_wait_queue(waiting, now)

        # Who needs individual work this step: prefillers and decoders due for attention.
        heap = self._attention
        due: list[Request] = []
        while heap and heap[0][0] <= epoch:
            _e, _s, version, req = heapq.heappop(heap)
            if version == req.version:
                if req.lazy_r >= 0:
                    self._unlazy(req)
                due.append(req)
        # Decoders opening a block now without individual attention: in bulk when that
        # is exact, else they join the walk as explicit decoders.
        target = -epoch % self._bs
        k = self._open_counts[target]
        if k:
            if self._can_open_in_bulk(k, budget, len(due)):
                kv.reserve_lazy(k)
                self._applied_epoch = epoch
            else:
                for req in running:
                    if req.lazy_r == target:
                        self._unlazy(req)
                        due.append(req)
        if due:
            explicit = self._prefilling + due if self._prefilling else due
            if len(explicit) > 1:
                explicit.sort(key=_admit_order)
        else:
            explicit = list(self._prefilling)

        sched_reqs = batch.requests
        sched_new = batch.num_new
        prefill_tokens = 0
        implicit_sched = 0
        explicit_decodes = 0
        gap_decoders: list[Request] = []
        sched_decoders: list[Request] = []
        completing: list[Request] = []
        preempted = False
        cut_rank = -1
        last_rank = -1
        walked = 0
        for req in explicit:
            if req.state is not RequestState.RUNNING:
                continue  # preempted earlier in this step
            rank = bisect_left(seqs, req.admit_seq)
            between = rank - last_rank - 1
            if between > 0:
                if between >= budget:
                    implicit_sched += budget
                    cut_rank = last_rank + 1 + budget
                    budget = 0
                    break
                implicit_sched += between
                budget -= between
            if budget <= 0:
                cut_rank = rank
                break
            walked += 1
            is_decoder = req.base_epoch >= 0
            if is_decoder:
                c = req.num_computed_tokens + epoch - req.base_epoch
                n = 1
            else:
                c = req.num_computed_tokens
                n = req.prefill_target - c
                if 0 < threshold < n:
                    n = threshold
                if n > budget:
                    n = budget
            scheduled = True
            if is_decoder:
                req.num_computed_tokens = c
                req.base_epoch = epoch
                fits = kv.decode_slot(req, c)
            else:
                fits = kv.allocate_slots(req, n)
            if not fits:
                while not kv.allocate_slots(req, n):
                    stats.kv_allocation_failures += 1
                    if len(running) == 1:
                        victim = self._leave_running_tail(now)
                        self._drop_running(victim)
                        scheduled = False
                        break
                    victim = self._leave_running_tail(now)
                    self._preempt(victim)
                    preempted = True
                    if victim is req:
                        scheduled = False
                        break
            if not scheduled:
                last_rank = len(running)  # nothing after it remains
                break
            sched_reqs.append(req)
            sched_new.append(n)
            budget -= n
            last_rank = rank
            if is_decoder:
                explicit_decodes += 1
                sched_decoders.append(req)
                if req.gap:
                    gap_decoders.append(req)
                if c == req.num_prompt_tokens + req.num_output_tokens - 2:
                    completing.append(req)
            else:
                prefill_tokens += n
        else:
            # Decoders after the last explicit request.
            tail = len(running) - last_rank - 1
            if tail > 0:
                if tail > budget:
                    implicit_sched += budget
                    cut_rank = last_rank + 1 + budget
                    budget = 0
                else:
                    implicit_sched += tail
                    budget -= tail

        # Members past the budget cut do not advance this step.
        skipped_ctx = 0
        skipped_grouped: list[Request] = []
        if cut_rank >= 0:
            for req in running[cut_rank:]:
                if req.base_epoch >= 0:
                    if req.lazy_r >= 0:
                        self._unlazy(req)
                    if req.itl_group >= 0:
                        skipped_grouped.append(req)
                    c = req.num_computed_tokens + epoch - req.base_epoch
                    skipped_ctx += c
                    req.num_computed_tokens = c
                    req.base_epoch = epoch + 1
                    if not req.gap:
                        req.last_token_time = now
                        req.gap = True
                    self._push_attention(req, epoch + 1)
        # Part B: admit waiting requests unless this step preempted.
        if not preempted:
            budget, prefill_tokens = self._admit_waiting(now, budget, prefill_tokens)

        # Execute.
        decodes = implicit_sched + explicit_decodes
        batch.prefill_tokens = prefill_tokens
        batch.decode_tokens = decodes
        batch.decode_context_sum = self._decode_ctx - skipped_ctx
        step_time = self.latency.step_time(batch) + kv.take_transfer_time(now)
        end = now + step_time
        self.busy_until = end
        used = kv.num_used
        if used > stats.peak_kv_blocks:
            stats.peak_kv_blocks = used
        stats.kv_block_time += used * step_time
        otp = self._otp
        hist = stats.itl_histogram
        common = decodes - len(gap_decoders)
        if common:
            v = step_time + otp
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
            req.gap = False
        delivered_tokens = decodes
        new_decoders: list[tuple[Request, int]] = []
        for req, n in zip(sched_reqs, sched_new, strict=True):
            if req.base_epoch >= 0:
                continue  # decoders were handled above
            computed = req.num_computed_tokens + n
            req.num_computed_tokens = computed
            if computed != req.num_prompt_tokens + req.delivered:
                continue
            req.prefill_target = computed
            self._prefilling.remove(req)
            if req.num_output_tokens == 0:
                req.first_token_time = end + otp
                req.last_token_time = end
                completing.append(req)
                continue
            if req.delivered == 0:
                req.first_token_time = end + otp
            else:
                sample = end - req.last_token_time + otp
                hist[sample] = hist.get(sample, 0) + 1
                if req.itl_group >= 0:
                    stats.add_group_samples(req.itl_group, sample, 1)
            req.last_token_time = end
            req.delivered += 1
            delivered_tokens += 1
            if req.delivered >= req.num_output_tokens:
                completing.append(req)
            else:
                new_decoders.append((req, computed))
        stats.total_output_tokens += delivered_tokens
        # Every scheduled decoder advanced by one token.
        self._decode_ctx += decodes
        self.epoch = epoch = epoch + 1
        for req, computed in new_decoders:
            self._become_decoder(req, computed, epoch)
            self._decode_ctx += computed
        for req in sched_decoders:
            if req.num_computed_tokens + epoch - req.base_epoch < (
                req.num_prompt_tokens + req.num_output_tokens - 1
            ):
                self._push_attention(req, epoch)

        if completing:
            if len(completing) > 1:
                completing.sort(key=_admit_order)
            for req in completing:
                if req.base_epoch >= 0:
                    c = req.num_computed_tokens + epoch - req.base_epoch
                    self._decode_ctx -= c
                    self._num_decoders -= 1
                    if req.itl_group >= 0:
                        self._leave_group(req)
                    req.base_epoch = -1
                    req.num_computed_tokens = c
                    req.version += 1
                req.delivered = req.num_output_tokens
                req.last_token_time = end
                req.itl_sum = (
                    end - req.first_token_time + req.num_output_tokens * otp
                    if req.num_output_tokens
                    else 0
                )
                req.state = RequestState.FINISHED
                req.finish_time = end
                kv.free(req)
                stats.completed += 1
                if self.log is not None:
                    self.log.add(req)
                idx = bisect_left(seqs, req.admit_seq)
                del seqs[idx]
                del running[idx]

        if not running and not waiting:
            self.step_pending = False
            return None
        return self._fast_forward(end, t_limit, horizon)

    def _fast_forward(self, start: int, t_limit: int, horizon: int) -> int:
        """Run pure decode steps (nothing due, nothing to admit) in a tight loop.

        Returns the start time of the next step that needs the full treatment.
        """
        if self._prefilling or (self.order_wait_queue is not None and self.waiting):
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
        latency = self.latency
        ctx = self._decode_ctx
        t = start
        steps = 0
        block_time = 0
        # With ITL groups, the step samples are split by group after the loop.
        values: list[int] | None = [] if self._group_decoders else None
        while epoch < stop_epoch and t < t_limit and t <= horizon:
            k = counts[-epoch % bs]
            if k:  # decoders opening a block in this step, in bulk (see _can_open_in_bulk)
                if pool.num_free < k:
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
            if values is not None:
                values.append(v)
            block_time += used * step_time
            ctx += decodes
            epoch += 1
            steps += 1
            t += step_time
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
    return req.admit_seq
