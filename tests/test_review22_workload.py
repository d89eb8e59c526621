"""Review 22, workload area: each test pins one fixed defect (see the docstrings)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_sim import simulate
from inference_sim.cli.main import cli
from inference_sim.core.rng import RandomStreams
from inference_sim.workload import (
    WorkloadError,
    detect_format,
    export_trace_v2,
    generate_spec_requests,
    open_trace,
    parse_workload_spec,
)
from inference_sim.workload.describe import describe_workload
from inference_sim.workload.distribution import inter_arrival_ticks
from inference_sim.workload.generate import arrival_times
from inference_sim.workload.lengthtrace import iter_length_records
from inference_sim.workload.samplers import (
    DIST_TYPES,
    LengthSampler,
    UnitGaps,
    make_length_sampler,
)

MODEL = "meta-llama/llama-3.1-8b-instruct"
COEFFS = {"alpha_coeffs": "0,0,0", "beta_coeffs": "1000,1,1"}
DOCS = Path(__file__).resolve().parent.parent / "docs"


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _replay(path: str, **kw: Any) -> list[Any]:
    return list(open_trace(path, streams=RandomStreams(5), **kw))


# --- 1. JSON lines: keys that appear only on later lines are columns too ------------------


def test_jsonl_key_first_seen_on_a_later_line_is_read(tmp_path):
    """An ``adapter`` (or session, prefix group) only on line 2 used to be ignored: the
    columns came from the first object alone, and the run went on the base model."""
    rows = [
        {"prompt_len": 64, "output_len": 5},
        {"prompt_len": 64, "output_len": 5, "adapter": "x", "session_id": "s"},
        {"prompt_len": 90, "output_len": 5, "session_id": "s"},
        {"prompt_len": 80, "output_len": 5, "prefix_group": "g", "prefix_len": 32},
        {"prompt_len": 70, "output_len": 5, "prefix_group": "g", "prefix_len": 32},
    ]
    path = _write(tmp_path, "a.jsonl", _jsonl(rows))
    reqs = _replay(path)
    assert [r.adapter for r in reqs] == ["", "x", "", "", ""]
    # the session's second turn resends the first turn's prompt and answer
    history = np.concatenate((reqs[1].input_tokens, reqs[1].output_tokens))
    assert np.array_equal(reqs[2].input_tokens[:69], history)
    assert np.array_equal(reqs[3].input_tokens[:32], reqs[4].input_tokens[:32])
    # the same rule for in-memory rows (simulate(trace=[...]))
    mem = list(iter_length_records(rows, streams=RandomStreams(5)))
    assert [r.adapter for r in mem] == ["", "x", "", "", ""]


def test_jsonl_adapter_on_line_two_reaches_the_run(tmp_path):
    """The reviewer's repro: exit 0 on the base model before; now the adapter is seen."""
    text = '{"prompt_len":512,"output_len":5}\n{"prompt_len":512,"output_len":5,"adapter":"x"}\n'
    path = _write(tmp_path, "a2.jsonl", text)
    args = ["run", "--model", MODEL, "--workload", "traces", "--workload-traces-filepath", path]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "adapter 'x'" in result.stderr and len(result.stderr.strip().splitlines()) == 1


LEN = {"prompt_len": 5, "output_len": 1}


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        (
            [
                {"prompt_len": 5, "output_len": 1},
                {"prompt_len": 5, "output_len": 1, "timestamp": 1},
            ],
            "line 2: key 'timestamp' gives an arrival time, but the earlier lines have none",
        ),
        (
            [
                {"prompt_len": 5, "output_len": 1, "timestamp": 0},
                {"prompt_len": 5, "output_len": 1},
            ],
            "line 2: no timestamp",
        ),
        (
            [{"prompt_len": 5, "output_len": 1}, {"input_len": 5, "output_len": 1}],
            "line 2: no prompt_len (it names 'input_len'",
        ),
        (
            [
                {"prompt_len": 5, "output_len": 1},
                {"num_prefill_tokens": 5, "prompt_len": 5, "output_len": 1},
            ],
            "line 2: key 'num_prefill_tokens' and key 'prompt_len' (earlier lines) both name",
        ),
        (
            [
                {"prompt_len": 5, "output_len": 1},
                {"prompt_len": 5, "output_len": 1, "prefix_group": "g"},
            ],
            "line 2: prefix_group 'g' needs a prefix length",
        ),
    ],
)
def test_jsonl_inconsistent_lines_fail_with_one_line(tmp_path, rows, needle):
    path = _write(tmp_path, "bad.jsonl", _jsonl(rows))
    with pytest.raises(WorkloadError) as info:
        _replay(path)
    assert needle in str(info.value) and "\n" not in str(info.value)


