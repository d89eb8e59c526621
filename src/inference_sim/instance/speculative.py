"""Speculative decoding as vLLM v1 schedules it (docs/speculative-decoding.md).

Why a subclass of the plain stepper: a speculating decoder advances by a random number
of tokens per step, which the fast stepper's bulk decode accounting assumes away, so
``make_instance`` builds :class:`SpecInstance` whenever speculation is on and nothing
changes for runs without it.

Per step, as vLLM v1's scheduler does it:

* a running decoder asks for ``1 + k`` tokens (its next token plus ``k`` draft tokens),
  counted against ``max_num_batched_tokens`` (and ``long_prefill_token_threshold``);
  when the budget is short its draft tokens are cut first; ``k`` is also cut so no
  draft runs past the request's output length (the simulator knows it; a real engine
  would verify those drafts and discard them);
* KV slots are allocated for the scheduled tokens plus ``k`` lookahead slots for the
  drafter's next proposals (EAGLE-style proposers; none for n-gram); the rejected
  tokens' slots roll back (``num_computed_tokens`` advances only by what was accepted)
  and are reused by the next step's tokens, so the request never holds more than the
  blocks of ``computed + 1 + 2k`` tokens; only blocks of its known tokens (prompt +
  delivered) enter the prefix cache, as vLLM caches up to ``request.num_tokens``;
* prefills (including chunks) are never speculated;
* after the step, draft token ``i`` is accepted with probability ``p_i`` given the
  earlier ones were (a named random stream per instance, so runs are reproducible);
  the request receives the accepted tokens plus one (the target model's own token) in
  one delivery event: one ITL sample, as a streaming client sees it (the request log
  counts a request's deliveries for ``itl_*`` goodput: ``RequestLog.itl_gaps``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from inference_sim.core.batch import StepBatch
from inference_sim.core.request import Request
from inference_sim.core.rng import RandomStreams
from inference_sim.instance.config import EngineConfig
from inference_sim.instance.engine import Instance, WaitQueueOrder, prefill_chunk
from inference_sim.latency.base import LatencyModel
from inference_sim.latency.speculative import (
    decode_step_time,
    extra_verification_time,
    step_prices_lm_head,
)

log = logging.getLogger("inference_sim")

__all__ = ["METHODS", "SpecInstance", "SpeculativeConfig"]

#: ``--speculative-method`` values (vLLM's names; ``draft-model`` is vLLM's "draft_model").
METHODS = ("ngram", "eagle", "eagle3", "mtp", "draft-model")
#: Methods whose drafter reads the target's hidden states (vLLM's ``use_eagle()``).
EAGLE_METHODS = frozenset({"eagle", "eagle3", "mtp"})


@dataclass(frozen=True, slots=True)
class SpeculativeConfig:
    """What speculation does and costs on one instance.

    ``acceptance[i]`` is the probability that draft token ``i`` is accepted given the
    earlier ones were (one value per draft position). With ``concentration`` > 0 that is
    the mean over requests: each request draws its own rate per position from
    Beta(mean x c, (1 - mean) x c), from a random stream keyed by the request's index
    (so a request gets the same rates on any instance). ``ngram_cpu_us`` is the n-gram
    proposer's CPU time per step; ``draft_latency`` prices a separate draft model's
    forwards.

    An EAGLE/EAGLE-3/MTP draft head is priced from the target's step
    (``config.speculative.draft_fractions``): ``head_fraction`` is one draft forward of
    one token per request (weight-bound: the head's layer, input projection and LM head)
    over a target decode step whose time counts the LM head (calibrated, blackbox);
    ``head_fraction_body`` the same over a step without it (roofline; None: as
    ``head_fraction``); ``prefill_fraction`` the draft layer's FLOPs per token over the
    target body's, for the tokens beyond one per request (compute-bound prefill chunks
    and verified draft tokens: the head computes logits for one row per request).
    """

    method: str
    num_tokens: int
    acceptance: tuple[float, ...]
    concentration: float = 0.0
    seed: int = 0
    ngram_cpu_us: int = 0
    head_fraction: float = 0.0
    draft_latency: Any = None  # LatencyModel of the draft model (method draft-model)
    head_fraction_body: float | None = None
    prefill_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            allowed = ", ".join(METHODS)
            raise ValueError(f"speculative method must be one of {allowed}, got {self.method!r}")
        if self.num_tokens <= 0:
            raise ValueError(f"num_speculative_tokens must be > 0, got {self.num_tokens}")
        if len(self.acceptance) != self.num_tokens:
            raise ValueError(
                f"acceptance needs one rate per draft position ({self.num_tokens}), "
                f"got {len(self.acceptance)}"
            )
        for a in self.acceptance:
            if not (math.isfinite(a) and 0.0 <= a <= 1.0):
                raise ValueError(f"acceptance rates must be in [0, 1], got {a}")
        c = self.concentration
        if not (math.isfinite(c) and c >= 0.0):
            raise ValueError(f"acceptance concentration must be >= 0, got {c}")
        if self.method == "draft-model" and self.draft_latency is None:
            raise ValueError("method draft-model needs the draft model's latency model")
        for f in (self.head_fraction, self.head_fraction_body, self.prefill_fraction):
            if f is not None and not (math.isfinite(f) and f >= 0.0):
                raise ValueError(f"draft cost fractions must be finite and >= 0, got {f}")

    @property
    def lookahead(self) -> int:
        """KV slots reserved beyond the scheduled tokens for the drafter's next proposals."""
        return 0 if self.method == "ngram" else self.num_tokens


