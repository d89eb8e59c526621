"""Issue 20, items 8, 9 and 14: machine-readable stdout, the metrics vLLM users compare
with (p50, per-request TPOT, goodput), rounded text, and the small CLI habits
(case-insensitive GPU, model hint, horizon units, sectioned help, --num-requests 0).

CLI checks run in process through click's ``CliRunner`` (stdout and stderr apart).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from inference_sim import simulate
from inference_sim.cli.main import cli
from inference_sim.metrics.output import rounded
from inference_sim.metrics.stats import percentile_ms

MODEL = "meta-llama/llama-3.1-8b-instruct"
BASE = ["run", "--model", MODEL, "--workload", "chatbot"]
RUN = [*BASE, "--rate", "40", "--num-requests", "80"]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def ok(*args: str) -> Result:
    result = invoke(*args)
    assert result.exit_code == 0, (result.stderr, result.exception)
    return result


def bad_input(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


# --- 8. machine-readable stdout ------------------------------------------------------------------


@pytest.mark.parametrize("flag", [["--json"], ["--output", "json"], ["-o", "json"]])
def test_json_output_is_exactly_one_document_with_instances_nested(tmp_path, flag):
    path = tmp_path / "r.json"
    result = ok(*RUN, "--num-instances", "2", "--results-path", str(path), *flag)
    doc = json.loads(result.stdout)  # the whole of stdout, nothing before or after
    file_doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["instance_id"] == "cluster"
    assert [i["instance_id"] for i in doc["instances"]] == ["instance_0", "instance_1"]
    assert doc["instances"] == file_doc["instances"]
    assert "requests" not in doc and "timeseries" not in doc
    assert list(doc)[-1] == "config" and doc["config"] == file_doc["config"]
    for key, value in doc.items():  # full precision, the same numbers as the file
        if key not in ("instances", "config"):
            assert file_doc[key] == value, key


def test_results_path_dash_writes_the_results_document_to_stdout(tmp_path):
    file_path = tmp_path / "r.json"
    to_file = ok(*RUN, "--results-path", str(file_path), "--seed", "3")
    to_stdout = ok(*RUN, "--results-path", "-", "--seed", "3")
    doc = json.loads(to_stdout.stdout)
    file_doc = json.loads(file_path.read_text(encoding="utf-8"))
    file_doc["config"]["results_path"] = "-"
    assert doc == file_doc
    assert len(doc["requests"]) == 80
    assert "=== Simulation Metrics ===" not in to_stdout.stdout
    assert "=== Simulation Metrics ===" in to_file.stdout
    assert not list(tmp_path.glob("-"))  # no file called "-"


def test_simulate_results_path_dash_prints_what_the_cli_prints(tmp_path, monkeypatch, capsys):
    """simulate(results_path="-") used to write a file literally named "-"."""
    monkeypatch.chdir(tmp_path)
    cli_out = ok(*RUN, "--results-path", "-", "--seed", "3").stdout
    res = simulate(
        model=MODEL, workload="chatbot", rate=40, num_requests=80, seed=3, results_path="-"
    )
    printed = capsys.readouterr().out
    assert printed == cli_out  # byte for byte, the same document and trailing newline
    assert json.loads(printed)["completed_requests"] == res.summary["completed_requests"]
    assert not (tmp_path / "-").exists()
    res.write_json("-")  # Results.write_json follows the same rule
    assert capsys.readouterr().out == cli_out
    assert not (tmp_path / "-").exists()


def test_output_flag_conflicts_and_unknown_formats_are_bad_input():
    line = bad_input(*RUN, "--results-path", "-", "--json")
    assert "--results-path -" in line and "--output json" in line
    line = bad_input(*RUN, "--output", "xml")
    assert "--output" in line and "'xml'" in line and "text, json" in line


def test_per_slo_text_block_names_its_unit(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "version: '2'\nseed: 1\naggregate_rate: 20\nnum_requests: 60\nclients:\n"
        + "".join(
            f"  - {{id: {c}, slo_class: {c}, rate_fraction: 1, arrival: {{process: poisson}},"
            " input_distribution: {type: constant, params: {value: 64}},"
            " output_distribution: {type: constant, params: {value: 8}}}\n"
            for c in ("critical", "batch")
        ),
        encoding="utf-8",
    )
    out = ok("run", "--model", MODEL, "--workload-spec", str(spec)).stdout
    block = out.split("=== Per-SLO Metrics ===\n", 1)[1]
    assert "    TTFT (µs): mean=" in block and "    E2E (µs):  mean=" in block


# --- 9. p50, TPOT, goodput, rounding ------------------------------------------------------


@pytest.fixture(scope="module")
def busy() -> Any:
    return simulate(
        model=MODEL,
        workload="chatbot",
        rate=70,
        num_requests=500,
        slo=["ttft_p99_ms=60", "tpot_p99_ms=10.5"],
    )


def test_medians_and_per_request_tpot_follow_their_definitions(busy):
    s = busy.summary
    recs = busy.records
    ttfts = sorted(r["ttft_ms"] * 1000 for r in recs)
    e2es = sorted(r["e2e_ms"] * 1000 for r in recs)
    tpots = sorted(r["itl_ms"] * 1000 for r in recs if r["num_decode_tokens"] > 1)
    assert s["ttft_p50_ms"] == pytest.approx(percentile_ms(ttfts, 50))
    assert s["e2e_p50_ms"] == pytest.approx(percentile_ms(e2es, 50))
    assert s["tpot_mean_ms"] == pytest.approx(np.mean(tpots) / 1000)
    for p in (50, 90, 95, 99):
        assert s[f"tpot_p{p}_ms"] == pytest.approx(percentile_ms(tpots, p)), p
    assert s["itl_p50_ms"] <= s["itl_p90_ms"] <= s["itl_p99_ms"]
    # ITL weighs token gaps, TPOT requests: not the same statistic
    assert s["itl_p99_ms"] != pytest.approx(s["tpot_p99_ms"], rel=0.01)


def test_goodput_counts_requests_meeting_every_bound(busy):
    s = busy.summary
    good = [
        r
        for r in busy.records
        if r["e2e_ms"] > 0
        and r["ttft_ms"] <= 60
        and (r["num_decode_tokens"] <= 1 or r["itl_ms"] <= 10.5)
    ]
    assert 0 < len(good) < s["completed_requests"]  # the bounds bite, not trivially
    assert s["goodput_requests_per_sec"] == pytest.approx(
        len(good) / s["vllm_estimated_duration_s"]
    )
    assert s["slo_attainment"] == pytest.approx(len(good) / s["completed_requests"])
    expected_met = s["ttft_p99_ms"] <= 60 and s["tpot_p99_ms"] <= 10.5
    assert s["slo_met"] is expected_met
    assert busy.config["slo"] == ["ttft_p99_ms=60", "tpot_p99_ms=10.5"]


def test_slo_flag_on_the_command_line_and_its_errors():
    out = json.loads(
        ok(*RUN, "--slo", "p99_ttft_ms=1000", "--slo", "median_tpot_ms=100", "--json").stdout
    )
    assert out["slo_attainment"] == 1.0 and out["slo_met"] is True
    assert out["goodput_requests_per_sec"] == pytest.approx(out["responses_per_sec"])
    line = bad_input(*RUN, "--slo", "responses_per_sec>=5")
    assert "responses_per_sec >= 5" in line and "upper bound" in line
    line = bad_input(*RUN, "--slo", "ttft_p42_ms=5")
    assert "ttft_p42_ms" in line and "ttft_p99_ms" in line
    line = bad_input(*RUN, "--slo", "ttft")
    assert "METRIC=VALUE" in line
    no_slo = json.loads(ok(*RUN, "--json").stdout)
    assert "goodput_requests_per_sec" not in no_slo


def test_text_output_rounds_floats_and_the_results_file_keeps_them(tmp_path):
    path = tmp_path / "r.json"
    text = ok(*RUN, "--results-path", str(path)).stdout
    shown = json.loads(text.split("=== Simulation Metrics ===\n", 1)[1].split("\n}\n", 1)[0] + "}")
    doc = json.loads(path.read_text(encoding="utf-8"))
    for key, value in shown.items():
        assert value == rounded(doc[key], key), key
        if key.endswith("_ms") and isinstance(value, float):
            assert value == round(value, 3)  # the µs tick
    assert any(doc[k] != shown[k] for k in shown)  # full precision differs somewhere


def test_rounded_keeps_times_to_the_microsecond_and_six_digits_otherwise():
    assert rounded(9.849901242132944, "itl_mean_ms") == 9.85
    assert rounded(1.0010324, "vllm_estimated_duration_s") == 1.001032
    assert rounded(19.98312749, "responses_per_sec") == 19.9831
    assert rounded(1234567.891, "tokens_per_sec") == 1234568.0
    assert rounded({"a": [0.123456789]}) == {"a": [0.123457]}
    assert rounded(3) == 3 and rounded(0.0) == 0.0


# --- 14. small ones -----------------------------------------------------------------------


def test_hardware_is_case_insensitive(tmp_path):
    upper = json.loads(ok(*RUN, "--hardware", "H100", "--tp", "1", "--json").stdout)
    lower = json.loads(ok(*RUN, "--hardware", "h100", "--tp", "1", "--json").stdout)
    assert lower["config"]["hardware"] == "H100"
    assert lower == upper


def test_a_short_model_id_gets_a_did_you_mean():
    line = bad_input("run", "--model", "llama-3.1-8b")
    assert 'did you mean "meta-llama/llama-3.1-8b-instruct"?' in line


@pytest.mark.parametrize(
    ("text", "us"),
    [("10s", 10_000_000), ("500ms", 500_000), ("0.5m", 30_000_000), ("2000000", 2_000_000)],
)
def test_horizon_accepts_units(text, us):
    args = ["--rate", "20", "--num-requests", "1000"]
    with_unit = json.loads(ok(*BASE, *args, "--horizon", text, "--json").stdout)
    in_us = json.loads(ok(*BASE, *args, "--horizon", str(us), "--json").stdout)
    assert with_unit["config"]["horizon"] == us
    assert with_unit == in_us
    assert with_unit["vllm_estimated_duration_s"] <= us / 1e6


@pytest.mark.parametrize("text", ["10x", "ten", "-5s", "1e30h"])
def test_bad_horizon_is_one_line(text):
    line = bad_input(*RUN, "--horizon", text)
    assert "--horizon" in line


def test_num_requests_zero_is_one_line():
    line = bad_input(*BASE, "--num-requests", "0")
    assert "--num-requests must be > 0" in line and "got 0" in line


def test_run_help_is_sectioned_with_honest_defaults():
    text = ok("run", "--help").stdout
    headings = [line[:-1] for line in text.splitlines() if line and not line[0].isspace()]
    for section in ("Workload", "Model and latency model", "Engine", "Cluster", "Output"):
        assert section in headings, section
    assert "9223372036854775807" not in text
    flat = " ".join(text.split())
    tp = flat.split("--tp, --tensor-parallel-size INTEGER", 1)[1].split("--vllm-version", 1)[0]
    assert "catalog default" in tp and "[default: 0]" not in tp
    alpha = flat.split("--alpha-coeffs TEXT", 1)[1].split("--beta-coeffs", 1)[0]
    assert "[default: the trained entry's]" in alpha
    prompt = flat.split("--prompt-tokens INTEGER", 1)[1].split("--prompt-tokens-stdev", 1)[0]
    assert "or the --workload preset's" in prompt
    # every run option is listed once
    from inference_sim.config.options import OPTIONS

    for spec in OPTIONS:
        assert flat.count(f" {spec.flag} ") + flat.count(f" {spec.flag},") >= 1, spec.flag


def test_cli_docs_show_the_new_flags():
    docs = (Path(__file__).resolve().parents[1] / "docs").joinpath
    cli_md = docs("cli.md").read_text(encoding="utf-8")
    for needle in ("`--output text\\|json`", "`--json`", "`--slo`", "--results-path -", "500ms"):
        assert needle in cli_md, needle
    results_md = docs("results.md").read_text(encoding="utf-8")
    for needle in (
        "tpot_p99_ms",
        "goodput_requests_per_sec",
        "latency_model_reason",
        "ttft_p50_ms",
    ):
        assert needle in results_md, needle


def test_slo_not_met_when_requests_were_rejected_as_too_long():
    """``slo_met`` says every request completed (docs/results.md): six prompts over
    ``--max-model-len`` never reach an instance, so the SLO is not met even though the
    fourteen that ran meet the bound (``blis plan`` uses the same test)."""
    out = json.loads(
        ok(
            "run",
            "--model",
            MODEL,
            "--num-requests",
            "20",
            "--rate",
            "5",
            "--max-model-len",
            "1100",
            "--slo",
            "ttft_p99_ms=100000",
            "--json",
        ).stdout
    )
    assert out["rejected_too_long"] > 0 and out["completed_requests"] > 0
    assert out["slo_attainment"] == 1.0 and out["slo_met"] is False


def test_each_instance_block_ends_at_its_own_last_step():
    """Cluster spec 4.2: an instance's ``SimEndedTime`` is its own clock (capped at the
    horizon), 0 for one that never got work; the cluster's is the latest of them."""
    out = json.loads(
        ok(
            *BASE,
            "--num-requests",
            "2",
            "--rate",
            "1",
            "--num-instances",
            "3",
            "--results-path",
            "-",
        ).stdout
    )
    blocks = {b["instance_id"]: b for b in out["instances"]}
    durations = sorted(b["vllm_estimated_duration_s"] for b in blocks.values())
    assert durations[0] == 0.0 and blocks["instance_2"]["responses_per_sec"] == 0.0
    assert 0.0 < durations[1] < durations[2] == out["vllm_estimated_duration_s"]
    for b in blocks.values():
        if b["completed_requests"]:
            assert b["responses_per_sec"] == pytest.approx(
                b["completed_requests"] / b["vllm_estimated_duration_s"]
            )


