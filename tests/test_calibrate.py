"""``blis calibrate``: measured-run readers, replay, and recovering known coefficients from
synthetic measurements made by the simulator itself (a tiny version of the real fit)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from inference_sim.calibrate.fit import FitOptions, fit_coefficients
from inference_sim.calibrate.harness import ReplaySettings, simulate_run
from inference_sim.calibrate.runs import (
    MeasuredRun,
    RunsError,
    StageMeasurement,
    load_runs,
    read_inference_perf_folder,
    read_runs_csv,
)
from inference_sim.cli.main import cli
from inference_sim.latency.calibrated import CalibratedCoefficients

CSV_HEADER = (
    "experiment,model,hardware,tp,max_num_batched_tokens,max_num_seqs,max_model_len,"
    "total_kv_blocks_from_vllm_log,system_prompt_len,question_len,output_len,all_stages,"
    "stage_index,stage_rate_rps,stage_duration_s,ttft_mean_ms,e2e_mean_ms,itl_mean_ms,"
    "output_len_mean,prompt_len_mean\n"
)


def test_read_csv_groups_stages_and_keeps_the_summary(tmp_path: Path):
    path = tmp_path / "runs.csv"
    run_cols = "a,Meta-Llama/Llama-2-7b-hf,H100,1,2048,128,4096,7463,100,447,248,600s@8;600s@20"
    path.write_text(
        CSV_HEADER
        + f"{run_cols},0,8,600,27.1,2057.6,9.71,210,575.45\n"
        + f"{run_cols},1,20,600,51.9,4158.1,19.8,208,575.45\n"
        + f"{run_cols},-1,,,44.8,3558.0,16.9,209,575.45\n"
    )
    (run,) = read_runs_csv(path)
    assert run.model == "meta-llama/llama-2-7b-hf" and run.tp == 1 and run.total_kv_blocks == 7463
    assert [(s.rate, s.duration_s) for s in run.stages] == [(8, 600), (20, 600)]
    assert run.summary is not None and run.summary.ttft_ms == 44.8
    # served prompt length from prompt_len_mean, split in proportion
    assert run.prompt_lengths() == (105, 470)
    # TPOT*: per generated token (ignore_eos: exactly output_len tokens)
    assert run.stages[0].tpot_true_ms(run.output_len) == pytest.approx((2057.6 - 27.1) / 247)
    spec = run.workload_spec(duration_scale=0.1, min_stage_s=90)
    ip = spec["inference_perf"]
    assert ip["cycle_prompts"] and ip["shared_prefix"]["num_unique_system_prompts"] == 10
    assert [s["duration"] for s in ip["stages"]] == [90, 90]
    assert run.workload_spec(prefix_reuse="profile")["inference_perf"]["cycle_prompts"] is False
    opts = run.sim_options("w.yaml", latency_model="calibrated")
    assert opts["max_num_batched_tokens"] == 2048 and opts["total_kv_blocks"] == 7463
    bad = tmp_path / "bad.csv"
    bad.write_text(CSV_HEADER + "b,m,H100,1,2048,128,4096,0,100,400,200,,0,,,10,100,1,,\n")
    with pytest.raises(RunsError, match="stage 0 needs stage_rate_rps"):
        read_runs_csv(bad)


def test_data_parallel_runs_replay_as_instances_balanced_as_vllm_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A ``dp`` column (``vllm serve --data-parallel-size``) replays as that many engines:
    dense models rotate (vLLM 0.15's dense engines publish no queue lengths), MoE models
    use vLLM's load-aware rule; each engine then sees half the load, and each request's
    Jacobian follows the steps of the engine that served it."""
    import inference_sim.calibrate.harness as harness

    header = CSV_HEADER.rstrip("\n") + ",dp\n"
    cols = "d,qwen/qwen2.5-7b-instruct,H100,1,2048,128,4096,0,100,400,120,60s@30"
    path = tmp_path / "dp.csv"
    path.write_text(header + f"{cols},0,30,60,30,1500,10,120,,2\n")
    (run,) = read_runs_csv(path)
    assert run.dp == 2
    opts = run.sim_options("w.yaml")
    assert (opts["num_instances"], opts["routing_policy"]) == (2, "round-robin")
    scout = replace(run, model="redhatai/llama-4-scout-17b-16e-instruct-fp8-dynamic")
    assert scout.sim_options("w.yaml")["routing_policy"] == "vllm-dp"
    assert "num_instances" not in replace(run, dp=1).sim_options("w.yaml")
    settings = ReplaySettings(duration_scale=0.25, min_stage_s=15.0)
    calls: list[tuple[int, int]] = []
    real = harness._request_jacobians

    def spy(model, arrival, *rest):
        calls.append((id(model), len(arrival)))
        return real(model, arrival, *rest)

    monkeypatch.setattr(harness, "_request_jacobians", spy)
    two = simulate_run(run, settings=settings, jacobian=True)[0]
    assert len({m for m, _ in calls}) == 2 and all(n > 0 for _, n in calls)
    assert sum(n for _, n in calls) >= two.completed
    one = simulate_run(replace(run, dp=1), settings=settings)[0]
    assert two.completed == one.completed > 0
    assert two.tpot_ms < one.tpot_ms  # each engine batches half the requests
    kv = tmp_path / "kv.csv"
    kv.write_text(
        header.replace(",dp", ",dp,kv_cache_dtype") + f"{cols},0,30,60,30,1500,10,120,,1,FP8\n"
    )
    (fp8,) = read_runs_csv(kv)
    assert fp8.sim_options("w.yaml")["kv_cache_dtype"] == "fp8"
    assert "kv_cache_dtype" not in run.sim_options("w.yaml")
    assert "quantization" not in fp8.sim_options("w.yaml")
    precision = tmp_path / "precision.csv"
    precision.write_text(
        header.replace(",dp", ",dp,precision") + f"{cols},0,30,60,30,1500,10,120,,1,FP8\n"
    )
    (online,) = read_runs_csv(precision)  # a 16-bit checkpoint served as FP8: online
    assert online.sim_options("w.yaml")["quantization"] == "fp8"
    ckpt = cols.replace("qwen/qwen2.5-7b-instruct", "redhatai/qwen2.5-7b-instruct-fp8-dynamic")
    precision.write_text(
        header.replace(",dp", ",dp,precision") + f"{ckpt},0,30,60,30,1500,10,120,,1,FP8\n"
    )
    assert read_runs_csv(precision)[0].quantization == ""  # the checkpoint says FP8 itself
    kv.write_text(
        header.replace(",dp", ",dp,kv_cache_dtype") + f"{cols},0,30,60,30,1500,10,120,,1,int4\n"
    )
    with pytest.raises(RunsError, match="kv_cache_dtype must be one of auto"):
        read_runs_csv(kv)
    (tmp_path / "bad.csv").write_text(header + f"{cols},0,30,60,30,1500,10,120,,0\n")
    with pytest.raises(RunsError, match=r"dp \(data-parallel engines\) must be >= 1, got 0"):
        read_runs_csv(tmp_path / "bad.csv")


