"""Analysis building blocks on hand-built inputs: counterfactual regret, the decision
trace, fitness parsing and scores, Jain's index, distributions, and the stdout blocks.

Every expected value here is worked out by hand in the comments.
"""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_sim.analysis import (
    FITNESS_KEYS,
    DecisionTrace,
    Distribution,
    FitnessError,
    RawMetrics,
    counterfactual,
    evaluate_fitness,
    jain_index,
    parse_fitness_weights,
)
from inference_sim.analysis.fitness import fitness_block
from inference_sim.analysis.run import trace_summary_block
from inference_sim.core.request import Request
from inference_sim.policies import RoundRobin, Weighted
from inference_sim.policies.base import AdmissionDecision, RouterState, RoutingSnapshot
from inference_sim.policies.routing import LeastLoaded


def snaps(*loads: int, kv: tuple[float, ...] = ()) -> list[RoutingSnapshot]:
    """One snapshot per load (all of it queued), optional KV utilisations."""
    return [
        RoutingSnapshot(
            f"instance_{i}",
            i,
            queue_depth=load,
            kv_utilization=kv[i] if kv else 0.0,
            free_kv_blocks=100 - 10 * i,
        )
        for i, load in enumerate(loads)
    ]


def req(i: int = 0, tenant: str = "", slo: str = "") -> Request:
    return Request(i, 0, [1, 2, 3], [4, 5], tenant_id=tenant, slo_class=slo)


# --- counterfactual -------------------------------------------------------------------------


def test_counterfactual_without_scores_uses_minus_effective_load():
    # loads 3, 0, 5, 0 -> scores -3, 0, -5, 0; ranking: instance_1, instance_3 (tie by
    # id), instance_0, instance_2. Choosing instance_2 (load 5): regret 0 - (-5) = 5.
    s = snaps(3, 0, 5, 0)
    s[1].batch_size, s[1].queue_depth = 0, 0
    top, regret = counterfactual(2, None, s, 2)
    assert regret == 5.0
    assert [c["instance_id"] for c in top] == ["instance_1", "instance_3"]
    assert top[0] == {
        "instance_id": "instance_1",
        "score": 0.0,
        "queue_depth": 0,
        "batch_size": 0,
        "pending_requests": 0,
        "kv_utilization": 0.0,
        "free_kv_blocks": 90,
    }
    # the effective load counts queued + running + pending
    s[0].batch_size, s[0].pending_requests = 2, 1  # instance_0: 3 + 2 + 1 = 6
    _, regret = counterfactual("instance_0", None, s, 1)
    assert regret == 6.0


def test_counterfactual_ties_rank_by_id_as_strings():
    s = snaps(*([0] * 12))
    top, regret = counterfactual(11, None, s, 4)
    assert [c["instance_id"] for c in top] == [
        "instance_0",
        "instance_1",
        "instance_10",
        "instance_11",
    ]
    assert regret == 0.0


def test_counterfactual_with_scores_and_edge_cases():
    s = snaps(0, 2, 4)
    scores = [1.0, 0.4, 0.1]
    top, regret = counterfactual(0, scores, s, 5)  # k > n: every instance
    assert regret == 0.0 and [c["score"] for c in top] == scores
    _, regret = counterfactual(2, scores, s, 1)
    assert regret == pytest.approx(0.9)
    _, regret = counterfactual(1, {"instance_1": 0.7}, s, 1)  # missing ids score 0
    assert regret == 0.0
    assert counterfactual(0, scores, s, 0) == (None, 0.0)
    assert counterfactual(0, scores, [], 3) == (None, 0.0)
    assert counterfactual("instance_9", scores, s, 3) == (None, 0.0)
    assert counterfactual(7, scores, s, 3) == (None, 0.0)


# --- the trace on hand-built router states --------------------------------------------------


