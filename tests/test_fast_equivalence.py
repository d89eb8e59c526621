"""The fast stepper gives exactly the plain stepper's results (issue 9's reference mode)."""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference_sim.cluster.simulator import ClusterSimulator
from inference_sim.core.request import Request, RequestState
from inference_sim.instance import make_instance
from inference_sim.instance.config import EngineConfig
from inference_sim.latency.blackbox import BlackboxLatencyModel
from inference_sim.metrics.summary import build_records, build_summary
from simhelpers import simulate_requests


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 30))
    alphabet = draw(st.integers(2, 50))
    shared = draw(st.lists(st.integers(0, alphabet), min_size=0, max_size=64))
    reqs = []
    t = 0
    for i in range(n):
        t += draw(st.sampled_from([0, 0, 1, 500, 3000, 20000]))
        own = draw(st.lists(st.integers(0, alphabet), min_size=1, max_size=90))
        prompt = (shared if draw(st.booleans()) else []) + own
        out = draw(st.integers(0, 70))
        reqs.append(Request(i, t, prompt, [(i * 7 + k) % 97 for k in range(out)]))
    # ITL groups (per-stage histograms): none, one per request, or a few with gaps.
    grouping = draw(st.sampled_from(["none", "request", "few"]))
    for r in reqs:
        if grouping == "request":
            r.itl_group = r.index
        elif grouping == "few":
            r.itl_group = draw(st.sampled_from([-1, 0, 1, 2]))
    cfg = dict(
        num_gpu_blocks=draw(st.integers(6, 120)),
        block_size=draw(st.sampled_from([1, 2, 4, 16])),
        max_num_seqs=draw(st.integers(1, 12)),
        max_num_batched_tokens=draw(st.integers(4, 200)),
        long_prefill_token_threshold=draw(st.sampled_from([0, 0, 8, 33])),
        num_instances=draw(st.integers(1, 3)),
        beta=(
            draw(st.sampled_from([0.0, 1000.0, 2500.5])),
            draw(st.sampled_from([0.0, 1.0, 3.3])),
            draw(st.sampled_from([0.0, 1.0, 7.7])),
        ),
        alpha=(draw(st.sampled_from([0.0, 300.0])), 1.0, draw(st.sampled_from([0.0, 50.0]))),
        enable_prefix_caching=draw(st.booleans()),
        horizon=draw(st.sampled_from([2**63 - 1, 2**63 - 1, 40_000, 150_000])),
    )
    # Tiered KV cache (docs/kv-offload.md) in about half of the cases.
    cpu_blocks = draw(st.sampled_from([0, 0, 0, 3, 40, 400]))
    if cpu_blocks:
        cfg["tier"] = dict(
            kv_cpu_blocks=cpu_blocks,
            kv_offload_threshold=draw(st.sampled_from([0.0, 0.5, 0.9, 1.0])),
            kv_transfer_bandwidth=draw(st.sampled_from([0.05, 1.0, 100.0])),
            kv_transfer_base_latency=draw(st.sampled_from([0, 7])),
        )
    # vLLM's async scheduling (docs/engine.md#async-scheduling) in about a third.
    cfg["async_scheduling"] = draw(st.sampled_from([False, False, True]))
    return reqs, cfg


def _simulate(reqs, *, exact_steps, tier=None, async_scheduling=False, **cfg):
    if tier is None and not async_scheduling:
        return simulate_requests(reqs, exact_steps=exact_steps, **cfg)
    engine = EngineConfig(
        num_gpu_blocks=cfg["num_gpu_blocks"],
        block_size=cfg["block_size"],
        max_num_seqs=cfg["max_num_seqs"],
        max_num_batched_tokens=cfg["max_num_batched_tokens"],
        long_prefill_token_threshold=cfg["long_prefill_token_threshold"],
        enable_prefix_caching=cfg["enable_prefix_caching"],
        exact_steps=exact_steps,
        async_scheduling=async_scheduling,
        **(tier or {}),
    )
    instances = [
        make_instance(i, engine, BlackboxLatencyModel(cfg["alpha"], cfg["beta"]))
        for i in range(cfg["num_instances"])
    ]
    sim = ClusterSimulator(instances, horizon=cfg["horizon"], check_invariants=True)
    return sim.run(reqs)


def _fingerprint(outcome):
    summary = build_summary(outcome)
    # itl_sum is only defined once a request has finished (E2E = TTFT + itl_sum).
    per_request = [
        (
            r.state,
            r.first_scheduled_time,
            r.first_token_time,
            r.finish_time,
            r.itl_sum if r.state == RequestState.FINISHED else None,
            r.num_preemptions,
            r.delivered,
        )
        for r in outcome.requests
    ]
    hists = [dict(sorted(i.stats.itl_histogram.items())) for i in outcome.instances]
    group_hists = [
        {g: dict(sorted(h.items())) for g, h in sorted(i.stats.itl_group_histograms.items())}
        for i in outcome.instances
    ]
    steps = [i.stats.step_count for i in outcome.instances]
    tiers = [
        (i.kv.cpu.offloads, i.kv.cpu.reloads, i.kv.cpu.thrash, dict(i.kv.cpu.entries))
        for i in outcome.instances
        if i.kv.cpu is not None
    ]
    return (
        summary,
        build_records(outcome),
        per_request,
        hists,
        group_hists,
        steps,
        outcome.end_time,
        tiers,
    )


def _check_groups(outcome):
    """The ITL histograms hold exactly the samples of the requests that completed (engine
    spec 4.5: a request's samples join ``all_itls`` when it completes; those of requests
    cut by the horizon or dropped after running are not counted), overall and per group."""
    samples: dict[int, int] = {}
    totals: dict[int, int] = {}
    for r in outcome.requests:
        if r.handled_by >= 0 and r.state == RequestState.FINISHED:
            for g in {-1, r.itl_group}:
                samples[g] = samples.get(g, 0) + max(r.delivered - 1, 0)
                totals[g] = totals.get(g, 0) + r.itl_sum
    merged: dict[int, dict[int, int]] = {}
    for inst in outcome.instances:
        hists = {-1: inst.stats.itl_histogram, **inst.stats.itl_group_histograms}
        for g, h in hists.items():
            assert all(c > 0 for c in h.values())
            dst = merged.setdefault(g, {})
            for v, c in h.items():
                dst[v] = dst.get(v, 0) + c
    for g in set(samples) | set(merged):
        assert sum(merged.get(g, {}).values()) == samples.get(g, 0), g
        # E2E = TTFT + the sum of the request's ITL samples
        assert sum(v * c for v, c in merged.get(g, {}).items()) == totals.get(g, 0), g


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_fast_stepper_equals_plain_stepper(scenario):
    reqs, cfg = scenario
    plain = _simulate(copy.deepcopy(reqs), exact_steps=True, **cfg)
    fast = _simulate(copy.deepcopy(reqs), exact_steps=False, **cfg)
    assert _fingerprint(fast) == _fingerprint(plain)
    _check_groups(plain)
