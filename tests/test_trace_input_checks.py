"""Trace and spec input checks: BOMs, unsorted rows with a horizon, adapter columns of a
length trace, non-integral token counts in length distributions (truncated, said)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from inference_sim.cli.main import cli
from inference_sim.core.rng import RandomStreams
from inference_sim.workload import WorkloadError, open_trace, read_csv_trace
from inference_sim.workload.lengthtrace import iter_length_records
from inference_sim.workload.samplers import make_length_sampler

MODEL = "meta-llama/llama-3.1-8b-instruct"
BOM = "\ufeff"

V2_HEADER = "trace_version: 2\ntime_unit: microseconds\nmode: generated\n"
V2_COLUMNS = (
    "request_id,client_id,tenant_id,slo_class,session_id,round_index,prefix_group,streaming,"
    "input_tokens,output_tokens,text_tokens,image_tokens,audio_tokens,video_tokens,"
    "reason_ratio,arrival_time_us,send_time_us,first_chunk_time_us,last_chunk_time_us,"
    "num_chunks,status,error_message,model,prefix_length,context_tokens"
)


def _write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _replay(path: str, **kw: Any) -> list:
    return list(open_trace(path, streams=RandomStreams(5), **kw))


def _blis(*args: Any) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


# --- 1. a UTF-8 byte order mark (Excel's "CSV UTF-8") -------------------------------------


def test_bom_length_trace_keeps_its_time_column(tmp_path):
    path = _write(
        tmp_path, "t.csv", BOM + "arrived_at,prompt_len,output_len\n0,812,120\n5,100,10\n"
    )
    reqs = _replay(path)
    assert [r.arrival_time for r in reqs] == [0, 5_000_000]
    assert [r.num_prompt_tokens for r in reqs] == [812, 100]


def test_bom_length_trace_ignores_rate_with_a_warning(tmp_path):
    """Its time column is read through the BOM, so --rate does not apply: warned and
    ignored, as the reference ignores it with a trace (review 23; it was refused)."""
    path = _write(
        tmp_path, "t.csv", BOM + "arrived_at,prompt_len,output_len\n0,812,120\n5,100,10\n"
    )
    res = _blis(
        "run", "--model", MODEL, "--workload", "traces",
        "--workload-traces-filepath", path, "--rate", "5",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert "--rate 5: no effect with --workload traces" in res.stderr


def test_bom_length_jsonl(tmp_path):
    rows = [{"arrived_at": 0, "prompt_len": 10, "output_len": 2}]
    path = _write(tmp_path, "t.jsonl", BOM + "".join(json.dumps(r) + "\n" for r in rows))
    assert [r.num_prompt_tokens for r in _replay(path)] == [10]


def test_bom_azure_trace(tmp_path):
    text = BOM + "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"
    reqs = _replay(_write(tmp_path, "az.csv", text))
    assert [(r.num_prompt_tokens, r.num_output_tokens) for r in reqs] == [(374, 44)]


def test_bom_mooncake_trace(tmp_path):
    line = '{"timestamp": 0, "input_length": 600, "output_length": 10, "hash_ids": [1,2]}\n'
    reqs = _replay(_write(tmp_path, "mc.jsonl", BOM + line))
    assert [(r.num_prompt_tokens, r.num_output_tokens) for r in reqs] == [(600, 10)]


def test_bom_reference_csv(tmp_path):
    text = (
        BOM + 'arrival_time,request_id,model,prefill_tokens,decode_tokens\n0.0,a,,"[1,2,3]","[7]"\n'
    )
    reqs = read_csv_trace(_write(tmp_path, "ref.csv", text))
    assert [r.input_tokens.tolist() for r in reqs] == [[1, 2, 3]]


def test_bom_trace_v2(tmp_path):
    _write(tmp_path, "v2.yaml", V2_HEADER)
    row = "0,,,,,0,,false,284,1,0,0,0,0,0,0,0,0,0,0,ok,," + MODEL + ",0,0"
    path = _write(tmp_path, "v2.csv", BOM + V2_COLUMNS + "\n" + row + "\n")
    reqs = _replay(path)
    assert [(r.num_prompt_tokens, r.num_output_tokens) for r in reqs] == [(284, 1)]


# --- 2. the reference CSV: unsorted rows and --horizon ------------------------------------


def test_reference_csv_stops_at_the_horizon_and_says_what_it_left(tmp_path, sim_log):
    """The reference stops reading at the first row later than the horizon (workload.md
    4.2), so an unsorted trace loses later rows within it: kept, but no longer silent."""
    text = "arrival_time,request_id,model,p,d\n"
    text += '0.0,a,,"[1,2,3]","[7]"\n0.5,b,,"[1,2]","[1]"\n0.1,c,,"[1,2]","[1]"\n'
    text += '0.2,d,,"[1,2]","[1]"\n9,e,,not json,[]\n'
    reqs = read_csv_trace(_write(tmp_path, "ooo.csv", text), horizon=300_000)
    assert [r.arrival_time for r in reqs] == [0]
    assert "2 later rows within the horizon were not read" in sim_log.text


# --- 3. LoRA adapter columns of a length trace --------------------------------------------

LORA_LT = "prompt_len,output_len,adapter,adapter_rank\n500,50,sql,8\n600,60,support,16\n700,5,,\n"


def test_length_trace_reads_adapter_columns(tmp_path):
    reqs = _replay(_write(tmp_path, "lt.csv", LORA_LT))
    assert [(r.adapter, r.adapter_rank) for r in reqs] == [("sql", 8), ("support", 16), ("", 0)]


def test_length_records_read_adapter_without_rank():
    recs = [{"prompt_len": 5, "output_len": 1, "adapter": "sql"}]
    reqs = list(iter_length_records(recs))
    assert [(r.adapter, r.adapter_rank) for r in reqs] == [("sql", 0)]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("prompt_len,output_len,adapter,adapter_rank\n5,1,sql,0\n", "adapter_rank must be a"),
        ("prompt_len,output_len,adapter,adapter_rank\n5,1,sql,x\n", "adapter_rank must be a"),
        ("prompt_len,output_len,adapter,adapter_rank\n5,1,,8\n", "needs an adapter name"),
        ("prompt_len,output_len,adapter_rank\n5,1,8\n", "adapter_rank needs an adapter column"),
    ],
)
def test_length_trace_bad_adapter_cells(tmp_path, text, needle):
    with pytest.raises(WorkloadError, match=needle) as info:
        _replay(_write(tmp_path, "lt.csv", text))
    assert "lt.csv" in str(info.value) and "\n" not in str(info.value)


def test_length_trace_adapters_through_the_cli(tmp_path):
    path = _write(tmp_path, "lt.csv", LORA_LT)
    common = ("run", "--model", MODEL, "--workload", "traces", "--workload-traces-filepath", path)
    res = _blis(*common, "--rate", "5", "--max-loras", "2", "--json")
    assert res.exit_code == 0, (res.output, res.stderr)
    out = res.stdout
    data = json.loads(out[out.index("{") :])
    assert {"sql", "support"} <= set(data["lora"]["adapters"])
    off = _blis(*common, "--rate", "5", "--json")
    assert off.exit_code == 2
    assert "LoRA adapter 'sql'" in off.stderr


# --- 4. length distributions: token counts are integers -----------------------------------


@pytest.mark.parametrize(
    ("dist", "params", "field", "samples"),
    [
        ("constant", {"value": 1.5}, "value", [1, 1]),
        ("gaussian", {"mean": 10, "std_dev": 0, "min": 10.5, "max": 10.9}, "min", [10, 10]),
    ],
)
def test_non_integral_token_counts_are_truncated_with_a_warning(
    dist, params, field, samples, sim_log
):
    """workload.md 6.1 and 6.6: the reference truncates min, max and value to ints; the
    run does the same, and says so (it used to be silent)."""
    import numpy as np

    s = make_length_sampler(dist, params, "d")
    assert s.sample(np.random.default_rng(0), 2).tolist() == samples
    assert f"d.params.{field} " in sim_log.text and "is truncated to" in sim_log.text


def test_integral_floats_are_fine():
    import numpy as np

    s = make_length_sampler("constant", {"value": 100.0}, "d")
    assert s.sample(np.random.default_rng(0), 3).tolist() == [100, 100, 100]
    g = make_length_sampler("gaussian", {"mean": 5, "std_dev": 0, "min": 5.0, "max": 5.0}, "d")
    assert g.sample(np.random.default_rng(0), 2).tolist() == [5, 5]
