"""Request streams from a :class:`WorkloadSpec`: lazy, arrival-ordered, deterministic.

Each client is its own arrival-ordered stream; :func:`iter_spec_requests` merges them
with ``heapq.merge`` keyed by arrival time (ties: client order, then the client's own
order) and numbers the requests in merged order. Nothing is materialised ahead of the
consumer beyond one block of arrivals per client, so a million-request workload streams
in bounded memory.

Randomness: every client draws from its own named streams (``spec/<client>/arrival``,
``.../input``, ``.../output``, ``.../tokens`` and so on, where ``<client>`` is the client
id, or ``#<position>`` when ids are missing or repeated), and every prefix group from
``spec/prefix/<group>``. So adding, removing or reordering clients never changes another
client's arrivals, lengths or tokens (the rates themselves are renormalised over the
clients' ``rate_fraction`` values, as the spec says), and neither ``num_requests`` nor the
horizon changes the requests that are generated before the cut.

Arrivals: without stages a client's gaps are ``max(1, trunc(g / λ))`` µs with ``g`` a
unit-mean gap of the configured process (as the reference). With stages the client runs
a unit-rate renewal process in "operational time" mapped through the inverse of its
cumulative rate, so each stage gets exactly its own rate and the process keeps its CV
within each stage; nothing arrives after the last stage ends. An ``inference_perf``
block's clients share ONE stream at the stage rate, dealt round-robin, as inference-perf's
single load generator sends them: with ``load_type: constant`` that stream is
inference-perf's (exactly ``int(rate x duration)`` jittered arrivals a stage,
:func:`inference_perf_constant_times`, dealt by :func:`_dealt`); with ``evenly_spaced``
it is one arrival every ``1 / rate`` (:func:`interleaved_constant_times`).

Multi-turn sessions: a session's rounds are fixed when the session starts; round ``r + 1``
arrives ``think_time_us + output_tokens(r)`` µs after round ``r`` (the reference's open-loop
approximation: one microsecond per output token stands in for the previous answer's
completion). With ``context_growth: accumulate`` round ``r + 1``'s prompt starts with round
``r``'s prompt and output, so the prefix cache sees the conversation grow. An
``inference_perf`` expansion's sessions (``MultiTurnSpec.on_arrivals``) instead take one
round per arrival of their client, so the stage rate is the request rate, as in
inference-perf.

No request is longer than :data:`MAX_REQUEST_TOKENS`: text, prefix, multimodal parts and
an accumulated session context included (:func:`_too_long`).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from inference_sim.core.request import Request
from inference_sim.core.rng import RandomStreams
from inference_sim.workload.errors import WorkloadError
from inference_sim.workload.samplers import MAX_REQUEST_TOKENS, LengthSampler, UnitGaps
from inference_sim.workload.spec import (
    DEFAULT_PREFIX_LENGTH,
    TICKS_PER_SECOND,
    ClientSpec,
    InferencePerfSpec,
    Stage,
    WorkloadSpec,
)

MAX_TOKEN_ID = 128000
MAX_SESSION_TOKENS = 2**26  # prompt and output tokens of one multi-turn session (256 MB)
NEVER = 2**63 - 1
ARRIVAL_BLOCK = 1024
"""Gaps drawn per block (the numbers do not depend on it: streams continue across calls)."""
FIRST_ARRIVAL_BLOCK = 16
"""A stream's first block; each next one is 4 times larger up to ARRIVAL_BLOCK, so that a
spec of thousands of clients costs memory in proportion to the requests taken."""
TOKEN_CHUNK = 1 << 18
"""Token ids drawn per bulk call (1 MiB of int32), bounding memory ahead of the consumer."""
FIRST_TOKEN_CHUNK = 1 << 12
"""A client's first chunk of token ids (16 KiB); each next chunk is 4 times larger."""
_TIME_CAP = 2**62  # arrivals beyond this are treated as "never"
_GAP_CAP = float(2**50)
_MM_DRAW = 1 << 20
"""Most multimodal item sizes drawn per call (one request's items at least), so a huge
``*_count_distribution`` fails on its first request instead of allocating gigabytes."""


def _too_long(who: str, tokens: int, what: str, fix: str) -> WorkloadError:
    """The error for a request longer than MAX_REQUEST_TOKENS, in the words of
    :func:`inference_sim.workload.samplers.check_length_bound` (lengths a spec states are
    checked when it loads; these are sums only the generator sees)."""
    return WorkloadError(
        f"{who}: a request's prompt ({what}) must be <= {MAX_REQUEST_TOKENS} tokens (the "
        f"longest request the simulator holds), got {tokens}; {fix}"
    )


# --- arrivals -----------------------------------------------------------------------------


