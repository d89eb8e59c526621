"""Tiered GPU + CPU KV cache (issue 7; docs/kv-offload.md).

Unit tests of the CPU tier and the manager against hand-computed values, engine runs
whose prefixes leave the GPU and come back, KV conservation on both tiers (property
tests), metrics, and the command line's checks and derived figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference_sim.cli.main import cli
from inference_sim.cluster.simulator import ClusterSimulator, SimulationOutcome
from inference_sim.config import ConfigError, resolve
from inference_sim.core.request import Request
from inference_sim.engine.events import NEVER
from inference_sim.instance import make_instance
from inference_sim.instance.config import EngineConfig
from inference_sim.kv.cpu_tier import THRASH_WINDOW_US, CpuTier
from inference_sim.kv.manager import CPU_HIT, KVCacheManager, block_transfer_time
from inference_sim.kv.offload_config import LINK_PRESETS_GBPS
from inference_sim.latency.blackbox import BlackboxLatencyModel
from inference_sim.metrics.summary import build_records, build_summary, ttft_ticks

MODEL = "meta-llama/llama-3.1-8b-instruct"
TIER_KEYS = [
    "kv_offloads",
    "kv_reloads",
    "cpu_hit_rate",
    "kv_transfer_bytes",
    "kv_transfer_time_ms",
    "kv_thrashing_rate",
]


def simulate(
    requests: list[Request],
    *,
    beta: tuple[float, float, float] = (1000.0, 1.0, 1.0),
    exact_steps: bool = False,
    num_instances: int = 1,
    **engine: object,
) -> SimulationOutcome:
    cfg = EngineConfig(exact_steps=exact_steps, **engine)  # type: ignore[arg-type]
    insts = [
        make_instance(i, cfg, BlackboxLatencyModel((0.0, 0.0, 0.0), beta))
        for i in range(num_instances)
    ]
    return ClusterSimulator(insts, horizon=NEVER, check_invariants=True).run(requests)


def req(index: int, arrival: int, prompt: list[int], output: int = 1) -> Request:
    return Request(index, arrival, prompt, [900_000 + index * 100 + k for k in range(output)])


def admit(kv: KVCacheManager, r: Request) -> list[int] | None:
    """Batch formation's admission: look up, allocate the rest; None if it does not fit."""
    cached = kv.find_cached_prefix(r)
    n = r.prefill_target - len(cached) * kv.block_size
    if not kv.allocate_slots(r, n, cached):
        return None
    r.num_computed_tokens = r.prefill_target
    return cached


# --- transfer time -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block_size", "bandwidth", "base", "expected"),
    [
        (16, 100.0, 0, 1),  # ceil(0.16)
        (16, 16.0, 0, 1),
        (16, 3.0, 5, 11),  # 5 + ceil(5.33)
        (16, 0.38, 0, 43),  # ceil(42.1)
        (4, 2.0, 3, 5),
        (1, 0.3, 0, 4),  # ceil(3.33)
        (32, 0.001, 10, 32010),
    ],
)
def test_block_transfer_time_hand_computed(block_size, bandwidth, base, expected):
    assert block_transfer_time(block_size, bandwidth, base) == expected


# --- the CPU tier ------------------------------------------------------------------------


def test_cpu_tier_lru_drop_and_stamping():
    tier = CpuTier(2)
    tier.offload(11)
    tier.offload(22)
    tier.stamp(100)
    assert dict(tier.entries) == {11: 100, 22: 100}
    tier.offload(33)  # full: the least recently stored entry (11) is dropped
    assert list(tier.entries) == [22, 33]
    assert tier.dropped == 1
    tier.take(33)  # offloaded in this step, loaded back in this step: thrashing
    tier.take(22)  # offloaded at 100, loaded back at 100 + window: not thrashing
    tier.stamp(100 + THRASH_WINDOW_US)
    assert tier.thrash == 1
    assert (tier.offloads, tier.reloads, len(tier)) == (3, 2, 0)
    tier.check_invariants()


# --- the manager, by hand ----------------------------------------------------------------


def test_evicted_prefix_is_loaded_back_from_cpu_hand_computed():
    # 8 GPU blocks of 4 tokens; loading a block costs 3 + ceil(4 / 2.0) = 5 µs.
    kv = KVCacheManager(
        8, 4, cpu_blocks=16, offload_threshold=1.0, transfer_bandwidth=2.0, transfer_base_latency=3
    )
    p = list(range(12))  # 3 full blocks
    a = req(0, 0, p)
    assert admit(kv, a) == []
    assert kv.tables[0] == [0, 1, 2]
    kv.free(a)  # free queue: 3 4 5 6 7 2 1 0
    assert kv.take_transfer_time(0) == 0
    b = req(1, 0, list(range(100, 132)))  # 8 blocks: takes 3..7, then evicts 2, 1, 0
    assert admit(kv, b) == []
    assert kv.take_transfer_time(10_000) == 0
    assert kv.cpu.offloads == 3 and len(kv.cpu) == 3
    kv.free(b)  # free queue: 0 1 2 7 6 5 4 3, all holding b's content
    c = req(2, 0, [*p, 99])  # 13 tokens: at most (13 - 1) // 4 = 3 reusable blocks
    assert kv.find_cached_prefix(c) == [CPU_HIT] * 3
    assert admit(kv, c) == [CPU_HIT] * 3
    # Loaded into new blocks 0, 1, 2 (evicting b's content to the CPU), then 7 for token 13.
    assert kv.tables[2] == [0, 1, 2, 7]
    assert [kv.pool.block_hash[x] for x in (0, 1, 2)] == c._block_hashes[:3]
    assert kv.take_transfer_time(20_000) == 15
    assert kv.take_transfer_time(20_001) == 0  # charged once
    assert (kv.cpu.offloads, kv.cpu.reloads, kv.cpu.thrash) == (7, 3, 0)
    assert kv.request_transfers == {2: [3, 15]}
    assert (kv.cpu_hit_blocks, kv.cpu_lookup_blocks) == (3, 2 + 7 + 3)
    kv.check_invariants()
    # c's prefix is now on the GPU again: a fourth request hits it there.
    d = req(3, 0, [*p, 98])
    assert kv.find_cached_prefix(d) == [0, 1, 2]


