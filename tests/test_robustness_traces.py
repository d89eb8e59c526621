"""Untrusted trace files are read as a stream with bounded memory (issue 11).

Every reader (the reference CSV, trace v2, Azure CSV, Mooncake JSONL) takes its rows from
:mod:`inference_sim.workload._rows`: a row longer than ``MAX_ROW_CHARS`` characters, or a
CSV row of more than ``MAX_ROW_COLUMNS`` columns, ends with one error naming the file and
the row after reading at most the limit of it, never the whole row. The limits are
documented in docs/troubleshooting.md and docs/workloads.md.
"""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference_sim.workload import _rows
from inference_sim.workload.realtraces import iter_azure_records, iter_mooncake_records
from inference_sim.workload.trace_v2 import COLUMNS, EXTRA_COLUMNS, TOKEN_COLUMNS, iter_trace_v2
from inference_sim.workload.traces import read_csv_trace
from test_fuzz_support import MODEL, fuzz_settings, invoke

MiB = 2**20
V2_HEADER = ",".join((*COLUMNS, *EXTRA_COLUMNS, *TOKEN_COLUMNS))


def v2_row(n_in: int = 3, n_out: int = 1, input_ids: str = "", output_ids: str = "") -> str:
    cells = ["0", "c", "", "", "", "0", "", "false", str(n_in), str(n_out)]
    cells += ["0"] * 10 + ["ok", "", "m", "0", "0", "", "", input_ids, output_ids]
    return ",".join(cells)


# (format, header + first good row, start of the huge row, its repeated filler, its end)
FORMATS: dict[str, tuple[str, str, str, str]] = {
    "csv": ('a,b,c,d,e\n0,r,m,"[1]","[1]"\n', '0.1,r,m,"[', "1,", '1]","[1]"\n'),
    "v2": (f"{V2_HEADER}\n", v2_row()[:-1], "12 ", ",\n"),  # a huge input_token_ids
    "azure": ("TIMESTAMP,ContextTokens,GeneratedTokens\n0,5,5\n", "1,2,", "3", "\n"),
    "mooncake": (
        '{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]}\n',
        '{"timestamp": 1, "input_length": 10, "output_length": 1, "hash_ids": [',
        "12,",
        "1]}\n",
    ),
}
# The huge row is line 3 of a CSV (header, good row) and line 2 of the others.
WHERE = {"csv": "row 3", "v2": "line 2", "azure": "line 3", "mooncake": "line 2"}
SUFFIX = {"csv": ".csv", "v2": ".csv", "azure": ".csv", "mooncake": ".jsonl"}
READERS: dict[str, Callable[[Path], Any]] = {
    "csv": read_csv_trace,
    "v2": lambda p: list(iter_trace_v2(p)),
    "azure": lambda p: list(iter_azure_records(p)),
    "mooncake": lambda p: list(iter_mooncake_records(p)),
}


