"""Review 23 fixes (docs/autoscaling.md, docs/disaggregation.md): HPA's scale-up rate
limit after a scale-down, transfers between P/D pools of different TPs, and the
prefix-threshold decider at threshold 0."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from inference_sim.cluster.pd import PDClusterSimulator
from inference_sim.cluster.scaler import LOADING, AutoscaleConfig, PoolScaler
from inference_sim.instance.config import EngineConfig
from inference_sim.instance.pd import PDInstance
from inference_sim.latency.blackbox import BlackboxLatencyModel
from inference_sim.metrics.summary import ttft_ticks
from inference_sim.policies.routing import RoundRobin
from simhelpers import make_request

S = 1_000_000  # µs per second


# --- 1. HPA's scale-up limit -----------------------------------------------------------
class _Replica:
    """What the in-flight metric reads of a replica."""

    def __init__(self, i: int) -> None:
        self.index = i
        self.name = f"instance_{i}"
        self.waiting: list[Any] = []
        self.running: list[Any] = []
        self.kv_utilization = 0.0


def _scaler(n: int, initial: int, *, target: float = 10.0) -> tuple[PoolScaler, list[_Replica]]:
    reps = [_Replica(i) for i in range(n)]
    cfg = AutoscaleConfig(
        min_replicas=1, max_replicas=n, metric="in-flight", target=target,
        interval=5 * S, startup=100 * S, down_window=0,
    )  # fmt: skip
    scaler = PoolScaler(
        range(n), reps, cfg, initial,  # type: ignore[arg-type]
        schedule_load=lambda _t, _i: None, on_change=lambda: None, busy=lambda _i: False,
        check=True,
    )  # fmt: skip
    return scaler, reps


def _load(scaler: PoolScaler, reps: list[_Replica], per_replica: int) -> None:
    for i in scaler.ready:
        reps[i].running = [None] * per_replica


def _counts(scaler: PoolScaler) -> tuple[int, int]:
    """(ready, loading) replicas."""
    return len(scaler.ready), sum(1 for i in scaler.members if scaler.state[i] == LOADING)


def test_scale_up_after_cancelled_loads_counts_the_removed_replicas():
    """5 ready at twice the target: up by 5 at 15 s (to 10). At 20 s the load is gone:
    the 4 newest loads are cancelled (down to 6). At 25 s the load is back: the 15 s
    period started at 5 replicas (6 now - 5 added + 4 removed), so HPA allows 10
    (calculateScaleUpLimitWithScalingRules): up by 4. It used to count the period's start
    as 6 - 5 = 1, a limit of 5 below the 6 there are, and scale *down* by one."""
    scaler, reps = _scaler(20, 5)
    _load(scaler, reps, 20)
    scaler.decide(15 * S, None)
    _load(scaler, reps, 1)
    scaler.decide(20 * S, None)
    _load(scaler, reps, 20)
    scaler.decide(25 * S, None)
    kinds = [(e["kind"], e["by"]) for e in scaler.rec.events]
    assert kinds == [("scale_up", 5), ("scale_down", 4), ("scale_up", 4)]
    assert _counts(scaler) == (5, 5)


def test_scale_up_limit_never_goes_below_the_current_count():
    """The period slides: a scale-down (20 -> 4 at 5 s) leaves it at 20 s while the
    scale-up that followed (4 -> 30 at 10 s) is still in it, so the period seems to start
    at 30 - 26 = 4 and the policies allow 8. HPA clamps that limit to the current count
    (convertDesiredReplicasWithBehaviorRate): a reading far above the target keeps the
    30 replicas, it does not scale down to 8."""
    scaler, reps = _scaler(40, 20)
    _load(scaler, reps, 2)  # 20 x 2 / 10 = 4
    scaler.decide(5 * S, None)
    assert _counts(scaler) == (4, 0)
    _load(scaler, reps, 75)  # 4 x 75 / 10 = 30; the period (from 20) allows 40
    scaler.decide(10 * S, None)
    assert _counts(scaler) == (4, 26)
    _load(scaler, reps, 1000)
    scaler.decide(20 * S, None)
    kinds = [e["kind"] for e in scaler.rec.events if e["kind"].startswith("scale")]
    assert kinds == ["scale_down", "scale_up"]
    assert _counts(scaler) == (4, 26)


@settings(max_examples=60, deadline=None)
@example(readings=[20, 1, 20])  # up, cancel, up: the period's start used to come out at 1
@given(readings=st.lists(st.sampled_from([0, 1, 5, 10, 20, 40, 200]), min_size=2, max_size=30))
def test_a_reading_above_the_target_never_scales_down(readings):
    """Whatever came before, a decision whose metric is above the target's tolerance
    scales up or holds; it never removes replicas (nor does one below it add any)."""
    scaler, reps = _scaler(24, 5)
    for k, value in enumerate(readings):
        _load(scaler, reps, value)
        before = len(scaler.rec.events)
        scaler.decide((k + 1) * 5 * S, None)
        for ev in scaler.rec.events[before:]:
            if value > 10 * 1.1:
                assert ev["kind"] != "scale_down", (k, ev)
            if value < 10 * 0.9:
                assert ev["kind"] != "scale_up", (k, ev)


def test_pulsed_load_never_scales_down_on_a_high_reading(tmp_path):
    """The reviewer's CLI case (pulses of 400 req/s every 10 s, 5 s decisions, no
    scale-down window): a scale-down used to follow an in-flight reading of 15.9 against a
    target of 4 ("recommends 16") at 65 s."""
    from inference_sim import simulate

    lines = ['version: "2"', "seed: 11", "stages:", "  - {rate: 2, duration: 22}"]
    lines += ["  - {rate: 400, duration: 3}", "  - {rate: 0.5, duration: 7}"] * 12
    lines += [
        "clients:",
        "  - {id: chat, rate_fraction: 1, arrival: {process: poisson},",
        "     input_distribution: {type: exponential, params: {mean: 300}},",
        "     output_distribution: {type: exponential, params: {mean: 60}}}",
    ]
    spec = tmp_path / "pulse.yaml"
    spec.write_text("\n".join(lines) + "\n")
    res = simulate(
        model="meta-llama/llama-3.1-8b-instruct", hardware="H100", tp=1,
        routing_policy="least-loaded", num_instances=2, replica_startup_s=20,
        autoscale_max=16, autoscale_metric="in-flight", autoscale_target=4,
        autoscale_interval=5, autoscale_down_window=0, workload_spec=str(spec),
    )  # fmt: skip
    events = res.summary["autoscaling"]["events"]
    assert any(e["kind"] == "scale_up" for e in events)
    for e in events:
        if e["kind"] == "scale_down":
            value = float(re.search(r"in-flight=([0-9.e+-]+) ", e["reason"]).group(1))
            assert value <= 4 * 1.1, e


# --- 2. transfers between pools of different TPs ---------------------------------------
def _pd(ranks: list[int], block_bytes: list[float]) -> PDClusterSimulator:
    insts = []
    for i, role in enumerate(("prefill", "decode")):
        inst = PDInstance(
            i,
            EngineConfig(num_gpu_blocks=20_000, block_size=16, max_num_seqs=256),
            BlackboxLatencyModel((0, 0, 0), (1000.0, 10.0, 1.0)),
        )
        inst.role = role
        insts.append(inst)
    return PDClusterSimulator(
        insts, decode_routing=RoundRobin(), prefill_routing=RoundRobin(), bandwidth_gbps=1.0,
        base_latency_us=0, block_bytes=block_bytes, ranks=ranks, check_invariants=True,
    )  # fmt: skip


FULL = 250_000.0  # one block's KV over all heads (a GQA model), bytes


@pytest.mark.parametrize(
    ("tp_p", "tp_d", "ms", "links"),
    [
        (1, 1, 1.0, 1),  # 4 blocks x 250 kB over one 1 GB/s link
        (2, 2, 0.5, 2),  # each GPU pair moves half the heads
        (4, 1, 1.0, 1),  # the decode GPU's one NIC takes the whole KV (was 0.25 ms)
        (2, 1, 1.0, 1),  # (was 0.5 ms)
        (1, 2, 1.0, 1),  # the prefill GPU's NIC sends both decode ranks' halves
        (2, 4, 0.5, 2),  # two prefill GPUs, each feeding two decode ranks
        (4, 2, 0.5, 2),  # two decode GPUs, each reading from two prefill ranks
    ],
)
def test_transfer_between_tps_is_priced_over_the_fewer_gpus(tp_p, tp_d, ms, links):
    """A 64-token prompt (4 blocks, 1 MB of KV over all heads): vLLM's NIXL connector
    moves it over min(TP_p, TP_d) GPU pairs in parallel, each carrying 1 MB / that.
    Prefill 1000 + 640 µs; the decode side computes the last token (1010 µs)."""
    sim = _pd([tp_p, tp_d], [FULL / tp_p, FULL / tp_d])
    req = make_request(0, 0, 64, 3)
    sim.run([req])
    assert sim._link_bytes(0, 1) == (FULL / min(tp_p, tp_d), links)
    assert sim.pd.per_request[0]["kv_transfer_ms"] == ms
    assert ttft_ticks(req) == 1640 + round(ms * 1000) + 1010
    assert sim.pd.bytes_moved == 4 * FULL  # the whole KV crosses the network once


@pytest.mark.parametrize(("tp_p", "tp_d", "per_link", "copies"), [(1, 2, 2, 2), (2, 1, 1, 1)])
def test_mla_latent_between_tps(tp_p, tp_d, per_link, copies):
    """An MLA latent is replicated on every rank: each decode rank reads it whole, from
    prefill rank ``rank // ratio`` (TP_d > TP_p: that prefill NIC sends it ratio times)
    or once, from the first of its prefill ranks (TP_p > TP_d)."""
    latent = 100_000.0
    sim = _pd([tp_p, tp_d], [latent, latent])
    sim.run([make_request(0, 0, 64, 3)])
    assert sim._link_bytes(0, 1) == (latent * per_link, 1)
    assert sim.pd.bytes_moved == 4 * latent * copies


def test_llama_prefill_tp4_decode_tp1_moves_the_whole_kv_through_one_nic():
    """Llama-3.1-8B on H100, 1 prefill (TP 4) + 1 decode (TP 1): every transfer takes at
    least its blocks x the whole block (32 layers x 8 KV heads x 128 x K, V x 2 bytes x 16
    tokens) at 50 GB/s plus the 0.05 ms base, as at TP 1/1 (it used to be a quarter)."""
    from inference_sim import simulate

    res = simulate(
        model="meta-llama/llama-3.1-8b-instruct", hardware="H100", tp=1, num_instances=2,
        prefill_instances=1, decode_instances=1, prefill_tp=4, decode_tp=1,
        workload="summarization", rate=2, num_requests=10, seed=7, check_invariants=True,
    )  # fmt: skip
    block = 16 * 32 * 8 * 128 * 2 * 2
    pd = res.summary["pd"]
    assert pd["transfer_bytes"] == pd["transfer_blocks"] * block
    moved = [r for r in res.records if r["kv_transfer_blocks"] > 0]
    assert moved
    for r in moved:
        floor_ms = 0.05 + r["kv_transfer_blocks"] * block / 50e9 * 1e3
        assert r["kv_transfer_ms"] >= floor_ms - 1e-3, (r["kv_transfer_ms"], floor_ms)


# --- 3. prefix-threshold at threshold 0 ------------------------------------------------
def _cached_pair(threshold: int) -> PDClusterSimulator:
    """Two identical 65-token prompts; the second arrives once the first's blocks sit in
    the decode instance's prefix cache: 4 of its 5 blocks are cached there, 1 token is
    not (vLLM always leaves at least one prompt token to compute)."""
    prompt = list(range(9000, 9065))
    insts = []
    for i, role in enumerate(("prefill", "decode")):
        inst = PDInstance(
            i,
            EngineConfig(num_gpu_blocks=20_000, block_size=16, max_num_seqs=256),
            BlackboxLatencyModel((0, 0, 0), (1000.0, 10.0, 1.0)),
        )
        inst.role = role
        insts.append(inst)
    sim = PDClusterSimulator(
        insts, decode_routing=RoundRobin(), prefill_routing=RoundRobin(), bandwidth_gbps=1.0,
        block_bytes=[FULL, FULL], decider="prefix-threshold", prefix_threshold=threshold,
        check_invariants=True,
    )  # fmt: skip
    sim.run([make_request(0, 0, list(prompt), 2), make_request(1, 100_000, list(prompt), 2)])
    return sim


def test_threshold_zero_disaggregates_whatever_is_cached():
    """Current llm-d (llm-d-inference-scheduler pkg/plugins/profile/
    prefix_based_pd_decider.go, PrefixBasedPDDecider.decide): ``if NonCachedTokens <= 0
    { return true }`` -- threshold 0 always disaggregates, whatever the decode instance
    has cached (only the older PrefixDisaggregationDecider, on the CycleState API,
    returned false there). The second prompt pulls its one missing block."""
    sim = _cached_pair(0)
    assert sim.pd.disaggregated == 2 and sim.pd.colocated == 0
    assert sim.pd.per_request[1]["kv_transfer_blocks"] == 1


def test_a_threshold_above_the_uncached_tokens_keeps_the_prompt_local():
    sim = _cached_pair(2)  # 1 uncached token < 2
    assert sim.pd.disaggregated == 1 and sim.pd.colocated == 1
    assert sim.pd.per_request[1]["prefill_instance"] == "instance_1"
