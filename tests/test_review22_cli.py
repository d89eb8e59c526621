"""Review 22: plan/tune/calibrate outputs never replace their inputs; `blis plan` gives the
same plan for every --jobs; `blis calibrate` checks every row of a run, not the first."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from inference_sim.calibrate.runs import RunsError, read_runs_csv, read_runs_yaml
from inference_sim.cli.main import cli
from inference_sim.planning import Deployment, parse_slos, plan_capacity

MODEL = "meta-llama/llama-3.1-8b-instruct"
REPO = Path(__file__).resolve().parents[1]
TRAINING = Path("/work/shared/calibration/vllm-0.15.1/training_runs.csv")
SPEC = REPO / "examples" / "shared-prefixes.yaml"


def _invoke(args: list[str]) -> Any:
    return CliRunner().invoke(cli, args)


def _one_line_error(result: Any, needle: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in result.output


# --- defect 1: outputs that would replace an input are refused ------------------------------


def test_plan_plot_onto_the_workload_spec_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "spp.yaml"
    shutil.copy(SPEC, spec)
    before = spec.read_bytes()
    res = _invoke(
        ["plan", "--model", MODEL, "--hardware", "H100", "--tp", "1", "--workload-spec",
         str(spec), "--rate", "5", "--num-requests", "20", "--slo", "ttft_p99_ms=3000",
         "--max-instances", "1", "--no-saturation", "--jobs", "1", "-q", "--plot", str(spec)]
    )  # fmt: skip
    _one_line_error(res, f"--plot {spec} is also the input --workload-spec")
    assert spec.read_bytes() == before


def test_plan_plot_onto_the_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "tc2.yaml"
    config.write_text(f"model: {MODEL}\nhardware: H100\ntp: 1\nworkload: chatbot\n")
    before = config.read_bytes()
    res = _invoke(
        ["plan", "--config", str(config), "--rate", "5", "--slo", "ttft_p99_ms=3000",
         "--max-instances", "1", "--no-saturation", "--jobs", "1", "-q", "--plot", str(config)]
    )  # fmt: skip
    _one_line_error(res, f"--plot {config} is also the input --config")
    assert config.read_bytes() == before


@pytest.mark.parametrize("flag", ["--config", "--policy-config"])
def test_tune_output_onto_an_input_is_refused(tmp_path: Path, flag: str) -> None:
    path = tmp_path / "tc.yaml"
    if flag == "--config":
        path.write_text(f"model: {MODEL}\nhardware: H100\ntp: 1\nworkload: chatbot\n")
        args = ["--config", str(path)]
    else:
        shutil.copy(REPO / "examples" / "policy-bundle.yaml", path)
        args = ["--model", MODEL, "--policy-config", str(path)]
    before = path.read_bytes()
    res = _invoke(["tune", *args, "--rate", "20", "--trials", "2", "--jobs", "1", "-q",
                   "-o", str(path)])  # fmt: skip
    _one_line_error(res, f"--output {path} is also the input {flag}")
    assert path.read_bytes() == before


def _small_csv(path: Path, rows: int = 2) -> None:
    with TRAINING.open(encoding="utf-8") as fh:
        head = [next(fh) for _ in range(rows + 1)]
    path.write_text("".join(head), encoding="utf-8")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--evaluate-only", "--report", "{csv}"], "--report {csv} is also the input RUNS"),
        (["--out", "{csv}"], "--out {csv} is also the input RUNS"),
        (["--out", "{tmp}/c.json", "--report", "{tmp}/c.json"], "is also --out"),
        (["--out", "{tmp}/start.json", "--start", "{tmp}/start.json"], "the input --start"),
    ],
)
def test_calibrate_outputs_onto_inputs_are_refused(
    tmp_path: Path, extra: list[str], needle: str
) -> None:
    runs = tmp_path / "calin.csv"
    _small_csv(runs)
    (tmp_path / "start.json").write_text("{}")
    before = runs.read_bytes()
    fill = {"csv": str(runs), "tmp": str(tmp_path)}
    res = _invoke(["calibrate", str(runs), "-j", "1", "-q", *(a.format(**fill) for a in extra)])
    _one_line_error(res, needle.format(**fill))
    assert runs.read_bytes() == before
    assert (tmp_path / "start.json").read_text() == "{}"


def test_calibrate_report_into_an_inference_perf_folder_file_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "run1"
    (folder / "results").mkdir(parents=True)
    config = folder / "results" / "config.yaml"
    config.write_text("load: {}\n")
    res = _invoke(["calibrate", str(folder), "--evaluate-only", "-q", "--report", str(config)])
    _one_line_error(res, "is also the input RUNS")
    assert config.read_text() == "load: {}\n"


# --- defect 2: the plan does not depend on --jobs --------------------------------------------


class InProcessBackend:
    """Runs the real worker in this process but offers ``jobs`` slots, so the search
    plans its rounds as it would on that many workers (fast and deterministic)."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.runs = 0
        self.rounds = 0

    def map(self, func: Any, items: Any, on_result: Any) -> None:
        self.rounds += 1
        for i, item in enumerate(items):
            self.runs += 1
            on_result(i, func(item))

    def close(self) -> None:
        pass