def test_reload_soon_after_offload_is_thrashing():
    kv = KVCacheManager(4, 4, cpu_blocks=8, offload_threshold=1.0, transfer_bandwidth=4.0)
    p = list(range(8))
    a = req(0, 0, [*p, 1])
    admit(kv, a)
    kv.free(a)
    kv.take_transfer_time(0)
    b = req(1, 0, list(range(50, 66)))  # evicts a's two full blocks
    admit(kv, b)
    kv.take_transfer_time(5_000)  # offloaded at 5000
    kv.free(b)
    c = req(2, 0, [*p, 2])
    assert admit(kv, c) == [CPU_HIT, CPU_HIT]
    assert kv.take_transfer_time(5_000 + THRASH_WINDOW_US - 1) == 2
    assert kv.cpu.thrash == 2


def test_offload_above_threshold_frees_gpu_blocks_lru_first():
    # 10 blocks, threshold 0.5: at most 5 blocks may hold KV data.
    kv = KVCacheManager(10, 2, cpu_blocks=10, offload_threshold=0.5, transfer_bandwidth=1.0)
    a = req(0, 0, list(range(13)))  # 7 blocks, 6 of them full
    admit(kv, a)
    # Referenced blocks cannot move: occupancy stays 7 > 5 with nothing to offload.
    assert kv.cpu.offloads == 0
    kv.free(a)  # freed deepest first: 6 (partial, empty when free), 5, 4, ..., 0
    # 6 free blocks hold content; one must go: the least recently freed, block 5.
    assert kv.cpu.offloads == 1
    assert kv.pool.num_occupied == 5
    assert kv.pool.free_block_ids()[0] == 5  # emptied, first to be reused
    assert kv.pool.block_hash[5] is None
    kv.check_invariants()
    # The prompt comes back: 5 blocks from the GPU, the 6th loaded from the CPU.
    b = req(1, 0, list(range(13)))
    assert admit(kv, b) == [0, 1, 2, 3, 4, CPU_HIT]
    assert kv.take_transfer_time(1) == 2  # ceil(2 / 1.0)
    kv.check_invariants()


def test_threshold_zero_keeps_no_cached_block_on_gpu():
    kv = KVCacheManager(6, 2, cpu_blocks=6, offload_threshold=0.0, transfer_bandwidth=1.0)
    a = req(0, 0, list(range(9)))
    admit(kv, a)
    kv.free(a)
    assert kv.pool.num_occupied == 0 and len(kv.cpu) == 4
    kv.check_invariants()


def test_cpu_tier_full_drops_least_recently_stored():
    kv = KVCacheManager(5, 2, cpu_blocks=2, offload_threshold=0.0, transfer_bandwidth=1.0)
    a = req(0, 0, list(range(9)))  # 4 full blocks of content and a partial one
    admit(kv, a)
    kv.free(a)  # offloads 4 blocks, LRU first: 3, 2, 1, 0; only the last two stay
    assert kv.cpu.offloads == 4 and kv.cpu.dropped == 2
    assert list(kv.cpu.entries) == a._block_hashes[1::-1]
    kv.check_invariants()
    # The prefix lookup needs block 0, then 1, ...: both are there.
    b = req(1, 0, list(range(9)))
    assert kv.find_cached_prefix(b) == [CPU_HIT, CPU_HIT]


def test_recomputed_content_leaves_the_cpu_tier():
    kv = KVCacheManager(4, 2, cpu_blocks=4, offload_threshold=0.0, transfer_bandwidth=1.0)
    a = req(0, 0, [1, 2, 3, 4, 5])
    admit(kv, a)
    kv.free(a)
    assert len(kv.cpu) == 2
    # Same second block behind a different first block: a different chain, no reuse ...
    b = req(1, 0, [9, 9, 3, 4, 5])
    assert kv.find_cached_prefix(b) == []
    # ... but the same prompt with caching bypassed recomputes a's content on the GPU.
    c = req(2, 0, [1, 2, 3, 4, 5])
    kv.allocate_slots(c, 5, [])
    assert len(kv.cpu) == 0 and kv.cpu.superseded == 2
    kv.check_invariants()


