"""Review 23: results files replay the run they record, and a run cut by its horizon
accounts for every request in one place (records, per-instance and cluster counts).

Each test reproduces a defect the review found (its number in the comments) with a
small, fast run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from inference_sim.cli.main import cli
from inference_sim.config.resolve import load_run_config, resolve

MODEL = "meta-llama/llama-3.1-8b-instruct"
DOCS = Path(__file__).resolve().parents[1] / "docs"
PD_AUTOSCALED = [
    "--hardware", "H100", "--tp", "1", "--workload", "chatbot", "--rate", "60",
    "--num-requests", "300", "--num-instances", "2", "--prefill-instances", "1",
    "--decode-instances", "1", "--decode-autoscale-min", "1", "--decode-autoscale-max", "3",
    "--decode-autoscale-target", "4", "--autoscale-interval", "1",
    "--autoscale-down-window", "1", "--replica-startup-s", "0.5",
]  # fmt: skip


def _run(*args: Any) -> Any:
    res = CliRunner().invoke(cli, ["run", "--model", MODEL, *(str(a) for a in args)])
    assert res.exit_code == 0, res.output
    return res


def _results(tmp_path: Path, name: str, *args: Any) -> dict[str, Any]:
    path = tmp_path / name
    _run(*args, "--results-path", path)
    return json.loads(path.read_text())


def _replayed(tmp_path: Path, first: Path) -> dict[str, Any]:
    again = tmp_path / "again.json"
    res = CliRunner().invoke(cli, ["run", "--config", str(first), "--results-path", str(again)])
    assert res.exit_code == 0, res.output
    return json.loads(again.read_text())


def _without_path(doc: dict[str, Any]) -> dict[str, Any]:
    doc["config"].pop("results_path")
    return doc


# --- 1. the default autoscaling minimum is recorded as 0 -------------------------------


def test_an_autoscaled_results_file_replays(tmp_path):
    first = _results(
        tmp_path, "as.json", "--workload", "chatbot", "--rate", 40, "--num-requests", 30,
        "--autoscale-max", 2, "--autoscale-target", 2,
    )  # fmt: skip
    assert first["config"]["autoscale_min"] == 0  # the default, as recorded
    again = _replayed(tmp_path, tmp_path / "as.json")
    assert _without_path(again) == _without_path(first)


def test_a_dual_pool_results_file_replays(tmp_path):
    first = _results(
        tmp_path, "dual.json", "--hardware", "H100", "--tp", 1, "--num-requests", 20,
        "--num-instances", 3, "--prefill-instances", 1, "--decode-instances", 1,
        "--dual-autoscale-max", 2, "--dual-autoscale-target", 2,
    )  # fmt: skip
    again = _replayed(tmp_path, tmp_path / "dual.json")
    assert _without_path(again) == _without_path(first)


def test_a_recorded_zero_minimum_is_the_default_but_an_explicit_one_is_refused(tmp_path):
    doc = {"config": {"model": MODEL, "autoscale_max": 2, "autoscale_target": 2.0,
                      "autoscale_min": 0, "package_version": "x"}}  # fmt: skip
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    assert "autoscale_min" not in load_run_config(path)
    res = CliRunner().invoke(
        cli, ["run", "--model", MODEL, "--autoscale-max", "2", "--autoscale-target", "2",
              "--autoscale-min", "0"],
    )  # fmt: skip
    assert res.exit_code == 2
    assert "--autoscale-min 0: scale to zero is not modelled" in res.output


# --- 2. a P/D run with an autoscaled pool records the shared settings -------------------


def test_a_pd_autoscaled_run_records_the_shared_settings_and_replays_byte_identical(tmp_path):
    first_path = tmp_path / "r.json"
    _run(*PD_AUTOSCALED, "--results-path", first_path)
    first = json.loads(first_path.read_text())
    cfg = first["config"]
    assert cfg["autoscale_interval"] == 1.0
    assert cfg["autoscale_down_window"] == 1.0
    assert cfg["replica_startup_s"] == 0.5
    for name in ("autoscale_up_window", "replica_load_bandwidth", "autoscale_gpu_hour_price",
                 "autoscale_metric"):  # fmt: skip
        assert name in cfg
    for name in ("autoscale_min", "autoscale_max", "autoscale_target"):  # colocated only
        assert name not in cfg
    again_path = tmp_path / "again.json"
    res = CliRunner().invoke(
        cli, ["run", "--config", str(first_path), "--results-path", str(again_path)]
    )
    assert res.exit_code == 0, res.output

    def text(p: Path) -> str:
        return re.sub(r'"results_path": "[^"]*"', "", p.read_text())

    assert text(again_path) == text(first_path)  # the summary and everything else


def test_a_plain_pd_run_records_no_autoscaling_settings():
    cfg = resolve(
        {"model": MODEL, "num_instances": 2, "prefill_instances": 1, "decode_instances": 1}
    ).resolved_config()
    assert "autoscale_interval" not in cfg and "replica_startup_s" not in cfg


# --- 3. a request still in admission or routing at the horizon --------------------------


def test_a_request_not_yet_routed_at_the_horizon_has_a_record(tmp_path):
    doc = _results(
        tmp_path, "r.json", "--workload", "chatbot", "--rate", 10, "--num-requests", 20,
        "--horizon", "1050ms", "--routing-latency", 60000, "--num-instances", 2,
        "--check-invariants",
    )  # fmt: skip
    records = doc["requests"]
    assert doc["injected_requests"] == 11
    assert len(records) == doc["injected_requests"] - doc["dropped_unservable"]
    unrouted = [r for r in records if "handled_by" not in r]
    assert [r["requestID"] for r in unrouted] == ["request_10"]
    assert unrouted[0]["ttft_ms"] == 0.0 and unrouted[0]["e2e_ms"] == 0.0
    # The cluster's still_queued is the instances' plus the requests not yet routed.
    blocks = doc["instances"]
    assert doc["still_queued"] == sum(b["still_queued"] for b in blocks) + len(unrouted)
    for block in blocks:
        mine = [r for r in records if r.get("handled_by") == block["instance_id"]]
        assert len(mine) == block["injected_requests"] - block["dropped_unservable"]


# --- 4. P/D requests cut mid-transfer are recorded on their decode instance -------------


def test_pd_requests_cut_mid_transfer_name_their_decode_instance(tmp_path):
    doc = _results(
        tmp_path, "pd.json", "--workload", "chatbot", "--rate", 20, "--num-requests", 20,
        "--num-instances", 2, "--prefill-instances", 1, "--decode-instances", 1,
        "--pd-transfer-bandwidth", 0.05, "--horizon", "700ms", "--check-invariants",
    )  # fmt: skip
    assert doc["pd"]["in_transfer_at_end"] > 0
    records = doc["requests"]
    for block in doc["instances"]:
        mine = [r for r in records if r.get("handled_by") == block["instance_id"]]
        assert len(mine) == block["injected_requests"] - block["dropped_unservable"]
    moved = [r for r in records if r["handled_by"] != r["prefill_instance"]]
    assert len(moved) == doc["pd"]["in_transfer_at_end"]
    assert all(r["handled_by"] == r["decode_instance"] for r in moved)


# --- 5. an empty trace v2 (a run that injected nothing) replays -------------------------


def test_an_empty_export_replays_with_warnings(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        'version: "2"\naggregate_rate: 1\nnum_requests: 5\nclients:\n  - id: c\n'
        "    rate_fraction: 1\n    arrival: {process: constant}\n"
        "    input_distribution: {type: constant, params: {value: 100}}\n"
        "    output_distribution: {type: constant, params: {value: 10}}\n"
    )
    trace = tmp_path / "e.csv"
    res = _run("--workload-spec", spec, "--horizon", "500ms", "--export-trace", trace, "--json")
    assert "no request arrived before the horizon (0.5 s)" in res.stderr
    assert len(trace.read_text().splitlines()) == 1  # the header only
    res = _run("--workload", "traces", "--workload-traces-filepath", trace, "--json")
    assert json.loads(res.stdout)["injected_requests"] == 0
    assert "e.csv: no requests (only a header)" in res.stderr
    assert "the workload has no requests" in res.stderr


# --- 6. a replayed roofline run gives the same latency_model_reason ---------------------


def test_both_roofline_spellings_replay_with_their_reason(tmp_path):
    for n, spelling in enumerate((["--latency-model", "roofline"], ["--roofline"])):
        first = tmp_path / f"ro{n}.json"
        _run(*spelling, "--hardware", "H100", "--tp", 1, "--num-requests", 3,
             "--results-path", first)  # fmt: skip
        doc = json.loads(first.read_text())
        assert doc["latency_model_reason"] == "requested (--latency-model roofline)"
        assert _without_path(_replayed(tmp_path, first)) == _without_path(doc)


# --- 7. vllm_estimated_duration_s and the "nothing completed" hint ----------------------


def test_a_run_whose_requests_are_all_dropped_names_the_drops(tmp_path):
    path = tmp_path / "d.json"
    res = _run("--total-kv-blocks", 10, "--num-requests", 20, "--results-path", path)
    doc = json.loads(path.read_text())
    assert doc["dropped_unservable"] == 20 and doc["completed_requests"] == 0
    assert "all 20 generated were dropped or refused: 20 dropped_unservable" in res.stderr
    assert "horizon may be too short" not in res.stderr
    # The last event executed is the last drop: the last request reaching the wait queue
    # (its arrival plus the API server's queueing time), as in the reference.
    last = 19.0  # 20 requests at the default 1 req/s, constant arrivals
    assert last < doc["vllm_estimated_duration_s"] < last + 0.1


def test_a_step_cut_by_the_horizon_ends_the_run_at_its_start():
    from inference_sim.core.rng import RandomStreams
    from inference_sim.metrics.summary import build_summary
    from inference_sim.runner import build_requests, build_simulator

    plan = resolve({"model": MODEL, "num_requests": 10, "horizon": 2_512_345})
    sim = build_simulator(plan)
    out = sim.run(build_requests(plan, RandomStreams(plan.options["seed"])))
    (inst,) = sim.instances
    assert inst.busy_until > out.horizon  # the last step crosses the horizon
    assert out.end_time == inst.clock < out.horizon  # its start, not the horizon
    assert build_summary(out)["vllm_estimated_duration_s"] == inst.clock / 1e6
    assert build_summary(out, [inst], instance_id="x")["vllm_estimated_duration_s"] == (
        inst.clock / 1e6
    )


# --- 8. docs -----------------------------------------------------------------------------


def _fences(page: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line that closes a code fence."""
    out, inside = [], False
    for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            if inside:
                out.append((n, line.strip()))
            inside = not inside
    return out


