"""The hand-checkable vectors of engine.md §14b (the reference's §14 under our decisions)."""

from __future__ import annotations

import pytest

from inference_sim.metrics.summary import build_summary, e2e_ticks, ttft_ticks
from simhelpers import make_request, simulate_requests


def _ttft(outcome, i):
    return ttft_ticks(outcome.requests[i])


def _e2e(outcome, i):
    return e2e_ticks(outcome.requests[i])


def test_v1_single_request():
    reqs = [make_request(0, 0, 16, 5)]
    out = simulate_requests(reqs, alpha=(100, 1, 50), beta=(1000, 2, 3))
    r = reqs[0]
    assert r.first_scheduled_time == 116
    assert _ttft(out, 0) == 1198
    assert _e2e(out, 0) == 5410
    assert out.end_time == 5160
    s = build_summary(out)
    assert s["total_output_tokens"] == 5
    assert s["vllm_estimated_duration_s"] == 0.00516
    assert s["itl_mean_ms"] == pytest.approx(1.053)
    assert s["tokens_per_sec"] == pytest.approx(968.9922480620156)


def test_v2_chunked_prefill():
    reqs = [make_request(0, 0, 100, 3)]
    out = simulate_requests(reqs, beta=(1000, 10, 1), long_prefill_token_threshold=32)
    assert _ttft(out, 0) == 5000
    assert _e2e(out, 0) == 7002
    assert out.end_time == 7002
    assert out.instances[0].stats.step_count == 6
    assert reqs[0].itl_sum == 2002
    assert build_summary(out)["total_output_tokens"] == 3


def test_v3_prefix_cache_hit_rate_counts_prompt_tokens():
    r0 = make_request(0, 0, list(range(40)), 2)
    r1 = make_request(1, 50_000, [*range(32), *range(500, 508)], 2)
    out = simulate_requests([r0, r1], beta=(1000, 10, 1))
    assert _ttft(out, 0) == 1400
    assert _ttft(out, 1) == 1080
    assert _e2e(out, 0) == 2401
    assert _e2e(out, 1) == 2081
    assert out.end_time == 52081
    s = build_summary(out)
    assert s["prefix_cache_hit_rate"] == pytest.approx(0.4)
    assert s["total_output_tokens"] == 4


def test_v3b_fully_cached_prompt_recomputes_last_block():
    r0 = make_request(0, 0, list(range(32)), 2)
    r1 = make_request(1, 50_000, list(range(32)), 2)
    out = simulate_requests([r0, r1], beta=(1000, 10, 1))
    assert _ttft(out, 0) == 1320
    assert _e2e(out, 0) == 2321
    assert _ttft(out, 1) == 1160
    assert _e2e(out, 1) == 2161
    assert out.end_time == 52161
    assert build_summary(out)["prefix_cache_hit_rate"] == pytest.approx(0.25)


def test_v4_zero_output():
    reqs = [make_request(0, 0, 20, 0)]
    out = simulate_requests(reqs, beta=(1000, 1, 1))
    assert _ttft(out, 0) == 1020
    assert _e2e(out, 0) == 1020
    s = build_summary(out)
    assert s["total_output_tokens"] == 0
    assert s["itl_mean_ms"] == 0
    assert s["itl_p99_ms"] == 0
    assert s["completed_requests"] == 1


@pytest.mark.parametrize("count", [1, 2, 3])
def test_v6_simultaneous_arrivals_share_one_step_chain(count):
    reqs = [make_request(i, 0, 16, 5) for i in range(count)]
    out = simulate_requests(reqs, beta=(1000, 0, 0))
    assert out.end_time == 5000
    for i in range(count):
        assert _ttft(out, i) == 1000
        assert _e2e(out, i) == 5000
        assert reqs[i].first_scheduled_time == 0
    assert build_summary(out)["total_output_tokens"] == 5 * count


def test_v6b_arrival_joins_step_starting_at_same_tick():
    reqs = [make_request(0, 0, 16, 5), make_request(1, 2000, 16, 5)]
    out = simulate_requests(reqs, beta=(1000, 0, 0))
    assert _ttft(out, 0) == 1000 and _ttft(out, 1) == 1000
    assert _e2e(out, 0) == 5000 and _e2e(out, 1) == 5000
    assert out.end_time == 7000