def test_weighted_policy_has_zero_regret_and_its_scores_are_traced():
    # cluster spec 8.3: queue-depth:2, load-balance:1, loads 0, 2, 4 ->
    # composite 1.0, 0.4444, 0.0667 -> instance_0, the argmax: regret 0.
    policy = Weighted([("queue-depth", 2.0), ("load-balance", 1.0)])
    state = RouterState(snaps(0, 2, 4), clock=7)
    trace = DecisionTrace([s.id for s in state.snapshots], counterfactual_k=2)
    r = req(3)
    trace.hook("admission", r, state, AdmissionDecision(True, ""))
    trace.hook("routing", r, state, policy.route(r, state))
    adm, rout = trace.records()
    assert adm["kind"] == "admission" and adm["admitted"] is True and adm["clock"] == 7
    assert adm["chosen_instance"] is None and adm["regret"] is None
    assert rout["request_id"] == "request_3" and rout["chosen_instance"] == "instance_0"
    assert rout["regret"] == 0.0
    assert rout["scores"] == pytest.approx(
        {"instance_0": 1.0, "instance_1": 4 / 9, "instance_2": 1 / 15}
    )
    assert [c["instance_id"] for c in rout["candidates"]] == ["instance_0", "instance_1"]
    assert [s["queue_depth"] for s in rout["snapshots"]] == [0, 2, 4]
    assert rout["reason"] == "weighted-scoring (score=1.000)"


def test_round_robin_under_imbalance_has_the_load_gap_as_regret():
    # round-robin sends its first request to instance_0 (load 5) while instance_1 is
    # idle: regret 5 - 0 = 5; its second to instance_1: regret 0. Mean 2.5, max 5.
    rr = RoundRobin()
    state = RouterState(snaps(5, 0), clock=0)
    trace = DecisionTrace(["instance_0", "instance_1"], counterfactual_k=1)
    for i in range(2):
        trace.hook("admission", req(i), state, AdmissionDecision(True, ""))
        trace.hook("routing", req(i), state, rr.route(req(i), state))
    assert trace.regrets() == [5.0, 0.0]
    assert [r["scores"] for r in trace.records() if r["kind"] == "routing"] == [None, None]
    summary = trace.summary()
    assert summary == {
        "total_decisions": 2,
        "admitted_count": 2,
        "rejected_count": 0,
        "routing_decisions": 2,
        "unique_targets": 2,
        "target_distribution": {"instance_0": 1, "instance_1": 1},
        "counterfactual_k": 1,
        "mean_regret": 2.5,
        "max_regret": 5.0,
    }
    # least-loaded on the same state picks the minimum: regret 0 by construction
    ll = DecisionTrace(["instance_0", "instance_1"], counterfactual_k=1)
    ll.hook("routing", req(0), state, LeastLoaded().route(req(0), state))
    assert ll.regrets() == [0.0]


def test_regret_is_zero_without_counterfactual_k_and_rejections_are_counted():
    state = RouterState(snaps(5, 0), clock=3)
    trace = DecisionTrace(["instance_0", "instance_1"], counterfactual_k=0)
    trace.hook("admission", req(0, tenant="a"), state, AdmissionDecision(False, "reject-all"))
    trace.hook("admission", req(1, slo="batch"), state, (True, ""))
    trace.hook("routing", req(1, slo="batch"), state, 0)  # a bare index from a plug-in
    recs = list(trace.records())
    assert recs[0]["reason"] == "reject-all" and recs[0]["tenant_id"] == "a"
    assert recs[2]["slo_class"] == "batch" and recs[2]["candidates"] is None
    assert recs[2]["regret"] == 0.0  # K = 0: no counterfactual (cluster spec 14)
    s = trace.summary()
    assert (s["total_decisions"], s["admitted_count"], s["rejected_count"]) == (2, 1, 1)
    assert s["target_distribution"] == {"instance_0": 1}
    with pytest.raises(ValueError, match="counterfactual-k must be >= 0"):
        DecisionTrace([], counterfactual_k=-1)


def test_empty_trace_summary():
    s = DecisionTrace(["instance_0"]).summary()
    assert s["mean_regret"] == s["max_regret"] == 0.0
    assert s["target_distribution"] == {} and s["unique_targets"] == 0


def test_trace_summary_block_matches_the_reference_layout():
    text = trace_summary_block(
        {
            "total_decisions": 3,
            "admitted_count": 2,
            "rejected_count": 1,
            "unique_targets": 2,
            "target_distribution": {"instance_2": 1, "instance_10": 1},
            "mean_regret": 0.5,
            "max_regret": 1.0,
        }
    )
    assert text == (
        "=== Trace Summary ===\n"
        "Total Decisions: 3\n"
        "  Admitted: 2\n"
        "  Rejected: 1\n"
        "Unique Targets: 2\n"
        "Target Distribution:\n"
        "  instance_10: 1\n"
        "  instance_2: 1\n"
        "Mean Regret: 0.500000\n"
        "Max Regret: 1.000000\n"
    )
    no_routing = trace_summary_block({"total_decisions": 1, "rejected_count": 1})
    assert "Target Distribution" not in no_routing


