"""Decision tracing, regret, fitness and fairness in whole runs: the cluster simulator's
decision hook, ``simulate()``, ``Results`` and ``blis run``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from inference_sim import Results, simulate
from inference_sim.analysis import DECISION_COLUMNS, DecisionTrace, jain_index
from inference_sim.cli.main import cli
from inference_sim.cluster.simulator import ClusterSimulator
from inference_sim.core.extras import have
from inference_sim.instance.config import EngineConfig
from inference_sim.instance.fast_engine import FastInstance
from inference_sim.latency.blackbox import BlackboxLatencyModel
from inference_sim.policies import AlwaysBusiest, LeastLoaded, RoundRobin, Weighted
from simhelpers import make_request

MODEL = "meta-llama/llama-3.1-8b-instruct"
COEFFS = {"alpha_coeffs": "0,0,0", "beta_coeffs": "1000,1,1"}


def traced_run(routing: Any, requests: list, n: int = 2, k: int = 2, **cluster: Any):
    cfg = EngineConfig(
        num_gpu_blocks=20_000, block_size=16, max_num_seqs=256, max_num_batched_tokens=2048
    )
    insts = [FastInstance(i, cfg, BlackboxLatencyModel((0, 0, 0), (1000, 1, 1))) for i in range(n)]
    trace = DecisionTrace([inst.name for inst in insts], counterfactual_k=k)
    sim = ClusterSimulator(insts, routing=routing, decision_hook=trace.hook, **cluster)
    sim.run(requests)
    return trace


def imbalanced_workload(count: int = 40) -> list:
    """Every 2 ms a request; even ones decode 400 tokens, odd ones 2.

    Round-robin sends all long requests to instance_0 and all short ones to instance_1,
    so instance_0's batch grows while instance_1 keeps emptying.
    """
    return [make_request(i, 2000 * i, 32, 400 if i % 2 == 0 else 2) for i in range(count)]


def routing_records(trace: DecisionTrace) -> list[dict[str, Any]]:
    return [r for r in trace.records() if r["kind"] == "routing"]


# --- regret in simulated runs ---------------------------------------------------------------


def test_round_robin_has_positive_regret_under_imbalance():
    trace = traced_run(RoundRobin(), imbalanced_workload())
    s = trace.summary()
    assert s["target_distribution"] == {"instance_0": 20, "instance_1": 20}
    assert s["max_regret"] >= 10 and s["mean_regret"] > 1
    for rec in routing_records(trace):
        loads = {
            x["instance_id"]: x["queue_depth"] + x["batch_size"] + x["pending_requests"]
            for x in rec["snapshots"]
        }
        # no scores: regret = chosen load - least load, from the snapshots the policy saw
        assert rec["regret"] == loads[rec["chosen_instance"]] - min(loads.values())
        assert rec["candidates"][0]["score"] == -min(loads.values())


def test_least_loaded_and_weighted_with_fresh_signals_have_zero_regret():
    for policy in (
        LeastLoaded(),
        Weighted([("queue-depth", 2.0), ("kv-utilization", 1.0), ("load-balance", 1.0)]),
        Weighted(),  # the default profile
    ):
        trace = traced_run(policy, imbalanced_workload(), snapshot_refresh_interval=0)
        assert trace.summary()["max_regret"] == 0.0, policy
        assert len(trace.regrets()) == 40


def test_weighted_scores_are_traced_and_the_choice_is_their_argmax():
    trace = traced_run(Weighted([("queue-depth", 1.0)]), imbalanced_workload(12), n=3)
    for rec in routing_records(trace):
        scores = rec["scores"]
        assert set(scores) == {"instance_0", "instance_1", "instance_2"}
        assert scores[rec["chosen_instance"]] == max(scores.values())
        assert rec["regret"] == 0.0


def test_always_busiest_regret_is_the_load_it_piles_up():
    # cluster spec 14: everything goes to instance_0; regret = its load at each decision
    reqs = [make_request(i, 10 * i, 32, 300) for i in range(30)]
    trace = traced_run(AlwaysBusiest(), reqs, n=4)
    s = trace.summary()
    assert s["target_distribution"] == {"instance_0": 30} and s["unique_targets"] == 1
    assert trace.regrets() == [float(i) for i in range(30)]
    assert s["mean_regret"] == 14.5 and s["max_regret"] == 29.0


def test_snapshots_are_what_the_policy_saw_before_the_pending_increment():
    # three requests at t=0: each decision sees the previous ones as pending
    trace = traced_run(RoundRobin(), [make_request(i, 0, 32, 5) for i in range(3)], n=3)
    pend = [[x["pending_requests"] for x in r["snapshots"]] for r in routing_records(trace)]
    assert pend == [[0, 0, 0], [1, 0, 0], [1, 1, 0]]
    assert [r["seq"] for r in trace.records()] == list(range(6))
    assert [r["kind"] for r in trace.records()] == ["admission"] * 3 + ["routing"] * 3


# --- simulate() and Results -----------------------------------------------------------------


@pytest.fixture(scope="module")
def traced() -> Results:
    return simulate(
        model=MODEL,
        num_instances=3,
        num_requests=60,
        rate=200,
        routing_policy="round-robin",
        trace_level="decisions",
        counterfactual_k=2,
        summarize_trace=True,
        fitness_weights="p99_ttft:2,throughput:1,mean_e2e:0.5",
    )


def test_results_expose_decisions_regret_and_fitness(traced):
    recs = traced.decision_records
    assert len(recs) == 120 and [r["seq"] for r in recs] == list(range(120))
    assert list(recs[0]) == list(DECISION_COLUMNS)
    regrets = [r["regret"] for r in recs if r["kind"] == "routing"]
    s = traced.summary
    assert s["mean_regret"] == pytest.approx(sum(regrets) / len(regrets))
    assert s["max_regret"] == max(regrets)
    assert traced.regret == {
        "mean": s["mean_regret"],
        "max": s["max_regret"],
        "count": 60,
        "k": 2,
    }
    ts = traced.trace_summary
    assert ts["total_decisions"] == ts["admitted_count"] == 60
    assert ts["target_distribution"] == {f"instance_{i}": 20 for i in range(3)}
    fit = traced.fitness
    assert list(fit["components"]) == ["mean_e2e", "p99_ttft", "throughput"]
    c = fit["components"]
    assert fit["score"] == pytest.approx(0.5 * c["mean_e2e"] + 2 * c["p99_ttft"] + c["throughput"])
    assert c["throughput"] == pytest.approx(s["responses_per_sec"] / (s["responses_per_sec"] + 100))
    assert c["mean_e2e"] == pytest.approx(1 / (1 + s["e2e_mean_ms"]))  # ms = ticks / 1000
    # appended after every other key (config comes last in the results file)
    keys = [k for k in s if k != "config"]
    assert keys[-5:] == ["fitness_score", "fitness_components", "mean_regret", "max_regret",
                         "trace_summary"]  # fmt: skip


@pytest.mark.skipif(not have("pandas"), reason="pandas not installed")
def test_decisions_dataframe(traced):
    df = traced.decisions
    assert list(df.columns) == list(DECISION_COLUMNS) and len(df) == 120
    routing = df[df["kind"] == "routing"]
    assert routing["regret"].max() == traced.summary["max_regret"]
    assert df[df["kind"] == "admission"]["regret"].isna().all()
    assert routing["chosen_instance"].value_counts().to_dict() == {
        f"instance_{i}": 20 for i in range(3)
    }


def test_report_blocks_in_the_reference_order(traced):
    text = traced.report()
    fit = text.index("=== Fitness Evaluation ===")
    trace = text.index("=== Trace Summary ===")
    assert text.rindex("=== Simulation Metrics ===") < fit < trace
    assert text.endswith(
        f"Mean Regret: {traced.summary['mean_regret']:.6f}\n"
        f"Max Regret: {traced.summary['max_regret']:.6f}\n"
    )
    cluster_json = text[text.rindex("=== Simulation Metrics ===") : fit]
    assert '"fitness_score"' in cluster_json and '"mean_regret"' in cluster_json
    assert '"trace_summary"' not in cluster_json and '"fitness_components"' not in cluster_json


def test_results_file_round_trip_keeps_fitness_and_regret(traced, tmp_path):
    path = tmp_path / "r.json"
    traced.write_json(path)
    back = Results.load(path)
    assert back.fitness == traced.fitness
    assert back.regret == traced.regret
    assert back.report() == traced.report()
    assert back.decision_records == []  # the trace itself goes to --trace-output


def test_no_analysis_keys_by_default():
    res = simulate(model=MODEL, num_requests=5, **COEFFS)
    for key in ("fitness_score", "mean_regret", "trace_summary", "jain_fairness_index"):
        assert key not in res.summary
    assert res.fitness is None and res.regret is None and res.fairness is None
    assert res.decision_records == [] and res.slo_distributions == {}
    assert "Trace Summary" not in res.report() and "Fitness" not in res.report()


def test_tracing_does_not_change_the_simulation():
    opts = dict(model=MODEL, num_instances=2, num_requests=40, rate=100, **COEFFS)
    plain = simulate(**opts).summary
    traced = simulate(**opts, trace_level="decisions", counterfactual_k=3).summary
    for key in plain:
        if key != "config":
            assert traced[key] == plain[key], key


# --- tenants and SLO classes ----------------------------------------------------------------


def two_tenant_spec(path: Path, admission: str = "") -> Path:
    def client(cid: str, tenant: str, slo: str, out: int) -> dict[str, Any]:
        return {
            "id": cid,
            "tenant_id": tenant,
            "slo_class": slo,
            "rate_fraction": 1.0,
            "arrival": {"process": "constant"},
            "input_distribution": {"type": "constant", "params": {"value": 64}},
            "output_distribution": {"type": "constant", "params": {"value": out}},
        }

    doc = {
        "version": "2",
        "seed": 5,
        "aggregate_rate": 20.0,
        "num_requests": 40,
        "clients": [client("a", "alice", "critical", 8), client("b", "bob", "batch", 64)],
    }
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_tenant_fairness_and_slo_distributions(tmp_path):
    spec = two_tenant_spec(tmp_path / "w.yaml")
    res = simulate(model=MODEL, workload_spec=str(spec), num_instances=2, **COEFFS)
    s = res.summary
    tenants = s["tenant_metrics"]
    assert list(tenants) == ["alice", "bob"]
    assert tenants["alice"]["completed"] + tenants["bob"]["completed"] == s["completed_requests"]
    rps = {t: m["throughput_rps"] for t, m in tenants.items()}
    assert s["jain_fairness_index"] == pytest.approx(jain_index(rps))
    assert sum(rps.values()) == pytest.approx(s["responses_per_sec"])
    assert res.fairness == {"jain_fairness_index": s["jain_fairness_index"], "tenants": tenants}
    dist = res.slo_distributions
    assert list(dist) == ["batch", "critical"]
    for cls, d in dist.items():
        assert (
            d["e2e"]["count"]
            == d["requests"]
            == tenants["alice" if cls == "critical" else "bob"]["completed"]
        )
        assert d["e2e"]["min_ms"] <= d["e2e"]["p50_ms"] <= d["e2e"]["p99_ms"] <= d["e2e"]["max_ms"]
    # the reference's per-SLO block, then ours, in that order
    text = res.report()
    assert text.index("=== Per-SLO Metrics ===") < text.index("=== Tenant Fairness ===")
    assert f"Jain Fairness Index: {s['jain_fairness_index']:.6f}\n" in text


def test_tenants_rejected_by_admission_still_count(tmp_path):
    spec = two_tenant_spec(tmp_path / "w.yaml")
    res = simulate(model=MODEL, workload_spec=str(spec), admission_policy="reject-all", **COEFFS)
    tenants = res.summary["tenant_metrics"]
    assert {t: (m["rejected"], m["completed"]) for t, m in tenants.items()} == {
        "alice": (20, 0),
        "bob": (20, 0),
    }
    assert res.summary["jain_fairness_index"] == 1.0  # every throughput is 0


# --- the command line -----------------------------------------------------------------------


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["run", "--model", MODEL, *args])


def test_cli_trace_output_jsonl_and_summary(tmp_path):
    out = tmp_path / "trace.jsonl"
    r = invoke(
        "--num-instances", "2", "--num-requests", "20", "--rate", "100",
        "--trace-level", "decisions", "--counterfactual-k", "1", "--summarize-trace",
        "--trace-output", str(out),
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    recs = [json.loads(line) for line in lines]
    assert len(recs) == 40 and list(recs[1]) == list(DECISION_COLUMNS)
    assert sum(1 for x in recs if x["kind"] == "routing") == 20
    assert [p.name for p in tmp_path.iterdir()] == ["trace.jsonl"]  # no temporary left
    assert "Total Decisions: 20\n  Admitted: 20\n  Rejected: 0\nUnique Targets: 2\n" in r.stdout
    assert "Target Distribution:\n  instance_0: 10\n  instance_1: 10\n" in r.stdout


@pytest.mark.skipif(not (have("pyarrow") and have("pandas")), reason="needs pyarrow and pandas")
def test_cli_trace_output_parquet(tmp_path):
    import pandas as pd

    out = tmp_path / "trace.parquet"
    r = invoke(
        "--num-instances", "2", "--num-requests", "10", "--routing-policy", "weighted",
        "--trace-level", "decisions", "--counterfactual-k", "2", "--trace-output", str(out),
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    df = pd.read_parquet(out)
    assert list(df.columns) == list(DECISION_COLUMNS) and len(df) == 20
    routing = df[df["kind"] == "routing"]
    first = routing.iloc[0]
    assert set(first["scores"]) == {"instance_0", "instance_1"}
    assert len(first["candidates"]) == 2 and len(first["snapshots"]) == 2
    assert (routing["regret"] == 0).all()


def test_cli_summarize_trace_prints_zero_regret_when_k_is_zero():
    r = invoke("--num-requests", "3", "--trace-level", "decisions", "--summarize-trace")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.endswith("Mean Regret: 0.000000\nMax Regret: 0.000000\n")


def test_cli_fitness_block_comes_first_after_the_metrics():
    r = invoke("--num-requests", "5", "--fitness-weights", "p99_ttft:1,throughput:1")
    assert r.exit_code == 0, r.stderr
    rest = r.stdout[r.stdout.index("=== Fitness Evaluation ===") :]
    lines = rest.splitlines()
    assert lines[1].startswith("Score: ")
    assert lines[2].startswith("  p99_ttft: ") and lines[3].startswith("  throughput: ")
    score = float(lines[1].split()[1])
    parts = [float(x.split()[-1]) for x in lines[2:4]]
    assert score == pytest.approx(sum(parts), abs=2e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fitness-weights", "latency:1"], 'unknown fitness metric key "latency"'),
        (["--fitness-weights", "p99_ttft:-2"], "must be a finite non-negative number, got -2"),
        (["--fitness-weights", "p99_ttft:x"], 'invalid fitness weight value for "p99_ttft"'),
        (["--fitness-weights", "throughput:1,"], 'invalid fitness weight ""'),
        (["--counterfactual-k", "-1"], "--counterfactual-k must be >= 0, got -1"),
        (["--trace-level", "decisionz"], "--trace-level: unknown level 'decisionz'"),
        (
            ["--trace-level", "decisions", "--trace-output", "/nonexistent-dir/t.jsonl"],
            "--trace-output /nonexistent-dir/t.jsonl: cannot write",
        ),
    ],
)
def test_cli_bad_input_exits_2_before_the_run(args, message):
    r = invoke("--num-requests", "5", *args)
    assert r.exit_code == 2
    assert r.stdout == ""  # checked before the run: nothing simulated or printed
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_cli_warns_when_trace_options_have_no_effect():
    r = invoke("--num-requests", "2", "--counterfactual-k", "2", "--summarize-trace")
    assert r.exit_code == 0
    assert "--counterfactual-k=2 has no effect without --trace-level decisions" in r.stderr
    assert "--summarize-trace has no effect without --trace-level decisions" in r.stderr
    assert "Trace Summary" not in r.stdout
