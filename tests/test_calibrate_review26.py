"""Review 26 of ``blis calibrate``'s inputs and outputs: a missing column is an error
(not a default), the profile's groups reach ``--prefix-reuse profile``, values in the
wrong unit and unknown GPUs/models are refused when read, YAML stages cannot override
their run, ``all_stages`` and the optional stage means are range-checked, YAML errors
name ``runs[i].stages[j]``, and a fit's file holds no wall-clock time."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from inference_sim.calibrate.fit import DEFAULT_PRIORS, FitOptions, fit_coefficients
from inference_sim.calibrate.harness import ReplaySettings, StageResult
from inference_sim.calibrate.runs import RunsError, load_runs, read_runs_csv, read_runs_yaml
from inference_sim.cli.main import cli
from inference_sim.latency.calibrated import CalibratedCoefficients

TRAINING = Path(__file__).resolve().parents[2] / "shared/calibration/vllm-0.15.1/training_runs.csv"

# Mistral-Nemo at TP 2, a 1024-token budget, the profile's 9 x 5 groups (the training
# table's run 62, its two stages and the summary row), typed in.
COLUMNS = [
    "experiment", "model", "hardware", "tp", "max_num_batched_tokens", "max_num_seqs",
    "max_model_len", "gpu_memory_utilization", "total_kv_blocks_from_vllm_log",
    "system_prompt_len", "question_len", "output_len", "num_unique_system_prompts",
    "num_users_per_system_prompt", "all_stages", "stage_index", "stage_rate_rps",
    "stage_duration_s", "ttft_mean_ms", "e2e_mean_ms", "itl_mean_ms", "prompt_len_mean",
    "output_len_mean",
]  # fmt: skip
_RUN = [
    "nemo", "mistralai/Mistral-Nemo-Instruct-2407", "H100", "2", "1024", "128", "4096", "0.9",
    "48009", "100", "447", "248", "9", "5", "600s@2.5;600s@6",
]  # fmt: skip
_STAGES = [
    ["0", "2.5", "600", "22.0036", "1497.4726", "6.002", "", ""],
    ["1", "6", "600", "21.5611", "1549.2701", "6.2106", "", ""],
    ["-1", "", "", "21.6913", "1534.0355", "6.1493", "", ""],
]


def _rows() -> list[dict[str, str]]:
    return [dict(zip(COLUMNS, _RUN + st, strict=True)) for st in _STAGES]


def _write(path: Path, rows: list[dict[str, str]], drop: tuple[str, ...] = ()) -> Path:
    cols = [c for c in rows[0] if c not in drop]
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _read(path: Path) -> tuple[list[Any], list[str]]:
    notes: list[str] = []
    return load_runs([path], warn=notes.append), notes


def _one_error(res: Any, *needles: str) -> str:
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_the_hand_built_table_reads_without_a_warning(tmp_path: Path) -> None:
    (run,), notes = _read(_write(tmp_path / "runs.csv", _rows()))
    assert notes == []
    assert (run.tp, run.max_num_batched_tokens, run.system_prompt_len) == (2, 1024, 100)


# --- 1. a missing column is an error (or a warning naming the default), not a default -----


@pytest.mark.parametrize(
    "column", ["tp", "max_num_batched_tokens", "system_prompt_len", "max_num_seqs", "stage_index"]
)
def test_a_missing_required_column_is_refused_naming_it(tmp_path: Path, column: str) -> None:
    path = _write(tmp_path / "runs.csv", _rows(), drop=(column,))
    with pytest.raises(RunsError) as info:
        read_runs_csv(path)
    msg = str(info.value)
    assert msg.startswith(f"runs.csv: no {column} column; a CSV of runs needs the columns ")
    assert "experiment (or run), model, hardware (or --hardware), tp," in msg
    res = CliRunner().invoke(cli, ["calibrate", str(path), "--write-specs", str(tmp_path / "s")])
    _one_error(res, f"no {column} column")
    assert not (tmp_path / "s").exists()


def test_a_renamed_column_is_named_with_a_suggestion(tmp_path: Path) -> None:
    rows = [
        {("tensor_parallel_size" if k == "tp" else k): v for k, v in r.items()} for r in _rows()
    ]
    with pytest.raises(RunsError, match=r"no tp column; unknown column 'tensor_parallel_size' "
                       r"\(did you mean \"tp\"\?\)"):  # fmt: skip
        read_runs_csv(_write(tmp_path / "runs.csv", rows))


def test_a_blank_cell_still_means_not_given(tmp_path: Path) -> None:
    rows = _rows()
    for r in rows:
        r["tp"] = r["max_num_batched_tokens"] = ""
    (run,), notes = _read(_write(tmp_path / "runs.csv", rows))
    assert (run.tp, run.max_num_batched_tokens, notes) == (1, 2048, [])


def test_columns_with_a_default_and_unknown_columns_are_warned(tmp_path: Path) -> None:
    rows = _rows()
    for r in rows:
        r["total_kv_blocks_from_vllm_log"] = ""
        r["tp_note"] = "x"
    drop = ("itl_mean_ms", "gpu_memory_utilization")
    (run,), notes = _read(_write(tmp_path / "runs.csv", rows, drop=drop))
    assert run.stages[0].tpot_ms == 0 and run.gpu_memory_utilization == 0.9
    assert len(notes) == 3, notes
    assert notes[0] == (
        "runs.csv: unknown column 'tp_note'; ignored (docs/calibration.md lists the columns read)"
    )
    assert notes[1].startswith("runs.csv: no itl_mean_ms column: the table's TPOT is compared")
    assert notes[2].startswith("runs.csv: no gpu_memory_utilization column: the runs that derive")
    assert "(nemo) use 0.9" in notes[2]
    (run,), notes = _read(
        _write(tmp_path / "b.csv", _rows(), drop=("total_kv_blocks_from_vllm_log",))
    )
    assert notes == [
        "b.csv: no total_kv_blocks_from_vllm_log (or total_kv_blocks) column: every run's KV "
        "block count is derived from GPU memory (as vLLM 0.15.1 sizes it)"
    ]
    # through the CLI: a "Warning:" line, given after the file was read
    res = CliRunner().invoke(
        cli, ["calibrate", str(tmp_path / "b.csv"), "--write-specs", str(tmp_path / "s")]
    )
    assert res.exit_code == 0 and res.stderr.startswith("Warning: b.csv: no total_kv_blocks")


def test_yaml_unknown_keys_are_warned_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "runs.yaml"
    path.write_text(
        "runs:\n- experiment: a\n  model: qwen/qwen2.5-7b-instruct\n  hardware: H100\n"
        "  tensor_parallel_size: 2\n  system_prompt_len: 100\n  question_len: 400\n"
        "  output_len: 100\n  stages:\n  - {stage_rate_rps: 2, stage_duration_s: 60,"
        " ttft_mean_ms: 30, e2e_mean_ms: 900, ttft_mean: 3}\n"
    )
    notes: list[str] = []
    read_runs_yaml(path, warn=notes.append)
    assert notes == [
        "runs.yaml: unknown keys 'tensor_parallel_size' (did you mean \"tp\"?) in runs[0], "
        "'ttft_mean' (did you mean \"ttft_mean_ms\"?) in runs[0].stages[0]; ignored "
        "(docs/calibration.md lists the keys read)"
    ]
    path.write_text(path.read_text().replace("  output_len: 100\n", ""))
    with pytest.raises(RunsError, match=r"runs\[0\] \(run a\): no output_len"):
        read_runs_yaml(path)


@pytest.mark.skipif(not TRAINING.exists(), reason="needs ../shared/calibration")
def test_the_training_table_reads_without_a_warning(tmp_path: Path) -> None:
    runs, notes = _read(TRAINING)
    assert len(runs) == 15 and notes == []  # every row passes the unit checks too
    res = CliRunner().invoke(cli, ["calibrate", str(TRAINING), "--write-specs", str(tmp_path)])
    assert res.exit_code == 0 and res.stderr == "", res.stderr


# --- 2. --prefix-reuse profile replays the profile's groups ---------------------------------


def test_prefix_reuse_profile_takes_the_profiles_groups(tmp_path: Path) -> None:
    (run,) = read_runs_csv(_write(tmp_path / "runs.csv", _rows()))

    def groups(reuse: str) -> tuple[int, int]:
        sp = run.workload_spec(prefix_reuse=reuse)["inference_perf"]["shared_prefix"]
        return sp["num_unique_system_prompts"], sp["num_users_per_system_prompt"]

    assert groups("profile") == (9, 5)
    assert groups("cycle") == (10, 10)  # what the load tool ran, whatever the profile said
    out = tmp_path / "specs"
    args = ["calibrate", str(tmp_path / "runs.csv"), "--prefix-reuse", "profile"]
    assert CliRunner().invoke(cli, [*args, "--write-specs", str(out)]).exit_code == 0
    spec = yaml.safe_load((out / "nemo.yaml").read_text())["inference_perf"]
    assert spec["cycle_prompts"] is False
    assert spec["shared_prefix"]["num_unique_system_prompts"] == 9
    assert spec["shared_prefix"]["num_users_per_system_prompt"] == 5
    rows = _rows()
    for r in rows:
        r["num_unique_system_prompts"] = r["num_users_per_system_prompt"] = ""
    (plain,) = read_runs_csv(_write(tmp_path / "plain.csv", rows))
    sp = plain.workload_spec(prefix_reuse="profile")["inference_perf"]["shared_prefix"]
    assert (sp["num_unique_system_prompts"], sp["num_users_per_system_prompt"]) == (10, 10)


# --- 3. values in another unit; coefficients at their bounds --------------------------------


@pytest.mark.parametrize(
    ("scale", "needle"),
    [
        (1e-3, "row 2 (run nemo, stage 0): ttft_mean_ms 0.0220036 is below 1 ms"),
        (1e3, "row 2 (run nemo, stage 0): the mean time per output token, (e2e_mean_ms - "
              "ttft_mean_ms) / (output_len - 1) = 5974 ms, is outside 0.1-1000 ms"),
    ],
)  # fmt: skip
def test_values_in_another_unit_are_refused(tmp_path: Path, scale: float, needle: str) -> None:
    rows = _rows()
    for r in rows:
        for key in ("ttft_mean_ms", "e2e_mean_ms", "itl_mean_ms"):
            r[key] = f"{float(r[key]) * scale:g}"
    with pytest.raises(RunsError) as info:
        read_runs_csv(_write(tmp_path / "runs.csv", rows))
    unit = "seconds" if scale < 1 else "microseconds"
    assert needle in str(info.value) and f"are these values in {unit}?" in str(info.value)


def test_the_output_length_in_seconds_alone_is_refused(tmp_path: Path) -> None:
    rows = _rows()
    rows[1]["itl_mean_ms"] = "0.0062106"
    with pytest.raises(RunsError, match=r"row 3 \(run nemo, stage 1\): itl_mean_ms 0.0062106"):
        read_runs_csv(_write(tmp_path / "runs.csv", rows))


def test_coefficients_at_their_bounds_are_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from inference_sim.calibrate.fit import coefficients_at_bounds

    at = CalibratedCoefficients(compute=0.8000001, step_us=231.0, queue_us=50000.0)
    names = ["compute", "step_us", "queue_us"]
    assert coefficients_at_bounds(at, names, DEFAULT_PRIORS) == [
        ("compute", "lower", 0.8),
        ("queue_us", "upper", 50000.0),
    ]
    from inference_sim.calibrate.cli import _warn_at_bounds

    _warn_at_bounds(SimpleNamespace(at_bounds=coefficients_at_bounds(at, names, DEFAULT_PRIORS)))
    err = capsys.readouterr().err
    assert err.startswith(
        "Warning: the fit ended with compute at its lower bound 0.8, queue_us at its upper "
        "bound 50000:"
    )
    # fit_coefficients reports them (the optimiser stubbed: it ends on the lower bounds)
    scipy = pytest.importorskip("scipy.optimize")
    monkeypatch.setattr(
        scipy,
        "least_squares",
        lambda fun, z, bounds, **kw: SimpleNamespace(x=bounds[0], cost=0.0, nfev=0, message=""),
    )
    opts = FitOptions(params=("compute", "step_us"), full_settings=None)
    res = fit_coefficients([], start=CalibratedCoefficients(), options=opts)
    assert res.at_bounds == [("compute", "lower", 0.8), ("step_us", "lower", 0.0)]


# --- 4. unknown GPU or model; failed runs left out of the medians ---------------------------


@pytest.mark.parametrize(
    ("column", "value", "needle"),
    [
        ("hardware", "H900", "runs.csv run nemo: hardware 'H900': unknown GPU (did you mean "
                             "\"H200\"?); known: A100-40GB"),
        ("model", "mistralai/mistral-nemo-instruct-2047", "runs.csv run nemo: model "
         "'mistralai/mistral-nemo-instruct-2047': no bundled architecture (did you mean "
         "\"mistralai/mistral-nemo-instruct-2407\"?)"),
    ],
)  # fmt: skip
def test_an_unknown_gpu_or_model_is_refused_when_read(
    tmp_path: Path, column: str, value: str, needle: str
) -> None:
    rows = _rows()
    for r in rows:
        r[column] = value
    path = _write(tmp_path / "runs.csv", rows)
    with pytest.raises(RunsError) as info:
        read_runs_csv(path)
    assert needle in str(info.value)
    for extra in (["--evaluate-only"], ["--write-specs", str(tmp_path / "s")]):
        _one_error(CliRunner().invoke(cli, ["calibrate", str(path), *extra, "-j", "1"]), needle)
    rows = _rows()
    for r in rows:
        r["hardware"] = "NVIDIA H100 80GB HBM3"  # nvidia-smi's name: read as blis run does
    assert read_runs_csv(_write(tmp_path / "long.csv", rows))[0].hardware


def test_failed_runs_left_out_of_the_medians_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inference_sim.calibrate import fit

    rows = _rows() + [dict(r, experiment="other") for r in _rows()]
    path = _write(tmp_path / "runs.csv", rows)

    def run(self: Any, runs: list[Any], **kw: Any) -> list[Any]:
        ok = [StageResult(st.index, st.ttft_ms, st.e2e_ms, 6.0, 10) for st in runs[1].stages]
        return [RuntimeError("boom"), ok]

    monkeypatch.setattr(fit.Simulator, "run", run)
    res = CliRunner().invoke(cli, ["calibrate", str(path), "--evaluate-only", "-q", "-j", "1"])
    assert res.exit_code == 0, res.output
    assert (
        "Warning: 1 run(s) failed to simulate and are left out of the medians (nemo): "
        "see their rows" in res.stderr
    )


# --- 5. a YAML stage cannot set a run-level field --------------------------------------------


def _yaml(tmp_path: Path, stage: str, run: str = "  tp: 1\n") -> Path:
    path = tmp_path / "runs.yaml"
    path.write_text(
        "runs:\n- experiment: a\n  model: qwen/qwen2.5-7b-instruct\n  hardware: H100\n" + run
        + "  system_prompt_len: 100\n  question_len: 400\n  output_len: 100\n  stages:\n"
        "  - {stage_rate_rps: 2, stage_duration_s: 60, ttft_mean_ms: 30, e2e_mean_ms: 900"
        + stage + "}\n"
    )  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("stage", "run", "needle"),
    [
        (", tp: 2", "  tp: 1\n", "runs[0].stages[0] (run a): tp 2 differs from 1, the run's; "
                                 "tp is a run-level field"),
        (", tp: 2", "", "runs[0].stages[0] (run a): tp is a run-level field"),
        (", max_num_seqs: 128", "", "runs[0].stages[0] (run a): max_num_seqs is a run-level"),
    ],
)  # fmt: skip
def test_a_yaml_stage_setting_a_run_level_key_is_refused(
    tmp_path: Path, stage: str, run: str, needle: str
) -> None:
    with pytest.raises(RunsError) as info:
        read_runs_yaml(_yaml(tmp_path, stage, run))
    assert needle in str(info.value)


# --- 6. all_stages items -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ("-600s@6", "the duration (s) must be a finite number > 0, got -600"),
        ("0s@6", "the duration (s) must be a finite number > 0, got 0"),
        ("nans@6", "the duration (s) must be a finite number > 0, got nan"),
        ("600s@inf", "the rate (requests/s) must be a finite number > 0, got inf"),
        ("600s@0", "the rate (requests/s) must be a finite number > 0, got 0"),
    ],
)
def test_all_stages_items_are_checked(tmp_path: Path, item: str, needle: str) -> None:
    rows = _rows()[:1]
    rows[0]["all_stages"] = item
    rows[0]["stage_duration_s"] = rows[0]["stage_rate_rps"] = ""  # all_stages' would be used
    with pytest.raises(RunsError) as info:
        read_runs_csv(_write(tmp_path / "runs.csv", rows))
    assert f"runs.csv run nemo: all_stages item '{item}': {needle}" == str(info.value)


# --- 7. optional stage means are range-checked ----------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [("itl_mean_ms", "-7"), ("itl_mean_ms", "0"), ("prompt_len_mean", "-5"),
     ("output_len_mean", "-3"), ("output_len_mean", "0")],
)  # fmt: skip
def test_optional_stage_means_out_of_range_are_refused(
    tmp_path: Path, column: str, value: str
) -> None:
    rows = _rows()
    rows[0][column] = value
    with pytest.raises(RunsError) as info:
        read_runs_csv(_write(tmp_path / "runs.csv", rows))
    assert str(info.value) == (
        f"runs.csv row 2: {column} must be > 0 (blank: not measured), got '{value}'"
    )


# --- 8. YAML errors name runs[i].stages[j] --------------------------------------------------


def test_yaml_row_errors_name_the_stage_entry(tmp_path: Path) -> None:
    path = _yaml(tmp_path, ", itl_mean_ms: -1")
    with pytest.raises(RunsError) as info:
        read_runs_yaml(path)
    assert str(info.value).startswith("runs.yaml runs[0].stages[0]: itl_mean_ms must be > 0")
    path.write_text(_yaml(tmp_path, "").read_text().replace("experiment: a", 'experiment: ""'))
    with pytest.raises(RunsError, match=r"runs\.yaml runs\[0\]\.stages\[0\]: experiment"):
        read_runs_yaml(path)
    path.write_text(_yaml(tmp_path, "").read_text().replace("e2e_mean_ms: 900", "e2e_mean_ms: 20"))
    with pytest.raises(RunsError, match=r"runs\[0\]\.stages\[0\] \(run a, stage 0\): e2e_mean"):
        read_runs_yaml(path)


# --- 9. a fit's file is the same for the same command ---------------------------------------


def test_the_fit_file_holds_no_wall_clock_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inference_sim.calibrate import fit

    path = _write(tmp_path / "runs.csv", _rows())
    calls = iter([12.3, 45.6])

    def quick(runs: Any, *, start: Any, options: Any, simulator: Any, log: Any) -> Any:
        return fit.FitResult(start, 2, next(calls), 0.0)

    def sim_run(self: Any, runs: list[Any], **kw: Any) -> list[Any]:
        return [[StageResult(st.index, 25.0, 1500.0, 6.0, 10) for st in r.stages] for r in runs]

    monkeypatch.setattr(fit, "fit_coefficients", quick)
    monkeypatch.setattr(fit.Simulator, "run", sim_run)
    out = tmp_path / "c.json"
    args = ["calibrate", str(path), "-j", "1", "--params", "queue_us", "--out", str(out)]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "fitted in 12.3 s (2 evaluations)" in first.stderr
    before = out.read_bytes()
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0 and "fitted in 45.6 s" in second.stderr
    assert out.read_bytes() == before
    meta = json.loads(before)["meta"]
    assert "seconds" not in meta and meta["evaluations"] == 2


def test_worse_than_start_gives_digits_that_differ(capsys: pytest.CaptureFixture[str]) -> None:
    from inference_sim.calibrate.cli import _warn_if_worse_than_start

    start, fitted = CalibratedCoefficients(), CalibratedCoefficients(queue_us=1.0)
    history = [
        {"rms": 0.03790, "coefficients": start.to_dict()},
        {"rms": 0.03794, "coefficients": fitted.to_dict()},
    ]
    short = ReplaySettings(duration_scale=0.2, min_stage_s=90.0)
    _warn_if_worse_than_start(SimpleNamespace(history=history), fitted, "", short)
    err = capsys.readouterr().err
    assert (
        "worse than the shipped set (rms log-error 0.03794 against 0.03790) at the shortened "
        "stage length the fit simulates (stages x0.2, at least 90 s; the table is at full "
        "length)" in err
    )
