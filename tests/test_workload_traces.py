"""CSV trace replay and export: format, round trip, horizon, one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference_sim.core.request import Request
from inference_sim.workload import (
    DistributionParams,
    LengthDistribution,
    WorkloadError,
    generate_distribution,
    read_csv_trace,
    seconds_text,
    write_csv_trace,
)

HEADER = "arrival_time,request_id,model,prefill_tokens,decode_tokens\n"


def write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


def fingerprint(reqs):
    return [
        (r.index, r.arrival_time, r.model, r.input_tokens.tolist(), r.output_tokens.tolist())
        for r in reqs
    ]


# --- reading ------------------------------------------------------------------------------


def test_reads_quoted_json_columns_and_converts_seconds(tmp_path):
    path = write(
        tmp_path,
        '0.5,a,llama,"[1, 2, 3]","[4,5]"\n'
        "1.25,b,,[7],[]\n"
        '0.000001,c,m2,"[0,127999]","[9]",extra,"more, stuff"\n',
    )
    reqs = read_csv_trace(path)
    assert fingerprint(reqs) == [  # the model column is not read (workload.md 4.2)
        (0, 500_000, "", [1, 2, 3], [4, 5]),
        (1, 1_250_000, "", [7], []),
        (2, 1, "", [0, 127999], [9]),
    ]
    assert reqs[1].num_output_tokens == 0
    assert reqs[2].request_id == "request_2"


def test_arrival_is_truncated_not_rounded(tmp_path):
    # 0.0000019 s = 1.9 µs -> 1; 29.899701 s survives exactly
    reqs = read_csv_trace(write(tmp_path, "0.0000019,a,,[1],[]\n29.899701,b,,[1],[]\n"))
    assert [r.arrival_time for r in reqs] == [1, 29_899_701]


def test_file_order_is_kept(tmp_path):
    reqs = read_csv_trace(write(tmp_path, "2,a,,[1],[]\n1,b,,[2],[]\n2,c,,[3],[]\n"))
    assert [r.arrival_time for r in reqs] == [2_000_000, 1_000_000, 2_000_000]
    assert [r.index for r in reqs] == [0, 1, 2]


def test_horizon_stops_at_first_later_row(tmp_path):
    path = write(tmp_path, "1,a,,[1],[]\n2,b,,[1],[]\n3,c,,[1],[]\n0.5,d,,[1],[]\n")
    assert [r.arrival_time for r in read_csv_trace(path, horizon=2_000_000)] == [
        1_000_000,
        2_000_000,  # equal to the horizon: kept
    ]
    assert len(read_csv_trace(path, horizon=1_999_999)) == 1
    assert len(read_csv_trace(path)) == 4


def test_rows_after_horizon_are_not_validated(tmp_path):
    path = write(tmp_path, "1,a,,[1],[]\n9,b,,not json,[]\n")
    assert len(read_csv_trace(path, horizon=5_000_000)) == 1


def test_header_only_and_blank_lines(tmp_path, sim_log):
    assert read_csv_trace(write(tmp_path, "")) == []  # as the reference, with a warning
    assert "no requests (only a header)" in sim_log.text
    reqs = read_csv_trace(write(tmp_path, "\n1,a,,[1],[]\n\n2,b,,[2],[]\n"))
    assert [r.index for r in reqs] == [0, 1]


# --- round trip ---------------------------------------------------------------------------


def test_round_trip_generated_workload(tmp_path):
    law = LengthDistribution(mean=30, stdev=20, min=1, max=90)
    params = DistributionParams(prefix_tokens=8, prompt=law, output=LengthDistribution(5, 5, 0, 12))
    reqs = generate_distribution(
        params, rate=7.0, num_requests=200, horizon=2**63 - 1, rng=np.random.default_rng(3)
    )
    path = tmp_path / "out" / "w.csv"
    path.parent.mkdir()
    write_csv_trace(reqs, path)
    assert fingerprint(read_csv_trace(path)) == fingerprint(reqs)
    # token columns with several ids are quoted because they contain commas
    line = path.read_text().splitlines()[1]
    assert line.startswith('0.0,request_0,,"[')
    assert [p.name for p in path.parent.iterdir()] == ["w.csv"]  # no temp file left


def test_round_trip_keeps_odd_arrivals_and_ignores_the_model_column(tmp_path):
    """The model column is written (a quoted odd label survives the CSV) but not read
    back: the reference ignores it (workload.md 4.2), the run's --model serves every row."""
    times = [0, 1, 7, 99999, 299 * 99999, 123_456_789, 10**12 + 3]
    reqs = [Request(i, t, [i, 5], [] if i % 2 else [1], model="m,odd") for i, t in enumerate(times)]
    path = tmp_path / "t.csv"
    write_csv_trace(reqs, path)
    assert '"m,odd"' in path.read_text()
    back = read_csv_trace(path)
    assert [r.model for r in back] == [""] * len(times)
    for r in reqs:
        r.model = ""
    assert fingerprint(back) == fingerprint(reqs)


@given(st.integers(min_value=0, max_value=10**15))
def test_seconds_text_reads_back_exactly(ticks):
    assert int(float(seconds_text(ticks)) * 1e6) == ticks