@pytest.mark.parametrize(
    "args",
    [
        ["--num-requests", "200", "--rate", "50", "--horizon", "3000000"],  # horizon cut
        ["--num-requests", "30", "--rate", "5", "--total-kv-blocks", "40",  # dropped late
         "--prompt-tokens", "400", "--prompt-tokens-stdev", "300",
         "--output-tokens", "300", "--output-tokens-stdev", "200"],
    ],
    ids=["horizon", "dropped-after-running"],
)  # fmt: skip
def test_itl_is_over_completed_requests(args):
    """Engine spec 4.5 (and vLLM's benchmark): a request's token gaps count when it
    completes. Requests cut by the horizon or dropped after running used to add theirs,
    so ``itl_mean_ms`` was not the completed records' decode time per gap."""
    out = json.loads(ok("run", "--model", MODEL, *args, "--results-path", "-").stdout)
    done = [r for r in out["requests"] if r["e2e_ms"] > 0]
    assert 0 < len(done) < 200 and out["completed_requests"] == len(done)
    gaps = sum(max(r["num_decode_tokens"] - 1, 0) for r in done)
    decode_ms = sum(r["e2e_ms"] - r["ttft_ms"] for r in done)
    assert out["itl_mean_ms"] == pytest.approx(decode_ms / gaps, rel=1e-12)