# --- 2. a length trace with prefix groups exports a trace v2 that replays exactly ---------


def test_length_trace_with_prefix_groups_export_replays_identically(tmp_path):
    """The export wrote prefix_length 64 beside input_token_ids, which the reader refuses
    ("input_token_ids gives the whole prompt; prefix_length ... must then be 0")."""
    text = "arrived_at,prompt_len,output_len,prefix_group,prefix_len,session_id\n"
    text += "0,200,10,g,64,\n0.1,300,10,g,64,\n0.2,120,8,,,s\n0.3,250,6,,,s\n0.4,96,4,g,64,\n"
    source = _write(tmp_path, "grp.csv", text)
    trace = tmp_path / "gx.csv"
    run = {"model": MODEL, "workload": "traces", **COEFFS}
    first = simulate(workload_traces_filepath=source, export_trace=str(trace), **run)
    replay = simulate(workload_traces_filepath=str(trace), **{**run, "seed": 123})
    assert json.dumps(list(replay.records)) == json.dumps(list(first.records))
    skip = ("config",)
    assert {k: v for k, v in replay.summary.items() if k not in skip} == {
        k: v for k, v in first.summary.items() if k not in skip
    }
    assert first.summary["prefix_cache_hit_rate"] > 0  # the group prefix is shared
    header = trace.read_text().splitlines()[0].split(",")
    cells = [row.split(",") for row in trace.read_text().splitlines()[1:]]
    plen = header.index("prefix_length")
    assert {row[plen] for row in cells} == {"0"}


# --- 3. every sampler: one call of n == several calls summing to n ------------------------

SAMPLER_PARAMS: list[tuple[str, dict[Any, Any]]] = [
    ("constant", {"value": 7}),
    ("gaussian", {"mean": 100, "std_dev": 30, "min": 1, "max": 400}),
    ("gaussian", {"mean": 5, "std_dev": 1, "min": 5, "max": 5}),
    ("exponential", {"mean": 80}),
    ("exponential", {"mean": 80, "min": 10, "max": 200}),
    ("pareto_lognormal", {"alpha": 1.5, "xm": 50, "mu": 5, "sigma": 1, "mix_weight": 0.3}),
    (
        "pareto_lognormal",
        {"alpha": 0.8, "xm": 20, "mu": 4, "sigma": 2, "mix_weight": 0.6, "min": 5, "max": 900},
    ),
    ("empirical", {10: 1, 20: 2, 30: 1}),
    ("empirical", {64: 1}),
]
SAMPLERS: list[LengthSampler | UnitGaps] = [
    *(make_length_sampler(t, p, "test") for t, p in SAMPLER_PARAMS),
    *(UnitGaps(p, cv) for p, cv in (("poisson", None), ("gamma", 2.5), ("weibull", 0.7))),
    UnitGaps("constant", None),
]


def _draw(sampler: LengthSampler | UnitGaps, rng: np.random.Generator, n: int) -> np.ndarray:
    if isinstance(sampler, UnitGaps):
        return sampler.draw(rng, n)
    return sampler.sample(rng, n)


def test_the_property_covers_every_length_law():
    assert {t for t, _ in SAMPLER_PARAMS} == set(DIST_TYPES)


