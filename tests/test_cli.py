"""``blis`` command line: output format, results file, flag spellings, bad input.

Runs in process through click's ``CliRunner`` (stdout and stderr captured separately,
click >= 8.2), plus one real ``python -m inference_sim`` subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from inference_sim import __version__
from inference_sim.cli.main import cli
from inference_sim.metrics.output import rounded

MODEL = "meta-llama/llama-3.1-8b-instruct"
BASE = ["run", "--model", MODEL]
HEADER = "=== Simulation Metrics ===\n"

# cli.md 8.3: the reference's keys in its order (kv_allocation_failures omitted when 0)
REFERENCE_KEYS = [
    "instance_id",
    "completed_requests",
    "still_queued",
    "still_running",
    "injected_requests",
    "total_input_tokens",
    "total_output_tokens",
    "vllm_estimated_duration_s",
    "responses_per_sec",
    "tokens_per_sec",
    "e2e_mean_ms",
    "e2e_p90_ms",
    "e2e_p95_ms",
    "e2e_p99_ms",
    "ttft_mean_ms",
    "ttft_p90_ms",
    "ttft_p95_ms",
    "ttft_p99_ms",
    "itl_mean_ms",
    "itl_p90_ms",
    "itl_p95_ms",
    "itl_p99_ms",
    "scheduling_delay_p99_ms",
    "preemption_count",
    "dropped_unservable",
]
OUR_FIRST_KEYS = ["total_kv_blocks", "prefix_cache_hit_rate"]
RECORD_KEYS = [
    "arrived_at",
    "requestID",
    "num_prefill_tokens",
    "num_decode_tokens",
    "ttft_ms",
    "itl_ms",
    "e2e_ms",
    "scheduling_delay_ms",
    "handled_by",
]  # no `model` in a plain run, as the reference's golden record (cli.md 8.7)
TRACE_HEADER = "arrival_time,request_id,model,prefill_tokens,decode_tokens\n"
EXPLICIT_COEFFS = ["--alpha-coeffs", "0,0,0", "--beta-coeffs", "1000,1,1"]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def run_ok(*args: str) -> Result:
    result = invoke(*args)
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.stderr!r} {result.exception!r}"
    return result


def parse_stdout(text: str) -> tuple[dict[str, Any], str]:
    """The cluster metrics object at the top of stdout, and the text after it."""
    assert text.startswith(HEADER), text[:200]
    obj, end = json.JSONDecoder().raw_decode(text, len(HEADER))
    rest = text[end:]
    assert rest.startswith("\n")
    return obj, rest[1:]


def expected_key_prefix(summary: dict[str, Any]) -> list[str]:
    keys = list(REFERENCE_KEYS)
    if "kv_allocation_failures" in summary:
        assert summary["kv_allocation_failures"] > 0
        keys.insert(keys.index("preemption_count"), "kv_allocation_failures")
    return keys + OUR_FIRST_KEYS


def trace_row(arrival: str, prompt: list[int], output: list[int]) -> str:
    return f'{arrival},x,,"{json.dumps(prompt)}","{json.dumps(output)}"\n'


def write_trace(path: Path, *rows: str) -> Path:
    path.write_text(TRACE_HEADER + "".join(rows), encoding="utf-8")
    return path


# Two requests, far apart so each runs alone. alpha = 0, beta = (1000, 1, 1):
#   request_0: 16 prompt tokens, 3 outputs: TTFT = 1000 + 16 = 1016 µs; two decode steps of
#              1000 + 1 = 1001 µs each; E2E = 1016 + 2 * 1001 = 3018 µs; ITL 1001 µs.
#   request_1: at 1 s, 32 prompt tokens, 1 output: TTFT = E2E = 1032 µs, no ITL sample.
TRACE_ROWS = (
    trace_row("0", list(range(16)), [7, 8, 9]),
    trace_row("1.0", list(range(100, 132)), [5]),
)


# --- default run: stdout and results file --------------------------------------------------


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    path = tmp_path_factory.mktemp("default") / "results.json"
    result = run_ok(*BASE, "--num-requests", "20", "--results-path", str(path))
    return result, path


def test_default_run_prints_metrics_block_with_reference_keys_first(default_run):
    result, _ = default_run
    summary, rest = parse_stdout(result.stdout)
    keys = list(summary)
    prefix = expected_key_prefix(summary)
    assert "kv_allocation_failures" not in summary  # nothing failed: omitted
    assert keys[: len(prefix)] == prefix
    assert summary["instance_id"] == "cluster"
    assert summary["completed_requests"] == summary["injected_requests"] == 20
    assert summary["total_kv_blocks"] == 132139 // 2  # the trained entry counts both TP ranks
    assert "config" not in summary  # results file only
    assert "=== Simulation Metrics ===" not in rest  # one instance: one block
    assert "Traceback" not in result.stderr


def test_results_file_has_stdout_keys_then_requests_timeseries_and_config(default_run):
    result, path = default_run
    summary, _ = parse_stdout(result.stdout)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}") and not text.endswith("\n")
    doc = json.loads(text)
    assert list(doc) == [*summary, "requests", "timeseries", "config"]
    # stdout rounds floats (µs for times); the file keeps full precision
    assert {k: rounded(doc[k], k) for k in summary} == summary
    assert any(rounded(doc[k], k) != doc[k] for k in summary)

    records = doc["requests"]
    assert [r["requestID"] for r in records] == [f"request_{i}" for i in range(20)]
    for rec in records:
        assert list(rec) == RECORD_KEYS
        assert rec["handled_by"] == "instance_0"
    assert sum(r["num_prefill_tokens"] for r in records) == summary["total_input_tokens"]
    assert sum(r["num_decode_tokens"] for r in records) == summary["total_output_tokens"]

    config = doc["config"]
    assert config["seed"] == 42
    assert config["package_version"] == __version__
    assert config["model"] == MODEL
    assert config["hardware"] == "H100"
    assert config["tp"] == 2
    assert config["total_kv_blocks"] == 132139 // 2


def test_same_seed_gives_byte_identical_stdout_and_results_file(tmp_path):
    path = tmp_path / "r.json"
    args = [*BASE, "--num-requests", "15", "--seed", "7", "--results-path", str(path)]
    first = run_ok(*args)
    first_file = path.read_bytes()
    second = run_ok(*args)
    assert second.stdout == first.stdout
    assert path.read_bytes() == first_file
    other = run_ok(*BASE, "--num-requests", "15", "--seed", "8")
    assert other.stdout != first.stdout


# --- flag spellings ------------------------------------------------------------------------

ALIASES = [
    ("--max-num-running-reqs", "--max-num-seqs", "3", "max_num_running_reqs", 3),
    (
        "--max-num-scheduled-tokens",
        "--max-num-batched-tokens",
        "300",
        "max_num_scheduled_tokens",
        300,
    ),
    ("--block-size-in-tokens", "--block-size", "32", "block_size_in_tokens", 32),
    ("--total-kv-blocks", "--num-gpu-blocks", "4000", "total_kv_blocks", 4000),
    ("--tp", "--tensor-parallel-size", "1", "tp", 1),
]


def _run_doc(tmp_path: Path, name: str, *args: str) -> tuple[str, dict[str, Any]]:
    path = tmp_path / name
    result = run_ok(*args, "--results-path", str(path))
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["config"].pop("results_path")
    return result.stdout, doc


@pytest.mark.parametrize(("reference", "alias", "value", "key", "expected"), ALIASES)
def test_vllm_style_alias_gives_same_results_as_reference_flag(
    tmp_path, reference, alias, value, key, expected
):
    common = [*BASE, "--num-requests", "12", "--rate", "20"]
    out_ref, doc_ref = _run_doc(tmp_path, "ref.json", *common, reference, value)
    out_alias, doc_alias = _run_doc(tmp_path, "alias.json", *common, alias, value)
    assert out_alias == out_ref
    assert doc_alias == doc_ref
    assert doc_ref["config"][key] == expected  # the flag took effect


def test_equals_form_matches_space_form(tmp_path):
    out_space, doc_space = _run_doc(
        tmp_path, "a.json", *BASE, "--num-requests", "8", "--seed", "5",
        "--max-num-seqs", "2", "--alpha-coeffs", "100,1,50", "--beta-coeffs", "5000,10,5",
    )  # fmt: skip
    out_eq, doc_eq = _run_doc(
        tmp_path, "b.json", "run", f"--model={MODEL}", "--num-requests=8", "--seed=5",
        "--max-num-seqs=2", "--alpha-coeffs=100,1,50", "--beta-coeffs=5000,10,5",
    )  # fmt: skip
    assert out_eq == out_space
    assert doc_eq == doc_space
    assert doc_eq["config"]["seed"] == 5
    assert doc_eq["config"]["alpha_coeffs"] == [100.0, 1.0, 50.0]
    assert doc_eq["config"]["max_num_running_reqs"] == 2


def test_model_name_is_case_insensitive(tmp_path):
    out_lower, doc_lower = _run_doc(tmp_path, "a.json", *BASE, "--num-requests", "5")
    out_mixed, doc_mixed = _run_doc(
        tmp_path, "b.json", "run", "--model", "Meta-Llama/LLaMA-3.1-8B-Instruct",
        "--num-requests", "5",
    )  # fmt: skip
    assert out_mixed == out_lower
    assert doc_mixed == doc_lower
    assert doc_mixed["config"]["model"] == MODEL


# --- workloads -----------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["chatbot", "contentgen", "summarization", "multidoc"])
def test_preset_workloads_run(preset):
    result = run_ok(*BASE, "--workload", preset, "--num-requests", "4", "--rate", "5")
    summary, _ = parse_stdout(result.stdout)
    assert summary["completed_requests"] == 4
    assert summary["dropped_unservable"] == 0


def test_trace_replay_matches_hand_computed_metrics(tmp_path):
    trace = write_trace(tmp_path / "t.csv", *TRACE_ROWS)
    path = tmp_path / "r.json"
    result = run_ok(
        *BASE, "--workload", "traces", "--workload-traces-filepath", str(trace),
        *EXPLICIT_COEFFS, "--results-path", str(path),
    )  # fmt: skip
    summary, _ = parse_stdout(result.stdout)
    doc = json.loads(path.read_text(encoding="utf-8"))
    approx = pytest.approx
    assert doc["requests"] == [
        {
            "arrived_at": 0.0,
            "requestID": "request_0",
            "num_prefill_tokens": 16,
            "num_decode_tokens": 3,
            "ttft_ms": approx(1.016),
            "itl_ms": approx(1.001),
            "e2e_ms": approx(3.018),
            "scheduling_delay_ms": 0.0,
            "handled_by": "instance_0",
        },
        {
            "arrived_at": 1.0,
            "requestID": "request_1",
            "num_prefill_tokens": 32,
            "num_decode_tokens": 1,
            "ttft_ms": approx(1.032),
            "itl_ms": 0.0,
            "e2e_ms": approx(1.032),
            "scheduling_delay_ms": 0.0,
            "handled_by": "instance_0",
        },
    ]
    expected = {
        "completed_requests": 2,
        "injected_requests": 2,
        "total_input_tokens": 48,
        "total_output_tokens": 4,  # every delivered token (DECISIONS Q7)
        "vllm_estimated_duration_s": approx(1.001032),
        "ttft_mean_ms": approx(1.024),
        "e2e_mean_ms": approx(2.025),
        "e2e_p99_ms": approx(1.032 + (3.018 - 1.032) * 0.99),
        "itl_mean_ms": approx(1.001),  # two samples, both 1001 µs (no extra one, Q8)
        "itl_p99_ms": approx(1.001),
        "scheduling_delay_p99_ms": 0.0,
        "dropped_unservable": 0,
        "rejected_too_long": 0,
    }
    assert {k: doc[k] for k in expected} == expected
    assert {k: summary[k] for k in expected} == {k: rounded(doc[k], k) for k in expected}


def test_max_model_len_rejects_a_request_that_is_too_long(tmp_path):
    # request_0 needs 16 + 3 = 19 tokens, request_1 needs 32 + 1 = 33 > 20
    trace = write_trace(tmp_path / "t.csv", *TRACE_ROWS)
    path = tmp_path / "r.json"
    result = run_ok(
        *BASE, "--workload", "traces", "--workload-traces-filepath", str(trace),
        *EXPLICIT_COEFFS, "--max-model-len", "20", "--results-path", str(path),
    )  # fmt: skip
    summary, _ = parse_stdout(result.stdout)
    assert summary["rejected_too_long"] == 1
    assert summary["completed_requests"] == 1
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert [r["requestID"] for r in doc["requests"]] == ["request_0"]


def test_request_too_long_for_kv_cache_is_dropped_not_fatal(tmp_path):
    # 10 blocks of 16 tokens hold 160 tokens; a 200-token prompt can never be served
    trace = write_trace(
        tmp_path / "t.csv", *TRACE_ROWS, trace_row("2.0", list(range(1000, 1200)), [1, 2])
    )
    result = run_ok(
        *BASE, "--workload", "traces", "--workload-traces-filepath", str(trace),
        *EXPLICIT_COEFFS, "--num-gpu-blocks", "10",
    )  # fmt: skip
    summary, rest = parse_stdout(result.stdout)
    assert summary["dropped_unservable"] == 1
    assert summary["completed_requests"] == 2
    assert summary["injected_requests"] == 3
    assert "=== Anomaly Counters ===" in rest
    assert "Dropped Unservable: 1" in rest


def test_all_requests_unservable_still_prints_metrics_and_exits_0():
    result = run_ok(*BASE, "--num-requests", "6", "--num-gpu-blocks", "10")
    summary, _ = parse_stdout(result.stdout)  # block printed with zero completions (Q20)
    assert summary["completed_requests"] + summary["dropped_unservable"] == 6
    assert summary["dropped_unservable"] > 0
    assert summary["injected_requests"] == 6


# --- bad input -----------------------------------------------------------------------------

RUN5 = [*BASE, "--num-requests", "5"]
BAD_INPUTS = [
    ("unknown-model", ["run", "--model", "nosuch/model"], ["--model", "nosuch/model"]),
    (
        "blackbox-untrained-model",
        ["run", "--model", "qwen/qwen2.5-1.5b-instruct", "--latency-model", "blackbox"],
        ["no trained coefficients for --latency-model blackbox", "calibrated or roofline"],
    ),
    ("missing-model", ["run"], ["--model"]),
    ("rate-0", [*RUN5, "--rate", "0"], ["--rate"]),
    ("rate-negative", [*RUN5, "--rate", "-1"], ["--rate"]),
    ("rate-beyond-clock", [*RUN5, "--rate", "1e-13"], ["--rate", "simulator's clock"]),
    ("num-instances-0", [*RUN5, "--num-instances", "0"], ["--num-instances"]),
    ("total-kv-blocks-0", [*RUN5, "--total-kv-blocks", "0"], ["--total-kv-blocks"]),
    ("block-size-negative", [*RUN5, "--block-size-in-tokens", "-1"], ["--block-size-in-tokens"]),
    (
        "prompt-mean-below-min",
        [*RUN5, "--prompt-tokens", "10", "--prompt-tokens-min", "20"],
        ["--prompt-tokens"],
    ),
    (
        "prompt-min-above-max",
        [*RUN5, "--prompt-tokens-min", "30", "--prompt-tokens-max", "20"],
        ["--prompt-tokens-min", "--prompt-tokens-max"],
    ),
    ("unknown-workload", [*RUN5, "--workload", "nosuch"], ["--workload", "nosuch"]),
    ("traces-without-file", [*RUN5, "--workload", "traces"], ["--workload-traces-filepath"]),
    (
        "trace-file-missing",
        [*BASE, "--workload", "traces", "--workload-traces-filepath", "{tmp}/missing.csv"],
        ["--workload-traces-filepath", "missing.csv"],
    ),
    (
        "trace-malformed-row",
        [*BASE, "--workload", "traces", "--workload-traces-filepath", "{tmp}/bad.csv"],
        ["bad.csv", "row 3", "column input_tokens"],
    ),
    ("alpha-too-few", [*RUN5, "--alpha-coeffs", "1,2"], ["--alpha-coeffs"]),
    (
        "results-folder-missing",
        [*RUN5, "--results-path", "{tmp}/no/such/folder/r.json"],
        ["--results-path"],
    ),
    ("admission-latency-negative", [*RUN5, "--admission-latency", "-5"], ["--admission-latency"]),
    ("defaults-malformed-yaml", [*RUN5, "--defaults-filepath", "{tmp}/bad.yaml"], ["bad.yaml"]),
]


@pytest.fixture
def bad_files(tmp_path: Path) -> Path:
    write_trace(
        tmp_path / "bad.csv",
        trace_row("0", [1, 2], [3]),
        '0.1,b,,"[1, x]","[3]"\n',  # line 3: input_tokens is not JSON
    )
    (tmp_path / "bad.yaml").write_text("models: [unclosed\n  - : :\n", encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(("args", "needles"), [pytest.param(a, n, id=i) for i, a, n in BAD_INPUTS])
def test_bad_input_exits_2_with_one_error_line(bad_files, args, needles):
    result = invoke(*(a.replace("{tmp}", str(bad_files)) for a in args))
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in result.stderr


def test_unknown_flag_is_a_usage_error():
    result = invoke(*RUN5, "--no-such-flag", "1")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "No such option" in result.stderr
    assert "--no-such-flag" in result.stderr
    assert "Traceback" not in result.stderr


# --- other commands ------------------------------------------------------------------------


def test_models_lists_default_combination():
    result = run_ok("models")
    rows = [line.split() for line in result.stdout.splitlines()]
    llama = [r for r in rows if r and r[0] == MODEL]
    assert any(r[1] == "H100" and r[2] == "2" and r[-1] == "yes" for r in llama), llama


def test_run_help_lists_both_spellings():
    result = run_ok("run", "--help")
    for reference, alias, *_ in ALIASES:
        assert reference in result.stdout
        assert alias in result.stdout


# --- a real process ------------------------------------------------------------------------


def test_python_dash_m_subprocess(tmp_path):
    src = Path(__file__).resolve().parents[1] / "src"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH")) if p)
    args = ["run", "--model", MODEL, "--num-requests", "5", "--seed", "3"]

    proc = subprocess.run(
        [sys.executable, "-m", "inference_sim", *args],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == run_ok(*args).stdout
    summary, _ = parse_stdout(proc.stdout)
    assert summary["completed_requests"] == 5
    assert proc.stderr == ""  # default log level warn: nothing to say

    bad = subprocess.run(
        [sys.executable, "-m", "inference_sim", "run", "--model", MODEL, "--rate", "0"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert len(bad.stderr.splitlines()) == 1
    assert bad.stderr.startswith("Error: ") and "--rate" in bad.stderr


def test_on_off_flags_take_true_and_false_as_the_reference_does():
    """The reference's Go flags accept --roofline=true / --roofline=false."""
    from inference_sim.cli.main import _bool_values

    assert _bool_values(["run", "--roofline=true", "--tp=2"]) == ["run", "--roofline", "--tp=2"]
    assert _bool_values(["run", "--roofline=False"]) == ["run", "--no-roofline"]
    assert _bool_values(["run", "--roofline=maybe"]) == ["run", "--roofline=maybe"]  # click says
    assert _bool_values(["--", "--roofline=true"]) == ["--", "--roofline=true"]