def arrival_times(
    gaps: UnitGaps,
    rng: np.random.Generator,
    *,
    rate_per_us: float = 0.0,
    stages: Sequence[tuple[int, int, float]] = (),
    limit: int = NEVER,
    start: int = 0,
) -> Iterator[np.ndarray]:
    """Blocks of increasing arrival ticks, all in ``(start, limit)``.

    ``stages`` (start, end, rate per µs), contiguous from 0, replaces ``rate_per_us``.
    The process starts at ``start`` (a lifecycle window's start): nothing before it is
    drawn, so a window far in the future costs no more than one at 0.
    """
    limit = min(limit, _TIME_CAP)
    if limit <= start:
        return
    if stages:
        yield from _staged_times(gaps, rng, stages, limit, start)
        return
    lam = max(rate_per_us, 1e-15)
    t = start
    size = FIRST_ARRIVAL_BLOCK
    while True:
        if gaps.deterministic:
            gap = max(1, int(min(1.0 / lam, _GAP_CAP)))
            times = t + gap * np.arange(1, size + 1, dtype=np.int64)
        else:
            g = np.minimum(gaps.draw(rng, size) / lam, _GAP_CAP)
            times = t + np.cumsum(np.maximum(g.astype(np.int64), 1))
        cut = int(np.searchsorted(times, limit, side="left"))
        if cut < len(times):
            if cut:
                yield times[:cut]
            return
        yield times
        t = int(times[-1])
        size = min(size * 4, ARRIVAL_BLOCK)


def _staged_times(
    gaps: UnitGaps,
    rng: np.random.Generator,
    stages: Sequence[tuple[int, int, float]],
    limit: int,
    start: int = 0,
) -> Iterator[np.ndarray]:
    starts = np.array([s for s, _, _ in stages], dtype=np.float64)
    rates = np.array([r for _, _, r in stages], dtype=np.float64)
    spans = np.array([e - s for s, e, _ in stages], dtype=np.float64)
    cum = np.concatenate(([0.0], np.cumsum(rates * spans)))  # operational time at stage starts
    total = cum[-1]
    s = 0.0
    if start > 0:  # the operational time at ``start``
        k = int(np.searchsorted(starts, start, side="right")) - 1
        s = float(cum[k] + min(start - starts[k], spans[k]) * rates[k])
        if s >= total:
            return
    size = FIRST_ARRIVAL_BLOCK
    while True:
        g = gaps.draw(rng, size)
        size = min(size * 4, ARRIVAL_BLOCK)
        op = s + np.cumsum(g)
        k = np.searchsorted(cum, op, side="right") - 1
        inside = op < total
        kk = np.minimum(k, len(stages) - 1)
        # A client's stage rate can underflow to 0 (rate 5e-324, or a tiny share): its
        # operational time does not advance, so no arrival is ``inside`` it and the
        # infinite or NaN ticks computed there are masked by ``ok``; numpy's warnings
        # about them would only leak source paths to stderr.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            t = starts[kk] + (op - cum[kk]) / rates[kk]
            ticks = np.floor(t).astype(np.int64)
        ok = inside & (ticks < limit)
        head, stop = _until_false(ticks, ok)
        if len(head):
            yield head
        if stop:
            return
        s = float(op[-1])


def interleaved_constant_times(
    *,
    rate_per_us: float = 0.0,
    stages: Sequence[tuple[int, int, float]] = (),
    limit: int = NEVER,
    first: int = 1,
    step: int = 1,
) -> Iterator[np.ndarray]:
    """Arrivals ``first``, ``first + step``, ... (1-based) of ONE constant process at the
    total rate, in blocks: the share of one of ``step`` clients served round-robin.

    The ticks are those :func:`arrival_times` gives a constant process (the same
    arithmetic: gap ``max(1, trunc(1 / λ))``, or stage-mapped operational time ``k``), so
    the union over ``first = 1 .. step`` is exactly one evenly spaced stream at the total
    rate -- what inference-perf's single constant load generator sends -- instead of
    ``step`` processes that all fire together every ``step / rate`` seconds.
    """
    limit = min(limit, _TIME_CAP)
    size = FIRST_ARRIVAL_BLOCK
    k = first
    if stages:
        starts = np.array([s for s, _, _ in stages], dtype=np.float64)
        rates = np.array([r for _, _, r in stages], dtype=np.float64)
        spans = np.array([e - s for s, e, _ in stages], dtype=np.float64)
        cum = np.concatenate(([0.0], np.cumsum(rates * spans)))
        total = cum[-1]
    else:
        gap = max(1, int(min(1.0 / max(rate_per_us, 1e-15), _GAP_CAP)))
    while True:
        ks = k + step * np.arange(size, dtype=np.int64)
        if stages:
            op = ks.astype(np.float64)
            kk = np.minimum(np.searchsorted(cum, op, side="right") - 1, len(stages) - 1)
            # A stage rate underflowing to 0: masked below (see _staged_times).
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                ticks = np.floor(starts[kk] + (op - cum[kk]) / rates[kk]).astype(np.int64)
            ok = (op < total) & (ticks < limit)
        else:
            ticks = gap * ks
            ok = ticks < limit
        head, stop = _until_false(ticks, ok)
        if len(head):
            yield head
        if stop:
            return
        k = int(ks[-1]) + step
        size = min(size * 4, ARRIVAL_BLOCK)