@settings(max_examples=60, deadline=None)
@given(
    which=st.integers(0, len(SAMPLERS) - 1),
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=6),
    seed=st.integers(0, 2**32 - 1),
)
def test_sampling_does_not_depend_on_how_the_draws_are_split(which, sizes, seed):
    """pareto_lognormal drew n picks, then n Pareto, then n normal values: sample(rng, 6)
    differed from two calls of 3, so lengths before the horizon moved with --horizon."""
    sampler = SAMPLERS[which]
    whole = _draw(sampler, np.random.default_rng(seed), sum(sizes))
    rng = np.random.default_rng(seed)
    parts = [_draw(sampler, rng, n) for n in sizes]
    assert np.array_equal(whole, np.concatenate(parts))


def test_pareto_lognormal_one_call_of_six_equals_two_of_three():
    sampler = make_length_sampler("pareto_lognormal", dict(SAMPLER_PARAMS[5][1]), "test")
    rng = np.random.default_rng(1)
    split = np.concatenate([sampler.sample(rng, 3), sampler.sample(rng, 3)])
    assert np.array_equal(sampler.sample(np.random.default_rng(1), 6), split)


def test_pareto_lognormal_lengths_do_not_move_with_the_horizon():
    doc = {
        "seed": 3,
        "aggregate_rate": 20,
        "clients": [
            {
                "id": "c",
                "rate_fraction": 1,
                "arrival": {"process": "poisson"},
                "input_distribution": {"type": "pareto_lognormal", "params": SAMPLER_PARAMS[5][1]},
                "output_distribution": {"type": "constant", "params": {"value": 4}},
            }
        ],
    }
    spec = parse_workload_spec(doc)
    long = generate_spec_requests(spec, horizon=20_000_000)
    short = generate_spec_requests(spec, horizon=5_000_000)
    assert 0 < len(short) < len(long)
    assert [r.num_prompt_tokens for r in short] == [r.num_prompt_tokens for r in long[: len(short)]]


# --- 4. inference_perf load_type constant: one evenly spaced stream ------------------------


def _inference_perf(stages: list[dict[str, float]], load_type: str) -> Any:
    return parse_workload_spec(
        {
            "seed": 3,
            "inference_perf": {
                "stages": stages,
                "shared_prefix": {
                    "num_unique_system_prompts": 9,
                    "num_users_per_system_prompt": 5,
                    "system_prompt_len": 100,
                    "question_len": 50,
                    "output_len": 20,
                },
                "load_type": load_type,
            },
        }
    )


def test_inference_perf_constant_load_is_one_evenly_spaced_stream():
    """45 clients each at rate/45 all starting together gave 90 requests at 2 ticks
    (45 at t = 1 s, 45 at t = 2 s) for rate 45 over 3 s. (Review 24: this evenly spaced
    stream is ``load_type: evenly_spaced`` now; ``constant`` is inference-perf's.)"""
    reqs = generate_spec_requests(_inference_perf([{"rate": 45, "duration": 3}], "evenly_spaced"))
    times = [r.arrival_time for r in reqs]
    # arrival k at k/45 s, k = 1 .. 134 (k = 135 is at the stage end: nothing at or after)
    assert len(reqs) == 134
    assert set(np.diff(times).tolist()) <= {22_222, 22_223}
    assert times[0] == 22_222
    clients = [r.metadata["client_id"] for r in reqs]
    assert clients[:2] == ["prompt-0-user-0", "prompt-0-user-1"]
    assert clients[44] == "prompt-8-user-4" and clients[45] == "prompt-0-user-0"


def test_inference_perf_constant_matches_a_single_constant_process_over_stages():
    stages = [{"rate": 8, "duration": 2}, {"rate": 30, "duration": 1}]
    reqs = generate_spec_requests(_inference_perf(stages, "evenly_spaced"))
    one = [(0, 2_000_000, 8e-6), (2_000_000, 3_000_000, 30e-6)]
    expected = np.concatenate(list(arrival_times(UnitGaps("constant", None), None, stages=one)))
    assert [r.arrival_time for r in reqs] == expected.tolist()
    assert len(reqs) == 8 * 2 + 30 - 1