def test_results_replay_reads_the_inputs_the_run_read(tmp_path, monkeypatch):
    """A results file records its input files as absolute paths: replayed from another
    folder (one holding another file of the same name, say), it reads the run's own
    workload, not whatever the relative name finds there."""
    spec = (
        "version: '2'\nseed: 3\naggregate_rate: 20\nnum_requests: 30\nclients:\n"
        "  - id: a\n    rate_fraction: 1\n    arrival: {process: poisson}\n"
        "    input_distribution: {type: constant, params: {value: %d}}\n"
        "    output_distribution: {type: constant, params: {value: 8}}\n"
    )
    for folder, prompt in (("a", 300), ("c", 50)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "wl.yaml").write_text(spec % prompt, encoding="utf-8")
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    first = ok("run", "--model", MODEL, "--workload-spec", "wl.yaml",
               "--results-path", "../b/r.json")  # fmt: skip
    assert first.exit_code == 0
    doc = json.loads((tmp_path / "b" / "r.json").read_text(encoding="utf-8"))
    assert doc["config"]["workload_spec"] == str(tmp_path / "a" / "wl.yaml")
    monkeypatch.chdir(tmp_path / "c")
    again = json.loads(ok("run", "--config", "../b/r.json", "--json").stdout)
    assert again["total_input_tokens"] == doc["total_input_tokens"] == 30 * 300