# --- fitness --------------------------------------------------------------------------------


def test_fitness_hand_computed():
    # p99 TTFT 50 000 µs -> 1 / (1 + 50) = 0.019608; 100 req/s -> 100 / 200 = 0.5;
    # 10 000 tok/s -> 0.5; mean E2E 1000 µs -> 0.5. Weights are not normalised:
    # score = 2 * 0.5 + 1 * 0.019608 + 0 * 0.5 (sorted keys) = 1.019608.
    m = RawMetrics(
        ttft=Distribution(p99=50_000.0),
        e2e=Distribution(mean=1000.0),
        requests_per_sec=100.0,
        tokens_per_sec=10_000.0,
    )
    r = evaluate_fitness(m, {"throughput": 2.0, "p99_ttft": 1.0, "mean_e2e": 0.0})
    assert list(r.components) == ["mean_e2e", "p99_ttft", "throughput"]
    assert r.components["p99_ttft"] == pytest.approx(1 / 51)
    assert r.components["throughput"] == 0.5
    assert r.components["mean_e2e"] == 0.5
    assert r.score == pytest.approx(1.0 + 1 / 51)
    tps = evaluate_fitness(m, {"tokens_per_sec": 1.0})
    assert tps.score == 0.5
    assert fitness_block(r.score, r.components) == (
        "=== Fitness Evaluation ===\n"
        "Score: 1.019608\n"
        "  mean_e2e: 0.500000\n"
        "  p99_ttft: 0.019608\n"
        "  throughput: 0.500000\n"
    )
    # empty distributions and no throughput (the reference's rule): latencies score 1
    empty = evaluate_fitness(RawMetrics(), {k: 1.0 for k in FITNESS_KEYS})
    assert empty.components["throughput"] == 0.0 and empty.components["p50_ttft"] == 1.0


def test_parse_fitness_weights():
    assert parse_fitness_weights(" p99_ttft : 2 , throughput:0.5") == {
        "p99_ttft": 2.0,
        "throughput": 0.5,
    }
    assert parse_fitness_weights("mean_e2e:1,mean_e2e:3") == {"mean_e2e": 3.0}  # last wins
    assert parse_fitness_weights("p50_e2e:0,p50_ttft:1e-1") == {"p50_e2e": 0.0, "p50_ttft": 0.1}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus:1", 'unknown fitness metric key "bogus"; valid keys: throughput, tokens_per_sec'),
        ("zz:1,aa:1", 'unknown fitness metric key "aa"'),  # keys checked in sorted order
        ("p99_ttft:-1", 'invalid weight for "p99_ttft": must be a finite non-negative number'),
        ("p99_ttft:nan", "must be a finite non-negative number, got nan"),
        ("p99_ttft:inf", "must be a finite non-negative number, got inf"),
        ("p99_ttft:abc", 'invalid fitness weight value for "p99_ttft"'),
        ("p99_ttft:1_0", 'invalid fitness weight value for "p99_ttft"'),
        ("p99_ttft", 'invalid fitness weight "p99_ttft": expected key:value'),
        ("p99_ttft:1,", 'invalid fitness weight "": expected key:value'),
        (":1", 'invalid fitness weight ":1": expected key:value'),
        ("bogus:-1", 'invalid weight for "bogus"'),  # values first, keys after
    ],
)
def test_bad_fitness_weights(text, message):
    with pytest.raises(FitnessError, match=re.escape(message)):
        parse_fitness_weights(text)


latency = st.floats(min_value=0, max_value=1e9, allow_nan=False)
rate = st.floats(min_value=0, max_value=1e7, allow_nan=False)
weights = st.dictionaries(
    st.sampled_from(FITNESS_KEYS), st.floats(min_value=0, max_value=100), min_size=1
)


def _metrics(ttft: float, e2e: float, rps: float, tps: float) -> RawMetrics:
    d = Distribution(mean=ttft, p50=ttft, p99=ttft)
    e = Distribution(mean=e2e, p50=e2e, p99=e2e)
    return RawMetrics(ttft=d, e2e=e, requests_per_sec=rps, tokens_per_sec=tps)


@settings(max_examples=200, deadline=None)
@given(latency, latency, rate, rate, latency, latency, rate, rate, weights)
def test_fitness_is_monotone(t, e, r, k, dt, de, dr, dk, w):
    """Lower latency or higher throughput never lowers the score."""
    base = evaluate_fitness(_metrics(t + dt, e + de, r, k), w).score
    better = evaluate_fitness(_metrics(t, e, r + dr, k + dk), w).score
    assert better >= base
    assert 0.0 <= base <= sum(w.values()) * (1 + 1e-12)


