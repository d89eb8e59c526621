"""Trace v2: export, strict load, replay, and the generate -> export -> replay round trip."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from inference_sim import simulate
from inference_sim.config.errors import ConfigError
from inference_sim.kv.manager import KVCacheManager
from inference_sim.workload import (
    WorkloadError,
    export_trace_v2,
    generate_spec_requests,
    iter_trace_v2,
    parse_workload_spec,
)
from inference_sim.workload.trace_v2 import (
    COLUMNS,
    EXTRA_COLUMNS,
    LORA_COLUMNS,
    TOKEN_COLUMNS,
    read_trace_v2_header,
)

MODEL = "meta-llama/llama-3.1-8b-instruct"
COEFFS = {"alpha_coeffs": "0,0,0", "beta_coeffs": "1000,1,1"}

RICH_SPEC: dict[str, Any] = {
    "version": "2",
    "seed": 5,
    "aggregate_rate": 40.0,
    "num_requests": 240,
    "clients": [
        {
            "id": "chat",
            "tenant_id": "t-chat",
            "slo_class": "critical",
            "streaming": True,
            "rate_fraction": 2,
            "arrival": {"process": "gamma", "cv": 2.0},
            "prefix_group": "system",
            "prefix_length": 64,
            "input_distribution": {"type": "exponential", "params": {"mean": 60}},
            "output_distribution": {"type": "constant", "params": {"value": 12}},
        },
        {
            "id": "sessions",
            "tenant_id": "t-sess",
            "rate_fraction": 1,
            "arrival": {"process": "poisson"},
            "prefix_group": "system",
            "input_distribution": {
                "type": "gaussian",
                "params": {"mean": 40, "std_dev": 10, "min": 20, "max": 80},
            },
            "output_distribution": {"type": "constant", "params": {"value": 20}},
            "reasoning": {
                "reason_ratio_distribution": {"type": "constant", "params": {"value": 25}},
                "multi_turn": {
                    "max_rounds": 3,
                    "think_time_us": 200_000,
                    "context_growth": "accumulate",
                },
            },
        },
        {
            "id": "vision",
            "slo_class": "batch",
            "model": "other-model",
            "rate_fraction": 1,
            "arrival": {"process": "weibull", "cv": 0.7},
            "input_distribution": {"type": "constant", "params": {"value": 1}},
            "output_distribution": {"type": "exponential", "params": {"mean": 8}},
            "multimodal": {
                "text_distribution": {"type": "constant", "params": {"value": 30}},
                "image_distribution": {"type": "constant", "params": {"value": 64}},
                "image_count_distribution": {"type": "empirical", "params": {0: 1, 2: 1}},
            },
        },
    ],
}


def write_spec(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_round_trip_generate_export_replay_gives_identical_results(tmp_path):
    spec = write_spec(tmp_path, RICH_SPEC)
    trace = tmp_path / "out.csv"
    first = simulate(model=MODEL, workload_spec=str(spec), export_trace=str(trace), **COEFFS)
    assert (tmp_path / "out.yaml").exists()
    replay = simulate(
        model=MODEL, workload="traces", workload_traces_filepath=str(trace), seed=77, **COEFFS
    )
    assert len(first.records) == 240
    assert replay.records == first.records
    for key in ("completed_requests", "e2e_mean_ms", "ttft_p99_ms", "prefix_cache_hit_rate"):
        assert replay.summary[key] == first.summary[key], key
    assert first.summary["prefix_cache_hit_rate"] > 0.2  # prefixes and sessions are shared


def test_round_trip_of_inference_perf_cycle_mode(tmp_path):
    doc = {
        "seed": 2,
        "inference_perf": {
            "stages": [{"rate": 40, "duration": 3}],
            "shared_prefix": {
                "num_unique_system_prompts": 2,
                "num_users_per_system_prompt": 2,
                "system_prompt_len": 48,
                "question_len": 40,
                "output_len": 6,
                "enable_multi_turn_chat": True,
            },
            "cycle_prompts": True,
        },
    }
    spec = write_spec(tmp_path, doc)
    trace = tmp_path / "cyc.csv"
    first = simulate(model=MODEL, workload_spec=str(spec), export_trace=str(trace), **COEFFS)
    replay = simulate(model=MODEL, workload="traces", workload_traces_filepath=str(trace), **COEFFS)
    assert replay.records == first.records
    assert replay.summary["prefix_cache_hit_rate"] == first.summary["prefix_cache_hit_rate"] > 0.5
    assert [s["rate"] for s in first.summary["stages"]] == [40.0]


def test_export_columns_header_and_values(tmp_path):
    reqs = generate_spec_requests(parse_workload_spec(RICH_SPEC), max_requests=60)
    n = export_trace_v2(reqs, tmp_path / "t.csv")
    assert n == 60
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0].split(",") == [*COLUMNS, *EXTRA_COLUMNS, *TOKEN_COLUMNS, *LORA_COLUMNS]
    assert all(line.endswith(",,,,") for line in lines[1:])  # no hash or token ids
    header = read_trace_v2_header(tmp_path / "t.yaml")
    assert (header.trace_version, header.time_unit, header.mode) == (2, "microseconds", "generated")
    back = list(iter_trace_v2(tmp_path / "t.yaml"))  # either file of the pair works
    assert [r.request_id for r in back] == [r.request_id for r in reqs]
    for a, b in zip(reqs, back, strict=True):
        assert (a.arrival_time, a.num_prompt_tokens, a.num_output_tokens) == (
            b.arrival_time,
            b.num_prompt_tokens,
            b.num_output_tokens,
        )
        assert (a.slo_class, a.tenant_id, a.model) == (b.slo_class, b.tenant_id, b.model)
        for key in ("client_id", "session_id", "round_index", "image_tokens", "prefix_length"):
            assert (a.metadata.get(key) or 0) == (b.metadata.get(key) or 0), key


def test_replay_shares_group_prefix_and_session_context(tmp_path):
    reqs = generate_spec_requests(parse_workload_spec(RICH_SPEC), max_requests=120)
    export_trace_v2(reqs, tmp_path / "t.csv")
    back = list(iter_trace_v2(tmp_path / "t.csv", seed=1))
    chat = [r for r in back if r.metadata.get("client_id") == "chat"]
    assert all(np.array_equal(r.input_tokens[:64], chat[0].input_tokens[:64]) for r in chat)
    assert not np.array_equal(chat[0].input_tokens[64:80], chat[1].input_tokens[64:80])
    by_session: dict[str, list] = {}
    for r in back:
        if "session_id" in r.metadata:
            by_session.setdefault(r.metadata["session_id"], []).append(r)
    checked = 0
    for rounds in by_session.values():
        for prev, cur in itertools.pairwise(rounds):
            ctx = np.concatenate((prev.input_tokens, prev.output_tokens))
            assert np.array_equal(cur.input_tokens[: len(ctx)], ctx)
            checked += 1
    assert checked > 5
    again = list(iter_trace_v2(tmp_path / "t.csv", seed=1))
    assert all(
        np.array_equal(a.input_tokens, b.input_tokens) for a, b in zip(back, again, strict=True)
    )


def test_reference_file_without_our_columns_keeps_prefix_inside_the_prompt(tmp_path):
    path = tmp_path / "ref.csv"
    rows = [
        "7,c,t,standard,,0,grp,true,80,3,0,0,0,0,0,100,100,0,0,0,ok, ",
        "8,c,t,standard,,0,grp,false,60,2,0,0,0,0,0.5,200,200,0,0,0,ok,",
    ]
    path.write_text(",".join(COLUMNS) + "\n" + "\n".join(rows) + "\n")
    a, b = iter_trace_v2(path)
    assert (a.request_id, a.num_prompt_tokens, a.arrival_time) == ("request_7", 80, 100)
    assert np.array_equal(a.input_tokens[:50], b.input_tokens[:50])
    assert not np.array_equal(a.input_tokens[50:60], b.input_tokens[50:60])
    assert b.metadata["reason_ratio"] == 0.5 and a.metadata["streaming"] is True


def _row(**over: Any) -> str:
    v = dict.fromkeys(COLUMNS, "0")
    v.update(client_id="", tenant_id="", slo_class="", session_id="", prefix_group="")
    v.update(streaming="false", input_tokens="10", status="ok", error_message="")
    v.update(over)
    return ",".join(str(v[c]) for c in COLUMNS)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (_row() + ",x", "the header has 22"),
        ("1,2,3", "CSV row has 3 columns, expected 22"),
        (_row(input_tokens="ten"), 'parsing input_tokens "ten"'),
        (_row(status="weird"), "status must be one of ok, error, timeout"),
        (_row(streaming="maybe"), 'parsing streaming "maybe"'),
        (_row(input_tokens="-1"), "input_tokens must be >= 0"),
        (_row() + "\n" + _row(), "request_id 0 appears twice"),
        (
            _row(request_id=1, arrival_time_us=50) + "\n" + _row(arrival_time_us=10),
            "rows must be sorted",
        ),
    ],
)
def test_bad_rows_fail_with_one_line(tmp_path, body, needle):
    path = tmp_path / "bad.csv"
    path.write_text(",".join(COLUMNS) + "\n" + body + "\n")
    with pytest.raises(WorkloadError) as info:
        list(iter_trace_v2(path))
    assert needle in str(info.value)
    assert "line" in str(info.value) and "\n" not in str(info.value)


def test_bad_header_and_missing_columns(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("request_id,client_id\n1,2\n")
    with pytest.raises(WorkloadError, match="missing columns: tenant_id"):
        list(iter_trace_v2(path))
    (tmp_path / "h.yaml").write_text("trace_version: 2\nmode: generated\nshoe: 1\n")
    path.write_text(",".join(COLUMNS) + "\n" + _row() + "\n")
    with pytest.raises(WorkloadError, match='unknown field "shoe"'):
        list(iter_trace_v2(path))
    (tmp_path / "h.yaml").write_text("trace_version: 3\n")
    with pytest.raises(WorkloadError, match="trace_version must be 2"):
        list(iter_trace_v2(path))


def test_context_without_previous_round_is_an_error(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(",".join((*COLUMNS, *EXTRA_COLUMNS)) + "\n" + _row(session_id="s1") + ",,0,5\n")
    with pytest.raises(WorkloadError, match="no earlier request of session 's1'"):
        list(iter_trace_v2(path))


def test_export_to_a_missing_folder_fails_before_the_run(tmp_path):
    spec = write_spec(tmp_path, RICH_SPEC)
    # Every output path is checked before the run (config/outputs.py): a ConfigError.
    with pytest.raises(ConfigError, match="--export-trace"):
        simulate(
            model=MODEL,
            workload_spec=str(spec),
            export_trace=str(tmp_path / "nope" / "t.csv"),
            **COEFFS,
        )


def test_distribution_workload_export_keeps_its_shared_prefix(tmp_path):
    trace = tmp_path / "d.csv"
    first = simulate(
        model=MODEL, num_requests=40, rate=50, prefix_tokens=64, export_trace=str(trace), **COEFFS
    )
    replay = simulate(model=MODEL, workload="traces", workload_traces_filepath=str(trace), **COEFFS)
    assert replay.records == first.records
    assert first.summary["prefix_cache_hit_rate"] > 0


# --- replays of Mooncake and reference CSV traces, exported and replayed ------------------

# Hash ids with shared leading runs, 40-token hash blocks (not a multiple of the 16-token KV
# block) and partial last blocks, so the cache sees whole, split and partial shared blocks.
MOONCAKE_IDS = [
    [1, 2, 3],
    [1, 2, 4, 5],
    [1, 2, 3, 6],
    [7, 8],
    [1, 9],
    [7, 8, 10, 11],
    [1, 2, 3, 6, 12],
    [13],
    [1, 2, 4, 5, 14],
    [7, 8, 10],
]


def _write_mooncake(path: Path, block: int = 40, gap_ms: float = 15) -> Path:
    rows = []
    for i, ids in enumerate(MOONCAKE_IDS):
        n_in = block * len(ids) - (i * 7) % block  # a partial last block most of the time
        rows.append(
            {"timestamp": gap_ms * i, "input_length": n_in, "output_length": 5 + i, "hash_ids": ids}
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def lookups(monkeypatch):
    """Every prefix-cache lookup of a run: (request index, cached blocks found)."""
    seen: list[tuple[int, int]] = []
    original = KVCacheManager.find_cached_prefix

    def record(self, req):
        found = original(self, req)
        seen.append((req.index, len(found)))
        return found

    monkeypatch.setattr(KVCacheManager, "find_cached_prefix", record)
    return seen


def _replay_equals(tmp_path, source: Path, lookups: list, **opts: Any) -> tuple[Any, Any]:
    """Run ``source`` with --export-trace, replay the export; both results (checked equal)."""
    trace = tmp_path / "export.csv"
    run = {"model": MODEL, "workload": "traces", **COEFFS, **opts}
    first = simulate(workload_traces_filepath=str(source), export_trace=str(trace), **run)
    first_lookups = list(lookups)
    lookups.clear()
    # Another seed and the default block size (512; --trace-block-size is refused for a
    # v2 trace): the export carries everything the prompts depend on.
    again = {**{k: v for k, v in run.items() if k != "trace_block_size"}, "seed": 123}
    replay = simulate(workload_traces_filepath=str(trace), **again)
    assert replay.records == first.records  # TTFT, E2E, ITL, scheduling delay, ...
    assert lookups == first_lookups  # the cached tokens of every admission
    strip = ("config",)
    assert {k: v for k, v in replay.summary.items() if k not in strip} == {
        k: v for k, v in first.summary.items() if k not in strip
    }
    return first, replay


def test_mooncake_replay_export_round_trips_exactly(tmp_path, lookups):
    source = _write_mooncake(tmp_path / "mc.jsonl")
    first, replay = _replay_equals(
        tmp_path, source, lookups, trace_block_size=40, total_kv_blocks=400
    )
    assert first.summary["completed_requests"] == len(MOONCAKE_IDS)
    assert replay.summary["prefix_cache_hit_rate"] == first.summary["prefix_cache_hit_rate"] > 0.2
    text = (tmp_path / "export.csv").read_text().splitlines()
    assert text[2].split(",")[-6:] == ["40", "1 2 4 5", "", "", "", ""]  # no adapter
    # Without the hash (and adapter) columns the sharing is lost (what exports did before).
    stripped = tmp_path / "stripped.csv"
    stripped.write_text(
        "\n".join(",".join(line.split(",")[:-6]) for line in text) + "\n", encoding="utf-8"
    )
    lost = simulate(
        model=MODEL, workload="traces", workload_traces_filepath=str(stripped), **COEFFS
    )
    assert lost.summary["prefix_cache_hit_rate"] == 0


def test_mooncake_replay_export_round_trips_under_kv_pressure(tmp_path, lookups):
    """A small cache: evictions and preemptions must happen identically too."""
    source = _write_mooncake(tmp_path / "mc.jsonl", gap_ms=0.5)
    first, _ = _replay_equals(tmp_path, source, lookups, trace_block_size=40, total_kv_blocks=14)
    assert first.summary["preemption_count"] > 0 and first.summary["kv_allocation_failures"] > 0
    assert first.summary["prefix_cache_hit_rate"] > 0


def test_reference_csv_replay_export_round_trips_exactly(tmp_path, lookups):
    rng = np.random.default_rng(3)
    shared = rng.integers(0, 500, 90).tolist()
    rows = ["arrival_time,request_id,model,prefill_tokens,decode_tokens"]
    prev: list[int] = []
    for i in range(40):
        kind = i % 3
        if kind == 0:  # a shared system prompt of varying length
            prompt = shared[: 20 + (i * 13) % 70] + rng.integers(0, 500, 1 + i % 9).tolist()
        elif kind == 1 and prev:  # the previous prompt and output, then more
            prompt = prev[: 1 + (i * 29) % len(prev)] + rng.integers(0, 500, 5).tolist()
        else:
            prompt = rng.integers(0, 500, 1 + (i * 17) % 60).tolist()
        output = rng.integers(0, 500, (i * 5) % 11).tolist()
        prev = prompt + output
        arrival = (40 - i) * 0.004 if i in (6, 7) else i * 0.004  # two rows out of order
        rows.append(f'{arrival!r},r{i},m{i % 2},"{prompt}","{output}"'.replace(" ", ""))
    source = tmp_path / "ref.csv"
    source.write_text("\n".join(rows) + "\n", encoding="utf-8")
    first, _ = _replay_equals(tmp_path, source, lookups, total_kv_blocks=60)
    assert first.summary["prefix_cache_hit_rate"] > 0.2
    back = list(iter_trace_v2(tmp_path / "export.csv"))
    again = {r.index: r for r in iter_trace_v2(tmp_path / "export.csv", seed=9)}
    for r in back:  # the ids themselves, whatever the seed
        assert np.array_equal(r.input_tokens, again[r.index].input_tokens)
        assert np.array_equal(r.output_tokens, again[r.index].output_tokens)


@pytest.mark.parametrize(
    ("cells", "needle"),
    [
        ("16,1 2,,", "2 hash_ids, but input_tokens 10 makes 1 blocks of 16 tokens"),
        ("0,1,,", "hash_ids and hash_block_size > 0 go together"),
        ("4,,,", "hash_ids and hash_block_size > 0 go together"),
        ("16,1 x,,", 'parsing hash_ids: "x" is not an integer'),
        (",,1 2 3,", "input_token_ids has 3 ids, input_tokens is 10"),
        (",,0 1 2 3 4 5 6 7 8 -9,", "input_token_ids must lie in [0, 2147483647], got -9"),
        (",,,1 2", "output_token_ids has 2 ids, output_tokens is 0"),
        ("16,1,0 1 2 3 4 5 6 7 8 9,", "give either hash_ids or input_token_ids"),
    ],
)
def test_bad_token_columns(tmp_path, cells, needle):
    path = tmp_path / "bad.csv"
    header = ",".join((*COLUMNS, *EXTRA_COLUMNS, *TOKEN_COLUMNS))
    path.write_text(header + "\n" + _row() + ",,0,0," + cells + "\n")
    with pytest.raises(WorkloadError) as info:
        list(iter_trace_v2(path))
    assert needle in str(info.value) and "line 2" in str(info.value)


def test_unknown_extra_columns_are_ignored(tmp_path):
    path = tmp_path / "x.csv"
    header = ",".join((*COLUMNS, "my_note", *TOKEN_COLUMNS))
    path.write_text(header + "\n" + _row() + ",hello,,,0 1 2 3 4 5 6 7 8 9,\n")
    (req,) = iter_trace_v2(path)
    assert req.input_tokens.tolist() == list(range(10))