def test_read_yaml_and_inference_perf_folder(tmp_path: Path):
    y = tmp_path / "runs.yaml"
    y.write_text(
        "runs:\n- experiment: r1\n  model: qwen/qwen2.5-7b-instruct\n  tp: 1\n"
        "  system_prompt_len: 100\n  question_len: 400\n  output_len: 100\n"
        "  stages:\n"
        "  - {stage_rate_rps: 2, stage_duration_s: 60, ttft_mean_ms: 25, e2e_mean_ms: 700}\n"
    )
    (run,) = load_runs([y], hardware="H100")
    assert run.hardware == "H100" and run.stages[0].rate == 2
    folder = tmp_path / "ip"
    (folder / "results").mkdir(parents=True)
    (folder / "exp-config.yaml").write_text(
        "model: meta-llama/Llama-2-7b-hf\ntensor_parallelism: 1\nmax_num_batched_tokens: 2048\n"
    )
    (folder / "results" / "config.yaml").write_text(
        "data:\n  shared_prefix: {num_groups: 10, num_prompts_per_group: 10,"
        " system_prompt_len: 100,"
        " question_len: 447, output_len: 248}\nload:\n  stages: [{rate: 8, duration: 600}]\n"
    )
    (folder / "results" / "stage_0_lifecycle_metrics.json").write_text(
        json.dumps(
            {
                "successes": {
                    "latency": {
                        "time_to_first_token": {"mean": 0.0271},
                        "request_latency": {"mean": 2.0576},
                    },
                    "output_len": {"mean": 210.0},
                    "prompt_len": {"mean": 575.45},
                }
            }
        )
    )
    ip = read_inference_perf_folder(folder, hardware="H100")
    assert ip.model == "meta-llama/llama-2-7b-hf" and ip.stages[0].ttft_ms == pytest.approx(27.1)
    assert ip.stages[0].tpot_ms == pytest.approx((2057.6 - 27.1) / 209)
    with pytest.raises(RunsError, match="GPU is not in the files"):
        read_inference_perf_folder(folder)
    assert ip.dp == 1
    exp = folder / "exp-config.yaml"
    exp.write_text(exp.read_text() + "data_parallel_size: 2\n")
    assert read_inference_perf_folder(folder, hardware="H100").dp == 2
    exp.write_text(exp.read_text().replace("data_parallel_size: 2", "data_parallel_size: -1"))
    with pytest.raises(RunsError, match="data_parallel_size must be >= 1, got -1"):
        read_inference_perf_folder(folder, hardware="H100")


