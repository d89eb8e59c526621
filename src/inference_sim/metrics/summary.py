"""Turn a finished simulation into the reference-compatible summary and records.

Key names and order follow the reference's metrics JSON so existing scripts keep
working; keys the reference does not have are appended after its own.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from inference_sim.core.request import Request, RequestState
from inference_sim.kv.tier_metrics import tier_request_fields, tier_summary
from inference_sim.metrics.anomalies import hol_blocking_events, priority_inversions, slo_metrics
from inference_sim.metrics.outcome import InstanceView, SimulationOutcome
from inference_sim.metrics.request_log import RecordView
from inference_sim.metrics.stats import TickHistogram, mean_ms, merge_histograms, percentile_ms

_OPTIONAL_RECORD_KEYS = ("slo_class", "tenant_id", "handled_by", "model")


def ttft_ticks(req: Request) -> int | None:
    return req.first_token_time - req.arrival_time if req.first_token_time >= 0 else None


def e2e_ticks(req: Request) -> int | None:
    """TTFT plus the request's ITL samples, once it has finished."""
    if req.state != RequestState.FINISHED:
        return None
    return req.first_token_time - req.arrival_time + req.itl_sum


def tpot_ticks(e2e: np.ndarray, ttft: np.ndarray, num_output: np.ndarray) -> list[float]:
    """Per-request time per output token (µs), ascending: (E2E - TTFT) / (output - 1).

    Over completed requests with more than one output token; each request counts once,
    whatever its length (ITL counts every token instead).
    """
    done = (e2e >= 0) & (ttft >= 0) & (num_output > 1)
    values = (e2e[done] - ttft[done]) / (num_output[done] - 1)
    return np.sort(values).tolist()


def request_record(req: Request) -> dict[str, Any]:
    """One per-request entry with the reference's keys, in its order."""
    ttft = ttft_ticks(req)
    e2e = e2e_ticks(req)
    finished = e2e is not None
    itl_ms = 0.0
    if finished and req.num_output_tokens > 1:
        itl_ms = req.itl_sum / (req.num_output_tokens - 1) / 1000.0
    record: dict[str, Any] = {
        "arrived_at": req.arrival_time / 1e6,
        "requestID": req.request_id,
        "num_prefill_tokens": req.num_prompt_tokens,
        "num_decode_tokens": req.num_output_tokens,
        "ttft_ms": ttft / 1000.0 if ttft is not None else 0.0,
        "itl_ms": itl_ms,
        "e2e_ms": e2e / 1000.0 if e2e is not None else 0.0,
        "scheduling_delay_ms": (
            (req.first_scheduled_time - req.arrival_time) / 1000.0
            if req.first_scheduled_time >= 0
            else 0.0
        ),
    }
    optional = (
        req.slo_class,
        req.tenant_id,
        f"instance_{req.handled_by}" if req.handled_by >= 0 else "",
        req.model,
    )
    for key, value in zip(_OPTIONAL_RECORD_KEYS, optional, strict=True):
        if value:
            record[key] = value
    return record


def registered(req: Request) -> bool:
    """Routed to an instance and not dropped: the reference's per-request registry."""
    return req.handled_by >= 0 and req.state not in (RequestState.DROPPED, RequestState.REJECTED)


def _ended(inst: InstanceView, horizon: int) -> int:
    """When the instance's own simulation ended (the cluster spec's per-instance
    ``SimEndedTime``): the time of its last event executed, i.e. its last event or the
    end of its last step, whichever is later; a step the horizon cuts never reaches its
    end, so then its start (the clock) counts, as in the reference. 0 for an instance
    that never received work."""
    if inst.busy_until > horizon:
        return inst.clock
    return inst.busy_until if inst.busy_until > inst.clock else inst.clock