def test_allocation_counts_loaded_blocks_and_changes_nothing_when_short():
    kv = KVCacheManager(4, 2, cpu_blocks=8, offload_threshold=0.0, transfer_bandwidth=1.0)
    a = req(0, 0, list(range(7)))
    admit(kv, a)
    kv.free(a)  # 3 full blocks offloaded
    hog = req(1, 0, list(range(100, 104)))  # holds 2 blocks
    admit(kv, hog)
    before = (dict(kv.cpu.entries), kv.pool.free_block_ids(), list(kv.pool.ref_cnt))
    b = req(2, 0, list(range(7)))
    cached = kv.find_cached_prefix(b)
    assert cached == [CPU_HIT] * 3
    assert not kv.allocate_slots(b, 1, cached)  # 3 loads + 1 new block > 2 free
    assert (dict(kv.cpu.entries), kv.pool.free_block_ids(), list(kv.pool.ref_cnt)) == before
    assert kv.take_transfer_time(0) == 0
    kv.check_invariants()


# --- engine runs -------------------------------------------------------------------------


def test_engine_hand_computed_reload_timing():
    # beta (1000, 1, 1); 8 GPU blocks of 4 tokens; a load costs 3 + ceil(4 / 2) = 5 µs.
    p = list(range(12))
    reqs = [
        req(0, 0, p),  # 3 full blocks
        req(1, 10_000, list(range(100, 132))),  # needs all 8 blocks: p goes to the CPU
        req(2, 20_000, [*p, 99]),  # 3 blocks loaded back (15 µs), 1 token computed
    ]
    tier = dict(
        num_gpu_blocks=8,
        block_size=4,
        kv_cpu_blocks=16,
        kv_offload_threshold=1.0,
        kv_transfer_bandwidth=2.0,
        kv_transfer_base_latency=3,
    )
    out = simulate(reqs, **tier)
    assert [ttft_ticks(r) for r in out.requests] == [1012, 1032, 1000 + 1 + 15]
    s = build_summary(out)
    assert [k for k in s if k in TIER_KEYS] == [k for k in TIER_KEYS if k != "kv_transfer_bytes"]
    assert s["kv_offloads"] == 7 and s["kv_reloads"] == 3
    assert s["cpu_hit_rate"] == 3 / 12
    assert s["kv_transfer_time_ms"] == 0.015
    assert s["kv_thrashing_rate"] == 0.0
    assert s["prefix_cache_hit_rate"] == 12 / (12 + 32 + 13)  # loaded tokens count as cached
    records = build_records(out)
    assert "kv_reloads" not in records[0] and "kv_reloads" not in records[1]
    assert records[2]["kv_reloads"] == 3 and records[2]["kv_transfer_time_ms"] == 0.015
    # Without the CPU tier the third request recomputes its 13 tokens.
    plain = simulate(
        [req(i, r.arrival_time, list(r.input_tokens)) for i, r in enumerate(reqs)],
        num_gpu_blocks=8,
        block_size=4,
    )
    assert ttft_ticks(plain.requests[2]) == 1013
    assert not any(k in build_summary(plain) for k in TIER_KEYS)


def _returning_prefixes(n_prefixes: int = 4, rounds: int = 4) -> list[Request]:
    """Requests cycling over long prefixes, far apart: each prefix is evicted before it returns."""
    prefixes = [list(range(10_000 * (k + 1), 10_000 * (k + 1) + 320)) for k in range(n_prefixes)]
    out = []
    for i in range(n_prefixes * rounds):
        own = list(range(500_000 + 20 * i, 500_000 + 20 * i + 16))
        out.append(req(i, i * 200_000, prefixes[i % n_prefixes] + own, output=4))
    return out


def _mean_ttft(outcome: SimulationOutcome) -> float:
    return sum(ttft_ticks(r) for r in outcome.requests) / len(outcome.requests)


def test_offload_lowers_ttft_when_cheap_and_raises_it_when_slow():
    beta = (2000.0, 20.0, 1.0)  # recomputing a 320-token prefix costs 6400 µs
    gpu = dict(num_gpu_blocks=48, block_size=16)  # room for about two prefixes
    base = simulate(_returning_prefixes(), beta=beta, **gpu)
    cheap = simulate(
        _returning_prefixes(), beta=beta, kv_cpu_blocks=200, kv_transfer_bandwidth=100.0, **gpu
    )
    slow = simulate(
        _returning_prefixes(), beta=beta, kv_cpu_blocks=200, kv_transfer_bandwidth=0.01, **gpu
    )
    s_base, s_cheap, s_slow = (build_summary(o) for o in (base, cheap, slow))
    # Without offload every return is a miss; with it, every return is a CPU hit.
    assert s_base["prefix_cache_hit_rate"] == 0.0
    assert s_cheap["kv_reloads"] == s_slow["kv_reloads"] == 12 * 20
    assert s_cheap["cpu_hit_rate"] == s_slow["cpu_hit_rate"] == 12 * 20 / (16 * 20)
    assert _mean_ttft(cheap) < _mean_ttft(base) < _mean_ttft(slow)
    # Per returning request: 20 blocks at 1 µs instead of 320 tokens at 20 µs; at 1600 µs.
    r = 5
    assert ttft_ticks(base.requests[r]) == 2000 + 20 * 336
    assert ttft_ticks(cheap.requests[r]) == 2000 + 20 * 16 + 20 * 1
    assert ttft_ticks(slow.requests[r]) == 2000 + 20 * 16 + 20 * 1600