def test_inference_perf_poisson_keeps_its_law():
    reqs = generate_spec_requests(_inference_perf([{"rate": 45, "duration": 40}], "poisson"))
    gaps = np.diff([r.arrival_time for r in reqs]) / 1e6
    assert abs(len(reqs) - 1800) < 4 * 1800**0.5
    assert gaps.mean() == pytest.approx(1 / 45, rel=0.1)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.1)  # exponential gaps


# --- 5. every trace format stops at the horizon, a row exactly at it included -------------


def _format_files(tmp_path: Path) -> dict[str, str]:
    lengths = _write(
        tmp_path, "len.csv", "arrived_at,prompt_len,output_len\n0,30,2\n1,30,2\n2,30,2\n"
    )
    mooncake = _write(
        tmp_path,
        "mc.jsonl",
        _jsonl(
            [
                {"timestamp": t, "input_length": 30, "output_length": 2, "hash_ids": [i]}
                for i, t in enumerate((0, 1000, 2000))
            ]
        ),
    )
    azure = _write(
        tmp_path,
        "az.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.0,30,2\n"
        "2023-11-16 18:15:47.0,30,2\n2023-11-16 18:15:48.0,30,2\n",
    )
    v2 = str(tmp_path / "v2.csv")
    export_trace_v2(_replay(lengths), v2)
    ref = _write(
        tmp_path,
        "ref.csv",
        "arrival_s,id,model,input_tokens,output_tokens\n"
        '0,a,,"[1,2]","[3]"\n1,b,,"[1,2]","[3]"\n2,c,,"[1,2]","[3]"\n',
    )
    return {"lengths": lengths, "mooncake": mooncake, "azure": azure, "v2": v2, "csv": ref}


@pytest.mark.parametrize("fmt", ["lengths", "mooncake", "azure", "v2", "csv"])
def test_every_format_stops_after_the_horizon_keeping_a_row_at_it(tmp_path, fmt):
    """Mooncake, Azure and trace v2 ignored the horizon (the simulator's look-ahead read
    one more row, which --export-trace wrote); the length trace dropped a row AT it."""
    path = _format_files(tmp_path)[fmt]
    assert detect_format(path) == fmt
    assert [r.arrival_time for r in _replay(path, horizon=1_000_000)] == [0, 1_000_000]
    assert [r.arrival_time for r in _replay(path, horizon=999_999)] == [0]


@pytest.mark.parametrize("fmt", ["mooncake", "azure", "v2", "lengths"])
def test_export_of_a_horizon_bounded_replay_holds_only_injected_requests(tmp_path, fmt):
    path = _format_files(tmp_path)[fmt]
    out = tmp_path / "x.csv"
    res = simulate(
        model=MODEL,
        workload="traces",
        workload_traces_filepath=path,
        horizon=1_500_000,
        export_trace=str(out),
        **COEFFS,
    )
    rows = out.read_text().splitlines()[1:]
    assert res.summary["injected_requests"] == len(rows) == 2


# --- 6. calendar times are checked ---------------------------------------------------------


@pytest.mark.parametrize(
    ("stamp", "why"),
    [
        ("2023-11-16 25:15:50.99", "hour must be in 0..23"),
        ("2023-11-16 18:99:50.99", "minute must be in 0..59"),
        ("2023-11-16 18:15:99.99", "second must be in 0..59"),
        ("2023-02-30 18:15:50.99", "day is out of range for month"),
    ],
)
@pytest.mark.parametrize("fmt", ["azure", "lengths"])
def test_invalid_calendar_times_are_refused(tmp_path, stamp, why, fmt):
    header = {
        "azure": "TIMESTAMP,ContextTokens,GeneratedTokens",
        "lengths": "timestamp,prompt_len,output_len",
    }[fmt]
    path = _write(tmp_path, "t.csv", f"{header}\n2023-11-16 18:15:46.68,374,44\n{stamp},10,10\n")
    with pytest.raises(WorkloadError) as info:
        _replay(path)
    text = str(info.value)
    column = "TIMESTAMP" if fmt == "azure" else "timestamp"
    assert f"line 3: {column}: not a valid date and time" in text and why in text