def build_summary(
    outcome: SimulationOutcome,
    instances: Sequence[InstanceView] | None = None,
    *,
    instance_id: str = "cluster",
) -> dict[str, Any]:
    """The metrics object for the given instances (all of them: the cluster block)."""
    whole = instances is None
    insts = list(outcome.instances if instances is None else instances)
    members = {inst.index for inst in insts}
    log = outcome.log
    rows = log.rows_for(None if whole else members)
    stats = [inst.stats for inst in insts]
    completed = sum(s.completed for s in stats)
    in_flight = sum(n for target, n in outcome.in_flight.items() if whole or target in members)
    still_queued = sum(len(inst.waiting) for inst in insts) + in_flight
    still_running = sum(len(inst.running) for inst in insts)
    dropped = sum(s.dropped_unservable for s in stats)
    total_out = sum(s.total_output_tokens for s in stats)
    horizon = outcome.horizon
    end = outcome.end_time if whole else max((_ended(i, horizon) for i in insts), default=0)
    duration = end / 1e6

    ttft_col = log.column("ttft", rows)
    e2e_col = log.column("e2e", rows)
    delay_col = log.column("sched_delay", rows)
    ttfts = np.sort(ttft_col[ttft_col >= 0]).tolist()
    e2es = np.sort(e2e_col[e2e_col >= 0]).tolist()
    delays = np.sort(delay_col[delay_col >= 0]).tolist()
    itl = TickHistogram(merge_histograms([s.itl_histogram for s in stats]))

    active = completed > 0 and duration > 0
    out: dict[str, Any] = {
        "instance_id": instance_id,
        "completed_requests": completed,
        "still_queued": still_queued,
        "still_running": still_running,
        "injected_requests": completed + still_queued + still_running + dropped,
        "total_input_tokens": sum(s.total_input_tokens for s in stats),
        "total_output_tokens": total_out,
        "vllm_estimated_duration_s": duration,
        "responses_per_sec": completed / duration if active else 0.0,
        "tokens_per_sec": total_out / duration if active else 0.0,
    }
    for key, values in (("e2e", e2es), ("ttft", ttfts)):
        out[f"{key}_mean_ms"] = mean_ms(values) if completed else 0.0
        for p in (90, 95, 99):
            out[f"{key}_p{p}_ms"] = percentile_ms(values, p) if completed else 0.0
    out["itl_mean_ms"] = itl.mean_ms() if completed else 0.0
    for p in (90, 95, 99):
        out[f"itl_p{p}_ms"] = itl.percentile_ms(p) if completed else 0.0
    out["scheduling_delay_p99_ms"] = percentile_ms(delays, 99) if completed else 0.0
    failures = sum(s.kv_allocation_failures for s in stats)
    if failures:
        out["kv_allocation_failures"] = failures
    out["preemption_count"] = sum(s.preemption_count for s in stats)
    out["dropped_unservable"] = dropped
    # --- keys the reference does not have -------------------------------------------
    looked_up = sum(s.prefix_lookup_tokens for s in stats)
    # An autoscaled cluster's capacity: the replicas that existed at some time (a
    # replica the controller never started holds no cache).
    existed = insts
    if outcome.provisioned is not None and (whole or len(insts) > 1):  # cluster or a pool
        started = set(outcome.provisioned)
        existed = [inst for inst in insts if inst.index in started]
    out["total_kv_blocks"] = sum(inst.config.num_gpu_blocks for inst in existed)
    out["prefix_cache_hit_rate"] = (
        sum(s.cached_prompt_tokens for s in stats) / looked_up if looked_up else 0.0
    )
    if any(s.speculative for s in stats):
        # Speculative decoding (docs/speculative-decoding.md); absent when it is off.
        spec_steps = sum(s.spec_request_steps for s in stats)
        drafted = sum(s.spec_draft_tokens for s in stats)
        accepted = sum(s.spec_accepted_tokens for s in stats)
        out["spec_acceptance_rate"] = accepted / drafted if drafted else 0.0
        out["spec_mean_accepted_tokens"] = accepted / spec_steps if spec_steps else 0.0
        # No step verified drafts (every draft cut by the budget): one token per step.
        out["spec_tokens_per_step"] = (accepted + spec_steps) / spec_steps if spec_steps else 1.0
        out["spec_draft_tokens"] = drafted
    # Medians, and per-request TPOT (docs/results.md): what vLLM's benchmark reports.
    out["ttft_p50_ms"] = percentile_ms(ttfts, 50) if completed else 0.0
    out["e2e_p50_ms"] = percentile_ms(e2es, 50) if completed else 0.0
    out["itl_p50_ms"] = itl.percentile_ms(50) if completed else 0.0
    tpots = tpot_ticks(e2e_col, ttft_col, log.column("num_output", rows))
    out["tpot_mean_ms"] = mean_ms(tpots)
    for p in (50, 90, 95, 99):
        out[f"tpot_p{p}_ms"] = percentile_ms(tpots, p)
    if whole:
        out["rejected_requests"] = outcome.rejected
        out["rejected_too_long"] = outcome.rejected_too_long
        out["priority_inversions"] = priority_inversions(log, outcome.priority_policy)
        sums = outcome.queue_length_sums
        if outcome.provisioned is not None and len(sums) == len(insts):
            sums = [sums[i] for i in outcome.provisioned]
        out["hol_blocking_events"] = hol_blocking_events(existed, sums)
        per_slo = slo_metrics(log, rows)
        if per_slo:
            out["slo_metrics"] = per_slo
    # Tiered KV cache (only with a CPU tier): docs/kv-offload.md.
    out.update(tier_summary([(inst.kv, inst.config.kv_block_bytes) for inst in insts]))
    return out