def test_plan_json_is_identical_for_jobs_1_2_3() -> None:
    base = {"workload": "chatbot", "num_requests": 60, "max_num_seqs": 16}
    docs, rounds = [], []
    for jobs in (1, 2, 3):
        backend = InProcessBackend(jobs)
        out = plan_capacity(
            base,
            [Deployment(MODEL, "H100", 1)],
            parse_slos(["ttft_p99_ms=400"]),
            rate=20.0,
            max_instances=6,
            backend=backend,
            rate_tolerance=0.1,
        )
        docs.append(json.dumps(out.to_dict(), indent=2))
        rounds.append((backend.rounds, backend.runs, out))
    assert docs[0] == docs[1] == docs[2]
    for _rounds, runs, out in rounds:
        assert out.simulations == runs  # look-ahead runs included
        assert out.probe_runs == len(out.candidates[0].probes)  # the ones the plan used
    assert rounds[2][0] < rounds[0][0]  # spare slots still shorten the search
    doc = json.loads(docs[0])
    assert doc["instances"] is not None and doc["saturation_rate"] is not None


class CapacityBackend:
    """Answers from a capacity model (no simulation): a colocated run meets the SLO when
    ``instances x tp >= need`` and the rate is at most ``per_gpu`` per GPU; a split when
    both pools have ``need`` GPUs."""

    def __init__(self, jobs: int, need: int = 5, per_gpu: float = 2.7) -> None:
        self.jobs, self.need, self.per_gpu = jobs, need, per_gpu
        self.runs = 0

    def map(self, func: Any, items: Any, on_result: Any) -> None:
        for i, o in enumerate(items):
            self.runs += 1
            tp = o.get("tp", 1)
            p, d = o.get("prefill_instances", 0), o.get("decode_instances", 0)
            gpus = o["num_instances"] * tp
            ok = (p * tp >= 2 and d * tp >= 3) if p or d else gpus >= self.need
            ok = ok and o["rate"] <= self.per_gpu * gpus
            summary = {
                "ttft_p99_ms": 100.0 if ok else 1000.0,
                "completed_requests": 10,
                "injected_requests": 10,
                "rejected_requests": 0,
                "config": {"tp": tp, "hardware": "H100"},
            }
            on_result(i, {"status": "ok", "summary": summary})

    def close(self) -> None:
        pass


def test_plan_with_splits_and_saturation_is_identical_for_every_jobs() -> None:
    dep = Deployment(MODEL, "H100", 1)
    deps = [dep, *(dataclasses.replace(dep, pd_ratio=r) for r in ((1, 1), (1, 2), (2, 1)))]
    texts = []
    for jobs in (1, 2, 3, 8, 32):
        backend = CapacityBackend(jobs)
        out = plan_capacity({"num_requests": 10}, deps, parse_slos(["ttft_p99_ms=500"]),
                            rate=10.0, max_instances=12, backend=backend)  # fmt: skip
        texts.append(json.dumps(out.to_dict()))
        assert out.simulations == backend.runs  # every run made, look-ahead included
    assert all(t == texts[0] for t in texts)
    doc = json.loads(texts[0])
    assert doc["simulations"] == sum(len(c["probes"]) for c in doc["candidates"])


