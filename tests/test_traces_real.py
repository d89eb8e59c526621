"""Azure and Mooncake traces: parsing, errors, exact prefix sharing from hash ids."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from inference_sim import simulate
from inference_sim.workload import (
    WorkloadError,
    detect_format,
    iter_azure_trace,
    iter_mooncake_trace,
    open_trace,
)
from inference_sim.workload.realtraces import iter_azure_records, parse_timestamp_us

SHARED = Path(
    os.environ.get("INFERENCE_SIM_SHARED", Path(__file__).resolve().parents[2] / "shared")
)
TRACES = SHARED / "workloads"
MODEL = "meta-llama/llama-3.1-8b-instruct"
COEFFS = {"alpha_coeffs": "0,0,0", "beta_coeffs": "1000,1,1"}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --- Mooncake -----------------------------------------------------------------------------

# Block size 32 (two 16-token KV blocks per hash id); every prompt is a whole number of
# hash blocks and ends with an id never seen before, so the vLLM cap of one computed
# token never bites and the expected hit fraction follows from the ids alone.
MOONCAKE_ROWS = [
    [1, 2, 3],
    [1, 2, 4],
    [1, 2, 3, 5],
    [6, 7],
    [1, 8],
    [6, 7, 9, 10],
    [1, 2, 3, 5, 11],
    [12],
]


def mooncake_trace(tmp_path: Path) -> Path:
    rows = [
        {"timestamp": 2000 * i, "input_length": 32 * len(ids), "output_length": 3, "hash_ids": ids}
        for i, ids in enumerate(MOONCAKE_ROWS)
    ]
    return write_jsonl(tmp_path / "mc.jsonl", rows)


def expected_hit_fraction(rows: list[list[int]]) -> float:
    seen: set[tuple[int, ...]] = set()
    hit = total = 0
    for ids in rows:
        total += len(ids)
        leading = 0
        while leading < len(ids) and tuple(ids[: leading + 1]) in seen:
            leading += 1
        hit += leading
        seen.update(tuple(ids[: k + 1]) for k in range(len(ids)))
    return hit / total


def test_mooncake_replay_hit_fraction_equals_the_hash_id_fraction(tmp_path):
    path = mooncake_trace(tmp_path)
    want = expected_hit_fraction(MOONCAKE_ROWS)
    assert 0.3 < want < 0.7
    res = simulate(
        model=MODEL,
        workload="traces",
        workload_traces_filepath=str(path),
        trace_block_size=32,
        total_kv_blocks=100_000,
        **COEFFS,
    )
    assert res.summary["completed_requests"] == len(MOONCAKE_ROWS)
    assert res.summary["prefix_cache_hit_rate"] == pytest.approx(want, abs=1e-12)


def test_mooncake_equal_leading_ids_give_equal_leading_tokens(tmp_path):
    rows = [
        {"timestamp": 0, "input_length": 80, "output_length": 1, "hash_ids": [1, 2, 3]},
        {"timestamp": 1.5, "input_length": 96, "output_length": 2, "hash_ids": [1, 2, 3]},
        {"timestamp": 3, "input_length": 64, "output_length": 2, "hash_ids": [1, 9]},
    ]
    a, b, c = iter_mooncake_trace(write_jsonl(tmp_path / "m.jsonl", rows), block_size=32, seed=4)
    assert (a.arrival_time, b.arrival_time) == (0, 1500)
    assert np.array_equal(a.input_tokens, b.input_tokens[:80])  # the partial block too
    assert np.array_equal(a.input_tokens[:32], c.input_tokens[:32])
    assert not np.array_equal(a.input_tokens[32:64], c.input_tokens[32:64])
    assert (a.num_output_tokens, b.num_output_tokens) == (1, 2)
    again = list(iter_mooncake_trace(tmp_path / "m.jsonl", block_size=32, seed=4))
    assert np.array_equal(again[2].input_tokens, c.input_tokens)


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        (  # a line without hash_ids after one with them (without any: no prefix sharing)
            '{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]}\n'
            '{"timestamp": 1, "input_length": 10, "output_length": 1}',
            "line 2: missing field hash_ids",
        ),
        (
            '{"timestamp": 0, "input_length": 600, "output_length": 1, "hash_ids": [1]}',
            "1 hash_ids, but input_length 600 makes 2 blocks",
        ),
        (
            '{"timestamp": "x", "input_length": 1, "output_length": 1, "hash_ids": [1]}',
            "timestamp must be a number",
        ),
        (
            '{"timestamp": 0, "input_length": 0, "output_length": 1, "hash_ids": []}',
            "input_length must be >= 1",
        ),
        ("{not json", "invalid JSON"),
    ],
)
def test_mooncake_bad_rows(tmp_path, line, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(WorkloadError) as info:
        list(iter_mooncake_trace(path))
    assert needle in str(info.value) and "line " in str(info.value)


def test_mooncake_rows_out_of_time_order(tmp_path):
    rows = [
        {"timestamp": 5, "input_length": 1, "output_length": 1, "hash_ids": [1]},
        {"timestamp": 4, "input_length": 1, "output_length": 1, "hash_ids": [2]},
    ]
    with pytest.raises(WorkloadError, match="line 2: timestamp goes back in time"):
        list(iter_mooncake_trace(write_jsonl(tmp_path / "m.jsonl", rows)))


# --- Azure --------------------------------------------------------------------------------

AZURE = (
    "TIMESTAMP,ContextTokens,GeneratedTokens\n"
    "2023-11-16 18:17:03.9799600,4808,10\n"
    "2023-11-16 18:17:04.0319600,3180,8\n"
    "2023-11-16 18:17:05.5,20,0\n"
)


def test_azure_arrivals_are_relative_to_the_first_row(tmp_path):
    path = tmp_path / "az.csv"
    path.write_text(AZURE)
    reqs = list(iter_azure_trace(path))
    assert [r.arrival_time for r in reqs] == [0, 52_000, 1_520_040]
    assert [(r.num_prompt_tokens, r.num_output_tokens) for r in reqs] == [
        (4808, 10),
        (3180, 8),
        (20, 0),
    ]
    assert not np.array_equal(reqs[0].input_tokens[:16], reqs[1].input_tokens[:16])
    assert parse_timestamp_us("12.5") == 12_500_000


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "TIMESTAMP,ContextTokens\n2023-11-16 18:17:03,5\n",
            "line 1: missing column GeneratedTokens",
        ),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03,5\n",
            "line 2: row has 2 fields, the header has 3",
        ),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,5,1\n",
            "line 2: TIMESTAMP: not a timestamp",
        ),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03,-5,1\n",
            "ContextTokens must be >= 1",
        ),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n"
            "2023-11-16 18:17:03,5,1\n2023-11-16 18:17:02,5,1\n",
            "line 3: TIMESTAMP goes back in time",
        ),
    ],
)
def test_azure_bad_input(tmp_path, text, needle):
    path = tmp_path / "az.csv"
    path.write_text(text)
    with pytest.raises(WorkloadError) as info:
        list(iter_azure_records(path))
    assert needle in str(info.value) and "\n" not in str(info.value)


# --- detection and the CLI path -----------------------------------------------------------


def test_format_detection(tmp_path):
    (tmp_path / "a.csv").write_text(AZURE)
    assert detect_format(tmp_path / "a.csv") == "azure"
    assert detect_format(mooncake_trace(tmp_path)) == "mooncake"
    (tmp_path / "ref.csv").write_text('arrival_time,request_id,model,p,d\n0,a,,"[1]","[2]"\n')
    assert detect_format(tmp_path / "ref.csv") == "csv"
    (tmp_path / "s.yaml").write_text("aggregate_rate: 1\nclients: []\n")
    assert detect_format(tmp_path / "s.yaml") == "spec"
    with pytest.raises(WorkloadError, match="workload spec, not a trace"):
        open_trace(tmp_path / "s.yaml")
    with pytest.raises(WorkloadError, match="--trace-format: unknown format"):
        open_trace(tmp_path / "a.csv", "parquet")


def test_azure_trace_runs_through_the_cli_path(tmp_path):
    path = tmp_path / "az.csv"
    path.write_text(AZURE)
    res = simulate(model=MODEL, workload="traces", workload_traces_filepath=str(path), **COEFFS)
    assert res.summary["completed_requests"] == 3
    assert [r["num_prefill_tokens"] for r in res.records] == [4808, 3180, 20]


def test_unsorted_reference_csv_is_served_by_arrival(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(
        'arrival_time,request_id,model,p,d\n1.0,a,,"[1,2,3]","[4]"\n0.5,b,,"[5,6]","[7]"\n'
    )
    res = simulate(model=MODEL, workload="traces", workload_traces_filepath=str(path), **COEFFS)
    assert [r["requestID"] for r in res.records] == ["request_0", "request_1"]
    assert res.summary["completed_requests"] == 2


# --- the published traces (skipped when the shared folder is absent) ----------------------


@pytest.mark.skipif(not TRACES.is_dir(), reason="shared traces absent")
def test_published_traces_match_their_readme_figures():
    azure = TRACES / "azure-llm-inference-2023"
    code = list(iter_azure_records(azure / "AzureLLMInferenceTrace_code.csv"))
    n_in = np.mean([r.input_tokens for r in code])
    n_out = np.mean([r.output_tokens for r in code])
    rate = len(code) / (code[-1].arrival / 1e6)
    assert len(code) in (8818, 8819)
    assert n_in == pytest.approx(2048, rel=0.01) and n_out == pytest.approx(28, rel=0.02)
    assert rate == pytest.approx(2.57, rel=0.01)
    path = TRACES / "mooncake-fast25" / "synthetic_trace.jsonl"
    reqs = iter_mooncake_trace(path)
    first = next(reqs)
    assert first.num_prompt_tokens > 0
    count = 1 + sum(1 for _ in reqs)
    assert count == 3993