# --- fairness and distributions -------------------------------------------------------------


def test_jain_index():
    assert jain_index({"a": 3.0, "b": 3.0, "c": 3.0}) == pytest.approx(1.0)
    assert jain_index({"a": 12.0, "b": 0.0, "c": 0.0, "d": 0.0}) == pytest.approx(1 / 4)
    assert jain_index([5.0, 0.0]) == pytest.approx(1 / 2)
    assert jain_index([1.0, 2.0, 3.0]) == pytest.approx(36 / 42)  # (1+2+3)^2 / (3 * 14)
    assert jain_index({}) == 0.0
    assert jain_index([0.0, 0.0]) == 1.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=20))
def test_jain_index_is_between_one_over_n_and_one(values):
    j = jain_index(values)
    assert 1 / len(values) - 1e-9 <= j <= 1 + 1e-9


def test_distribution_of_ticks():
    # [10, 20, 30, 40]: p50 rank 1.5 -> 25; p99 rank 2.97 -> 39.7; mean 25
    d = Distribution.of([40, 10, 30, 20])
    assert (d.mean, d.p50, d.min, d.max, d.count) == (25.0, 25.0, 10.0, 40.0, 4)
    assert d.p99 == pytest.approx(39.7)
    assert Distribution.of([7]).p95 == 7.0
    assert Distribution.of([]) == Distribution()
    assert d.as_ms()["p50_ms"] == 0.025
    assert math.isclose(Distribution.of([1, 2]).p90, 1.9)


def test_trace_write_jsonl_and_parquet_without_routing(tmp_path):
    import json

    from inference_sim.core.extras import have

    trace = DecisionTrace()
    trace.hook("admission", req(0), RouterState([], clock=4), AdmissionDecision(False, "x"))
    trace.write(tmp_path / "t.jsonl")
    (rec,) = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert rec["admitted"] is False and rec["clock"] == 4 and rec["scores"] is None
    if have("pyarrow") and have("pandas"):
        import pandas as pd

        trace.write(tmp_path / "t.parquet")  # no instances seen: no empty struct column
        assert pd.read_parquet(tmp_path / "t.parquet")["reason"].tolist() == ["x"]
    assert sorted(p.name for p in tmp_path.iterdir())[0] == "t.jsonl"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries


def test_a_tenant_whose_requests_are_all_dropped_counts_with_throughput_zero():
    """Dropped-unservable requests reached an instance but are not in the request log:
    a tenant whose every prompt is too long for the KV cache used to vanish from
    tenant_metrics, and Jain's index read 1.0 over the two tenants left."""
    from inference_sim import simulate

    def client(name: str, prompt: int) -> dict:
        return {
            "id": name, "tenant_id": name, "rate_fraction": 1,
            "arrival": {"process": "poisson"},
            "input_distribution": {"type": "constant", "params": {"value": prompt}},
            "output_distribution": {"type": "constant", "params": {"value": 10}},
        }  # fmt: skip

    clients = [client("alice", 100), client("bob", 2000), client("carol", 100)]
    spec = {"version": "2", "seed": 3, "aggregate_rate": 20, "num_requests": 60,
            "clients": clients}  # fmt: skip
    res = simulate(model="meta-llama/llama-3.1-8b-instruct", workload_spec=spec,
                   num_instances=2, total_kv_blocks=40, block_size=16)  # fmt: skip
    tenants = res.summary["tenant_metrics"]
    assert res.summary["dropped_unservable"] == tenants["bob"]["dropped"] > 0
    assert tenants["bob"]["requests"] == tenants["bob"]["dropped"]
    assert tenants["bob"]["throughput_rps"] == 0.0
    alice, carol = tenants["alice"]["throughput_rps"], tenants["carol"]["throughput_rps"]
    expected = (alice + carol) ** 2 / (3 * (alice**2 + carol**2))
    assert res.summary["jain_fairness_index"] == pytest.approx(expected)
    assert res.summary["jain_fairness_index"] < 0.7
    bob = [line for line in res.report().splitlines() if line.strip().startswith("bob:")]
    assert bob and f"dropped={tenants['bob']['dropped']})" in bob[0]
    alice_line = [ln for ln in res.report().splitlines() if ln.strip().startswith("alice:")]
    assert "dropped=" not in alice_line[0]