def test_preempted_request_resumes_from_the_cpu_tier():
    # Two long requests that cannot both grow: the newest is preempted, its blocks are
    # evicted to the CPU, and when it resumes it loads its prompt (and output) back.
    reqs = [req(0, 0, list(range(60)), output=60), req(1, 0, list(range(1000, 1060)), output=60)]
    kw = dict(num_gpu_blocks=12, block_size=16, max_num_batched_tokens=256)
    base = simulate([req(i, 0, list(r.input_tokens), 60) for i, r in enumerate(reqs)], **kw)
    tiered = simulate(reqs, kv_cpu_blocks=64, kv_offload_threshold=1.0, **kw)
    s_base, s_tier = build_summary(base), build_summary(tiered)
    assert s_base["preemption_count"] >= 1 and s_tier["preemption_count"] >= 1
    assert s_tier["kv_reloads"] > 0
    assert s_tier["e2e_mean_ms"] <= s_base["e2e_mean_ms"]


# --- conservation on both tiers (property tests) ----------------------------------------


@st.composite
def kv_programs(draw):
    num_blocks = draw(st.integers(2, 24))
    block_size = draw(st.sampled_from([1, 2, 4]))
    tier = dict(
        cpu_blocks=draw(st.integers(1, 30)),
        offload_threshold=draw(st.sampled_from([0.0, 0.3, 0.8, 1.0])),
        transfer_bandwidth=draw(st.sampled_from([0.5, 3.0, 100.0])),
        transfer_base_latency=draw(st.sampled_from([0, 7])),
    )
    prefixes = draw(st.lists(st.lists(st.integers(0, 3), max_size=20), min_size=1, max_size=4))
    ops = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["admit", "admit", "grow", "grow", "free", "step"]),
                st.integers(0, 3),
                st.lists(st.integers(0, 5), min_size=1, max_size=12),
            ),
            max_size=60,
        )
    )
    return num_blocks, block_size, tier, prefixes, ops


def _check_tiers(kv: KVCacheManager, live: dict[int, Request]) -> None:
    kv.check_invariants()  # GPU: used + free = total, refs = tables; CPU: counters, capacity
    pool, cpu = kv.pool, kv.cpu
    assert pool.num_used + pool.num_free == pool.num_blocks
    assert len(cpu) <= cpu.capacity
    assert cpu.offloads - cpu.reloads - cpu.dropped - cpu.superseded == len(cpu)
    assert set(kv.tables) == set(live)
    for idx, r in live.items():
        assert len(kv.tables[idx]) == -(-r.num_computed_tokens // kv.block_size)
    for h in cpu.entries:  # a content hash is on one tier at a time
        assert pool.lookup(h) is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kv_programs())
def test_kv_conservation_on_both_tiers(program):
    num_blocks, block_size, tier, prefixes, ops = program
    kv = KVCacheManager(num_blocks, block_size, **tier)
    live: dict[int, Request] = {}
    now = 0
    reloads = 0
    for i, (op, k, own) in enumerate(ops):
        if op == "admit":
            r = req(i, now, prefixes[k % len(prefixes)] + own, output=8)
            cached = kv.find_cached_prefix(r)
            assert len(cached) <= (r.prefill_target - 1) // block_size  # one token computed
            n_cpu = cached.count(CPU_HIT)
            assert cached[: len(cached) - n_cpu] == [b for b in cached if b != CPU_HIT]
            before = kv.cpu.reloads
            if admit(kv, r) is not None:
                live[i] = r
                assert kv.cpu.reloads == before + n_cpu
                reloads += n_cpu
            else:
                assert kv.cpu.reloads == before
        elif op == "grow" and live:
            r = live[sorted(live)[k % len(live)]]
            c = r.num_computed_tokens
            room = c < r.num_prompt_tokens + r.num_output_tokens - 1
            if room and kv.allocate_slots(r, 1):
                r.num_computed_tokens = c + 1
        elif op == "free" and live:
            kv.free(live.pop(sorted(live)[k % len(live)]))
        elif op == "step":
            now += 1 + 600 * k
            t = kv.take_transfer_time(now)
            assert t % kv.block_transfer_us == 0
        _check_tiers(kv, live)
    assert kv.cpu.reloads == reloads
    for r in list(live.values()):
        kv.free(r)
    kv.take_transfer_time(now + 1)
    assert kv.pool.num_used == 0
    assert kv.transfer_us == reloads * kv.block_transfer_us
    _check_tiers(kv, {})