def _uniforms(gen: np.random.Generator, block: int = 1024) -> Iterator[float]:
    """``gen.random()``, one draw at a time, fetched ``block`` at a time (the same values
    in the same order, at a fraction of the cost of one numpy call per draw)."""
    while True:
        yield from gen.random(block).tolist()


class SpecInstance(Instance):
    """The plain stepper with draft tokens, their verification and their acceptance."""

    #: A decode step writes 1 + accepted tokens: with async scheduling a preempted
    #: decoder keeps the blocks its last step filled cached (docs/differences.md).
    one_token_decodes = False

    def __init__(
        self,
        index: int,
        config: EngineConfig,
        latency: LatencyModel,
        *,
        order_wait_queue: WaitQueueOrder | None = None,
    ) -> None:
        super().__init__(index, config, latency, order_wait_queue=order_wait_queue)
        spec: SpeculativeConfig = config.speculative
        self.spec = spec
        streams = RandomStreams(spec.seed)
        self._draw = _uniforms(streams.generator(f"speculative/{index}")).__next__
        self._streams = streams
        # Per-request acceptance rates (concentration > 0), for requests still running.
        self._request_rates: dict[int, tuple[float, ...]] = {}
        self._drafts: list[int] = []  # draft tokens of each batch entry (0: none)
        self._prefill: list[tuple[int, int]] = []
        self._verify: list[tuple[int, int]] = []
        self.stats.speculative = True
        # Models that track the running step's end (calibrated, async scheduling).
        self._extend = getattr(latency, "extend_last_step", None)
        self._drafts_on_prefill = spec.method != "ngram"
        # vLLM's EAGLE-family drafters need the hidden states of a prefix hit's last block:
        # it is recomputed (KVCacheManager.drop_last_hit).
        self.kv.drop_last_hit = spec.method in EAGLE_METHODS
        # vLLM caches a request's blocks up to its known tokens (prompt + outputs), never
        # the slots of its draft tokens or lookahead (KVCacheManager.allocate_slots).
        self.kv.cache_known_tokens_only = True
        # A draft head's pass of one token per request, over a target step priced with or
        # without the LM head (roofline: without).
        self._row_fraction = spec.head_fraction
        if spec.head_fraction_body is not None and not step_prices_lm_head(latency):
            self._row_fraction = spec.head_fraction_body
        # Request index -> accepted draft tokens delivered so far (running requests): a
        # delivery of 1 + a tokens is one inter-token gap, not 1 + a (RequestLog.itl_gaps).
        self._accepted: dict[int, int] = {}
        if spec.method not in EAGLE_METHODS:
            # vLLM v0.15 turns async scheduling off for ngram and draft-model speculation
            # ("Async scheduling not supported with ...-based speculative decoding").
            if self.async_scheduling and index == 0:  # once per run
                log.warning(
                    "--speculative-method %s: vLLM v0.15 runs it without async scheduling, "
                    "so the one-step scheduling lag is dropped, but the CPU time synchronous "
                    "scheduling exposes between steps (scheduling, input preparation, output "
                    "processing) is not priced: TTFT, ITL and E2E are optimistic by an "
                    "unmeasured amount (docs/speculative-decoding.md)",
                    spec.method,
                )
            self.async_scheduling = False

    # --- schedule ------------------------------------------------------------------
    def _schedule_running(self, batch: StepBatch, now: int) -> tuple[int, bool]:
        """Running requests in order: a prefill chunk, or 1 + k tokens for a decoder."""
        cfg = self.config
        num_tokens = self.spec.num_tokens
        lookahead = self.spec.lookahead
        allocate_slots = self.kv.allocate_slots
        running = self.running
        budget = cfg.max_num_batched_tokens
        threshold = cfg.long_prefill_token_threshold
        drafts = self._drafts
        drafts.clear()
        prefill_tokens = decode_tokens = ctx = 0
        preempted = False
        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            computed = req.num_computed_tokens
            decoding = computed >= req.prefill_target
            if decoding:
                k = num_tokens
                left = req.num_output_tokens - req.delivered - 1
                if left < k:
                    k = left if left > 0 else 0
                if budget - 1 < k:
                    k = budget - 1  # the budget is short: draft tokens go first
                if 0 < threshold <= k:
                    k = threshold - 1  # vLLM caps every request's tokens by the threshold
                n = 1 + k
                slots = n + lookahead if k else n
                # Lookahead slots stop at the request's last token: vLLM caps them at
                # max_model_len, which its start-up check makes fit the cache, so a
                # request that fits is never refused for them (and past its last token
                # there is nothing to hash). The last output token writes no KV (nothing
                # follows it), so a request never holds more than prompt + output - 1.
                end = req.num_prompt_tokens + req.num_output_tokens - 1 - computed
                if slots > end:
                    slots = end if end > n else n
            else:
                k = 0
                n = slots = prefill_chunk(req.prefill_target - computed, threshold, budget)
            if not allocate_slots(req, slots):  # (nothing changed: _make_room retries)
                scheduled, evicted = self._make_room(req, slots, now)
                preempted = preempted or evicted
                if not scheduled:
                    break
            batch.requests.append(req)
            batch.num_new.append(n)
            drafts.append(k)
            if decoding:
                decode_tokens += 1
                ctx += computed
            else:
                prefill_tokens += n
            budget -= n
            i += 1
        batch.prefill_tokens = prefill_tokens
        batch.decode_tokens = decode_tokens  # decoders (one target token each)
        batch.decode_context_sum = ctx
        return budget, preempted

    # --- execute -------------------------------------------------------------------
    def execute(self, batch: StepBatch, now: int) -> int:
        """Verification step (1 + k query tokens per speculating decoder) plus drafting."""
        drafts = self._drafts
        while len(drafts) < len(batch.requests):
            drafts.append(0)  # admitted this step: prefills, never speculated
        prefill = self._prefill
        verify = self._verify
        prefill.clear()
        verify.clear()
        ctx_spec = 0
        for req, n, k in zip(batch.requests, batch.num_new, drafts, strict=True):
            s = req.num_computed_tokens
            if s < req.prefill_target:
                prefill.append((s, n))
            elif k:
                verify.append((s, n))
                ctx_spec += s
        latency = self.latency
        kv = self.kv
        batch.shared_context = kv.pool.shared_refs * kv.block_size
        step = latency.step_time(batch)
        if verify or (self._drafts_on_prefill and batch.requests):
            extra = extra_verification_time(
                latency, batch, prefill, verify, batch.decode_tokens, batch.decode_context_sum
            )
            extra += self._drafting_time(batch, prefill, len(verify), ctx_spec, extra)
            step += extra
            if self._extend is not None:
                self._extend(extra)
        kv = self.kv
        step += kv.take_transfer_time(now)
        end = now + step
        self.busy_until = end
        stats = self.stats
        used = kv.num_used
        if used > stats.peak_kv_blocks:
            stats.peak_kv_blocks = used
        stats.kv_block_time += used * step
        return end

    def _drafting_time(
        self,
        batch: StepBatch,
        prefill: list[tuple[int, int]],
        count: int,
        ctx: int,
        verification: int = 0,
    ) -> int:
        """Proposing draft tokens after this step (per method).

        ``prefill`` lists the step's prefill chunks ``(S, n)``, ``count`` and ``ctx`` its
        speculating decoders and their context sum, ``verification`` what their draft
        tokens added to the target step. The n-gram proposer costs its CPU time per step
        with speculating decoders. A model-based proposer (vLLM's
        ``EagleProposer.propose``, vllm/v1/spec_decode/eagle.py, which the draft-model
        proposer shares) runs a first forward over all the step's tokens (prefill tokens
        too: it needs their hidden states or its own KV for them) computing logits at one
        position per request (``last_token_indices``), then ``num_speculative_tokens`` - 1
        more over every request of the batch: it drafts the full number for each request,
        whether the scheduler will use them (a prefill chunk's are dropped; a prompt
        finished in this step speculates in the next) or not.

        An EAGLE/EAGLE-3/MTP head's passes are priced from the target's step: one token
        per request as a decode step of every request scaled by the weights the head reads
        (``_row_fraction``), and the first pass's other tokens -- the prefill chunks and
        the verified draft tokens, compute-bound where they matter -- as the target's
        time for them scaled by the head's FLOPs per token (``prefill_fraction``).
        """
        spec = self.spec
        if spec.method == "ngram":
            return spec.ngram_cpu_us if count else 0
        rest = spec.num_tokens - 1
        # Every scheduled request after this step: the model-based proposers draft for
        # each of them (prefills and decoders whose drafts were cut, too).
        decoders = batch.decode_tokens
        decode_ctx = batch.decode_context_sum
        everyone = decoders + len(prefill)
        context = decode_ctx + sum(s + n for s, n in prefill)
        if spec.method == "draft-model":
            draft = spec.draft_latency
            total = decode_step_time(draft, prefill, count, ctx)
            if everyone:
                for j in range(1, rest + 1):
                    total += decode_step_time(draft, (), everyone, context + j * everyone)
            return total
        target = self.latency
        rows = decode_step_time(target, (), everyone, decode_ctx)
        tokens = verification
        if prefill:
            plain = decode_step_time(target, (), decoders, decode_ctx)
            tokens += max(0, decode_step_time(target, prefill, decoders, decode_ctx) - plain)
        if rest:
            rows += rest * decode_step_time(target, (), everyone, context)
        return round(self._row_fraction * rows + spec.prefill_fraction * tokens)

    # --- apply ---------------------------------------------------------------------
    def apply(self, batch: StepBatch, end: int) -> None:
        """Prefills as usual; each speculating decoder gets its accepted tokens plus one."""
        finished = False
        stats = self.stats
        rates = self.spec.acceptance
        per_request = self.spec.concentration > 0.0
        draw = self._draw
        accepted_by = self._accepted
        for req, n, k in zip(batch.requests, batch.num_new, self._drafts, strict=True):
            if k:
                if per_request:
                    rates = self._rates_of(req)
                accepted = 0
                while accepted < k and draw() < rates[accepted]:
                    accepted += 1
                stats.spec_request_steps += 1
                stats.spec_draft_tokens += k
                stats.spec_accepted_tokens += accepted
                if accepted:
                    accepted_by[req.index] = accepted_by.get(req.index, 0) + accepted
                tokens = 1 + accepted
                computed = req.num_computed_tokens + tokens
                req.num_computed_tokens = computed
                req.prefill_target = computed
                if self._deliver(req, end, tokens):
                    finished = True
                continue
            computed = req.num_computed_tokens + n
            req.num_computed_tokens = computed
            if computed != req.num_prompt_tokens + req.delivered:
                continue  # a prefill chunk that does not finish the prefill
            req.prefill_target = computed
            if self._deliver(req, end):
                finished = True
        if finished:
            self._finish_completed(end)

    def _rates_of(self, req: Request) -> tuple[float, ...]:
        """The acceptance rates of ``req`` (drawn at its first speculative step)."""
        rates = self._request_rates.get(req.index)
        if rates is None:
            gen = self._streams.keyed("speculative/request-acceptance", req.index)
            c = self.spec.concentration
            rates = tuple(
                a if a in (0.0, 1.0) else float(gen.beta(a * c, (1.0 - a) * c))
                for a in self.spec.acceptance
            )
            self._request_rates[req.index] = rates
        return rates

    def _finish(self, req: Request, end: int, rank: int = -1) -> None:
        self._request_rates.pop(req.index, None)
        accepted = self._accepted.pop(req.index, 0)
        if accepted and self.log is not None:
            # Its deliveries after the first token: one per output token after the first,
            # less the accepted draft tokens that arrived with another one.
            self.log.itl_gaps[req.index] = req.num_output_tokens - 1 - accepted
        super()._finish(req, end, rank)

    def _drop_running(self, req: Request) -> None:
        self._request_rates.pop(req.index, None)
        self._accepted.pop(req.index, None)
        super()._drop_running(req)
