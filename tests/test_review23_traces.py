"""Review 23 (traces): Mooncake slices count from their first row, huge plain-second
timestamps are one error naming the line, UTC-string JSON lines are length traces, and
the documented way to size the router's prefix index works."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from inference_sim import simulate
from inference_sim.cli.main import cli
from inference_sim.policies.prefix import DEFAULT_INDEX_CAPACITY, PrefixCacheIndex
from inference_sim.policies.scorers import SCORERS, PrefixAffinityScorer
from inference_sim.workload import WorkloadError, describe_workload, detect_format, open_trace
from inference_sim.workload.lengthtrace import iter_length_rows
from inference_sim.workload.realtraces import (
    iter_azure_records,
    iter_mooncake_records,
    parse_timestamp_us,
)

MODEL = "meta-llama/llama-3.1-8b-instruct"
COEFFS = {"alpha_coeffs": "0,0,0", "beta_coeffs": "1000,1,1"}
DOCS = Path(__file__).resolve().parents[1] / "docs"


def run_cli(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def write_mooncake(path: Path, start_ms: int, n: int = 12) -> Path:
    """``n`` rows one second apart from ``start_ms``; every other prompt shares a block."""
    rows = [
        {
            "timestamp": start_ms + 1000 * i,
            "input_length": 600,
            "output_length": 4,
            "hash_ids": [1 if i % 2 else 100 + i, 200 + i],
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --- 1. a Mooncake slice that does not start at t=0 ---------------------------------------


def test_mooncake_arrivals_count_from_the_first_row(tmp_path):
    path = write_mooncake(tmp_path / "tail.jsonl", 3_264_000, n=3)
    assert [r.arrival for r in iter_mooncake_records(path)] == [0, 1_000_000, 2_000_000]
    assert [r.arrival_time for r in open_trace(path)] == [0, 1_000_000, 2_000_000]


def test_a_shifted_mooncake_slice_runs_as_the_same_slice_rebased(tmp_path):
    shifted = write_mooncake(tmp_path / "tail.jsonl", 3_264_000)
    rebased = write_mooncake(tmp_path / "rebased.jsonl", 0)
    a = simulate(model=MODEL, workload_traces_filepath=str(shifted), **COEFFS).summary
    b = simulate(model=MODEL, workload_traces_filepath=str(rebased), **COEFFS).summary
    a.pop("config")
    b.pop("config")  # names the file
    assert a == b
    # It was an hour of idle time first: 3,275 s of "duration" for 11 s of arrivals.
    assert a["vllm_estimated_duration_s"] < 20


def test_a_horizon_counts_from_the_first_row_of_a_mooncake_slice(tmp_path):
    path = write_mooncake(tmp_path / "tail.jsonl", 3_264_000)
    res = simulate(model=MODEL, workload_traces_filepath=str(path), horizon=5_000_000, **COEFFS)
    assert res.summary["injected_requests"] == 6  # arrivals 0..5 s (one at the horizon)


def test_describe_agrees_with_the_run_on_a_mooncake_slice(tmp_path):
    path = write_mooncake(tmp_path / "tail.jsonl", 3_264_000)
    d = describe_workload(path)
    assert d["first_arrival_s"] == 0 and d["duration_s"] == pytest.approx(11.0)


def test_the_reference_csv_keeps_its_absolute_times(tmp_path):
    path = tmp_path / "ref.csv"
    path.write_text('arrival_time,request_id,model,p,d\n5.0,a,,"[1,2,3]","[4]"\n')
    assert [r.arrival_time for r in open_trace(path)] == [5_000_000]


# --- 2. plain-second timestamps too large for the clock -----------------------------------

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


@pytest.mark.parametrize(
    ("stamp", "needle"),
    [
        ("1e303", "line 3: TIMESTAMP: 1e303 s is out of range"),  # was an OverflowError
        ("9300000000000", "line 3: TIMESTAMP is 9.3e+12 s after the first row"),  # was dropped
        ("1e200", "line 3: TIMESTAMP is 1e+200 s after the first row"),  # was dropped
    ],
)
def test_azure_seconds_past_the_clock_are_one_error_naming_the_line(tmp_path, stamp, needle):
    path = tmp_path / "az.csv"
    path.write_text(f"{AZURE_HEADER}0,100,10\n{stamp},100,10\n")
    with pytest.raises(WorkloadError) as info:
        list(iter_azure_records(path))
    assert needle in str(info.value) and "4.61169e+12 s" in str(info.value)
    for args in (
        ("run", "--model", MODEL, "--workload", "traces", "--workload-traces-filepath", path),
        ("workload", "describe", path),
    ):
        res = run_cli(*args)
        assert res.exit_code == 2 and needle in res.output, res.output
        assert res.output.count("\n") == 1 and "Traceback" not in res.output


def test_parse_timestamp_us_refuses_infinitely_many_microseconds():
    with pytest.raises(ValueError, match="1e303 s is out of range"):
        parse_timestamp_us("1e303")
    assert parse_timestamp_us("9300000000000") == 9_300_000_000_000_000_000  # readers bound it


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("len.csv", "arrival_s,prompt_len,output_len\n0,100,10\n1e303,100,10\n"),
        (
            "len.jsonl",
            '{"arrival_s": 0, "prompt_len": 100, "output_len": 10}\n'
            '{"arrival_s": 1e303, "prompt_len": 100, "output_len": 10}\n',
        ),
    ],
)
def test_length_trace_seconds_too_large_for_a_float_are_one_error(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(WorkloadError, match=r"line \d: arrival_s: 1e\+?303 s is out of range"):
        list(iter_length_rows(path))


# --- 4. JSON lines with a UTC-string timestamp --------------------------------------------

UTC_ROWS = (
    '{"timestamp": "2023-11-16 18:17:03", "input_length": 100, "output_length": 5}\n'
    '{"timestamp": "2023-11-16 18:17:04", "input_length": 100, "output_length": 5}\n'
)


def test_a_utc_string_timestamp_is_a_length_trace_not_mooncake(tmp_path):
    path = tmp_path / "utc.jsonl"
    path.write_text(UTC_ROWS)
    assert detect_format(path) == "lengths"
    assert [r.arrival_time for r in open_trace(path)] == [0, 1_000_000]
    res = run_cli(
        "run", "--model", MODEL, "--workload", "traces", "--workload-traces-filepath", path
    )
    assert res.exit_code == 0, res.output


def test_numeric_and_other_string_timestamps_stay_mooncake(tmp_path):
    numeric = tmp_path / "n.jsonl"
    numeric.write_text('{"timestamp": 3264000, "input_length": 100, "output_length": 5}\n')
    assert detect_format(numeric) == "mooncake"
    text = tmp_path / "s.jsonl"
    text.write_text('{"timestamp": "3264000", "input_length": 100, "output_length": 5}\n')
    assert detect_format(text) == "mooncake"  # its reader says the timestamp is no number


def test_forced_mooncake_on_utc_strings_points_to_lengths(tmp_path):
    path = tmp_path / "utc.jsonl"
    path.write_text(UTC_ROWS)
    with pytest.raises(WorkloadError) as info:
        list(open_trace(path, "mooncake"))
    assert "line 1: timestamp must be a number (ms)" in str(info.value)
    assert "--trace-format lengths" in str(info.value)


# --- 3. the router's prefix index capacity ------------------------------------------------


def documented_plugin(tmp_path: Path) -> Path:
    """The plug-in of docs/policies.md, "Prefix index capacity", as a file."""
    text = (DOCS / "policies.md").read_text(encoding="utf-8")
    section = text.split("### Prefix index capacity", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "docs/policies.md: the section has no Python example"
    path = tmp_path / "kvprefix.py"
    path.write_text(code.group(1), encoding="utf-8")
    return path


def test_the_default_index_stays_the_reference_figure():
    assert DEFAULT_INDEX_CAPACITY == 10_000
    assert PrefixAffinityScorer(16, 4).index.capacity == 10_000


def test_a_prompt_longer_than_the_index_is_forgotten_from_its_first_block():
    # Why long prompts need a larger index: the LRU drops a prompt's first blocks first,
    # and matches count from the first block, so a 750-block prompt in a 500-block index
    # matches nothing the next time, though the instance's cache may still hold it all.
    hashes = list(range(750))
    small, large = PrefixCacheIndex(1, 500), PrefixCacheIndex(1, 66_069)
    small.record(hashes, 0)
    large.record(hashes, 0)
    assert small.match_length(hashes, 0) == 0
    assert large.match_length(hashes, 0) == 750


def test_the_documented_plugin_sets_the_capacity_and_runs(tmp_path):
    plugin = documented_plugin(tmp_path)
    scorer = SCORERS.create(f"{plugin}:KVSizedPrefix", block_size=16, num_instances=4, seed=0)
    assert scorer.index.capacity == 66_069
    trace = write_mooncake(tmp_path / "m.jsonl", 0)
    res = simulate(
        model=MODEL,
        workload_traces_filepath=str(trace),
        num_instances=2,
        routing_policy="weighted",
        routing_scorers=f"{plugin}:KVSizedPrefix:3,queue-depth:2,kv-utilization:2",
        **COEFFS,
    )
    assert res.summary["completed_requests"] == 12