# --- 7. Mooncake field names without hash_ids: milliseconds, not seconds -------------------


def test_mooncake_without_hash_ids_is_read_in_milliseconds(tmp_path):
    """It was read as a length trace, its ms timestamps taken as seconds (1500 s)."""
    rows = [
        {"timestamp": 0, "input_length": 600, "output_length": 10},
        {"timestamp": 1500, "input_length": 600, "output_length": 10},
    ]
    path = _write(tmp_path, "m.jsonl", _jsonl(rows))
    assert detect_format(path) == "mooncake"
    reqs = _replay(path)
    assert [r.arrival_time for r in reqs] == [0, 1_500_000]
    assert reqs[0].input_tokens[:16].tolist() != reqs[1].input_tokens[:16].tolist()
    assert describe_workload(path)["duration_s"] == pytest.approx(1.5)
    # forced as a length trace it is seconds, as asked
    assert [r.arrival_time for r in _replay(path, fmt="lengths")] == [0, 1_500_000_000]


def test_mooncake_lines_must_agree_on_hash_ids(tmp_path):
    rows = [
        {"timestamp": 0, "input_length": 6, "output_length": 1},
        {"timestamp": 1, "input_length": 6, "output_length": 1, "hash_ids": [1]},
    ]
    path = _write(tmp_path, "m.jsonl", _jsonl(rows))
    with pytest.raises(WorkloadError, match=r"line 2: has hash_ids, but line 1 has no hash_ids"):
        _replay(path, block_size=16)


def test_mooncake_without_hash_ids_export_replays_identically(tmp_path):
    rows = [
        {"timestamp": 40 * i, "input_length": 100 + 7 * i, "output_length": 3 + i} for i in range(8)
    ]
    source = _write(tmp_path, "m.jsonl", _jsonl(rows))
    trace = tmp_path / "e.csv"
    run = {"model": MODEL, "workload": "traces", **COEFFS}
    first = simulate(workload_traces_filepath=source, export_trace=str(trace), **run)
    replay = simulate(workload_traces_filepath=str(trace), **run)
    assert list(replay.records) == list(first.records)
    assert first.records[-1]["arrived_at"] == pytest.approx(0.28)


# --- 8. documentation and messages ---------------------------------------------------------


def test_describe_names_its_own_block_size_flag(tmp_path):
    path = _write(
        tmp_path,
        "t.jsonl",
        '{"timestamp":0,"input_length":600,"output_length":10,"hash_ids":[1,2]}\n',
    )
    result = CliRunner().invoke(cli, ["workload", "describe", path, "--block-size", "16"])
    assert result.exit_code == 2
    assert "is --block-size right?" in result.stderr and "--trace-block-size" not in result.stderr


def test_docs_give_the_constant_spacing_formula_the_code_uses():
    text = (DOCS / "workloads.md").read_text(encoding="utf-8")
    assert "trunc(1e6 / rate)" not in text
    assert text.count("trunc(1 / (rate / 1e6))") >= 3
    assert inter_arrival_ticks(10.0) == 99_999  # 1e6 / 10 would give 100 000


def test_cli_doc_lists_arrival_cv_as_warned_not_refused(sim_log):
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    refused, warned = text.split("Refused (exit 2):", 1)[1].split("Warned (the run goes on", 1)
    assert "arrival.cv" not in refused and "arrival.cv" in warned.split("```")[0]
    doc = yaml.safe_load(
        "aggregate_rate: 5\nnum_requests: 3\nclients: [{rate_fraction: 1, "
        "arrival: {process: poisson, cv: 2}, input_distribution: {type: constant, params: "
        "{value: 5}}, output_distribution: {type: constant, params: {value: 5}}}]"
    )
    spec = parse_workload_spec(doc)  # accepted (no error), with a (held-back) warning
    assert any("arrival.cv 2 has no effect with process poisson" in w for w in spec.warnings)