def test_v7_budget_and_ties():
    reqs = [make_request(i, 0, 1000, 2) for i in range(3)]
    out = simulate_requests(reqs, beta=(1000, 1, 1), max_num_batched_tokens=1500)
    assert [_ttft(out, i) for i in range(3)] == [2500, 5000, 6002]
    assert [_e2e(out, i) for i in range(3)] == [5000, 6002, 7003]
    assert [r.first_scheduled_time for r in reqs] == [0, 0, 2500]
    assert out.end_time == 7003
    s = build_summary(out)
    assert s["itl_mean_ms"] == pytest.approx(1.501)
    assert s["total_output_tokens"] == 6
    assert s["e2e_mean_ms"] == pytest.approx(6.001666666666667)
    assert s["ttft_mean_ms"] == pytest.approx(4.500666666666667)


def test_v8_kv_pressure_preempts_and_finishes():
    reqs = [make_request(0, 0, 40, 30), make_request(1, 10, 40, 30)]
    out = simulate_requests(reqs, beta=(1000, 1, 1), num_gpu_blocks=6)
    s = build_summary(out)
    assert s["completed_requests"] == 2
    assert out.end_time == 52169
    assert out.instances[0].stats.step_count == 52
    assert out.instances[0].kv.num_used == 0
    assert s["preemption_count"] == 1
    assert _ttft(out, 0) == 1040
    assert _e2e(out, 0) == 30116
    assert _ttft(out, 1) == 2071
    assert _e2e(out, 1) == 52159
    assert s["total_output_tokens"] == 60
    assert s["e2e_mean_ms"] == pytest.approx(41.1375)
    assert s["e2e_p99_ms"] == pytest.approx(51.93857)
    assert s["ttft_mean_ms"] == pytest.approx(1.5555)
    assert s["itl_mean_ms"] == pytest.approx(1.3648965517241378)
    assert s["itl_p90_ms"] == pytest.approx(1.002)
    assert s["itl_p99_ms"] == pytest.approx(10.07616)
    assert s["scheduling_delay_p99_ms"] == pytest.approx(1.0197)
    assert s["prefix_cache_hit_rate"] == 0.0


def test_v8_identical_prompts():
    prompt = list(range(40))
    reqs = [make_request(0, 0, list(prompt), 30), make_request(1, 10, list(prompt), 30)]
    out = simulate_requests(reqs, beta=(1000, 1, 1), num_gpu_blocks=6)
    assert out.end_time == 36121
    assert _ttft(out, 0) == 1040 and _ttft(out, 1) == 2039
    assert _e2e(out, 0) == 30100 and _e2e(out, 1) == 36111
    assert build_summary(out)["prefix_cache_hit_rate"] == pytest.approx(0.4)


@pytest.mark.parametrize("exact_steps", [True, False])
def test_a_prefix_computed_twice_at_once_stays_cached_after_one_copy_goes(exact_steps):
    """R0 and R1 compute the same 3-block prefix in the same chunks, so each holds a
    copy. R1 finishes; R2's fresh prompt evicts R1's freed copies, the first ones prefix
    hits used. R3 then hits all 48 prefix tokens on R0's copies (vLLM indexes every
    copy): its only step is the one recomputing its last token."""
    prefix = list(range(48))
    reqs = [
        make_request(0, 0, [*prefix, 900], 40),
        make_request(1, 0, [*prefix, 901], 1),
        make_request(2, 35_000, 96, 1),
        make_request(3, 120_000, [*prefix, 902], 1),
    ]
    out = simulate_requests(
        reqs, beta=(10_000.0, 0.0, 0.0), num_gpu_blocks=10, max_num_batched_tokens=64,
        long_prefill_token_threshold=16, exact_steps=exact_steps,
    )  # fmt: skip
    # R1 hit R0's first block when both were admitted; R3 hits the whole prefix.
    assert out.instances[0].stats.cached_prompt_tokens == 16 + 48
    assert _ttft(out, 3) == 10_000  # one 10 ms step (was three: 16 tokens hit, 32 redone)