def test_plan_cli_json_is_identical_for_jobs_1_and_3() -> None:
    args = ["plan", "--model", MODEL, "--hardware", "A100-80", "--tp", "2", "--workload",
            "chatbot", "--rate", "60", "--num-requests", "60", "--slo", "ttft_p99_ms=300",
            "--max-instances", "2", "--rate-tolerance", "0.2", "--json", "-q"]  # fmt: skip
    outs = []
    for jobs in ("1", "3"):
        res = _invoke([*args, "--jobs", jobs])
        assert res.exit_code == 0, res.output
        outs.append(res.stdout)
    assert outs[0] == outs[1]


# --- defect 3: every row of a run is checked ------------------------------------------------


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _first_rows(n: int = 2) -> list[dict[str, str]]:
    with TRAINING.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        return [dict(next(reader)) for _ in range(n)]


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("tp", "abc", "row 3 (run {run}): tp must be a number, got 'abc'"),
        ("tp", "4", "row 3 (run {run}): tp '4' differs from '2' in row 2"),
        ("max_num_seqs", "-4", "row 3 (run {run}): max_num_seqs must be >= 1, got '-4'"),
        ("gpu_memory_utilization", "7", "gpu_memory_utilization must be in (0, 1], got '7'"),
        ("model", "nope/nope", "row 3 (run {run}): model 'nope/nope' differs from"),
        ("hardware", "NOPE", "row 3 (run {run}): hardware 'NOPE' differs from 'H100'"),
        ("max_num_batched_tokens", "4096", "max_num_batched_tokens '4096' differs from '2048'"),
        ("output_len", "100", "output_len '100' differs from '248'"),
        ("all_stages", "600s@3;600s@6", "all_stages '600s@3;600s@6' differs"),
    ],
)
def test_a_later_row_of_a_run_is_checked(
    tmp_path: Path, field: str, value: str, needle: str
) -> None:
    rows = _first_rows()
    rows[1][field] = value
    path = tmp_path / "runs.csv"
    _write_rows(path, rows)
    with pytest.raises(RunsError) as info:
        read_runs_csv(path)
    assert needle.format(run=rows[0]["experiment"]) in str(info.value)


def test_calibrate_cli_refuses_a_disagreeing_row_in_one_line(tmp_path: Path) -> None:
    rows = _first_rows()
    rows[1]["tp"] = "4"
    path = tmp_path / "runs.csv"
    _write_rows(path, rows)
    res = _invoke(["calibrate", str(path), "--evaluate-only", "-j", "1", "-q"])
    _one_line_error(res, "row 3 (run 17-llama-4-scout-17b-16e-tp2-general-lite-2-1): tp '4'")


def test_stage_columns_may_vary_and_equal_values_may_be_spelled_apart(tmp_path: Path) -> None:
    rows = _first_rows()
    rows[1]["max_num_seqs"] = "128.0"  # the same number
    rows[1]["model"] = rows[0]["model"].upper()  # model ids are case-insensitive
    path = tmp_path / "runs.csv"
    _write_rows(path, rows)
    (run,) = read_runs_csv(path)
    assert [s.rate for s in run.stages] == [2.5, 6.0] and run.tp == 2


def test_the_training_table_still_loads() -> None:
    runs = read_runs_csv(TRAINING)
    with TRAINING.open(encoding="utf-8", newline="") as fh:
        names = {row["experiment"] for row in csv.DictReader(fh)}
    assert len(runs) == len(names)


def test_a_yaml_stage_that_overrides_the_run_is_named(tmp_path: Path) -> None:
    path = tmp_path / "runs.yaml"
    path.write_text(
        "runs:\n  - experiment: a\n    model: " + MODEL + "\n    hardware: H100\n"
        "    tp: 1\n    system_prompt_len: 100\n    question_len: 400\n    output_len: 100\n"
        "    stages:\n"
        "      - {stage_rate_rps: 2, stage_duration_s: 60, ttft_mean_ms: 30, e2e_mean_ms: 900}\n"
        "      - {stage_rate_rps: 4, stage_duration_s: 60, ttft_mean_ms: 35, e2e_mean_ms: 990,"
        " tp: 2}\n"
    )
    with pytest.raises(RunsError, match=r"runs\[0\]\.stages\[1\] \(run a\): tp 2 differs from 1"):
        read_runs_yaml(path)
