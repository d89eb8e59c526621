"""Length-only traces (vLLM bench / ShareGPT-derived / Vidur style; issue 20 item 7)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from inference_sim.cli.main import cli
from inference_sim.core.rng import RandomStreams
from inference_sim.workload import WorkloadError, detect_format, open_trace
from inference_sim.workload.arrivals import iter_arrival_times

MODEL = "meta-llama/llama-3.1-8b-instruct"

VIDUR = """request_id,arrived_at,num_prefill_tokens,num_decode_tokens,session_id
0,10.0,100,20,a
1,10.25,300,10,a
2,10.5,50,5,
3,11.0,200,8,b
"""


def _write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _replay(path: str, **kw):
    return list(open_trace(path, streams=RandomStreams(5), **kw))


def test_csv_with_times_and_sessions(tmp_path):
    path = _write(tmp_path, "vidur.csv", VIDUR)
    assert detect_format(path) == "lengths"
    reqs = _replay(path)
    assert [r.arrival_time for r in reqs] == [0, 250_000, 500_000, 1_000_000]
    assert [r.num_prompt_tokens for r in reqs] == [100, 300, 50, 200]
    assert [r.num_output_tokens for r in reqs] == [20, 10, 5, 8]
    a0, a1, lone, b = reqs
    # the second turn of session a resends the first turn's prompt and answer
    history = np.concatenate((a0.input_tokens, a0.output_tokens))
    assert np.array_equal(a1.input_tokens[:120], history)
    assert not np.array_equal(a1.input_tokens[120:130], a0.input_tokens[:10])
    # nothing else is shared: other rows start differently
    assert lone.input_tokens[:16].tolist() != a0.input_tokens[:16].tolist()
    assert b.input_tokens[:16].tolist() != a0.input_tokens[:16].tolist()
    # same seed, same ids
    again = _replay(path)
    assert all(
        np.array_equal(x.input_tokens, y.input_tokens) for x, y in zip(reqs, again, strict=True)
    )


def test_prefix_group_columns_share_exactly_that_prefix(tmp_path):
    text = "timestamp,prompt_len,output_len,prefix_group,prefix_len\n"
    text += "0,100,5,sys,64\n0.1,80,5,sys,64\n0.2,90,5,other,32\n0.3,70,5,,0\n"
    reqs = _replay(_write(tmp_path, "g.csv", text))
    first, second, other, plain = reqs
    assert np.array_equal(first.input_tokens[:64], second.input_tokens[:64])
    assert first.input_tokens[64] != second.input_tokens[64]
    assert other.input_tokens[:32].tolist() != first.input_tokens[:32].tolist()
    assert plain.num_prompt_tokens == 70


def test_jsonl_without_times_arrives_at_the_rate(tmp_path):
    rows = [{"prompt_len": 10 + i, "output_len": i, "model": "x"} for i in range(6)]
    path = _write(tmp_path, "bench.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert detect_format(path) == "lengths"
    even = _replay(path, arrival_times=iter_arrival_times("constant", 4.0, 1.0, None))
    assert [r.arrival_time for r in even] == [k * 250_000 for k in range(6)]
    assert [r.num_prompt_tokens for r in even] == [10, 11, 12, 13, 14, 15]
    poisson = _replay(
        path, arrival_times=iter_arrival_times("poisson", 4.0, 1.0, np.random.default_rng(0))
    )
    times = [r.arrival_time for r in poisson]
    assert times[0] == 0 and times == sorted(times) and times != [k * 250_000 for k in range(6)]


def test_other_formats_are_still_told_apart(tmp_path):
    ref = _write(
        tmp_path, "ref.csv", 'arrival_s,id,model,input_tokens,output_tokens\n0,0,m,"[1,2]","[3]"\n'
    )
    moon = _write(
        tmp_path,
        "moon.jsonl",
        '{"timestamp": 0, "input_length": 3, "output_length": 1, "hash_ids": [1]}\n',
    )
    assert detect_format(ref) == "csv"
    assert detect_format(moon) == "mooncake"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('prompt_len,output_len\n"[1,2,3]",4\n', "prompt_len holds a list"),
        ("prompt_len,output_len\n0,4\n", "prompt_len must be >= 1, got 0"),
        ("prompt_len,output_len\nabc,4\n", "prompt_len 'abc' is not an integer"),
        ("arrived_at,prompt_len,output_len\n1,5,4\n0.5,5,4\n", "arrived_at goes back in time"),
        (
            "prompt_len,output_len,prefix_group,prefix_len\n5,4,g,9\n",
            "prefix_len 9 is longer than the prompt",
        ),
    ],
)
def test_bad_rows_name_the_line_and_column(tmp_path, text, needle):
    path = _write(tmp_path, "bad.csv", text)
    with pytest.raises(WorkloadError, match="line") as info:
        _replay(path, fmt="lengths")
    assert needle in str(info.value)


def test_a_missing_length_column_lists_the_accepted_names(tmp_path):
    path = _write(tmp_path, "x.csv", "prompt_len,answer\n5,4\n")
    with pytest.raises(WorkloadError, match=r"no output-length column .*num_decode_tokens"):
        _replay(path, fmt="lengths")


def _run(*args: str):
    return CliRunner().invoke(cli, ["run", "--model", MODEL, "--workload", "traces", *args])


def test_blis_run_replays_a_length_trace_end_to_end(tmp_path):
    path = _write(tmp_path, "vidur.csv", VIDUR)
    out = tmp_path / "r.json"
    result = _run("--workload-traces-filepath", path, "--results-path", str(out))
    assert result.exit_code == 0, result.stderr
    doc = json.loads(out.read_text())
    assert doc["completed_requests"] == 4
    assert doc["total_input_tokens"] == 650 and doc["total_output_tokens"] == 43
    assert [r["arrived_at"] for r in doc["requests"]] == [0.0, 0.25, 0.5, 1.0]
    # a timed trace keeps its times: --arrival is refused with one line
    bad = _run("--workload-traces-filepath", path, "--arrival", "poisson")
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "replays the trace's own arrival times" in bad.stderr


def test_untimed_trace_takes_rate_and_arrival(tmp_path):
    rows = "".join(json.dumps({"prompt_len": 50, "output_len": 5}) + "\n" for _ in range(5))
    path = _write(tmp_path, "b.jsonl", rows)
    out = tmp_path / "r.json"
    result = _run("--workload-traces-filepath", path, "--rate", "2", "--results-path", str(out))
    assert result.exit_code == 0, result.stderr
    arrived = [r["arrived_at"] for r in json.loads(out.read_text())["requests"]]
    assert arrived == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0], abs=1e-5)
    result = _run("--workload-traces-filepath", path, "--rate", "2", "--arrival", "poisson")
    assert result.exit_code == 0, result.stderr
