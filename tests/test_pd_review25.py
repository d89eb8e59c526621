"""Review 25 of prefill/decode disaggregation (docs/disaggregation.md): the dual-role
deadlock breaker fires only on a real wait cycle, judged on the state at a step's end;
a request the horizon cuts in its prefill step is counted on its prefill instance;
round-robin routing in a cluster with dual-role instances."""

from __future__ import annotations

import collections
import contextlib
import io

import pytest

from inference_sim.cluster.pd import PDClusterSimulator
from inference_sim.core.request import RequestState
from inference_sim.instance.config import EngineConfig
from inference_sim.instance.pd import PDInstance
from inference_sim.latency.blackbox import BlackboxLatencyModel
from inference_sim.metrics.summary import e2e_ticks, ttft_ticks
from inference_sim.policies.base import RoutingDecision
from simhelpers import make_request

BETA = (1000.0, 10.0, 1.0)  # step = 1000 + 10 per prefill token + 1 per decode token
MODEL = dict(model="meta-llama/llama-3.1-8b-instruct", hardware="H100", tp=1)


class _Fixed:
    """Routes request i to position picks[i] of the pool it is shown."""

    def __init__(self, picks: dict[int, int]) -> None:
        self.picks = picks

    def route(self, req, state):  # type: ignore[no-untyped-def]
        return RoutingDecision(self.picks[req.index])


def _cluster(roles_blocks, decode_picks, prefill_picks):
    insts = []
    for i, (role, blocks) in enumerate(roles_blocks):
        cfg = EngineConfig(num_gpu_blocks=blocks, block_size=16, max_num_seqs=4)
        inst = PDInstance(i, cfg, BlackboxLatencyModel((0, 0, 0), BETA))
        inst.role = role
        insts.append(inst)
    return PDClusterSimulator(
        insts,
        decode_routing=_Fixed(decode_picks),
        prefill_routing=_Fixed(prefill_picks),
        bandwidth_gbps=1.0,  # 1000 bytes/µs: a 250 kB block takes 250 µs
        block_bytes=[250_000.0] * len(insts),
        check_invariants=True,
    )


# --- 1. the deadlock breaker --------------------------------------------------------------
@pytest.mark.parametrize("seed", [185, 192, 195])
def test_an_idle_decode_only_instance_is_never_taken_for_deadlocked(seed, monkeypatch):
    """The breaker ran when a dual-role step launched and judged the other instances on
    their state mid-step: an idle decode-only instance with 500 free blocks (its retry not
    yet run) lost requests to a dual-role one. A decode-only instance frees KV by running
    its own requests; it is never in a wait cycle. And every check runs at the time of
    the event that asks for it (a dual-role step's end: an event at that time), never
    ahead of the clock."""
    from inference_sim import simulate

    ahead: list[tuple[int, int]] = []
    real = PDClusterSimulator._unblock

    def spy(self, now, d):  # type: ignore[no-untyped-def]
        if now != self._checker.now:  # the time of the event being handled
            ahead.append((now, self._checker.now))
        return real(self, now, d)

    monkeypatch.setattr(PDClusterSimulator, "_unblock", spy)
    with contextlib.redirect_stderr(io.StringIO()):
        res = simulate(
            **MODEL, seed=seed, num_instances=4, prefill_instances=2, decode_instances=1,
            num_requests=150, rate=20, prompt_tokens=2000, output_tokens=50,
            prompt_tokens_max=7000, output_tokens_min=1, total_kv_blocks=500,
            decode_max_num_seqs=2, prefill_max_num_batched_tokens=512, check_invariants=True,
        )  # fmt: skip
    s = res.summary
    assert s["pd"]["decoded_at_prefill_after_wait"] == 0  # 2, 2, 1 before
    assert s["pd"]["waited_for_decode_kv"] > 0  # the decode instance was full at times
    assert s["completed_requests"] == 150
    assert not ahead


def test_a_wait_cycle_between_two_dual_role_instances_is_broken_once_it_exists():
    """Two dual-role instances of 10 blocks, each prefilling a 96-token prompt (6 blocks)
    for the other: neither can make room. The cycle exists once both prompts are handed
    off (1960 µs, no second hop here); then one request is decoded where it was prefilled.
    Before, the first handoff already broke it while the other prompt was on its way."""
    sim = _cluster([("both", 10), ("both", 10)], {0: 1, 1: 0}, {0: 0, 1: 1})
    reqs = [make_request(0, 0, 96, 3), make_request(1, 0, 96, 3)]
    sim.run(reqs)
    assert sim.pd.decoded_at_prefill == 1
    # Request 1 is decoded on instance 1, where it was prefilled: its last prompt token
    # (1000 + 10) -> first token at 2970, two decode steps of 1001 -> 4972. Its blocks
    # then free, instance 1 reserves request 0's six blocks at 4972 (its last step's end),
    # the pull takes 6 x 250 µs -> 6472, then 1010 -> first token at 7482, done at 9484.
    assert [r.handled_by for r in reqs] == [1, 1]
    assert [ttft_ticks(r) for r in reqs] == [7482, 2970]
    assert [e2e_ticks(r) for r in reqs] == [9484, 4972]
    assert sim.pd.per_request[1]["decode_instance"] == "instance_1"
    assert sim.pd.per_request[0]["kv_transfer_blocks"] == 6