def test_code_fences_close_cleanly_and_rng_is_named_right():
    for page in ("results.md", "engine.md", "autoscaling.md", "disaggregation.md"):
        bad = [(n, t) for n, t in _fences(DOCS / page) if t != "```"]
        assert not bad, f"{page}: a closing fence with text after it: {bad}"
    assert "engine.RandomStreams" not in (DOCS / "engine.md").read_text().replace(
        "core.rng.RandomStreams", ""
    )


def test_an_arrival_after_the_last_step_start_ends_the_run(tmp_path):
    """The reference's instance Arrival event (stamped at the routing time) is an executed
    event: golden case 0 cut at 3 s ends at the arrival at 2.99997 s, after the last
    step's start (2.999736 s) and before that request's queueing delay ends."""
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_len,output_len\n0,50,400\n0.9,50,5\n")
    doc = _results(
        tmp_path, "r.json", "--workload", "traces", "--workload-traces-filepath", trace,
        "--alpha-coeffs", "5000,0,0", "--beta-coeffs", "6000,0,0",
        "--total-kv-blocks", "1000", "--horizon", "902000",
    )  # fmt: skip
    # steps of 6 ms from 5 ms on: the last one starting before the horizon starts at
    # 899 ms; the arrival at 900 ms is the last event (its enqueue, at 905 ms, is cut)
    assert doc["vllm_estimated_duration_s"] == 0.9


def test_a_pd_step_cut_by_the_horizon_runs_nothing_at_its_end():
    """The P/D step-end hook joined a waiting request to the decode batch at the end of a
    step past the horizon: the run ended after its horizon (56.4 ms of 50) and counted
    that request as running."""
    from inference_sim import simulate

    for exact in (False, True):
        res = simulate(
            model=MODEL,
            num_instances=2,
            prefill_instances=1,
            decode_instances=1,
            pd_decider="always",
            max_num_seqs=1,
            rate=100,
            num_requests=4,
            prompt_tokens=100,
            prompt_tokens_stdev=0,
            prompt_tokens_min=100,
            prompt_tokens_max=100,
            output_tokens=3,
            output_tokens_stdev=0,
            output_tokens_min=3,
            output_tokens_max=3,
            horizon=50_000,
            seed=1,
            check_invariants=True,
            exact_steps=exact,
        )
        s = res.summary
        assert s["vllm_estimated_duration_s"] <= 0.05
        assert (s["completed_requests"], s["still_running"], s["still_queued"]) == (2, 0, 2)