# --- recovering known coefficients ---------------------------------------------------------

TRUE = CalibratedCoefficients(
    weight_read=1.25,
    compute=1.6,
    kv_read=1.2,
    attention=2.0,
    moe=1.0,
    allreduce_us=10.0,
    step_us=900.0,
    layer_us=15.0,
    request_us=4.0,
    queue_us=6000.0,
    queue_per_token_us=1.0,
    output_token_us=0.0,
)


def _synthetic_runs() -> list[MeasuredRun]:
    """Two small models, two load stages each; 'measurements' simulated with TRUE."""
    runs = []
    for name, model in (
        ("small", "qwen/qwen2.5-1.5b-instruct"),
        ("big", "meta-llama/llama-3.1-8b-instruct"),
    ):
        stages = (
            StageMeasurement(0, 4.0, 15.0, 1.0, 1.0),
            StageMeasurement(1, 12.0, 15.0, 1.0, 1.0),
        )
        run = MeasuredRun(
            name=name,
            model=model,
            hardware="H100",
            tp=1,
            max_num_batched_tokens=2048,
            system_prompt_len=60,
            question_len=200,
            output_len=40,
            stages=stages,
            total_kv_blocks=20000,
            num_groups=4,
            prompts_per_group=5,
            prompt_len_mean=260,
        )
        sim = simulate_run(run, coefficients=TRUE)
        measured = tuple(
            replace(st, ttft_ms=r.ttft_ms, e2e_ms=r.e2e_ms, tpot_ms=r.tpot_ms)
            for st, r in zip(stages, sim, strict=True)
        )
        runs.append(replace(run, stages=measured))
    return runs


def test_fit_recovers_known_coefficients():
    pytest.importorskip("scipy")
    """Start 35-55 % off on three coefficients and recover them from simulated data.

    The data are the simulator's own output at the true coefficients (same seed, full
    stages), so the residual is exactly 0 there. Around it the objective is noisy: the
    simulation is a discrete-event system, so a 0.2 % change of one coefficient moves
    arrivals and step boundaries relative to each other and the stage means by up to
    ~2 % (a few hundred requests per stage). A smooth optimiser therefore stops where the
    residuals reach that noise floor (rms ~0.3 %), which is 1-2 % away from the true
    values in coefficient space; 3 % bounds that with some margin. weight_read and
    step_us are told apart by the two model sizes, queue_us by TTFT.
    """
    runs = _synthetic_runs()
    start = TRUE.with_values({"weight_read": 0.8, "step_us": 400.0, "queue_us": 3000.0})
    opts = FitOptions(
        params=("weight_read", "step_us", "queue_us"),
        prior_weight=0.0,
        loss="linear",
        max_evals=12,
        rounds=1,
        settings=ReplaySettings(),
        full_settings=None,
        workers=1,
    )
    res = fit_coefficients(runs, start=start, options=opts)
    got = res.coefficients
    assert got.weight_read == pytest.approx(TRUE.weight_read, rel=0.03)
    assert got.step_us == pytest.approx(TRUE.step_us, rel=0.03)
    assert got.queue_us == pytest.approx(TRUE.queue_us, rel=0.03)
    assert res.evaluations <= 12