def build_records(outcome: SimulationOutcome) -> list[dict[str, Any]]:
    """Per-request records of every request that reached an instance, in generation order."""
    return list(record_view(outcome))


def record_view(outcome: SimulationOutcome) -> RecordView:
    """:func:`build_records` as a view that builds each record when it is read."""
    tier = [(inst.kv, inst.config.kv_block_bytes) for inst in outcome.instances]
    return RecordView(outcome.log, outcome.log.rows_for(None), tier_request_fields(tier))


def pd_record_view(outcome: SimulationOutcome, pd_fields: dict[int, dict[str, Any]]) -> RecordView:
    """:func:`record_view` with each request's prefill/decode instance and KV transfer."""
    tier = [(inst.kv, inst.config.kv_block_bytes) for inst in outcome.instances]
    extra = tier_request_fields(tier)
    for idx, fields in pd_fields.items():
        extra[idx] = {**extra.get(idx, {}), **fields}
    return RecordView(outcome.log, outcome.log.rows_for(None), extra)


def stage_groups(
    requests: Iterable[Request], stages: Sequence[tuple[int, int, float]]
) -> Iterator[Request]:
    """Pass ``requests`` through, setting ``itl_group`` to the index of the stage
    ``[start, end)`` each arrived in, so the instances keep one ITL histogram per stage
    (what :func:`build_stage_summaries` reads). Requests outside every stage are left
    ungrouped."""
    starts = [start for start, _end, _rate in stages]
    ends = [end for _start, end, _rate in stages]
    for req in requests:
        k = bisect_right(starts, req.arrival_time) - 1
        if k >= 0 and req.arrival_time < ends[k]:
            req.itl_group = k
        yield req


