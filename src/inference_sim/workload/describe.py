"""``blis workload describe``: a summary of a workload spec or trace file.

Reported: request count, duration (first to last arrival), mean rate and the rate over
time (ten equal time buckets), input/output length means and percentiles, and the
unlimited prefix cache hit rate — the fraction of prompt *tokens* a prefix cache that
never evicts would hit (:class:`~inference_sim.workload.tokens.PrefixHitCounter`): full
KV blocks of ``kv_block_size`` tokens (16, ``blis run``'s default
``--block-size-in-tokens``), at least one token of every prompt computed, as vLLM does.
That is the ``prefix_cache_hit_rate`` a replay with a KV cache too large to evict reports
(``--total-kv-blocks 20000000``), up to the order of arrivals: requests are counted in
trace order, and every earlier request's blocks are cached.

For a Mooncake trace the prompt is its hash ids, ``--block-size`` tokens each (512 by
default; a final partial block holds the first tokens of its id's block, as the replay
synthesises them). Azure traces carry no prefix information, so their rate is 0. For
every other format ``--block-size`` is the KV block size (``--kv-block-size`` too).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from inference_sim.core.request import Request
from inference_sim.core.rng import MAX_SEED, RandomStreams, seed_from_int64
from inference_sim.workload.errors import WorkloadError
from inference_sim.workload.formats import detect_format, unmatched_header_hint
from inference_sim.workload.generate import NEVER, iter_spec_requests
from inference_sim.workload.lengthtrace import iter_length_trace
from inference_sim.workload.realtraces import (
    DEFAULT_TRACE_BLOCK_SIZE,
    iter_azure_records,
    iter_mooncake_records,
)
from inference_sim.workload.spec import load_workload_spec
from inference_sim.workload.tokens import PrefixHitCounter
from inference_sim.workload.trace_v2 import iter_trace_v2
from inference_sim.workload.traces import read_csv_trace

DEFAULT_BLOCK_SIZE = 16
RATE_BUCKETS = 10


def _spec_requests(path: str, seed: int | None) -> Iterator[Request]:
    spec = load_workload_spec(path)
    if seed is not None:
        spec = spec.with_seed(seed)
    horizon = spec.horizon if spec.horizon > 0 else NEVER
    if spec.num_requests <= 0 and horizon >= NEVER and not spec.self_bounded:
        raise WorkloadError(
            f"workload spec {path}: unbounded (no num_requests, horizon or stages), "
            "nothing to describe"
        )
    # Said once the check above passed, as blis run says them (workload/plan.py): a
    # spec it refuses prints its one error line alone.
    for warning in spec.warnings:
        logging.getLogger("inference_sim").warning("workload spec %s: %s", path, warning)
    return iter_spec_requests(spec, horizon=horizon, max_requests=spec.num_requests)


def describe_workload(
    path: str | os.PathLike[str],
    *,
    block_size: int | None = None,
    fmt: str = "auto",
    seed: int | None = None,
    kv_block_size: int | None = None,
) -> dict[str, Any]:
    """Summary of a spec or trace (format detected from the content unless ``fmt``).

    ``block_size``: a Mooncake trace's hash-id block size (512), else the KV block size;
    ``kv_block_size``: the KV block size of the cache hit rate (16)."""
    p = os.fspath(path)
    kind = detect_format(p) if fmt == "auto" else fmt
    if block_size is not None and block_size <= 0:
        raise WorkloadError(f"--block-size must be > 0, got {block_size}")
    if kv_block_size is not None and kv_block_size <= 0:
        raise WorkloadError(f"--kv-block-size must be > 0, got {kv_block_size}")
    if seed is not None:
        # As blis run reads --seed (config/resolve.py): the reference's int64 seeds, a
        # negative one as its two's complement, so `--seed -1` describes the run's
        # workload instead of being refused.
        given = seed
        seed = seed_from_int64(seed)
        if not 0 <= seed <= MAX_SEED:
            raise WorkloadError(
                f"--seed must be in [-2**63, {MAX_SEED}] (a 64-bit seed; a negative one is "
                f"read as two's complement, as the reference's int64), got {given}"
            )
    if kind == "mooncake":
        bs = block_size or DEFAULT_TRACE_BLOCK_SIZE  # the hash ids' block
        kv = kv_block_size or DEFAULT_BLOCK_SIZE
    else:
        if block_size and kv_block_size and block_size != kv_block_size:
            raise WorkloadError(
                f"--block-size {block_size} and --kv-block-size {kv_block_size}: both set the "
                f"KV block size of a {kind} file (--block-size sizes a Mooncake trace's hash "
                "ids); give one"
            )
        bs = kv = kv_block_size or block_size or DEFAULT_BLOCK_SIZE
    counter = PrefixHitCounter(kv)
    arrivals: list[int] = []
    inputs: list[int] = []
    outputs: list[int] = []
    if kind in ("mooncake", "azure"):
        records = (
            # describe's flag is --block-size: errors must name it, not run's flag
            iter_mooncake_records(p, block_size=bs, block_flag="--block-size")
            if kind == "mooncake"
            else iter_azure_records(p)
        )
        for rec in records:
            arrivals.append(rec.arrival)
            inputs.append(rec.input_tokens)
            outputs.append(rec.output_tokens)
            if rec.hash_ids is not None:
                counter.add_labeled(rec.hash_ids, bs, rec.input_tokens)
            else:  # unique prompts: nothing to hit
                counter.add_unique(rec.input_tokens)
    else:
        streams = RandomStreams(seed or 0)
        reqs: Iterable[Request]
        if kind == "spec":
            reqs = _spec_requests(p, seed)
        elif kind == "v2":
            reqs = iter_trace_v2(p, streams=streams, notices=False)
        elif kind == "csv":
            reqs = _read_reference_csv(p, detected=fmt == "auto")
        elif kind == "lengths":  # no time column: every request at 0
            reqs = iter_length_trace(p, streams=streams)
        else:
            raise WorkloadError(
                f"--format: unknown format {kind!r}; "
                "valid: auto, spec, csv, v2, azure, mooncake, lengths"
            )
        for r in reqs:
            arrivals.append(r.arrival_time)
            inputs.append(r.num_prompt_tokens)
            outputs.append(r.num_output_tokens)
            counter.add_tokens(r.input_tokens, r.output_tokens)
    return _summary(p, kind, bs, arrivals, inputs, outputs, counter)


def _read_reference_csv(path: str, *, detected: bool) -> list[Request]:
    """The reference CSV read whole; as `blis run` does, a detected file whose header is
    another tool's (``time,ctx,gen``) says so, not only that a row is short."""
    try:
        return read_csv_trace(path)
    except WorkloadError as exc:
        hint = unmatched_header_hint(path, "--format") if detected else ""
        if hint:
            raise WorkloadError(f"{exc}; {hint}") from None
        raise