def huge_row_file(tmp_path: Path, fmt: str, chars: int) -> Path:
    """A trace whose second record is a single row of about ``chars`` characters."""
    head, start, filler, end = FORMATS[fmt]
    path = tmp_path / f"huge-{fmt}{SUFFIX[fmt]}"
    chunk = filler * (MiB // len(filler))
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(head + start)
        for _ in range(chars // len(chunk) + 1):
            fh.write(chunk)
        fh.write(end)
    return path


def trace_error(path: Path, *args: Any) -> str:
    """The one ``Error:`` line of ``blis run`` on the trace (exit 2)."""
    result = invoke(
        ["run", "--model", MODEL, "--workload", "traces", "--workload-traces-filepath", path]
        + [str(a) for a in args]
    )
    assert result.exit_code == 2, result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("Error: ")]
    return line


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    """A 64 KiB row limit, so a few-MB row stands for a 200 MB one."""
    monkeypatch.setattr(_rows, "MAX_ROW_CHARS", 64 * 1024)
    return 64 * 1024


# --- a row longer than the limit ----------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_huge_row_is_one_error_naming_file_and_row(tmp_path, small_limit, fmt):
    path = huge_row_file(tmp_path, fmt, 4 * MiB)
    line = trace_error(path)
    assert str(path) in line and WHERE[fmt] in line, line
    assert f"row longer than {small_limit:,} characters" in line


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_huge_row_is_not_read_whole(tmp_path, small_limit, fmt):
    """A 50 MB row costs what the limit allows (64 KiB here), not its size."""
    path = huge_row_file(tmp_path, fmt, 50 * MiB)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="row longer than"):
            READERS[fmt](path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB, f"{fmt}: peak {peak / MiB:.1f} MiB reading a 50 MB row"


def test_the_real_limit(tmp_path):
    """The shipped limit: a row one MiB past it is refused via the CLI (exit 2)."""
    path = huge_row_file(tmp_path, "mooncake", _rows.MAX_ROW_CHARS + MiB)
    line = trace_error(path)
    assert f"line 2: row longer than {_rows.MAX_ROW_CHARS:,} characters" in line


def test_describe_refuses_a_huge_row_too(tmp_path, small_limit):
    path = huge_row_file(tmp_path, "azure", 2 * MiB)
    result = invoke(["workload", "describe", path])
    assert result.exit_code == 2
    assert "line 3: row longer than" in result.stderr


# --- a CSV row of too many columns ---------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "v2", "azure"])
def test_a_row_of_too_many_columns_is_refused_before_splitting(tmp_path, fmt):
    head = FORMATS[fmt][0]
    path = tmp_path / f"wide-{fmt}.csv"
    cells = 5 * _rows.MAX_ROW_COLUMNS  # a malicious row: ~25 bytes of memory a cell
    path.write_text(head + ",".join(["12"] * cells) + "\n", encoding="utf-8")
    line = trace_error(path)
    assert f"row has more than {_rows.MAX_ROW_COLUMNS:,} columns" in line
    assert str(path) in line and WHERE[fmt] in line, line


@fuzz_settings(300)
@given(text=st.text(alphabet='a,"\n\r', max_size=16), columns=st.integers(1, 4))
def test_the_column_count_agrees_with_csv(text, columns):
    """Columns are counted before csv splits a line, exactly as csv will split it:
    quoted commas, doubled quotes, quotes inside plain fields, records over lines."""
    text += "\n"
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error:
        return  # malformed: csv's own error, whatever the count
    saved = _rows.MAX_ROW_COLUMNS
    _rows.MAX_ROW_COLUMNS = columns
    try:
        got = list(_rows.BoundedCsvReader(io.StringIO(text, newline="")))
    except _rows.RowTooLong:
        assert max(len(r) for r in rows) > columns, (text, rows)
    else:
        assert got == rows
        assert all(len(r) <= columns for r in rows), (text, rows)
    finally:
        _rows.MAX_ROW_COLUMNS = saved


def test_quoted_commas_are_not_columns(tmp_path):
    # A 30 000-token prompt: 30 000 commas inside one quoted cell, 5 columns.
    ids = ",".join(str(100_000 + i) for i in range(30_000))
    path = tmp_path / "long.csv"
    path.write_text(f'a,b,c,d,e\n0,r,m,"[{ids}]","[1]"\n', encoding="utf-8")
    (req,) = read_csv_trace(path)
    assert req.num_prompt_tokens == 30_000


def test_a_quoted_cell_over_lines_counts_all_its_lines(tmp_path, small_limit):
    # Newlines inside quotes continue the record: its lines add up against the limit.
    lines = "\n".join(["1,"] * 30_000)  # 90 000 characters over 30 000 lines
    path = tmp_path / "multi.csv"
    path.write_text(f'a,b,c,d,e\n0,r,m,"[{lines}1]","[1]"\n', encoding="utf-8")
    line = trace_error(path)
    assert "row 2: row longer than 65,536 characters" in line


def test_long_rows_below_the_limit_load(tmp_path):
    """Python's csv refuses fields over 128 KiB by default; a real long prompt is more."""
    n = 100_000  # ~700 KB of ids in one cell
    ids = ",".join(str(100_000 + i) for i in range(n))
    path = tmp_path / "long.csv"
    path.write_text(f'a,b,c,d,e\n0,r,m,"[{ids}]","[1,2]"\n', encoding="utf-8")
    before = csv.field_size_limit()
    (req,) = read_csv_trace(path)
    assert req.num_prompt_tokens == n
    assert csv.field_size_limit() == before  # the process-wide setting is restored
    v2 = tmp_path / "long-v2.csv"
    spaced = " ".join(str(100_000 + i) for i in range(n))
    v2.write_text(f"{V2_HEADER}\n{v2_row(n, 1, spaced, '7')}\n", encoding="utf-8")
    (req,) = iter_trace_v2(v2)
    assert req.num_prompt_tokens == n and req.input_tokens[-1] == 100_000 + n - 1
    assert csv.field_size_limit() == before


# --- millions of ids ----------------------------------------------------------------------


def test_millions_of_token_ids_in_a_v2_cell_are_refused_cheaply(tmp_path):
    from inference_sim.workload.trace_v2 import _parse_ids

    spaced = "12 " * 3_000_000  # 9 MB: three million ids where the row declares 3
    path = tmp_path / "ids.csv"
    path.write_text(f"{V2_HEADER}\n{v2_row(3, 1, spaced)}\n", encoding="utf-8")
    line = trace_error(path)
    assert "line 2: input_token_ids has more than 4 ids, input_tokens is 3" in line
    # The cell is not split whole: splitting it would take ~175 MB (three million
    # strings and their list); refusing it copies at most the cell once.
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="has more than 4 ids"):
            _parse_ids(spaced, "input_token_ids", "here", 0, 2**31 - 1, (3, "input_tokens is 3"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * len(spaced), (
        f"peak {peak / MiB:.1f} MiB for a {len(spaced) / MiB:.0f} MB cell"
    )


def test_more_token_ids_than_a_request_holds_is_refused_before_decoding(tmp_path, monkeypatch):
    from inference_sim.workload import traces

    monkeypatch.setattr(traces, "MAX_REQUEST_TOKENS", 1000)
    ids = ",".join(["7"] * 1001)
    path = tmp_path / "t.csv"
    path.write_text(f'a,b,c,d,e\n0,r,m,"[{ids}]","[1]"\n', encoding="utf-8")
    line = trace_error(path)
    assert "row 2 column input_tokens: more than 1000 token ids" in line


def test_a_mooncake_line_of_too_many_hash_ids(tmp_path):
    row = {"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1] * 100_000}
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    assert "line 1: 100000 hash_ids, but input_length 10 makes 1 blocks" in trace_error(path)


def test_deeply_nested_mooncake_json_is_one_error(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"timestamp": ' + "[" * 100_000 + "\n", encoding="utf-8")
    assert "line 1: invalid JSON" in trace_error(path)


def test_a_huge_trace_v2_header_is_refused_unread(tmp_path):
    from inference_sim.workload.trace_v2 import MAX_HEADER_BYTES

    (tmp_path / "t.csv").write_text(f"{V2_HEADER}\n{v2_row()}\n", encoding="utf-8")
    header = tmp_path / "t.yaml"
    header.write_text("trace_version: 2\n" + "#" * (MAX_HEADER_BYTES + 1) + "\n")
    line = trace_error(tmp_path / "t.csv")
    assert f"trace header {header}: larger than {MAX_HEADER_BYTES:,} bytes" in line


def test_format_detection_does_not_parse_a_huge_file_as_yaml(tmp_path):
    from inference_sim.workload.formats import detect_format

    path = tmp_path / "one-line.txt"  # no comma on its first line: it could be YAML
    path.write_text("x" * (8 * MiB) + "\n", encoding="utf-8")
    tracemalloc.start()
    try:
        assert detect_format(path) == "csv"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * MiB, f"peak {peak / MiB:.1f} MiB"


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        # Arrival seconds past the simulator's clock: refused, not silently dropped.
        ("ref.csv", "arrival_time,request_id,model,prefill_tokens,decode_tokens\n"
         '0,a,,"[1,2,3]","[7]"\n1700000000000000,b,,"[1,2]","[9]"\n',
         "row 3 column arrival_s: must be <= 4.61169e+12 seconds"),
        ("len.csv", "arrival_time,prompt_len,output_len\n0,512,128\n1e300,100,20\n",
         "line 3: arrival_time is 1e+300 s after the first row"),
        # A column the reader uses, named twice: which one holds the data is ambiguous.
        ("dup.csv", "prompt_len,output_len,prompt_len\n512,128,9\n100,20,9\n",
         "column 'prompt_len' appears twice"),
    ],
)  # fmt: skip
def test_trace_values_the_simulator_cannot_honour_are_one_error(tmp_path, name, text, needle):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    args = ["run", "--model", MODEL, "--workload", "traces", "--workload-traces-filepath", path]
    res = invoke(args)
    assert res.exit_code == 2 and needle in res.output, res.output


def test_a_repeated_column_the_reader_ignores_is_fine(tmp_path):
    path = tmp_path / "notes.csv"
    path.write_text("prompt_len,output_len,note,note\n512,128,a,b\n100,20,c,d\n", "utf-8")
    res = invoke(
        ["run", "--model", MODEL, "--workload", "traces", "--workload-traces-filepath", path,
         "--json", "-q"]
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["total_input_tokens"] == 612