@st.composite
def tiered_runs(draw):
    alphabet = draw(st.integers(2, 20))
    shared = [draw(st.lists(st.integers(0, alphabet), max_size=48)) for _ in range(3)]
    reqs = []
    t = 0
    for i in range(draw(st.integers(1, 20))):
        t += draw(st.sampled_from([0, 1, 700, 5000, 30000]))
        own = draw(st.lists(st.integers(0, alphabet), min_size=1, max_size=40))
        reqs.append(req(i, t, shared[draw(st.integers(0, 2))] + own, draw(st.integers(0, 30))))
    cfg = dict(
        num_gpu_blocks=draw(st.integers(6, 40)),
        block_size=draw(st.sampled_from([1, 4, 16])),
        max_num_seqs=draw(st.integers(1, 6)),
        max_num_batched_tokens=draw(st.integers(8, 128)),
        kv_cpu_blocks=draw(st.integers(1, 60)),
        kv_offload_threshold=draw(st.sampled_from([0.0, 0.5, 0.9, 1.0])),
        kv_transfer_bandwidth=draw(st.sampled_from([0.05, 1.0, 100.0])),
        kv_transfer_base_latency=draw(st.sampled_from([0, 50])),
    )
    return reqs, cfg


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tiered_runs())
def test_engine_runs_conserve_blocks_and_account_transfers(run):
    reqs, cfg = run
    out = simulate(reqs, **cfg)  # check_invariants after every step: both tiers
    kv = out.instances[0].kv
    assert kv.pool.num_used == 0
    assert kv.pending_transfer_us == 0
    s = build_summary(out)
    assert s["kv_reloads"] == kv.cpu.reloads == sum(v[0] for v in kv.request_transfers.values())
    assert s["kv_transfer_time_ms"] * 1000 == pytest.approx(kv.cpu.reloads * kv.block_transfer_us)
    assert 0.0 <= s["cpu_hit_rate"] <= 1.0
    assert 0.0 <= s["kv_thrashing_rate"] <= 1.0


# --- command line ------------------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(cli, ["run", *args])


RUN = ["--model", MODEL, "--num-requests", "5"]
NO_ARCH = ["--model", "nosuch/model", "--alpha-coeffs", "0,0,0", "--beta-coeffs", "1000,1,1"]
BAD = [
    (
        "cpu-blocks-negative",
        [*RUN, "--kv-cpu-blocks", "-1"],
        "--kv-cpu-blocks must be >= 0, got -1",
    ),
    (
        "threshold-above-1",
        [*RUN, "--kv-offload-threshold", "1.5"],
        "--kv-offload-threshold must be a finite value in [0, 1], got 1.500000",
    ),
    (
        "threshold-negative",
        [*RUN, "--kv-offload-threshold", "-0.1"],
        "--kv-offload-threshold must be a finite value in [0, 1], got -0.100000",
    ),
    ("threshold-nan", [*RUN, "--kv-offload-threshold", "nan"], "--kv-offload-threshold"),
    (
        "bandwidth-zero",
        [*RUN, "--kv-cpu-blocks", "10", "--kv-transfer-bandwidth", "0"],
        "--kv-transfer-bandwidth must be a finite value > 0 when --kv-cpu-blocks > 0, got 0.000000",
    ),
    (
        "bandwidth-inf",
        [*RUN, "--kv-cpu-blocks", "10", "--kv-transfer-bandwidth", "inf"],
        "--kv-transfer-bandwidth",
    ),
    (
        "base-latency-negative",
        [*RUN, "--kv-transfer-base-latency", "-3"],
        "--kv-transfer-base-latency must be >= 0, got -3",
    ),
    ("gib-negative", [*RUN, "--cpu-offload-gib", "-1"], "--cpu-offload-gib"),
    (
        "gib-and-blocks",
        [*RUN, "--cpu-offload-gib", "4", "--kv-cpu-blocks", "10"],
        "and --kv-cpu-blocks (10) both size the CPU KV tier",
    ),
    ("gib-too-small", [*RUN, "--cpu-offload-gib", "0.0001"], "holds no KV block"),
    ("gib-without-architecture", [*NO_ARCH, "--cpu-offload-gib", "4"], "--kv-cpu-blocks"),
    ("link-unknown", [*RUN, "--kv-transfer-link", "nvlink"], "--kv-transfer-link"),
    (
        "link-and-bandwidth",
        [
            *RUN,
            "--kv-cpu-blocks",
            "9",
            "--kv-transfer-link",
            "pcie-gen5",
            "--kv-transfer-bandwidth",
            "3",
        ],
        "and --kv-transfer-bandwidth (3) both set",
    ),
    (
        "link-without-architecture",
        [*NO_ARCH, "--kv-cpu-blocks", "9", "--kv-transfer-link", "pcie-gen4"],
        "--kv-transfer-bandwidth",
    ),
]