def build_stage_summaries(
    outcome: SimulationOutcome, stages: Sequence[tuple[int, int, float]]
) -> list[dict[str, Any]]:
    """One metrics entry per load stage ``(start_us, end_us, rate)``.

    Each entry covers the requests that ARRIVED in ``[start, end)`` (whenever they
    finished): counts, token totals, the latency means and percentiles of the summary,
    and throughput over the stage's own span, from its start to the last completion of
    its requests, then the summary's medians and per-request TPOT keys. The ITL keys
    are exact, over every ITL sample of the stage's requests, as the summary's: they
    come from the instances' per-group ITL histograms, so the requests must have been
    passed through :func:`stage_groups` with the same stages (``itl_group`` = stage
    index). Without any group histogram (requests not grouped) only ``itl_mean_ms`` is
    given, token-weighted over the stage's completed requests.

    ``arrived_requests`` and ``offered_rate`` count every request that arrived in the
    stage, those refused or dropped included, when ``outcome`` is a
    :class:`SimulationOutcome` that counted them per group (the cluster simulator does);
    ``rejected_requests``, ``rejected_too_long`` and ``dropped_unservable`` say how many
    of them never reached an instance or could never fit (the summary's keys, per stage).
    ``dropped_unservable`` is what is left of the arrivals once the request log (every
    request that reached an instance and was not dropped) and the refusals are taken
    out: dropped requests are in no log. Otherwise (requests not grouped) only the
    logged requests are counted and the three keys are 0. A stage whose requests did
    not complete reports 0 for its latency keys, as the summary does when nothing
    completed: read them with ``completed_requests``.
    """
    insts = outcome.instances
    # Per-stage histograms exist (or there is no ITL sample at all: every ITL key is 0).
    grouped = any(i.stats.itl_group_histograms for i in insts) or not any(
        i.stats.itl_histogram for i in insts
    )
    log = outcome.log
    rows = log.rows_for(None)
    arrival = log.column("arrival", rows)
    ttft = log.column("ttft", rows)
    e2e = log.column("e2e", rows)
    delay = log.column("sched_delay", rows)
    n_in = log.column("num_input", rows)
    n_out = log.column("num_output", rows)
    out: list[dict[str, Any]] = []
    for k, (start, end, rate) in enumerate(stages):
        sel = (arrival >= start) & (arrival < end)
        logged = int(sel.sum())
        rejected = too_long = 0
        arrived = logged
        if outcome.arrived_by_group:
            rejected = outcome.rejected_by_group.get(k, 0)
            too_long = outcome.too_long_by_group.get(k, 0)
            # max: requests grouped other than by these stages cannot make it negative.
            arrived = max(outcome.arrived_by_group.get(k, 0), logged + rejected + too_long)
        done = sel & (e2e >= 0)
        completed = int(done.sum())
        ttfts = np.sort(ttft[sel & (ttft >= 0)]).tolist()
        e2es = np.sort(e2e[done]).tolist()
        delays = np.sort(delay[sel & (delay >= 0)]).tolist()
        total_out = int(n_out[done].sum())
        last_finish = int((arrival[done] + e2e[done]).max()) if completed else start
        span = (last_finish - start) / 1e6
        active = completed > 0 and span > 0
        entry: dict[str, Any] = {
            "stage": k,
            "start_s": start / 1e6,
            "end_s": end / 1e6,
            "rate": rate,
            "arrived_requests": arrived,
            "offered_rate": arrived / ((end - start) / 1e6),
            "completed_requests": completed,
            "total_input_tokens": int(n_in[done].sum()),
            "total_output_tokens": total_out,
            "vllm_estimated_duration_s": span,
            "responses_per_sec": completed / span if active else 0.0,
            "tokens_per_sec": total_out / span if active else 0.0,
        }
        for key, values in (("e2e", e2es), ("ttft", ttfts)):
            entry[f"{key}_mean_ms"] = mean_ms(values) if completed else 0.0
            for p in (90, 95, 99):
                entry[f"{key}_p{p}_ms"] = percentile_ms(values, p) if completed else 0.0
        if grouped:
            itl = TickHistogram(
                merge_histograms([inst.stats.itl_group_histograms.get(k, {}) for inst in insts])
            )
            entry["itl_mean_ms"] = itl.mean_ms() if completed else 0.0
            for p in (90, 95, 99):
                entry[f"itl_p{p}_ms"] = itl.percentile_ms(p) if completed else 0.0
        else:
            multi = done & (n_out > 1)
            itl_samples = int((n_out[multi] - 1).sum())
            itl_total = int((e2e[multi] - ttft[multi]).sum())
            entry["itl_mean_ms"] = itl_total / itl_samples / 1000.0 if itl_samples else 0.0
        entry["scheduling_delay_p99_ms"] = percentile_ms(delays, 99) if completed else 0.0
        # The summary's medians and per-request TPOT too, over the stage's requests.
        entry["ttft_p50_ms"] = percentile_ms(ttfts, 50) if completed else 0.0
        entry["e2e_p50_ms"] = percentile_ms(e2es, 50) if completed else 0.0
        if grouped:
            entry["itl_p50_ms"] = itl.percentile_ms(50) if completed else 0.0
        tpots = tpot_ticks(e2e[sel], ttft[sel], n_out[sel])
        entry["tpot_mean_ms"] = mean_ms(tpots)
        for p in (50, 90, 95, 99):
            entry[f"tpot_p{p}_ms"] = percentile_ms(tpots, p)
        # The requests of the stage that never reached an instance or never fit one.
        entry["rejected_requests"] = rejected
        entry["rejected_too_long"] = too_long
        entry["dropped_unservable"] = arrived - logged - rejected - too_long
        out.append(entry)
    return out