def test_an_instance_whose_prompts_wait_on_a_decode_only_instance_is_not_deadlocked():
    """Dual-role A (12 blocks) holds a 160-token prompt (10 blocks) prefilled for
    decode-only X, which is full until its long request ends; a prompt prefilled on
    dual-role B waits for room on A. A can free nothing by itself, but X will take A's
    prompt and free its blocks: a wait, not a cycle (vLLM waits too). Before, the request
    was moved back to B (``decoded_at_prefill_after_wait`` 1, TTFT 2970 µs)."""
    sim = _cluster([("both", 12), ("both", 20), ("decode", 16)], {0: 2, 1: 2, 2: 0},
                   {0: 1, 1: 0, 2: 1})  # fmt: skip
    reqs = [make_request(0, 0, 96, 100), make_request(1, 10_000, 160, 3),
            make_request(2, 10_000, 96, 3)]  # fmt: skip
    sim.run(reqs)
    assert sim.pd.decoded_at_prefill == 0
    assert all(r.state == RequestState.FINISHED for r in reqs)
    # Request 0 (prefilled on B, 1960 + 1500 µs of transfer, 1010) decodes on X until
    # 4470 + 99 x 1001 = 103569. Request 1 (prefilled on A, 2600 µs, handed off at 12600)
    # waits for X: reserved at 103569, 10 blocks pulled in 2500 µs, first token at 107079.
    # Its blocks on A free at 106069: request 2 (prefilled on B, handed off at 11960)
    # is reserved on A then, pulled in 1500 µs, first token at 108579, done at 110581.
    assert ttft_ticks(reqs[0]) == 4470 and e2e_ticks(reqs[0]) == 103569
    assert ttft_ticks(reqs[1]) == 97079
    assert reqs[2].handled_by == 0
    assert ttft_ticks(reqs[2]) == 98579 and e2e_ticks(reqs[2]) == 100581


# --- 2. the horizon cuts a prefill step -------------------------------------------------
def _one_request(horizon):
    from inference_sim import simulate

    trace = [{"arrived_at": 0.0, "num_prefill_tokens": 1000, "num_decode_tokens": 5}]
    with contextlib.redirect_stderr(io.StringIO()):
        return simulate(
            **MODEL, seed=1, trace=trace, num_instances=2, prefill_instances=1,
            decode_instances=1, horizon=horizon, check_invariants=True,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("horizon", "where", "queued", "running", "handed_off"),
    [
        # The prefill step runs 1984..24987 µs: cut in it, the request is still running
        # on its prefill instance (it was counted queued on the decode instance).
        (10_000, "instance_0", (0, 0), (1, 0), 0),
        (24_986, "instance_0", (0, 0), (1, 0), 0),
        # Prompt done, in its second hop (the decode server takes it in at 30328 µs):
        # handed off, queued on its decode instance.
        (24_987, "instance_1", (0, 1), (0, 0), 1),
        (30_000, "instance_1", (0, 1), (0, 0), 1),
    ],
)
def test_a_request_cut_in_its_prefill_step_is_running_on_its_prefill_instance(
    horizon, where, queued, running, handed_off
):
    res = _one_request(horizon)
    assert res.records[0]["handled_by"] == where
    rows = {i["instance_id"]: i for i in res.instance_summaries}
    assert (rows["instance_0"]["still_queued"], rows["instance_1"]["still_queued"]) == queued
    assert (rows["instance_0"]["still_running"], rows["instance_1"]["still_running"]) == running
    s = res.summary
    assert s["injected_requests"] == 1 == s["still_queued"] + s["still_running"]
    pools = s["pd"]["pools"]
    assert pools["prefill"]["handed_off"] == handed_off
    assert pools["prefill"]["injected_requests"] + pools["decode"]["injected_requests"] == 1


def test_counts_add_up_when_the_horizon_cuts_prefill_steps_under_load():
    """Many requests, a horizon mid-run: every injected request is counted once, on one
    instance, and the record's handled_by names that instance."""
    from inference_sim import simulate

    with contextlib.redirect_stderr(io.StringIO()):
        res = simulate(
            **MODEL, seed=3, num_instances=3, prefill_instances=1, decode_instances=1,
            workload="summarization", rate=20, num_requests=200, horizon=3_000_000,
            check_invariants=True,
        )  # fmt: skip
    s = res.summary
    assert s["still_running"] > 0
    assert s["injected_requests"] == (
        s["completed_requests"] + s["still_queued"] + s["still_running"] + s["dropped_unservable"]
    )
    rows = res.instance_summaries
    assert sum(i["injected_requests"] for i in rows) == s["injected_requests"]
    unfinished = collections.Counter(r["handled_by"] for r in res.records if r["e2e_ms"] <= 0)
    for i in rows:
        assert unfinished[i["instance_id"]] == i["still_queued"] + i["still_running"]


# --- 3. round-robin with dual-role instances ----------------------------------------------
def test_round_robin_pairs_prefill_and_decode_picks_in_lockstep():
    """Documented (docs/disaggregation.md, Semantics item 1): with round-robin both pools
    advance their turn on every disaggregated request, so pools of equal size sharing
    dual-role instances pair the same instances every time: with instances 2 and 3
    dual-role, decode turns [1, 2, 3] and prefill turns [0, 2, 3] give 1/3 disaggregated,
    2/3 colocated. A load-aware policy does not pair them so."""
    from inference_sim import simulate

    common = dict(**MODEL, seed=7, num_instances=4, prefill_instances=1, decode_instances=1,
                  workload="summarization", rate=20, num_requests=60)  # fmt: skip
    rr = simulate(**common)
    pd = rr.summary["pd"]
    assert (pd["disaggregated_requests"], pd["colocated_requests"]) == (20, 40)
    pairs = collections.Counter((r["prefill_instance"], r["decode_instance"]) for r in rr.records)
    assert set(pairs) == {
        ("instance_0", "instance_1"),
        ("instance_2", "instance_2"),
        ("instance_3", "instance_3"),
    }
    ll = simulate(**common, routing_policy="least-loaded").summary["pd"]
    assert ll["disaggregated_requests"] > 20