def test_write_replaces_existing_file_atomically(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("old")
    write_csv_trace([Request(0, 3, [1], [2])], path)
    assert path.read_text().startswith("arrival_time,")
    assert sorted(os.listdir(tmp_path)) == ["t.csv"]


def test_write_failure_leaves_target_untouched(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("old")
    with pytest.raises(WorkloadError, match="negative arrival_time"):
        write_csv_trace([Request(0, 1, [1], []), Request(1, -5, [1], [])], path)
    assert path.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["t.csv"]


def test_write_to_missing_directory(tmp_path):
    with pytest.raises(WorkloadError, match="cannot write"):
        write_csv_trace([], tmp_path / "nope" / "t.csv")


# --- errors -------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    missing = tmp_path / "none.csv"
    with pytest.raises(
        WorkloadError, match=rf"^--workload-traces-filepath: file not found: {missing}$"
    ):
        read_csv_trace(missing)


def test_directory_is_unreadable(tmp_path):
    with pytest.raises(WorkloadError, match="--workload-traces-filepath: cannot read"):
        read_csv_trace(tmp_path)


def test_empty_file(tmp_path):
    with pytest.raises(WorkloadError, match="empty, expected a header row"):
        read_csv_trace(write(tmp_path, "", header=""))


def test_not_utf8(tmp_path):
    path = tmp_path / "bin.csv"
    path.write_bytes(HEADER.encode() + b"1,a,\xff\xfe,[1],[]\n")
    with pytest.raises(WorkloadError, match="not UTF-8"):
        read_csv_trace(path)


@pytest.mark.parametrize(
    ("row", "pattern"),
    [
        (
            "1,a,,[1]",
            r"row 3: expected at least 5 columns \(arrival_s, id, model, "
            r"input_tokens, output_tokens\), got 4$",
        ),
        ("abc,a,,[1],[]", r"row 3 column arrival_s: not a number: 'abc'$"),
        (",a,,[1],[]", r"row 3 column arrival_s: not a number"),
        ("-1,a,,[1],[]", r"row 3 column arrival_s: must be a finite number of seconds >= 0"),
        ("nan,a,,[1],[]", r"row 3 column arrival_s: .*'nan'"),
        ("inf,a,,[1],[]", r"row 3 column arrival_s: .*'inf'"),
        ('1,a,,"[1,",[]', r"row 3 column input_tokens: invalid JSON"),
        ("1,a,,{},[]", r"row 3 column input_tokens: expected a JSON list of token ids, got dict"),
        ("1,a,,[],[]", r"row 3 column input_tokens: empty list, at least one prompt token"),
        ('1,a,,"[1,2.5]",[]', r"row 3 column input_tokens: token ids must be integers, got 2.5"),
        ("1,a,,[true],[]", r"row 3 column input_tokens: token ids must be integers, got true"),
        ('1,a,,"[1,-3]",[]', r"row 3 column input_tokens: token ids must be >= 0, got -3"),
        ("1,a,,[1],oops", r"row 3 column output_tokens: invalid JSON"),
        ('1,a,,[1],"[""x""]"', r"row 3 column output_tokens: token ids must be integers"),
        ("1,a,,[1],5", r"row 3 column output_tokens: expected a JSON list of token ids, got int"),
    ],
)
def test_malformed_rows_name_row_and_column(tmp_path, row, pattern):
    path = write(tmp_path, "0,ok,,[1],[]\n" + row + "\n2,later,,[1],[]\n")
    with pytest.raises(WorkloadError, match=pattern) as info:
        read_csv_trace(path)
    message = str(info.value)
    assert message.startswith(f"trace {path} row 3")
    assert "\n" not in message


def test_row_number_counts_file_lines_after_multiline_cell(tmp_path):
    # a quoted cell spanning two lines: the next record starts on line 4
    path = write(tmp_path, '0,"a\nb",,[1],[]\nbad,c,,[1],[]\n')
    with pytest.raises(WorkloadError, match=r"row 4 column arrival_s"):
        read_csv_trace(path)


def test_unterminated_quote_is_reported_as_csv_error(tmp_path):
    path = write(tmp_path, '0,a,,[1],[]\n1,a,,"[1,2],[]\n')
    with pytest.raises(WorkloadError, match=r"row 3: malformed CSV"):
        read_csv_trace(path)


# --- LoRA adapter columns -------------------------------------------------------------------


def _adapter_requests() -> list[Request]:
    a = Request(0, 0, np.array([1, 2, 3]), np.array([4, 5]), adapter="sql", adapter_rank=8)
    b = Request(1, 500, np.array([6, 7]), np.array([8]))  # the base model
    c = Request(2, 900, np.array([9]), np.array([1, 2]), adapter="chat")  # its catalog rank
    return [a, b, c]


def test_csv_round_trip_keeps_lora_adapters(tmp_path):
    path = tmp_path / "t.csv"
    reqs = _adapter_requests()
    write_csv_trace(reqs, path)
    assert path.read_text(encoding="utf-8").splitlines()[0] == (
        HEADER.strip() + ",adapter,adapter_rank"
    )
    back = read_csv_trace(path)
    assert fingerprint(back) == fingerprint(reqs)
    assert [(r.adapter, r.adapter_rank) for r in back] == [("sql", 8), ("", 0), ("chat", 0)]


def test_csv_without_adapters_keeps_the_five_reference_columns(tmp_path):
    path = tmp_path / "t.csv"
    write_csv_trace(_adapter_requests()[1:2], path)
    assert path.read_text(encoding="utf-8").splitlines()[0] == HEADER.strip()


def test_csv_writer_refuses_to_drop_adapters_it_cannot_look_ahead_to(tmp_path):
    path = tmp_path / "t.csv"
    with pytest.raises(WorkloadError, match=r"runs LoRA adapter 'sql'.*adapters=True"):
        write_csv_trace(iter(_adapter_requests()), path)
    assert not path.exists() and not list(tmp_path.iterdir())  # nothing half-written
    with pytest.raises(WorkloadError, match="'sql'"):
        write_csv_trace(_adapter_requests(), path, adapters=False)
    write_csv_trace(iter(_adapter_requests()), path, adapters=True)
    assert [r.adapter for r in read_csv_trace(path)] == ["sql", "", "chat"]
