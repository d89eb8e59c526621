"""Review 25 (traces): describe's token-weighted unlimited-cache hit rate, UTC offsets in
trace times, and ``--trace-speedup``."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from inference_sim import simulate
from inference_sim.cli.main import cli
from inference_sim.config.errors import ConfigError
from inference_sim.workload import WorkloadError, describe_workload, open_trace
from inference_sim.workload.lengthtrace import iter_length_trace
from inference_sim.workload.realtraces import iter_azure_records, parse_timestamp_us
from inference_sim.workload.tokens import PrefixHitCounter

SHARED = Path(
    os.environ.get("INFERENCE_SIM_SHARED", Path(__file__).resolve().parents[2] / "shared")
)
MODEL = "meta-llama/llama-3.1-8b-instruct"
COEFFS = {"alpha_coeffs": "0,0,0", "beta_coeffs": "1000,1,1"}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["run", "--model", MODEL, *args])


def one_error(result: Result, *needles: str) -> str:
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --- 1. describe: prompt tokens an unlimited prefix cache hits --------------------------


def test_a_partial_last_block_weighs_its_tokens_not_a_whole_block(tmp_path):
    # The same 600-token prompt twice: hash blocks 512 + 88. Counted in hash blocks the
    # second prompt reused 2 of 4 blocks (0.5); in tokens it hits 599 rounded down to the
    # 16-token KV block, 592 of 1200 (vLLM computes at least one token of every prompt).
    row = {"input_length": 600, "output_length": 4, "hash_ids": [1, 2]}
    path = write_jsonl(tmp_path / "m.jsonl", [{"timestamp": 0, **row}, {"timestamp": 5, **row}])
    d = describe_workload(path)
    assert (d["cached_prompt_tokens"], d["prompt_tokens"]) == (592, 1200)
    assert d["unlimited_prefix_cache_hit_rate"] == pytest.approx(592 / 1200)
    assert "prefix_reuse_ratio" not in d


def test_a_shorter_repeat_hits_the_tokens_of_its_partial_block(tmp_path):
    # 1100 tokens (512 + 512 + 76), then 700 (512 + 188) and 1030 (512 + 512 + 6) with
    # the same leading ids: the partial blocks hit the tokens the first prompt cached.
    rows = [
        {"timestamp": 0, "input_length": 1100, "output_length": 1, "hash_ids": [7, 8, 9]},
        {"timestamp": 1, "input_length": 700, "output_length": 1, "hash_ids": [7, 8]},
        {"timestamp": 2, "input_length": 1030, "output_length": 1, "hash_ids": [7, 8, 9]},
    ]
    d = describe_workload(write_jsonl(tmp_path / "m.jsonl", rows))
    # second: 700 - 1 -> 688; third: 1024 + min(6, 1088 - 1024) = 1030, 1029 -> 1024
    assert d["cached_prompt_tokens"] == 688 + 1024


def _random_mooncake(path: Path, block: int, n: int, seed: int) -> Path:
    """Prompts that continue earlier ones (whole or in part) and end in partial blocks."""
    rng = random.Random(seed)
    chains: list[list[int]] = []
    rows = []
    next_id = 0
    for i in range(n):
        if chains and rng.random() < 0.7:
            base = rng.choice(chains)
            keep = rng.randint(1, len(base))
            ids = base[:keep]
        else:
            ids = []
        extra = rng.randint(0 if ids else 1, 3)
        ids = ids + list(range(next_id, next_id + extra))
        next_id += extra
        full = len(ids) - 1
        length = full * block + rng.randint(1, block)  # the last block often partial
        chains.append(ids)
        rows.append(
            {"timestamp": 40 * i, "input_length": length, "output_length": 2, "hash_ids": ids}
        )
    return write_jsonl(path, rows)


@pytest.mark.parametrize(("hash_block", "kv_block"), [(64, 16), (64, 48), (40, 16)])
def test_describe_equals_a_replay_with_an_unlimited_cache(tmp_path, hash_block, kv_block):
    path = _random_mooncake(tmp_path / "m.jsonl", hash_block, 120, seed=hash_block + kv_block)
    want = describe_workload(path, block_size=hash_block, kv_block_size=kv_block)
    res = simulate(
        model=MODEL,
        workload="traces",
        workload_traces_filepath=str(path),
        trace_block_size=hash_block,
        block_size_in_tokens=kv_block,
        total_kv_blocks=1_000_000,
        **COEFFS,
    )
    assert 0.2 < want["unlimited_prefix_cache_hit_rate"] < 0.9
    assert res.summary["prefix_cache_hit_rate"] == pytest.approx(
        want["unlimited_prefix_cache_hit_rate"], abs=1e-12
    )


def test_token_prompts_keep_one_token_to_compute():
    c = PrefixHitCounter(16)
    prompt = np.arange(32, dtype=np.int32)
    c.add_tokens(prompt)
    c.add_tokens(prompt)  # a whole-prompt repeat: 31 tokens -> one 16-token block
    assert (c.hit_tokens, c.prompt_tokens) == (16, 64)


def test_describe_kv_block_size_flag(tmp_path):
    row = {"input_length": 600, "output_length": 4, "hash_ids": [1, 2]}
    path = write_jsonl(tmp_path / "m.jsonl", [{"timestamp": 0, **row}, {"timestamp": 5, **row}])
    result = CliRunner().invoke(
        cli, ["workload", "describe", str(path), "--kv-block-size", "64", "--json"]
    )
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert (d["kv_block_size"], d["cached_prompt_tokens"]) == (64, 576)  # 599 -> 576
    bad = CliRunner().invoke(cli, ["workload", "describe", str(path), "--kv-block-size", "0"])
    assert bad.exit_code == 2 and "--kv-block-size must be > 0" in bad.stderr


@pytest.mark.skipif(not (SHARED / "workloads").is_dir(), reason="shared traces absent")
def test_published_traces_match_the_unlimited_cache_runs():
    # blis run --workload traces ... --total-kv-blocks 20000000: prefix_cache_hit_rate
    # 0.373617 (conversation) and 0.651214 (synthetic); hash-id blocks said 0.3664, 0.6396
    folder = SHARED / "workloads" / "mooncake-fast25"
    for name, rate in (("conversation_trace", 0.373617), ("synthetic_trace", 0.651214)):
        d = describe_workload(folder / f"{name}.jsonl")
        assert d["unlimited_prefix_cache_hit_rate"] == pytest.approx(rate, abs=1e-6), name


# --- 2. UTC offsets ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-10 02:00:00.1+02:00",
        "2024-05-10T02:00:00.1+0200",
        "2024-05-10 02:00:00.1+02",
        "2024-05-09 18:30:00.1-05:30",
        "2024-05-10 00:00:00.1Z",
        "2024-05-10 00:00:00.1 +00:00",
        "2024-05-10 00:00:00.1000009",  # a 7th digit is dropped (µs), as before
    ],
)
def test_offsets_convert_to_utc(text):
    assert parse_timestamp_us(text) == parse_timestamp_us("2024-05-10 00:00:00.1")


@pytest.mark.parametrize("text", ["2024-05-10 02:00:00+24:00", "2024-05-10 02:00:00+02:60"])
def test_impossible_offsets_are_refused(text):
    with pytest.raises(ValueError, match=r"not a valid date and time.*UTC offset"):
        parse_timestamp_us(text)


def test_a_daylight_saving_switch_keeps_the_true_gaps(tmp_path):
    # 02:59:59 CEST (+02:00) is 00:59:59 UTC; 02:00:00.5 CET (+01:00) is 01:00:00.5 UTC
    path = tmp_path / "az.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-10-29 02:59:59.0000000+02:00,10,1\n"
        "2023-10-29 02:00:00.5000000+01:00,10,1\n"
    )
    assert [r.arrival for r in iter_azure_records(path)] == [0, 1_500_000]
    lengths = tmp_path / "l.csv"
    lengths.write_text(
        "arrived_at,prompt_len,output_len\n"
        "2023-10-29T02:59:59+02:00,10,1\n"
        "2023-10-29T01:00:01Z,10,1\n"
    )
    assert [r.arrival_time for r in iter_length_trace(lengths)] == [0, 2_000_000]


# --- 3. --trace-speedup ------------------------------------------------------------------

TIMES_S = [0.0, 1.0, 2.5, 3.0, 4.75]


def _trace(tmp_path: Path, fmt: str) -> Path:
    """A five-row trace of ``fmt`` arriving at TIMES_S (the reference CSV: at 10 s + t)."""
    if fmt == "mooncake":
        rows = [
            {"timestamp": t * 1000, "input_length": 40, "output_length": 2, "hash_ids": [1, i]}
            for i, t in enumerate(TIMES_S)
        ]
        return write_jsonl(tmp_path / "m.jsonl", rows)
    if fmt == "azure":
        path = tmp_path / "az.csv"
        path.write_text(
            "TIMESTAMP,ContextTokens,GeneratedTokens\n"
            + "".join(f"2023-11-16 18:00:{t:09.6f},40,2\n" for t in TIMES_S)
        )
        return path
    if fmt == "csv":
        path = tmp_path / "ref.csv"
        path.write_text(
            "arrival_time,request_id,model,input_tokens,output_tokens\n"
            + "".join(f'{10 + t},r{i},m,"[1, 2, 3]","[4]"\n' for i, t in enumerate(TIMES_S))
        )
        return path
    if fmt == "lengths":
        path = tmp_path / "l.csv"
        path.write_text(
            "arrival_s,prompt_len,output_len\n" + "".join(f"{t},40,2\n" for t in TIMES_S)
        )
        return path
    assert fmt == "v2"  # exported from a length-trace replay
    out = tmp_path / "v2.csv"
    simulate(
        model=MODEL,
        workload="traces",
        workload_traces_filepath=str(_trace(tmp_path, "lengths")),
        export_trace=str(out),
        **COEFFS,
    )
    return out


def _recorded_us(fmt: str) -> list[int]:
    return [round((10 + t if fmt == "csv" else t) * 1e6) for t in TIMES_S]


@pytest.mark.parametrize("fmt", ["mooncake", "azure", "csv", "lengths", "v2"])
def test_every_trace_reader_is_sped_up(tmp_path, fmt):
    path = _trace(tmp_path, fmt)
    recorded = _recorded_us(fmt)
    as_is = [r.arrival_time for r in open_trace(path, fmt, block_size=32)]
    assert as_is == recorded
    fast = [r.arrival_time for r in open_trace(path, fmt, block_size=32, speedup=2)]
    assert fast == [round(t / 2) for t in recorded]
    slow = [r.arrival_time for r in open_trace(path, fmt, block_size=32, speedup=0.25)]
    assert slow == [4 * t for t in recorded]
    # the horizon bounds the scaled times (a request exactly at it is replayed)
    horizon = recorded[3] // 2
    cut = [r.arrival_time for r in open_trace(path, fmt, block_size=32, speedup=2, horizon=horizon)]
    assert cut == [round(t / 2) for t in recorded[:4]]


def test_run_records_the_speedup_and_a_results_replay_repeats_it(tmp_path):
    path = _trace(tmp_path, "mooncake")
    out = tmp_path / "r.json"
    args = ("--workload", "traces", "--workload-traces-filepath", str(path))
    first = run(*args, "--trace-block-size", "32", "--trace-speedup", "2", "--horizon", "1.5s",
                "--results-path", str(out))  # fmt: skip
    assert first.exit_code == 0, first.stderr
    doc = json.loads(out.read_text())
    assert doc["config"]["trace_speedup"] == 2.0
    assert [r["arrived_at"] for r in doc["requests"]] == [0.0, 0.5, 1.25, 1.5]
    again = tmp_path / "again.json"
    second = run("--config", str(out), "--results-path", str(again))
    assert second.exit_code == 0, second.stderr
    assert json.loads(again.read_text())["requests"] == doc["requests"]
    # not recorded when it changes nothing: other results stay as they were
    plain = simulate(model=MODEL, workload="traces", workload_traces_filepath=str(path),
                     trace_block_size=32, **COEFFS)  # fmt: skip
    assert "trace_speedup" not in plain.config
    fast = simulate(model=MODEL, workload="traces", workload_traces_filepath=str(path),
                    trace_block_size=32, trace_speedup=4, **COEFFS)  # fmt: skip
    assert [r["arrived_at"] for r in fast.records] == [t / 4 for t in TIMES_S]


def test_in_memory_trace_is_sped_up():
    rows = [{"arrival_s": t, "prompt_len": 10, "output_len": 2} for t in TIMES_S]
    res = simulate(model=MODEL, trace=rows, workload="traces", trace_speedup=2,
                   horizon=1_500_000, **COEFFS)  # fmt: skip
    assert [r["arrived_at"] for r in res.records] == [0.0, 0.5, 1.25, 1.5]


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-inf"])
def test_bad_speedups_are_one_error_naming_the_flag(tmp_path, value):
    path = _trace(tmp_path, "mooncake")
    one_error(
        run("--workload", "traces", "--workload-traces-filepath", str(path),
            "--trace-speedup", value),
        "--trace-speedup must be a finite number > 0",
    )  # fmt: skip
    with pytest.raises((WorkloadError, ConfigError), match="--trace-speedup"):
        simulate(model=MODEL, workload="traces", workload_traces_filepath=str(path),
                 trace_speedup=float(value), **COEFFS)  # fmt: skip


def test_speedup_is_refused_without_recorded_times(tmp_path):
    one_error(
        run("--trace-speedup", "2"), "--trace-speedup 2: no effect with --workload distribution"
    )
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "aggregate_rate: 5\nnum_requests: 3\nclients:\n"
        "  - {id: a, rate_fraction: 1, arrival: {process: poisson},\n"
        "     input_distribution: {type: constant, params: {value: 9}},\n"
        "     output_distribution: {type: constant, params: {value: 2}}}\n"
    )
    one_error(run("--workload-spec", str(spec), "--trace-speedup", "2"),
              "--trace-speedup 2: no effect with --workload-spec", "--aggregate-rate")  # fmt: skip
    untimed = tmp_path / "u.csv"
    untimed.write_text("prompt_len,output_len\n10,2\n")
    one_error(
        run("--workload", "traces", "--workload-traces-filepath", str(untimed),
            "--trace-speedup", "0.5"),
        "no effect with the length trace", "no time column",
    )  # fmt: skip
    # the default is accepted anywhere (a results file repeats every option)
    assert run("--trace-speedup", "1", "--num-requests", "2").exit_code == 0


def test_speedup_past_the_clock_is_an_error(tmp_path):
    path = _trace(tmp_path, "mooncake")
    with pytest.raises(WorkloadError, match="past the simulator's clock"):
        list(open_trace(path, "mooncake", block_size=32, speedup=1e-12))


def test_rate_warning_points_at_the_speedup(tmp_path):
    path = _trace(tmp_path, "mooncake")
    result = run("--workload", "traces", "--workload-traces-filepath", str(path),
                 "--trace-block-size", "32", "--rate", "7")  # fmt: skip
    assert result.exit_code == 0
    assert "--trace-speedup" in result.stderr