def test_calibrate_cli_evaluate_and_write_specs(tmp_path: Path):
    runs = tmp_path / "runs.yaml"
    runs.write_text(
        "runs:\n- experiment: tiny\n  model: qwen/qwen2.5-1.5b-instruct\n"
        "  hardware: H100\n  tp: 1\n"
        "  total_kv_blocks_from_vllm_log: 20000\n  system_prompt_len: 60\n  question_len: 200\n"
        "  output_len: 30\n  stages:\n"
        "  - {stage_rate_rps: 4, stage_duration_s: 10, ttft_mean_ms: 20, e2e_mean_ms: 300}\n"
    )
    res = CliRunner().invoke(cli, ["calibrate", str(runs), "--evaluate-only", "-j", "1", "-q"])
    assert res.exit_code == 0, res.output
    assert "median APE: TTFT" in res.output and "tiny" in res.output
    out = tmp_path / "specs"
    res = CliRunner().invoke(cli, ["calibrate", str(runs), "--write-specs", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "tiny.yaml").exists()
    assert "--latency-model calibrated" in (out / "commands.sh").read_text()
    pytest.importorskip("scipy")
    coeffs = tmp_path / "c.json"
    res = CliRunner().invoke(
        cli,
        [
            "calibrate",
            str(runs),
            "-j",
            "1",
            "-q",
            "--params",
            "queue_us",
            "--max-evals",
            "3",
            "--rounds",
            "1",
            "--no-length-correction",
            "--out",
            str(coeffs),
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(coeffs.read_text())
    assert doc["meta"]["fitted_params"] == ["queue_us"]
    # This fit's own record: not the shipped set's data, validation tables or source.
    assert doc["source"] == "fitted by blis calibrate (docs/calibration.md)"
    assert doc["meta"]["runs"] == ["tiny"] and doc["meta"]["started_from"] == "the shipped set"
    assert not {"median_ape_pct_lomo", "median_ape_pct_in_sample"} & set(doc["meta"])
    res = CliRunner().invoke(cli, ["calibrate", str(runs), "--params", "nope", "-q"])
    assert res.exit_code == 2 and "unknown coefficient" in res.output


def test_lomo_table_has_a_tp_column_and_medians_by_tp() -> None:
    from inference_sim.calibrate.report import markdown_table, medians_by_tp

    def row(run: str, tp: int, ape: float) -> dict:
        return {"run": run, "tp": tp, "stage": 0, "rate": 1.0, "ttft_ape": ape,
                "e2e_ape": ape, "tpot_ape": ape, "tpot_true_ape": ape}  # fmt: skip

    rows = [row("a", 1, 2.0), row("b", 2, 10.0), row("c", 2, 20.0)]
    table = markdown_table([("LOMO", rows)])
    assert table.splitlines()[0].startswith("| run | TP | stage | rate |")
    assert "| b | 2 | 0 | 1.0 | 10.0 |" in table
    by_tp = medians_by_tp(rows)
    assert list(by_tp) == [1, 2]
    assert by_tp[2][0] == 2 and by_tp[2][1]["e2e_ape"] == 15.0


def test_fit_refuses_a_non_additive_overlap():
    """The frozen-batch Jacobian assumes additive step terms: overlap must stay 1."""
    pytest.importorskip("scipy")
    with pytest.raises(ValueError, match=r"overlap must be 1 to fit, got 2\.0"):
        fit_coefficients([], start=CalibratedCoefficients(overlap=2.0))


# --- bad input: one RunsError naming the row/run, field and allowed range -------------------

_ROW = "a,qwen/qwen2.5-7b-instruct,H100,1,2048,128,4096,7463,100,447,248,600s@8;600s@20"


def test_stage_index_beyond_all_stages_or_repeated_is_refused(tmp_path: Path):
    """A stage_index past ``all_stages`` used to crash the error table (IndexError)."""
    path = tmp_path / "runs.csv"
    path.write_text(
        CSV_HEADER
        + f"{_ROW},0,8,600,27.1,2057.6,9.71,210,575.45\n"
        + f"{_ROW},7,20,600,51.9,4158.1,19.8,208,575.45\n"
    )
    with pytest.raises(
        RunsError, match=r"runs\.csv row 3 \(run a\): stage_index must be -1 .*0\.\.1.*got 7"
    ):
        read_runs_csv(path)
    path.write_text(
        CSV_HEADER
        + f"{_ROW},1,8,600,27.1,2057.6,9.71,210,575.45\n"
        + f"{_ROW},1,20,600,51.9,4158.1,19.8,208,575.45\n"
    )
    with pytest.raises(RunsError, match=r"row 3 \(run a\): stage_index 1 repeated"):
        read_runs_csv(path)
    y = tmp_path / "runs.yaml"
    y.write_text(
        "runs:\n- experiment: r1\n  model: qwen/qwen2.5-7b-instruct\n  hardware: H100\n"
        "  system_prompt_len: 100\n  question_len: 400\n  output_len: 100\n  stages:\n"
        "  - {stage_index: 3, stage_rate_rps: 2, stage_duration_s: 60, ttft_mean_ms: 25,"
        " e2e_mean_ms: 700}\n"
    )
    with pytest.raises(RunsError, match=r"runs\[0\]\.stages\[0\]: stage_index must be .*0\.\.0"):
        load_runs([y])
    res = CliRunner().invoke(cli, ["calibrate", str(path), "--evaluate-only", "-q", "-j", "1"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.output.strip().startswith("Error: runs.csv row 3")


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("tp", "0", r"tp \(tensor-parallel GPUs\) must be >= 1, got '0'"),
        ("tp", "-2", r"tp \(tensor-parallel GPUs\) must be >= 1, got '-2'"),
        ("total_kv_blocks_from_vllm_log", "-5", r"total_kv_blocks_from_vllm_log must be >= 0"),
        ("max_num_seqs", "0", r"max_num_seqs must be >= 1, got '0'"),
        ("gpu_memory_utilization", "0", r"gpu_memory_utilization must be in \(0, 1\], got '0'"),
        ("gpu_memory_utilization", "1.5", r"gpu_memory_utilization must be in \(0, 1\]"),
        ("system_prompt_len", "-1", r"system_prompt_len must be >= 0, got '-1'"),
        ("question_len", "-400", r"question_len must be >= 0, got '-400'"),
        ("output_len", "-3", r"output_len must be >= 0, got '-3'"),
    ],
)
def test_out_of_range_run_values_are_refused_not_replaced(
    tmp_path: Path, column: str, value: str, message: str
):
    header = CSV_HEADER.rstrip("\n") + ",gpu_memory_utilization\n"
    cols = header.rstrip("\n").split(",")
    values = (_ROW + ",0,8,600,27.1,2057.6,9.71,210,575.45,").split(",")
    values[cols.index(column)] = value
    path = tmp_path / "runs.csv"
    path.write_text(header + ",".join(values) + "\n")
    with pytest.raises(RunsError, match=rf"runs\.csv run a: {message}"):
        read_runs_csv(path)
    # blank cells still mean "not given"
    values[cols.index(column)] = ""
    path.write_text(header + ",".join(values) + "\n")
    if column != "output_len":
        (run,) = read_runs_csv(path)
        assert run.gpu_memory_utilization == 0.9 and run.tp == 1 and run.max_num_seqs == 128


def test_write_specs_keeps_files_inside_the_folder_and_quotes_commands(tmp_path: Path):
    runs = tmp_path / "runs.yaml"
    stage = (
        "  stages:\n"
        "  - {stage_rate_rps: 2, stage_duration_s: 60, ttft_mean_ms: 30, e2e_mean_ms: 2000}\n"
    )
    body = "  model: qwen/qwen2.5-7b-instruct\n  hardware: H100\n  system_prompt_len: 100\n" \
        "  question_len: 400\n  output_len: 200\n" + stage  # fmt: skip
    runs.write_text(
        "runs:\n"
        + '- experiment: "../escaped run; echo INJECTED"\n' + body
        + '- experiment: "_._escaped run; echo INJECTED"\n' + body
        + '- experiment: ".hidden"\n' + body
    )  # fmt: skip
    out = tmp_path / "specs"
    res = CliRunner().invoke(cli, ["calibrate", str(runs), "--write-specs", str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.yaml", "specs"]
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "_._escaped_run__echo_INJECTED-2.yaml",
        "_._escaped_run__echo_INJECTED.yaml",
        "_hidden.yaml",
        "commands.sh",
    ]
    import shlex

    lines = [ln for ln in (out / "commands.sh").read_text().splitlines() if ln.startswith("blis")]
    assert len(lines) == 3
    for line in lines:
        words = shlex.split(line)  # every argument quoted: no `;` outside a word
        assert "echo" not in words and words[:2] == ["blis", "run"]
        assert all(w.startswith(str(out)) for w in words if w.endswith((".yaml", ".json")))
    # not a string
    bad = tmp_path / "bad.yaml"
    bad.write_text("runs:\n- experiment: [a, b]\n" + body)
    with pytest.raises(RunsError, match=r"experiment must be a string, got a list"):
        load_runs([bad])
    bad.write_text("runs:\n- experiment: x\n  model: {a: 1}\n" + body.split("\n", 1)[1])
    with pytest.raises(RunsError, match=r"run x: model must be a string, got a dict"):
        load_runs([bad])
    # --write-specs naming an existing regular file
    afile = tmp_path / "afile"
    afile.write_text("x")
    res = CliRunner().invoke(cli, ["calibrate", str(runs), "--write-specs", str(afile)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.output.strip() == f"Error: --write-specs {afile}: exists and is not a folder"


def test_evaluate_only_exits_1_when_every_run_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from inference_sim.calibrate import fit

    runs = tmp_path / "runs.yaml"
    runs.write_text(
        "runs:\n- experiment: tiny\n  model: qwen/qwen2.5-1.5b-instruct\n  hardware: H100\n"
        "  system_prompt_len: 60\n  question_len: 200\n  output_len: 30\n  stages:\n"
        "  - {stage_rate_rps: 4, stage_duration_s: 10, ttft_mean_ms: 20, e2e_mean_ms: 300}\n"
    )
    monkeypatch.setattr(
        fit.Simulator, "run", lambda self, runs, **kw: [RuntimeError("boom") for _ in runs]
    )
    res = CliRunner().invoke(cli, ["calibrate", str(runs), "--evaluate-only", "-q", "-j", "1"])
    assert res.exit_code == 1, res.output
    assert "boom" in res.output and "all 1 runs failed to simulate" in res.output


def _tiny_runs(tmp_path: Path, extra: str = "") -> Path:
    """A one-run, one-stage YAML of measured runs (``extra``: more run-level lines)."""
    runs = tmp_path / "runs.yaml"
    runs.write_text(
        "runs:\n- experiment: tiny\n  model: qwen/qwen2.5-1.5b-instruct\n  hardware: H100\n"
        + extra
        + "  system_prompt_len: 60\n  question_len: 200\n  output_len: 30\n  stages:\n"
        "  - {stage_rate_rps: 4, stage_duration_s: 10, ttft_mean_ms: 20, e2e_mean_ms: 300}\n"
    )
    return runs


def test_a_run_that_completes_nothing_counts_as_failed(tmp_path: Path):
    """A KV count no server could have run with (3 blocks for 260-token prompts) drops
    every request: 100 % errors that say nothing about the coefficients; named, failed."""
    runs = _tiny_runs(tmp_path, "  tp: 1\n  total_kv_blocks_from_vllm_log: 3\n")
    res = CliRunner().invoke(cli, ["calibrate", str(runs), "--evaluate-only", "-q", "-j", "1"])
    assert res.exit_code == 1, res.output
    assert "1 run(s) completed no request (tiny)" in res.output
    assert "all 1 runs failed to simulate" in res.output


def test_a_fit_worse_than_its_start_says_so(capsys: pytest.CaptureFixture[str]):
    from types import SimpleNamespace

    from inference_sim.calibrate.cli import _warn_if_worse_than_start

    start, fitted = CalibratedCoefficients(), CalibratedCoefficients(queue_us=1.0)
    history = [
        {"rms": 0.0287, "coefficients": start.to_dict()},
        {"rms": 0.0341, "coefficients": fitted.to_dict()},
    ]
    _warn_if_worse_than_start(SimpleNamespace(history=history), fitted, "")
    err = capsys.readouterr().err
    assert "fit these runs worse than the shipped set (rms log-error 0.0341 against 0.0287)" in err
    _warn_if_worse_than_start(SimpleNamespace(history=history[:1]), start, "s.json")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("flag", ["--tp", "--total-kv-blocks", "--max-num-batched-tokens"])
def test_folder_only_flags_are_refused_for_a_file_of_runs(tmp_path: Path, flag: str):
    runs = _tiny_runs(tmp_path)
    res = CliRunner().invoke(cli, ["calibrate", str(runs), flag, "4", "--evaluate-only", "-q"])
    assert res.exit_code == 2
    assert f"{flag}: only for an inference-perf result folder" in res.output