def _until_false(ticks: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, bool]:
    """The leading run of ``ticks`` where ``ok`` holds, and whether ``ok`` failed after
    it (an arrival generator stops there: the horizon or the stages' end)."""
    if ok.all():
        return ticks, False
    return ticks[: int(np.argmin(ok))], True


def stage_counts(stages: Sequence[Stage]) -> list[tuple[int, int, int]]:
    """``(start µs, end µs, requests)`` of each stage: ``int(rate x duration)`` requests,
    inference-perf's count (``LoadGenerator.run_stage``)."""
    return [(st.start_us, st.end_us, int(st.rate * st.duration_s)) for st in stages]


def inference_perf_constant_times(
    rng: np.random.Generator,
    stages: Sequence[tuple[int, int, int]],
    limit: int = NEVER,
) -> Iterator[np.ndarray]:
    """Blocks of arrival ticks of inference-perf's ``constant`` load over ``stages``
    (``(start µs, end µs, requests)``, from :func:`stage_counts`).

    inference-perf's ``ConstantLoadTimer`` (``inference_perf/loadgen/load_timer.py``)
    sends exactly ``n = int(rate x duration)`` requests a stage, at the partial sums of
    ``n`` exponential gaps rescaled to sum to the duration: the last at the stage end, the
    other ``n - 1`` where ``n - 1`` sorted uniform points fall (Poisson-like bunching, an
    exact count). Normalised exponential partial sums ARE uniform order statistics, which
    we draw in increasing order (Rényi: ``1 - U_(k) = exp(-sum_{j<=k} E_j / (n - j))``),
    so a stage of any length streams in blocks instead of holding ``n`` gaps. Ticks are
    floored; the last one (the stage end) is put 1 µs before it, inside its stage.
    Deterministic given ``rng`` (our named stream, not the tool's unseeded one).
    """
    limit = min(limit, _TIME_CAP)
    for start, end, n in stages:
        if start >= limit:
            return
        if n <= 0:
            continue
        span = float(end - start)
        m = n - 1  # uniform points before the one at the end
        done = 0
        acc = 0.0
        size = FIRST_ARRIVAL_BLOCK
        while done < m:
            k = min(size, m - done)
            size = min(size * 4, ARRIVAL_BLOCK)
            j = np.arange(done, done + k, dtype=np.float64)  # 0-based index of the point
            c = acc + np.cumsum(rng.standard_exponential(k) / (m - j))
            acc = float(c[-1])
            done += k
            u = -np.expm1(-c)  # the order statistics, increasing, in [0, 1)
            ticks = np.minimum(start + np.floor(span * u).astype(np.int64), end - 1)
            ok = ticks < limit
            head, stop = _until_false(ticks, ok)
            if len(head):
                yield head
            if stop:
                return
        if end - 1 >= limit:
            return
        yield np.array([end - 1], dtype=np.int64)