def _lengths(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {"mean": 0.0, "min": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0}
    return {
        "mean": float(values.mean()),
        "min": int(values.min()),
        "p50": float(np.percentile(values, 50)),
        "p90": float(np.percentile(values, 90)),
        "p99": float(np.percentile(values, 99)),
        "max": int(values.max()),
    }


def _summary(
    path: str,
    kind: str,
    block_size: int,
    arrivals: list[int],
    inputs: list[int],
    outputs: list[int],
    counter: PrefixHitCounter,
) -> dict[str, Any]:
    t = np.asarray(arrivals, dtype=np.int64)
    n = len(t)
    first = int(t.min()) if n else 0
    last = int(t.max()) if n else 0
    duration = (last - first) / 1e6
    ins = np.asarray(inputs, dtype=np.int64)
    outs = np.asarray(outputs, dtype=np.int64)
    buckets: list[dict[str, Any]] = []
    if n:
        edges = np.linspace(first, last, RATE_BUCKETS + 1) if last > first else None
        if edges is None:
            buckets.append({"start_s": first / 1e6, "end_s": last / 1e6, "requests": n})
        else:
            counts, _ = np.histogram(t, bins=edges)
            width = (edges[1] - edges[0]) / 1e6
            for i, c in enumerate(counts.tolist()):
                buckets.append(
                    {
                        "start_s": float(edges[i]) / 1e6,
                        "end_s": float(edges[i + 1]) / 1e6,
                        "requests": c,
                        "rate_per_s": c / width,
                    }
                )
    in_stats = _lengths(ins)
    out_stats = _lengths(outs)
    return {
        "requests": n,
        "duration_s": duration,
        "input_tokens_mean": in_stats["mean"],
        "output_tokens_mean": out_stats["mean"],
        "unlimited_prefix_cache_hit_rate": counter.ratio,
        "format": kind,
        "file": path,
        "block_size": block_size,
        "first_arrival_s": first / 1e6,
        "last_arrival_s": last / 1e6,
        "rate_per_s": n / duration if duration > 0 else 0.0,
        "input_tokens": in_stats,
        "output_tokens": out_stats,
        "kv_block_size": counter.block_size,
        "prompt_tokens": counter.prompt_tokens,
        "cached_prompt_tokens": counter.hit_tokens,
        "rate_over_time": buckets,
    }


def format_description(d: dict[str, Any]) -> str:
    """Human-readable text of :func:`describe_workload`'s result."""

    def lengths(name: str) -> str:
        s = d[name]
        return (
            f"{name.replace('_', ' ')}: mean {s['mean']:.1f}, min {s['min']}, p50 {s['p50']:.0f}, "
            f"p90 {s['p90']:.0f}, p99 {s['p99']:.0f}, max {s['max']}"
        )

    lines = [
        f"{d['file']} ({d['format']})",
        f"requests: {d['requests']}",
        f"duration: {d['duration_s']:.3f} s (arrivals {d['first_arrival_s']:.3f} .. "
        f"{d['last_arrival_s']:.3f} s), mean rate {d['rate_per_s']:.3f} req/s",
        lengths("input_tokens"),
        lengths("output_tokens"),
        f"unlimited prefix cache hit rate: {d['unlimited_prefix_cache_hit_rate']:.4f} "
        f"({d['cached_prompt_tokens']} of {d['prompt_tokens']} prompt tokens in "
        f"{d['kv_block_size']}-token KV blocks; every prompt computes at least one token)",
    ]
    if d["rate_over_time"]:
        lines.append("rate over time:")
        for b in d["rate_over_time"]:
            rate = b.get("rate_per_s")
            shown = f"{rate:.3f} req/s" if rate is not None else "-"
            lines.append(
                f"  {b['start_s']:10.3f} .. {b['end_s']:10.3f} s  {b['requests']:8d} requests  "
                f"{shown}"
            )
    return "\n".join(lines) + "\n"


def description_json(d: dict[str, Any]) -> str:
    return json.dumps(d, indent=2)