@pytest.mark.parametrize(("args", "needle"), [pytest.param(a, n, id=i) for i, a, n in BAD])
def test_bad_tier_input_exits_2_with_one_line(args, needle):
    result = invoke(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert needle in lines[0]


def test_zero_bandwidth_is_fine_without_cpu_tier():
    result = invoke(*RUN, "--kv-transfer-bandwidth", "0")
    assert result.exit_code == 0  # as the reference: not a range error without a tier
    assert "--kv-transfer-bandwidth 0: no effect without a CPU KV tier" in result.stderr


def test_friendly_flags_derive_blocks_and_bandwidth_and_log_them():
    plan = resolve(
        {"model": MODEL, "tp": 2, "cpu_offload_gib": 4.0, "kv_transfer_link": "pcie-gen4"}
    )
    # Llama-3.1-8B: 32 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes = 128 KiB per token;
    # at TP 2 each GPU holds 64 KiB of it; a 16-token block is 2 MiB over both GPUs.
    assert plan.engine.kv_block_bytes == 2 * 2**20
    assert plan.engine.kv_cpu_blocks == 4 * 2**30 // (2 * 2**20) == 2048
    assert plan.engine.kv_transfer_bandwidth == pytest.approx(25e9 / 1e6 / 65536)
    assert plan.options["kv_cpu_blocks"] == 2048
    notes = " | ".join(plan.notes)
    assert "= 2048 blocks" in notes and "0.3815 tokens/µs" in notes
    assert "loading one block back takes 42 µs" in notes
    assert LINK_PRESETS_GBPS == {"pcie-gen4": 25.0, "pcie-gen5": 50.0}


def test_no_architecture_still_runs_with_blocks_but_without_bytes():
    plan = resolve(
        {
            "model": "nosuch/model",
            "alpha_coeffs": "0,0,0",
            "beta_coeffs": "1,1,1",
            "kv_cpu_blocks": 5,
        }
    )
    assert plan.engine.kv_cpu_blocks == 5 and plan.engine.kv_block_bytes == 0.0
    with pytest.raises(ConfigError, match="--cpu-offload-gib"):
        resolve(
            {
                "model": "nosuch/model",
                "alpha_coeffs": "0,0,0",
                "beta_coeffs": "1,1,1",
                "cpu_offload_gib": 1,
            }
        )


def test_cli_run_prints_tier_keys_last_and_per_request_fields(tmp_path: Path):
    path = tmp_path / "r.json"
    args = [
        *RUN[:2],
        "--num-requests",
        "60",
        "--rate",
        "20",
        "--prefix-tokens",
        "2000",
        "--total-kv-blocks",
        "400",
        "--cpu-offload-gib",
        "2",
        "--kv-transfer-link",
        "pcie-gen5",
        "--results-path",
        str(path),
    ]
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(path.read_text())
    keys = list(doc)
    start = keys.index(TIER_KEYS[0])  # appended after every other summary key
    assert keys[start : start + len(TIER_KEYS)] == TIER_KEYS
    assert start > keys.index("hol_blocking_events")
    assert doc["kv_reloads"] > 0 and doc["kv_offloads"] > 0
    assert doc["kv_transfer_bytes"] == (doc["kv_offloads"] + doc["kv_reloads"]) * 2 * 2**20
    assert doc["config"]["kv_cpu_blocks"] == 1024
    loaded = [r for r in doc["requests"] if "kv_reloads" in r]
    assert loaded and sum(r["kv_reloads"] for r in loaded) == doc["kv_reloads"]
    assert list(loaded[0])[-3:] == ["kv_reloads", "kv_transfer_bytes", "kv_transfer_time_ms"]
    assert "KV Thrashing Rate: " in result.stdout
    # The results file's config repeats the run: derived and friendly figures agree.
    again = resolve({"config": str(path)})
    assert again.engine.kv_cpu_blocks == 1024
    assert again.engine.kv_transfer_bandwidth == doc["config"]["kv_transfer_bandwidth"]


def test_offloads_at_completion_are_stamped_with_the_finish_time():
    # Threshold 0: a finished request's blocks go to the CPU at its finish time (blocks
    # evicted while a step is formed carry the step's start: see the thrashing test).
    reqs = [req(0, 0, list(range(8))), req(1, 50_000, list(range(100, 116)))]
    out = simulate(reqs, num_gpu_blocks=4, block_size=4, kv_cpu_blocks=8, kv_offload_threshold=0.0)
    kv = out.instances[0].kv
    first, second = out.requests
    times = list(kv.cpu.entries.values())
    assert times == [first.finish_time] * 2 + [second.finish_time] * 4
    assert first.finish_time == 1008 and second.finish_time == 50_000 + 1016


def test_tier_serves_hits_with_prefix_caching_off():
    """vLLM hashes blocks whenever a KV connector is configured, so its offloading
    connector stores and loads with prefix caching off too: the GPU reuses nothing, a
    returning prefix loads from the CPU instead of being recomputed."""
    plan = resolve({"model": MODEL, "kv_cpu_blocks": 10, "enable_prefix_caching": False})
    assert any("prefix caching off" in n and "goes to the CPU" in n for n in plan.notes)
    beta = (2000.0, 20.0, 1.0)
    gpu = dict(num_gpu_blocks=480, block_size=16, enable_prefix_caching=False)
    off = simulate(_returning_prefixes(), beta=beta, **gpu)
    tier = simulate(_returning_prefixes(), beta=beta, kv_cpu_blocks=200, **gpu)
    assert _mean_ttft(tier) < _mean_ttft(off)
    s = build_summary(tier)
    assert s["kv_reloads"] > 0 and s["kv_offloads"] > 0
    # The GPU itself serves no hit: every reused block came back from the CPU.
    assert tier.instances[0].kv.cpu_hit_blocks * 16 == tier.instances[0].stats.cached_prompt_tokens
    with_cache = simulate(
        _returning_prefixes(), beta=beta, **{**gpu, "enable_prefix_caching": True}
    )
    assert build_summary(with_cache)["prefix_cache_hit_rate"] > 0
    assert not any(k in build_summary(off) for k in TIER_KEYS)


def test_a_copy_still_on_the_gpu_is_not_offloaded():
    """Evicting one of two GPU copies of a block stores nothing on the CPU tier; the
    last copy's eviction does."""
    from inference_sim.kv.block_pool import TieredBlockPool

    tier = CpuTier(4)
    pool = TieredBlockPool(2, 16, tier)
    first, second = pool.take_new(1), pool.take_new(1)
    pool.register(first[0], 9)
    pool.register(second[0], 9)
    pool.release(first)
    pool.take_new(1)  # evicts the first copy: the second still holds the content
    assert pool.lookup(9) == second[0] and tier.offloads == 0
    pool.release(second)
    pool.offload_lru()  # the last copy goes to the CPU
    assert pool.lookup(9) is None and tier.offloads == 1
    pool.check_invariants()


def test_prefix_caching_off_stores_blocks_as_computed_for_the_next_prompt():
    """vLLM's offloading connector stores a block once it is computed, so with prefix
    caching off a shared prefix is on the CPU for the next request even while the first
    still runs (a block used to reach the tier only when its last GPU copy was freed:
    under steady traffic, never)."""
    from inference_sim import simulate

    res = simulate(
        model=MODEL,
        hardware="H100",
        tp=1,
        kv_cpu_blocks=2000,
        prefix_tokens=512,
        rate=1,
        num_requests=6,
        enable_prefix_caching=False,
        check_invariants=True,
    )
    reqs = res.requests.sort_values("arrived_at")
    # every request after the first loads the 32-block prefix from the CPU
    assert list(reqs["kv_reloads"].fillna(0)) == [0] + [512 // 16] * 5
    assert res.summary["kv_reloads"] == 5 * 512 // 16
    first, second = reqs.iloc[0], reqs.iloc[1]
    assert second["arrived_at"] < first["arrived_at"] + first["e2e_ms"] / 1000  # first ran


@pytest.mark.parametrize("exact", [False, True])
def test_prefix_caching_off_a_block_scheduled_this_step_is_no_cpu_hit(exact):
    """Stored once computed: two identical prompts admitted in one step both compute
    (the block the first schedules does not exist yet); a third, a step later, loads."""
    prompt = list(range(1000, 1064))
    requests = [req(0, 0, prompt, 2), req(1, 0, prompt, 2), req(2, 50_000, prompt, 2)]
    out = simulate(
        requests,
        num_gpu_blocks=100,
        block_size=16,
        enable_prefix_caching=False,
        kv_cpu_blocks=100,
        exact_steps=exact,
    )
    assert build_summary(out)["kv_reloads"] == 3  # the third request only (3 full blocks)


def test_cpu_tier_touch_puts_the_first_block_last_in_the_lru():
    """vLLM's LRU touch walks a request's blocks last to first: its first block becomes
    the most recently used, so a full tier drops a prompt's tail before its head."""
    tier = CpuTier(4, keep_on_load=True)
    for h in (1, 2, 3, 4):
        tier.offload(h)
    tier.touch([1, 2, 3])
    assert list(tier.entries) == [4, 3, 2, 1]
    tier.offload(5)  # full: drops the least recently used
    assert 4 not in tier and 1 in tier
    tier.touch([9, 2])  # absent hashes are skipped
    assert list(tier.entries)[-1] == 2


@pytest.mark.parametrize("exact", [False, True])
def test_prefix_caching_off_a_full_tier_keeps_the_head_of_a_prompt(exact):
    """Prefix caching off, a 6-block CPU tier: A stores its 4 blocks, B's 4 blocks evict
    A's tail (A's blocks were touched last to first), so C, repeating A's prompt, loads
    A's first two blocks. Storing in order (head oldest) lost A's head and with it every
    hit: a lookup stops at the first miss."""
    a, b = list(range(1, 65)), list(range(1000, 1064))
    requests = [req(0, 0, [*a, 5], 12), req(1, 2_000, [*b, 5], 1), req(2, 4_000, [*a, 6], 1)]
    out = simulate(
        requests,
        beta=(1000.0, 0.0, 0.0),
        num_gpu_blocks=40,
        block_size=16,
        enable_prefix_caching=False,
        kv_cpu_blocks=6,
        exact_steps=exact,
    )
    s = build_summary(out)
    assert s["kv_reloads"] == 2
    records = build_records(out)
    assert "kv_reloads" not in records[1] and records[2]["kv_reloads"] == 2


def test_prefix_caching_off_a_gpu_eviction_stores_nothing():
    """Prefix caching off, the tier stores a block once its step is formed (the KV
    manager's flush, not the pool); evicting the GPU copy later neither stores it again
    nor refreshes it (vLLM's connector has no hook there): a dropped entry stays dropped."""
    from inference_sim.kv.block_pool import TieredBlockPool

    tier = CpuTier(1, keep_on_load=True)
    pool = TieredBlockPool(2, 16, tier)
    (b1,) = pool.take_new(1)
    pool.register(b1, 7)
    assert len(tier) == 0  # registering stores nothing by itself
    assert tier.store_batch([7])
    tier.stamp(0)
    (b2,) = pool.take_new(1)
    pool.register(b2, 8)
    assert tier.store_batch([8])  # drops 7 from the one-entry tier
    assert 7 not in tier and tier.dropped == 1
    pool.release([b1])
    pool.offload_lru()  # the GPU copy of 7 goes
    assert 7 not in tier and tier.offloads == 2


@pytest.mark.parametrize("touch", [True, False])
def test_a_scheduling_attempt_touches_the_requests_cpu_blocks(touch):
    """vLLM's connector touches a request's CPU blocks at every scheduling attempt, last
    to first, whether or not the allocation then fits: a prompt waiting for room keeps
    its blocks from being dropped first. A look that is no attempt (``touch=False``: a
    router's question, a P/D decode side's reservation) leaves the order alone."""
    kv = KVCacheManager(5, 2, cpu_blocks=8, offload_threshold=0.0, transfer_bandwidth=1.0)
    a = req(0, 0, list(range(9)))  # 4 full blocks
    admit(kv, a)
    kv.free(a)
    b = req(1, 0, list(range(100, 109)))
    admit(kv, b)
    kv.free(b)
    a_blocks, b_blocks = a._block_hashes[3::-1], b._block_hashes[3::-1]
    assert list(kv.cpu.entries) == a_blocks + b_blocks  # a's blocks are the oldest
    c = req(2, 0, list(range(9)))  # a's prompt again
    found = kv.find_cached_prefix(c, touch=touch)
    assert found == [CPU_HIT] * 4
    assert list(kv.cpu.entries) == (b_blocks + a_blocks if touch else a_blocks + b_blocks)


def test_prefix_caching_off_a_batch_is_stored_whole_or_not_at_all():
    """vLLM's prepare_store takes a request's new blocks as one batch: it evicts least
    recently used entries no transfer holds (here: not stored in this step) and stores
    nothing when they are too few."""
    tier = CpuTier(3, keep_on_load=True)
    assert tier.store_batch([1, 2])
    assert not CpuTier(2, keep_on_load=True).store_batch([1, 2, 3])  # larger than the tier
    same_step = CpuTier(2, keep_on_load=True)
    assert same_step.store_batch([1, 2]) and not same_step.store_batch([3])  # 1, 2 in flight
    assert same_step.skipped == 1 and list(same_step.entries) == [1, 2]
    tier.stamp(1_000)  # 1 and 2 have arrived: evictable
    assert not tier.store_batch([3, 4, 5, 6])  # needs 3 evictions, only 2 entries
    assert tier.skipped == 4 and list(tier.entries) == [1, 2]
    assert tier.store_batch([3, 4])  # one eviction: the least recently used
    assert list(tier.entries) == [2, 3, 4] and tier.dropped == 1
    tier.check_invariants()


def test_prefix_caching_off_a_batch_with_nothing_new_touches_nothing():
    """Only a store that stored something touches the request's blocks (vLLM's
    connector: no new block, no prepare_store, no touch)."""
    kv = KVCacheManager(
        8, 2, enable_prefix_caching=False, cpu_blocks=8, offload_threshold=1.0,
        transfer_bandwidth=1.0,
    )  # fmt: skip
    a = req(0, 0, list(range(5)))  # 2 full blocks and a partial one
    assert kv.allocate_slots(a, 5, [])
    assert len(kv.cpu) == 0  # stored once the step is formed
    kv.take_transfer_time(0)
    h0, h1 = a._block_hashes[:2]
    assert list(kv.cpu.entries) == [h1, h0]  # stored, then touched last to first
    kv.cpu.offload(99)
    kv.free(a)
    b = req(1, 0, list(range(5)))
    assert kv.allocate_slots(b, 5, [])  # the same blocks computed again, no lookup
    kv.take_transfer_time(10_000)
    assert list(kv.cpu.entries) == [h1, h0, 99]  # nothing new: no touch


def test_a_scheduling_attempt_touches_the_last_full_block_too():
    """vLLM touches every full block of the request's tokens (num_tokens // block_size),
    though the lookup stops one token short of a block-aligned prompt's last block."""
    kv = KVCacheManager(5, 2, cpu_blocks=8, offload_threshold=0.0, transfer_bandwidth=1.0)
    a = req(0, 0, list(range(8)))  # 4 full blocks, block-aligned
    admit(kv, a)
    kv.free(a)
    b = req(1, 0, list(range(100, 108)))
    admit(kv, b)
    kv.free(b)
    a_blocks = a._block_hashes[3::-1]
    c = req(2, 0, list(range(8)))
    assert kv.find_cached_prefix(c) == [CPU_HIT] * 3  # at least one token computed
    assert list(kv.cpu.entries)[-4:] == a_blocks  # the 4th block was touched too


def test_kv_offload_doc_figures_hold() -> None:
    """docs/kv-offload.md quotes these runs' reload counts; a change to the tier must
    update the page (a reviewer found it quoting 135 where the code gave 138)."""
    doc = (Path(__file__).parent.parent / "docs" / "kv-offload.md").read_text()
    base = [
        "--model", "meta-llama/llama-3.1-8b-instruct", "--prefix-tokens", "512",
        "--rate", "1", "--num-requests", "50", "--no-enable-prefix-caching", "--json",
    ]  # fmt: skip
    for cpu_blocks, quoted in (("2000", "(1 568 reloads)"), ("40", "reloads 138 blocks")):
        res = invoke(*base, "--kv-cpu-blocks", cpu_blocks)
        assert res.exit_code == 0, res.output
        reloads = json.loads(res.stdout)["kv_reloads"]
        assert quoted in " ".join(doc.split())
        assert f"{reloads:,}".replace(",", " ") in quoted
