"""``blis workload describe``: keys, formats, and the unlimited prefix cache hit rate."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from inference_sim.cli.main import cli
from inference_sim.workload import describe_workload

SHARED = Path(
    os.environ.get("INFERENCE_SIM_SHARED", Path(__file__).resolve().parents[2] / "shared")
)
KEYS = [
    "requests",
    "duration_s",
    "input_tokens_mean",
    "output_tokens_mean",
    "unlimited_prefix_cache_hit_rate",
]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["workload", "describe", *args])


def write_mooncake(path: Path, rows: list[tuple[int, int, list[int]]]) -> Path:
    path.write_text(
        "".join(
            json.dumps({"timestamp": t, "input_length": n, "output_length": 7, "hash_ids": ids})
            + "\n"
            for t, n, ids in rows
        )
    )
    return path


def test_json_keys_and_mooncake_ratio_from_hash_ids(tmp_path):
    # prompt tokens 1100 + 1500 + 600 = 3200; hit: [1, 2] of the second (1024 tokens) and
    # [1] of the third (512), counted in tokens (the blocks were 3 of 8)
    path = write_mooncake(
        tmp_path / "m.jsonl",
        [(0, 1100, [1, 2, 3]), (1000, 1500, [1, 2, 4]), (3000, 600, [1, 5])],
    )
    result = invoke(str(path), "--json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert list(d)[:5] == KEYS
    assert d["requests"] == 3
    assert d["duration_s"] == 3.0
    assert d["input_tokens_mean"] == pytest.approx((1100 + 1500 + 600) / 3)
    assert d["output_tokens_mean"] == 7
    assert d["unlimited_prefix_cache_hit_rate"] == pytest.approx(1536 / 3200)
    assert (d["cached_prompt_tokens"], d["prompt_tokens"]) == (1536, 3200)
    assert d["format"] == "mooncake" and d["block_size"] == 512 and d["kv_block_size"] == 16


def test_block_size_option_sets_the_hash_block_size(tmp_path):
    path = write_mooncake(tmp_path / "m.jsonl", [(0, 64, [1, 2]), (5, 48, [1, 3])])
    # the second prompt hits hash id 1 (32 tokens) of its 48
    d = describe_workload(path, block_size=32)
    assert d["unlimited_prefix_cache_hit_rate"] == pytest.approx(32 / (64 + 48))
    result = invoke(str(path))  # 512-token blocks do not fit these lengths
    assert result.exit_code == 2
    assert "--block-size" in result.stderr and "--trace-block-size" not in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_spec_text_output_and_reuse(tmp_path):
    spec = {
        "seed": 1,
        "aggregate_rate": 100,
        "num_requests": 100,
        "clients": [
            {
                "id": "a",
                "rate_fraction": 1,
                "arrival": {"process": "poisson"},
                "prefix_group": "g",
                "prefix_length": 64,
                "input_distribution": {"type": "constant", "params": {"value": 8}},
                "output_distribution": {"type": "constant", "params": {"value": 4}},
            }
        ],
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    d = describe_workload(path)
    assert d["requests"] == 100 and d["format"] == "spec"
    assert d["input_tokens_mean"] == 72
    # 72-token prompts: the shared 64-token prefix (4 full 16-token blocks) hits in all
    # but the first; the 8 tokens after it never do
    assert d["unlimited_prefix_cache_hit_rate"] == pytest.approx(99 * 64 / 7200)
    text = invoke(str(path), "--block-size", "32").stdout
    assert "requests: 100" in text and "unlimited prefix cache hit rate: 0.8800" in text
    assert "rate over time:" in text


def test_trace_v2_and_reference_csv(tmp_path):
    csv_path = tmp_path / "ref.csv"
    tokens = list(range(32))
    csv_path.write_text(
        "arrival_time,request_id,model,p,d\n"
        f'0,a,,"{tokens}","[1]"\n'
        f'0.5,b,,"{[*tokens, 99]}","[1]"\n'
    )
    d = describe_workload(csv_path)
    assert (d["format"], d["requests"], d["duration_s"]) == ("csv", 2, 0.5)
    # the second prompt (33 tokens) hits both 16-token blocks of the first
    assert d["unlimited_prefix_cache_hit_rate"] == pytest.approx(32 / 65)


def test_bad_input_is_one_line(tmp_path):
    result = invoke(str(tmp_path / "missing.csv"))
    assert result.exit_code == 2 and "file not found" in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("aggregate_rate: 1\nclients: [{rate_fraction: -1}]\n")
    result = invoke(str(bad))
    assert result.exit_code == 2
    assert "clients[0].rate_fraction must be positive" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_another_tools_header_is_named_as_run_names_it(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("time,ctx,gen\n0.1,100,20\n0.2,50,10\n")
    result = invoke(str(trace))
    assert result.exit_code == 2
    assert "expected at least 5 columns" in result.stderr
    assert "its header (time, ctx, gen) matches no known trace format" in result.stderr
    assert "(--format)" in result.stderr and "--trace-format" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # a format the user named is the user's choice: the reader's error alone
    named = invoke("--format", "csv", str(trace))
    assert named.exit_code == 2 and "Known formats" not in named.stderr


@pytest.mark.skipif(not (SHARED / "workloads").is_dir(), reason="shared traces absent")
def test_published_mooncake_trace():
    d = describe_workload(SHARED / "workloads" / "mooncake-fast25" / "conversation_trace.jsonl")
    assert d["requests"] == 12031
    assert d["duration_s"] == pytest.approx(3537, rel=0.01)
    assert d["input_tokens_mean"] == pytest.approx(12000, rel=0.05)
    # what a replay with an unlimited cache (--total-kv-blocks 20000000) reports as
    # prefix_cache_hit_rate: 0.373617 (docs/workloads.md)
    assert d["unlimited_prefix_cache_hit_rate"] == pytest.approx(0.373617, abs=1e-6)