def _merged_windows(windows: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """``windows`` sorted, with overlapping or touching ones merged."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(windows):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


# --- per-client generation ----------------------------------------------------------------


def client_keys(clients: Sequence[ClientSpec]) -> list[str]:
    """Stream key of each client: its id when ids are unique and non-empty, else ``#i``
    (the client's position)."""
    ids = [c.id for c in clients]
    counts: dict[str, int] = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    keys = []
    for i, c in enumerate(clients):
        if c.id and counts[c.id] == 1:
            # An id starting with "#" gets one more, so it never meets a fallback key
            # (exactly one "#"): naming a client never moves an unnamed one's draws.
            keys.append("#" + c.id if c.id.startswith("#") else c.id)
        else:
            keys.append(f"#{i}")
    return keys


def _client_stages(stages: Sequence[Stage], fraction: float) -> list[tuple[int, int, float]]:
    return [(s.start_us, s.end_us, s.rate * fraction / TICKS_PER_SECOND) for s in stages]


@dataclass
class _Client:
    """Everything one client's stream needs (samplers built once, streams by name)."""

    spec: ClientSpec
    key: str
    streams: RandomStreams
    rate_per_us: float
    stages: list[tuple[int, int, float]]
    limit: int
    prefix: np.ndarray | None
    #: At most this many requests from this client (0: no cap): twice ``num_requests``,
    #: as the reference generates (workload spec 8.1). Only sessions feel it: a cap stops
    #: new sessions, so later rounds of the first ones are among the earliest requests.
    cap: int = 0
    #: (position, clients): this client takes arrivals position+1, position+1+clients, ...
    #: of one constant process at the total rate (inference_perf's load_type constant).
    round_robin: tuple[int, int] | None = None
    total_stages: list[tuple[int, int, float]] = field(default_factory=list)
    total_rate_per_us: float = 0.0
    #: Blocks of this client's arrivals pushed by :func:`_dealt` (one shared stream dealt
    #: round-robin), instead of its own arrival process.
    feed: deque[np.ndarray] | None = None
    input: LengthSampler = field(init=False)
    output: LengthSampler = field(init=False)
    #: The multimodal client's samplers: ``text``, and ``(count, size)`` per modality.
    mm_text: LengthSampler | None = field(init=False, default=None)
    mm_items: dict[str, tuple[LengthSampler, LengthSampler]] = field(init=False)
    ratio: LengthSampler | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        # Every sampler is built here, once: a sampler is a pure function of its
        # DistSpec (building draws nothing), so this moves no draw. They used to be
        # rebuilt per arrival block, each rebuild repeating the truncation warning of
        # a fractional count. The spec loader has said those (its held-back warnings,
        # by field path), so the notes of these rebuilds are dropped.
        c = self.spec
        who = f"client {self.key}"
        quiet: list[str] = []
        assert c.input_distribution is not None and c.output_distribution is not None
        self.input = c.input_distribution.sampler(f"{who} input_distribution", notes=quiet)
        self.output = c.output_distribution.sampler(f"{who} output_distribution", notes=quiet)
        mm = c.multimodal or {}
        text = mm.get("text_distribution")
        if text is not None:
            self.mm_text = text.sampler(f"{who} multimodal.text_distribution", notes=quiet)
        self.mm_items = {}
        for kind in ("image", "audio", "video"):
            size = mm.get(f"{kind}_distribution")
            count = mm.get(f"{kind}_count_distribution")
            if size is not None and count is not None:
                self.mm_items[kind] = (
                    count.sampler(
                        f"{who} multimodal.{kind}_count_distribution", floor=0, notes=quiet
                    ),
                    size.sampler(f"{who} multimodal.{kind}_distribution", notes=quiet),
                )
        ratio = c.reasoning.reason_ratio_distribution if c.reasoning is not None else None
        if ratio is not None:
            self.ratio = ratio.sampler(
                f"{who} reasoning.reason_ratio_distribution", floor=0, notes=quiet
            )
        self.base_meta: dict[str, object] = {}
        if c.id:
            self.base_meta["client_id"] = c.id
        if c.streaming:
            self.base_meta["streaming"] = True
        if self.prefix is not None:
            self.base_meta["prefix_group"] = c.prefix_group
            self.base_meta["prefix_length"] = len(self.prefix)

    def rng(self, kind: str) -> np.random.Generator:
        return self.streams.generator(f"spec/{self.key}/{kind}")

    def arrivals(self) -> Iterator[np.ndarray]:
        c = self.spec
        if self.feed is not None:
            # _dealt pushes a block before it asks this client for the block's requests.
            while self.feed:
                yield self.feed.popleft()
            return
        if self.round_robin is not None:
            position, clients = self.round_robin
            yield from interleaved_constant_times(
                rate_per_us=self.total_rate_per_us,
                stages=self.total_stages,
                limit=self.limit,
                first=position + 1,
                step=clients,
            )
            return
        gaps = UnitGaps(c.arrival.process, c.arrival.cv)
        rng = self.rng("arrival")
        if c.lifecycle is None:
            yield from arrival_times(
                gaps, rng, rate_per_us=self.rate_per_us, stages=self.stages, limit=self.limit
            )
            return
        # The process runs inside each window only (overlapping windows merged), so the
        # cost follows the arrivals drawn, not how far in the future a window starts.
        for start, end in _merged_windows([(w.start_us, w.end_us) for w in c.lifecycle]):
            if start >= self.limit:
                return
            yield from arrival_times(
                gaps,
                rng,
                rate_per_us=self.rate_per_us,
                stages=self.stages,
                limit=min(self.limit, end),
                start=start,
            )

    def make(
        self,
        arrival: int,
        prompt: np.ndarray,
        output: np.ndarray,
        meta: dict[str, object],
        *,
        private_from: int = -1,
    ) -> Request:
        c = self.spec
        return Request(
            -1,
            arrival,
            prompt,
            output,
            slo_class=c.slo_class,
            tenant_id=c.tenant_id,
            model=c.model,
            metadata=meta,
            private_from=private_from,
            adapter=c.adapter,
            adapter_rank=c.adapter_rank,
        )


def _multimodal_lengths(cl: _Client, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Prompt lengths of ``n`` multimodal requests (text + the items of each modality) and
    the parts. A sum over MAX_REQUEST_TOKENS is an error (:func:`_too_long`): each part
    is bounded when the spec loads, ``count x size`` is not. Item sizes are drawn for a
    group of requests at a time (at most ``_MM_DRAW`` items, or one request's), value
    after value, so the numbers do not depend on the grouping."""
    parts: dict[str, np.ndarray] = {}
    total = np.zeros(n, dtype=np.int64)
    if cl.mm_text is not None:
        parts["text_tokens"] = cl.mm_text.sample(cl.rng("mm-text"), n)
        total += parts["text_tokens"]
    for kind in ("image", "audio", "video"):
        if kind not in cl.mm_items:
            continue
        count, sizer = cl.mm_items[kind]
        counts = count.sample(cl.rng(f"mm-{kind}-count"), n)
        rng = cl.rng(f"mm-{kind}")
        bounds = np.concatenate(([0], np.cumsum(counts)))
        sums = np.zeros(n, dtype=np.int64)
        i = 0
        while i < n:
            j = int(np.searchsorted(bounds, bounds[i] + _MM_DRAW, side="right")) - 1
            j = min(n, max(j, i + 1))
            sizes = sizer.sample(rng, int(bounds[j] - bounds[i]))
            cum = np.concatenate(([0], np.cumsum(sizes)))
            local = bounds[i : j + 1] - bounds[i]
            sums[i:j] = cum[local[1:]] - cum[local[:-1]]
            worst = int((total[i:j] + sums[i:j]).max())
            if worst > MAX_REQUEST_TOKENS:
                raise _too_long(
                    f"client {cl.key}",
                    worst,
                    f"text + {kind}_count x {kind} tokens, summed over its modalities",
                    f"lower multimodal.{kind}_count_distribution or {kind}_distribution",
                )
            i = j
        parts[f"{kind}_tokens"] = sums
        total += sums
    return np.maximum(total, 1), parts


def _single_turn(cl: _Client) -> Iterator[Request]:
    rng_in, rng_out, rng_tok = cl.rng("input"), cl.rng("output"), cl.rng("tokens")
    prefix = cl.prefix
    n_shared = 0 if prefix is None else len(prefix)
    base = cl.base_meta
    # Token ids are drawn in chunks that start small and grow to TOKEN_CHUNK: a spec of
    # thousands of clients, each holding its first chunk in the arrival merge, costs
    # memory in proportion to the requests taken, not to clients x TOKEN_CHUNK.
    budget = FIRST_TOKEN_CHUNK
    for times in cl.arrivals():
        n = len(times)
        parts: dict[str, np.ndarray] = {}
        if cl.spec.multimodal is not None:
            in_len, parts = _multimodal_lengths(cl, n)
        else:
            in_len = cl.input.sample(rng_in, n)
        out_len = cl.output.sample(rng_out, n)
        longest = n_shared + int(in_len.max())
        if longest > MAX_REQUEST_TOKENS:
            raise _too_long(
                f"client {cl.key}",
                longest,
                "prefix_length + input",
                "lower prefix_length or the input lengths",
            )
        ends = np.cumsum(in_len + out_len)
        start = 0
        base_pos = 0
        while start < n:
            stop = int(np.searchsorted(ends, base_pos + budget, side="right"))
            stop = min(n, max(stop, start + 1))
            budget = min(budget * 4, TOKEN_CHUNK)
            chunk_end = int(ends[stop - 1])
            ids = rng_tok.integers(0, MAX_TOKEN_ID, size=chunk_end - base_pos, dtype=np.int32)
            part_lists = {k: v[start:stop].tolist() for k, v in parts.items()}
            times_l = times[start:stop].tolist()
            in_l = in_len[start:stop].tolist()
            out_l = out_len[start:stop].tolist()
            pos = 0
            for j in range(stop - start):
                mid = pos + in_l[j]
                end = mid + out_l[j]
                prompt = ids[pos:mid]
                if prefix is not None:
                    prompt = np.concatenate((prefix, prompt))
                meta = dict(base)
                for k, v in part_lists.items():
                    meta[k] = v[j]
                # Fresh random ids after the group prefix: no other prompt holds them.
                yield cl.make(times_l[j], prompt, ids[mid:end], meta, private_from=n_shared)
                pos = end
            start = stop
            base_pos = chunk_end


@dataclass
class _Session:
    session_id: str
    prompts: list[np.ndarray]
    outputs: list[np.ndarray]
    ratios: list[float] | None
    context: np.ndarray | None = None


def _sessions(cl: _Client) -> Iterator[Request]:
    c = cl.spec
    assert c.reasoning is not None and c.reasoning.multi_turn is not None
    mt = c.reasoning.multi_turn
    rounds = mt.max_rounds
    rng_in, rng_out, rng_tok = cl.rng("input"), cl.rng("output"), cl.rng("tokens")
    rng_sess = cl.rng("session")
    ratio_sampler = cl.ratio
    rng_ratio = cl.rng("reason")
    pending: list[tuple[int, int, _Session, int]] = []
    seq = itertools.count()
    prefix = cl.prefix
    limit = cl.limit
    cap = cl.cap
    started = 0  # requests of the sessions started so far (every round counts)

    def emit(sess: _Session, r: int, arrival: int) -> Request:
        fresh = sess.prompts[r]
        meta = dict(cl.base_meta)
        meta["session_id"] = sess.session_id
        meta["round_index"] = r
        if sess.ratios is not None:
            meta["reason_ratio"] = sess.ratios[r]
        if mt.accumulate and sess.context is not None:
            meta["context_tokens"] = len(sess.context)
            prompt = np.concatenate((sess.context, fresh))
        elif prefix is not None:
            prompt = np.concatenate((prefix, fresh))
        else:
            prompt = fresh
        out = sess.outputs[r]
        if mt.accumulate:
            sess.context = np.concatenate((prompt, out)) if r + 1 < rounds else None
        sess.prompts[r] = sess.outputs[r] = _EMPTY  # free what is no longer needed
        return cl.make(arrival, prompt, out, meta)  # later rounds reuse its tokens

    n_prefix = 0 if prefix is None else len(prefix)

    def new_session() -> tuple[_Session, np.ndarray]:
        """A session's rounds, drawn when it starts; also its output lengths."""
        in_len = cl.input.sample(rng_in, rounds)
        out_len = cl.output.sample(rng_out, rounds)
        sid = f"sess_{int(rng_sess.integers(0, 2**63 - 1))}"
        ratios = None
        if ratio_sampler is not None:
            pct = ratio_sampler.sample(rng_ratio, rounds)
            ratios = np.clip(pct / 100.0, 0.0, 1.0).tolist()
        total = int(in_len.sum() + out_len.sum())
        if total > MAX_SESSION_TOKENS:  # a session's tokens are drawn when it starts
            raise WorkloadError(
                f"client {cl.key}: a session of {rounds} rounds holds {total} tokens, more "
                f"than {MAX_SESSION_TOKENS}; lower reasoning.multi_turn.max_rounds or the "
                "input/output lengths"
            )
        # The longest prompt: the last round's, which resends the whole conversation
        # when the context accumulates (each prompt within bounds did not bound that).
        longest = n_prefix + (total - int(out_len[-1]) if mt.accumulate else int(in_len.max()))
        if longest > MAX_REQUEST_TOKENS:
            raise _too_long(
                f"client {cl.key}",
                longest,
                "prefix + every earlier round's prompt and output + its own input"
                if mt.accumulate
                else "prefix_length + input",
                "lower reasoning.multi_turn.max_rounds or the input/output lengths",
            )
        ids = rng_tok.integers(0, MAX_TOKEN_ID, size=total, dtype=np.int32)
        prompts, outputs = [], []
        pos = 0
        for r in range(rounds):
            prompts.append(ids[pos : pos + in_len[r]])
            pos += int(in_len[r])
            outputs.append(ids[pos : pos + out_len[r]])
            pos += int(out_len[r])
        return _Session(sid, prompts, outputs, ratios), out_len

    if mt.on_arrivals:
        # inference-perf's multi-turn chat: each arrival is ONE request, the next round
        # of this client's session; a new session after the last round. No cap: a client
        # then holds at most its own share of the earliest requests.
        sess: _Session | None = None
        r = rounds
        for times in cl.arrivals():
            for t in times.tolist():
                if r >= rounds:
                    sess, _ = new_session()
                    r = 0
                assert sess is not None
                yield emit(sess, r, t)
                r += 1
        return

    for starts in cl.arrivals():
        if cap and started >= cap:
            break
        for start in starts.tolist():
            if cap and started >= cap:
                break
            while pending and pending[0][0] < start:
                arrival, _, sess_, r_ = heapq.heappop(pending)
                yield emit(sess_, r_, arrival)
            started += rounds
            new, out_len = new_session()
            t = start
            for r in range(rounds):
                if t >= limit:
                    break
                heapq.heappush(pending, (t, next(seq), new, r))
                t += mt.think_time_us + int(out_len[r])
    while pending:
        arrival, _, sess_, r_ = heapq.heappop(pending)
        yield emit(sess_, r_, arrival)


_EMPTY = np.zeros(0, dtype=np.int32)


# --- inference-perf's fixed prompt set ----------------------------------------------------


def _inference_perf_times(
    ip: InferencePerfSpec,
    rng: np.random.Generator,
    spec_stages: Sequence[Stage],
    limit: int,
) -> Iterator[np.ndarray]:
    """The arrival blocks of the block's ONE load generator, by ``load_type``."""
    if ip.load_type == "constant":
        return inference_perf_constant_times(rng, stage_counts(spec_stages), limit)
    process = "constant" if ip.load_type == "evenly_spaced" else "poisson"
    return arrival_times(
        UnitGaps(process, None), rng, stages=_client_stages(spec_stages, 1.0), limit=limit
    )


def _cycle_prompts(
    ip: InferencePerfSpec, streams: RandomStreams, spec_stages: Sequence[Stage], limit: int
) -> Iterator[Request]:
    """inference-perf's shared_prefix data: a fixed, shuffled set of N x U prompts, cycled.

    Request ``k`` sends prompt ``order[k mod N·U]``: its group's system prompt followed by
    the user's fixed question (so a repeated prompt is identical and fully cacheable),
    with ``output_len`` output tokens. With multi-turn chat, each user is a session whose
    context (previous questions and answers) grows between the system prompt and the
    question, as inference-perf's user sessions do.
    """
    sp = ip.shared_prefix
    users = sp.num_users_per_system_prompt
    total = sp.num_unique_system_prompts * users
    rng = streams.generator("spec/inference-perf/prompts")
    prefixes = [
        rng.integers(0, MAX_TOKEN_ID, size=sp.system_prompt_len, dtype=np.int32)
        for _ in range(sp.num_unique_system_prompts)
    ]
    questions = [
        rng.integers(0, MAX_TOKEN_ID, size=sp.question_len, dtype=np.int32) for _ in range(total)
    ]
    order = rng.permutation(total).tolist()
    prompts = [np.concatenate((prefixes[p // users], questions[p])) for p in range(total)]
    rng_out = streams.generator("spec/inference-perf/outputs")
    contexts: list[np.ndarray | None] = [None] * total
    rounds = [0] * total
    k = 0
    rng_arrival = streams.generator("spec/inference-perf/arrival")
    for times in _inference_perf_times(ip, rng_arrival, spec_stages, limit):
        outs = rng_out.integers(0, MAX_TOKEN_ID, size=(len(times), sp.output_len), dtype=np.int32)
        for j, t in enumerate(times.tolist()):
            p = order[k % total]
            k += 1
            g, u = divmod(p, users)
            meta: dict[str, object] = {
                "client_id": f"prompt-{g}-user-{u}",
                "session_id": f"user_session_{p}",
                "round_index": rounds[p],
            }
            if sp.system_prompt_len:
                meta["prefix_group"] = f"prompt-{g}"
                meta["prefix_length"] = sp.system_prompt_len
            out = outs[j]
            if sp.enable_multi_turn_chat:
                ctx = contexts[p]
                if ctx is None:
                    prompt = prompts[p]
                else:
                    if len(ctx) + len(questions[p]) > MAX_REQUEST_TOKENS:
                        # inference-perf's sessions never end: the context grows by a
                        # question and an answer every time the user comes round.
                        raise _too_long(
                            "inference_perf.shared_prefix",
                            len(ctx) + len(questions[p]),
                            f"user_session_{p}'s conversation at round {rounds[p]}",
                            "shorten the stages, lower question_len/output_len, or use "
                            "cycle_prompts: false (5-round sessions)",
                        )
                    meta["context_tokens"] = len(ctx)
                    prompt = np.concatenate((ctx, questions[p]))
                contexts[p] = np.concatenate((prompt, out))
            else:
                prompt = prompts[p]
                if rounds[p]:
                    meta["context_tokens"] = len(prompt)  # identical to the previous one
            rounds[p] += 1
            yield Request(
                -1, t, prompt, out, slo_class="batch", tenant_id=f"prompt-{g}", metadata=meta
            )


# --- the whole spec -----------------------------------------------------------------------


def _prefixes(spec: WorkloadSpec, streams: RandomStreams) -> dict[str, np.ndarray]:
    """One random prefix per group; its length comes from the first client naming it."""
    out: dict[str, np.ndarray] = {}
    for c in spec.clients:
        g = c.prefix_group
        if g and g not in out:
            n = c.prefix_length if c.prefix_length > 0 else DEFAULT_PREFIX_LENGTH
            rng = streams.generator(f"spec/prefix/{g}")
            out[g] = rng.integers(0, MAX_TOKEN_ID, size=n, dtype=np.int32)
    return out


def spec_sources(
    spec: WorkloadSpec, streams: RandomStreams, *, horizon: int = NEVER, cap: int = 0
) -> list[Iterator[Request]]:
    """Arrival-ordered request iterators to merge: one per client (in client order), or
    one for all when a shared stream is dealt to them (:func:`_dealt`, inference_perf's
    ``constant`` load); ``cap`` > 0 bounds each client's requests (:attr:`_Client.cap`).
    Reachable only from code (never from YAML): a ``constant`` inference_perf spec whose
    clients start whole sessions per arrival gets the evenly spaced round-robin stream."""
    limit = horizon
    if spec.stages:
        limit = min(limit, spec.stages[-1].end_us)
    ip = spec.inference_perf
    if ip is not None and ip.cycle_prompts and not spec.clients:
        sp = ip.shared_prefix
        if sp.system_prompt_len + sp.question_len == 0:
            raise WorkloadError(
                "inference_perf.shared_prefix: system_prompt_len + question_len must be >= 1"
            )
        return [_cycle_prompts(ip, streams, spec.stages, limit)]
    prefixes = _prefixes(spec, streams)
    keys = client_keys(spec.clients)
    total = sum(c.rate_fraction for c in spec.clients)
    # inference_perf's constant and evenly_spaced loads: ONE stream at the stage rate,
    # dealt round-robin to its N x U clients (N x U constant processes starting together
    # arrived in lockstep bursts): inference-perf's jittered stream through _dealt, the
    # evenly spaced one computed per client. Poisson needs neither: N x U independent
    # Poisson processes at rate / (N x U) are one Poisson process at the rate, each
    # arrival going to a client at random.
    shared = (
        ip is not None
        and ip.load_type in ("constant", "evenly_spaced")
        and all(c.arrival.process == "constant" and c.lifecycle is None for c in spec.clients)
    )
    # The dealer needs one request per arrival: single turns, or rounds on arrivals.
    dealt = (
        shared
        and ip is not None
        and ip.load_type == "constant"
        and all(
            c.reasoning is None
            or c.reasoning.multi_turn is None
            or c.reasoning.multi_turn.on_arrivals
            for c in spec.clients
        )
    )
    round_robin = shared and not dealt
    all_stages = _client_stages(spec.stages, 1.0)
    clients: list[_Client] = []
    sources: list[Iterator[Request]] = []
    for i, (c, key) in enumerate(zip(spec.clients, keys, strict=True)):
        fraction = c.rate_fraction / total
        cl = _Client(
            spec=c,
            key=key,
            streams=streams,
            rate_per_us=spec.aggregate_rate * c.rate_fraction / total / TICKS_PER_SECOND,
            stages=_client_stages(spec.stages, fraction),
            limit=limit,
            prefix=prefixes.get(c.prefix_group) if c.prefix_group else None,
            cap=cap,
            round_robin=(i, len(spec.clients)) if round_robin else None,
            total_stages=all_stages,
            total_rate_per_us=spec.aggregate_rate / TICKS_PER_SECOND,
            feed=deque() if dealt else None,
        )
        clients.append(cl)
        if c.reasoning is not None and c.reasoning.multi_turn is not None:
            sources.append(_sessions(cl))
        else:
            sources.append(_single_turn(cl))
    if dealt and ip is not None:
        times = _inference_perf_times(
            ip, streams.generator("spec/inference-perf/arrival"), spec.stages, limit
        )
        return [_dealt(clients, sources, times)]
    return sources


def _dealt(
    clients: Sequence[_Client], sources: Sequence[Iterator[Request]], times: Iterator[np.ndarray]
) -> Iterator[Request]:
    """ONE arrival stream dealt round-robin: arrival ``k`` (0-based) goes to client
    ``k mod len(clients)``, and its request is that client's next one.

    Used where the stream is random and shared (inference-perf's ``constant``): computing
    it per client would redraw the whole stream once per client. Each block of arrivals
    is split into the clients' shares (pushed to their ``feed``) before any of its
    requests is asked for; each client then makes exactly one request per arrival, so
    the requests come out in arrival order. A client whose source ends (none does today)
    is skipped with its arrivals.
    """
    step = len(clients)
    live = [True] * step
    k = 0
    for block in times:
        n = len(block)
        for i in range(min(step, n)):
            c = (k + i) % step
            if live[c]:
                feed = clients[c].feed
                assert feed is not None
                feed.append(block[i::step])
        for i in range(n):
            c = (k + i) % step
            if live[c]:
                try:
                    yield next(sources[c])
                except StopIteration:
                    live[c] = False
        k += n


def _arrival_of(req: Request) -> int:
    return req.arrival_time


def iter_spec_requests(
    spec: WorkloadSpec,
    *,
    streams: RandomStreams | None = None,
    horizon: int = NEVER,
    max_requests: int = 0,
) -> Iterator[Request]:
    """The spec's requests in arrival order, numbered 0, 1, ... in that order.

    ``streams`` defaults to ``RandomStreams(spec.seed)``. Only arrivals ``< horizon`` are
    generated; ``max_requests > 0`` keeps the earliest that many over all clients.
    """
    if max_requests < 0:
        raise WorkloadError(f"num_requests must be non-negative, got {max_requests}")
    if streams is None:
        streams = RandomStreams(spec.seed)
    if horizon <= 0:
        return iter(())
    sources = spec_sources(spec, streams, horizon=horizon, cap=2 * max_requests)
    merged: Iterator[Request] = heapq.merge(*sources, key=_arrival_of)
    if max_requests > 0:
        merged = itertools.islice(merged, max_requests)
    return _numbered(merged)


def _numbered(reqs: Iterator[Request]) -> Iterator[Request]:
    for i, r in enumerate(reqs):
        r.index = i
        yield r


def generate_spec_requests(
    spec: WorkloadSpec,
    *,
    streams: RandomStreams | None = None,
    horizon: int = NEVER,
    max_requests: int = 0,
) -> list[Request]:
    """:func:`iter_spec_requests` as a list (small workloads, tests)."""
    if max_requests <= 0 and horizon >= NEVER and not spec.self_bounded:
        raise WorkloadError("the workload spec is unbounded: set num_requests, horizon or stages")
    return list(
        iter_spec_requests(spec, streams=streams, horizon=horizon, max_requests=max_requests)
    )
