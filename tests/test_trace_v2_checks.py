"""Trace v2 header fields that are not applied (warm_up_requests, server), row checks
(negative counts) and header-only traces in every reader."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from inference_sim.cli.main import cli
from inference_sim.core.rng import RandomStreams
from inference_sim.workload import WorkloadError, iter_trace_v2, open_trace, read_csv_trace
from inference_sim.workload.lengthtrace import iter_length_trace
from inference_sim.workload.realtraces import iter_azure_trace

MODEL = "meta-llama/llama-3.1-8b-instruct"
V2_COLUMNS = (
    "request_id,client_id,tenant_id,slo_class,session_id,round_index,prefix_group,streaming,"
    "input_tokens,output_tokens,text_tokens,image_tokens,audio_tokens,video_tokens,"
    "reason_ratio,arrival_time_us,send_time_us,first_chunk_time_us,last_chunk_time_us,"
    "num_chunks,status,error_message"
)
V2_HEADER = "trace_version: 2\ntime_unit: microseconds\nmode: generated\n"


def _row(rid: int, **cells: Any) -> str:
    values: dict[str, Any] = dict.fromkeys(V2_COLUMNS.split(","), "0")
    values.update(
        request_id=rid,
        client_id="",
        tenant_id="",
        slo_class="",
        session_id="",
        prefix_group="",
        streaming="false",
        input_tokens=10,
        output_tokens=2,
        arrival_time_us=rid * 1000,
        send_time_us=rid * 1000,
        status="ok",
        error_message="",
    )
    values.update(cells)
    return ",".join(str(v) for v in values.values())


def _v2(tmp_path, rows: list[str], header: str | None = V2_HEADER) -> str:
    data = tmp_path / "t.csv"
    data.write_text("\n".join([V2_COLUMNS, *rows]) + "\n", encoding="utf-8")
    if header is not None:
        (tmp_path / "t.yaml").write_text(header, encoding="utf-8")
    return str(data)


@pytest.fixture
def logged() -> Iterator[list[logging.LogRecord]]:
    """Records of the ``inference_sim`` logger (which the CLI stops propagating)."""
    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("inference_sim")
    handler, level = _Keep(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _replay(path: str, **kw: Any) -> list:
    return list(iter_trace_v2(path, streams=RandomStreams(1), **kw))


def _blis(*args: Any) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


# --- 1. warm_up_requests ------------------------------------------------------------------


def test_warm_up_requests_is_named_as_not_applied(tmp_path, logged):
    path = _v2(tmp_path, [_row(i) for i in range(5)], V2_HEADER + "warm_up_requests: 3\n")
    reqs = _replay(path)
    assert len(reqs) == 5  # as the reference: every request replays
    warnings = [r.getMessage() for r in logged if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "t.yaml: warm_up_requests 3 is not applied" in warnings[0]


def test_warm_up_requests_zero_is_quiet(tmp_path, logged):
    path = _v2(tmp_path, [_row(0)], V2_HEADER + "warm_up_requests: 0\n")
    _replay(path)
    assert not [r for r in logged if r.levelno >= logging.INFO]


# --- 2. server block ----------------------------------------------------------------------

SERVER = V2_HEADER + (
    "server:\n  type: vllm\n  model: " + MODEL + "\n  tensor_parallel: 8\n  block_size: 32\n"
)
RUN = {"model": MODEL, "tensor_parallel": 2, "block_size": 16, "max_num_seqs": 256}


def test_server_block_differing_from_the_run_warns_once(tmp_path, logged):
    _replay(_v2(tmp_path, [_row(0)], SERVER), run=RUN)
    warnings = [r.getMessage() for r in logged if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "tensor_parallel 8 (run: 2), block_size 32 (run: 16)" in warnings[0]
    assert "not applied" in warnings[0]
    assert "model" not in warnings[0].split("differs from this run:")[1].split(";")[0]


def test_server_block_matching_the_run_is_quiet(tmp_path, logged):
    run = {**RUN, "tensor_parallel": 8, "block_size": 32, "model": MODEL.upper()}
    _replay(_v2(tmp_path, [_row(0)], SERVER), run=run)
    assert not [r for r in logged if r.levelno >= logging.INFO]


def test_server_block_without_run_settings_says_informational(tmp_path, logged):
    _replay(_v2(tmp_path, [_row(0)], SERVER))
    infos = [r.getMessage() for r in logged if r.levelno == logging.INFO]
    assert len(infos) == 1 and "server block is informational" in infos[0]
    assert not [r for r in logged if r.levelno >= logging.WARNING]


def test_open_trace_passes_the_run_settings(tmp_path, logged):
    list(open_trace(_v2(tmp_path, [_row(0)], SERVER), run_server=RUN))
    assert any("tensor_parallel 8 (run: 2)" in r.getMessage() for r in logged)


def test_cli_warns_about_a_differing_server_block(tmp_path):
    path = _v2(tmp_path, [_row(0), _row(1)], SERVER)
    res = _blis(
        "run", "--model", MODEL, "--tp", 2, "--workload", "traces",
        "--workload-traces-filepath", path,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "tensor_parallel 8 (run: 2)" in res.stderr


# --- 3. slo_class -------------------------------------------------------------------------


def test_any_slo_class_label_is_kept(tmp_path):
    """A label that groups per-class metrics: a trace recorded elsewhere keeps its own
    classes (the reference accepts them too)."""
    reqs = _replay(_v2(tmp_path, [_row(0, slo_class="platinum"), _row(1, slo_class="realtime")]))
    assert [r.slo_class for r in reqs] == ["platinum", "realtime"]


def test_known_slo_classes_load(tmp_path):
    reqs = _replay(_v2(tmp_path, [_row(0, slo_class="critical"), _row(1, slo_class="")]))
    assert [r.slo_class for r in reqs] == ["critical", ""]


# --- 4. negative counts -------------------------------------------------------------------


@pytest.mark.parametrize(
    "column",
    [
        "text_tokens",
        "image_tokens",
        "audio_tokens",
        "video_tokens",
        "num_chunks",
        "send_time_us",
        "first_chunk_time_us",
        "last_chunk_time_us",
    ],
)
def test_negative_count_is_refused(tmp_path, column):
    path = _v2(tmp_path, [_row(0), _row(1, **{column: -4})])
    with pytest.raises(WorkloadError, match=f"t.csv line 3: {column} must be >= 0, got -4"):
        _replay(path)


def test_non_integer_count_is_refused(tmp_path):
    with pytest.raises(WorkloadError, match=r'line 2: parsing image_tokens "1\.5": not an integer'):
        _replay(_v2(tmp_path, [_row(0, image_tokens="1.5")]))


def test_cli_negative_image_tokens(tmp_path):
    path = _v2(tmp_path, [_row(0), _row(1, image_tokens=-4)])
    res = _blis("run", "--model", MODEL, "--workload", "traces", "--workload-traces-filepath", path)
    assert res.exit_code == 2
    assert "Error: trace " in res.output and "line 3: image_tokens must be >= 0, got -4" in (
        res.output
    )
    assert "Traceback" not in res.output


# --- 5. header-only traces ----------------------------------------------------------------

ONLY_HEADER = "no requests (only a header)"


def test_header_only_v2_runs_empty_with_a_warning(tmp_path, sim_log):
    """As the reference CSV: an export of a run that injected nothing replays (as nothing)."""
    path = _v2(tmp_path, [""])
    assert _replay(path) == []
    assert "t.csv: no requests (only a header)" in sim_log.text


def test_header_only_reference_csv_runs_empty_with_a_warning(tmp_path, sim_log):
    """The reference's own format keeps its behaviour (0 requests), said in the log."""
    path = tmp_path / "r.csv"
    path.write_text("arrival_time,request_id,model,prefill_tokens,decode_tokens\n\n")
    assert read_csv_trace(path) == []
    assert "r.csv: no requests (only a header)" in sim_log.text


def test_reference_csv_rows_past_the_horizon_are_not_header_only(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("arrival_s,id,model,input_tokens,output_tokens\n9,a,,[1],[]\n")
    assert read_csv_trace(path, horizon=5_000_000) == []


def test_header_only_azure(tmp_path):
    path = tmp_path / "az.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n")
    with pytest.raises(
        WorkloadError, match=r"azure trace .*az\.csv: no requests \(only a header\)"
    ):
        list(iter_azure_trace(path))


def test_header_only_length_trace(tmp_path):
    path = tmp_path / "len.csv"
    path.write_text("arrival_s,prompt_len,output_len\n")
    with pytest.raises(WorkloadError, match=r"length trace .*len\.csv: no requests"):
        list(iter_length_trace(path))


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"),
        ("len.csv", "arrival_s,prompt_len,output_len\n"),
    ],
)
def test_cli_header_only_trace_is_an_error(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    res = _blis("run", "--model", MODEL, "--workload", "traces", "--workload-traces-filepath", path)
    assert res.exit_code == 2, res.output
    assert f"{name}: {ONLY_HEADER}" in res.output
    assert res.output.startswith("Error: ") and "Traceback" not in res.output
