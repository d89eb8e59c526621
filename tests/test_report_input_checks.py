"""Malformed per-request records and summary metrics in a results file: `blis report`,
`blis plot` and `Results.load` stop with one line naming the file and the field."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from inference_sim import Results, simulate
from inference_sim.cli.main import cli
from inference_sim.core.extras import have
from inference_sim.report.compare import COMPARE_METRICS
from inference_sim.report.html import HEADLINE

MODEL = "meta-llama/llama-3.1-8b-instruct"


@pytest.fixture(scope="module")
def doc(tmp_path_factory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("run") / "ok.json"
    simulate(model=MODEL, num_requests=12, seed=5).write_json(path)
    return json.loads(path.read_text())


def _write(tmp_path: Path, doc: dict[str, Any], name: str, edit) -> Path:  # type: ignore[no-untyped-def]
    d = copy.deepcopy(doc)
    edit(d)
    path = tmp_path / name
    path.write_text(json.dumps(d))  # NaN / Infinity as Python's json writes them
    return path


def _one_error_line(result) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def _set(i: int, **fields: Any):  # type: ignore[no-untyped-def]
    return lambda d: d["requests"][i].update(fields)


def _drop(i: int, key: str):  # type: ignore[no-untyped-def]
    return lambda d: d["requests"][i].pop(key)


BAD_RECORDS = [
    (_set(0, ttft_ms="abc"), "requests[0].ttft_ms must be a number, got 'abc'"),
    (_set(0, ttft_ms=math.nan), "requests[0].ttft_ms must be a finite number, got NaN"),
    (_set(2, e2e_ms=math.inf), "requests[2].e2e_ms must be a finite number, got Infinity"),
    (_set(1, e2e_ms=True), "requests[1].e2e_ms must be a number, got True"),
    (_drop(3, "e2e_ms"), "requests[3] has no e2e_ms: every record `blis run` writes has"),
    (_drop(0, "requestID"), "requests[0] has no requestID"),
    (_set(4, num_decode_tokens=-2), "requests[4].num_decode_tokens must be a whole number >= 0"),
    (_set(4, num_prefill_tokens=None), "requests[4].num_prefill_tokens must be a whole number"),
    (_set(5, arrived_at="soon"), "requests[5].arrived_at must be a number (seconds), got 'soon'"),
    (_set(1, itl_ms=None), "requests[1].itl_ms must be a number for a finished request"),
]


@pytest.mark.parametrize(("edit", "expected"), BAD_RECORDS)
def test_report_refuses_bad_record(tmp_path, doc, edit, expected):
    if "itl_ms" in expected:  # the edited record must be a finished multi-token one
        assert doc["requests"][1]["e2e_ms"] > 0 and doc["requests"][1]["num_decode_tokens"] > 1
    path = _write(tmp_path, doc, "bad.json", edit)
    out = tmp_path / "x.html"
    result = CliRunner().invoke(cli, ["report", str(path), "-o", str(out)])
    line = _one_error_line(result)
    assert line.startswith(f"Error: {path}: {expected}"), line
    assert "not a results file" not in line
    assert not out.exists()


@pytest.mark.skipif(not have("matplotlib"), reason="needs matplotlib (plot extra)")
def test_plot_refuses_bad_record(tmp_path, doc):
    path = _write(tmp_path, doc, "bad.json", _set(0, ttft_ms="abc"))
    result = CliRunner().invoke(cli, ["plot", str(path), "-o", str(tmp_path / "plots")])
    line = _one_error_line(result)
    assert line == f"Error: {path}: requests[0].ttft_ms must be a number, got 'abc'"
    assert not list((tmp_path / "plots").glob("*.png")) if (tmp_path / "plots").exists() else True


def test_compare_names_the_bad_file(tmp_path, doc):
    good = _write(tmp_path, doc, "good.json", lambda d: None)
    bad = _write(tmp_path, doc, "bad.json", _drop(0, "e2e_ms"))
    out = tmp_path / "cmp.html"
    result = CliRunner().invoke(cli, ["report", str(good), str(bad), "-o", str(out)])
    line = _one_error_line(result)
    assert line.startswith(f"Error: {bad}: requests[0] has no e2e_ms"), line
    assert not out.exists()


def test_summary_metric_that_is_not_a_number(tmp_path, doc):
    path = _write(tmp_path, doc, "s.json", lambda d: d.update(ttft_p99_ms="abc"))
    result = CliRunner().invoke(cli, ["report", str(path), "-o", str(tmp_path / "x.html")])
    line = _one_error_line(result)
    assert line == f"Error: {path}: ttft_p99_ms must be a number (or null), got 'abc'"


def test_instance_summary_metric_that_is_not_a_number(tmp_path, doc):
    def edit(d: dict[str, Any]) -> None:
        d["instances"] = [dict(d, instance_id="instance_0", e2e_p99_ms=[1, 2])]
        for key in ("requests", "timeseries", "config"):
            d["instances"][0].pop(key, None)

    path = _write(tmp_path, doc, "s.json", edit)
    with pytest.raises(ValueError, match=r"instances\[0\]\.e2e_p99_ms must be a number"):
        Results.load(path)


def test_what_blis_run_and_other_tools_write_for_unfinished_requests_is_kept(tmp_path, doc):
    """Null, 0 or -1 latencies (a stage not reached), a null summary metric and absent
    optional keys are read as before."""

    def edit(d: dict[str, Any]) -> None:
        d["requests"][0].update(ttft_ms=None, itl_ms=None, e2e_ms=None, scheduling_delay_ms=None)
        d["requests"][1].update(ttft_ms=-1, itl_ms=-1, e2e_ms=-1, scheduling_delay_ms=-1)
        d["requests"][2].update(e2e_ms=0.0, itl_ms=None)  # unfinished: no TPOT
        for key in ("handled_by", "model", "slo_class", "tenant_id"):
            d["requests"][3].pop(key, None)
        d["e2e_mean_ms"] = None

    path = _write(tmp_path, doc, "ok.json", edit)
    out = tmp_path / "ok.html"
    result = CliRunner().invoke(cli, ["report", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert out.exists()
    assert len(Results.load(path).records) == len(doc["requests"])


@pytest.mark.skipif(not (have("pandas") and have("pyarrow")), reason="needs the data extra")
def test_parquet_folder_reads_null_latencies_and_refuses_bad_counts(tmp_path, doc):
    d = copy.deepcopy(doc)
    d["requests"][0].update(ttft_ms=None, e2e_ms=None, itl_ms=None)
    folder = Results.from_dict(d).to_parquet(tmp_path / "pq")
    assert (
        Results.load(folder).records[0]["num_decode_tokens"]
        == d["requests"][0]["num_decode_tokens"]
    )
    import pandas as pd

    frame = pd.read_parquet(folder / "requests.parquet")
    frame["num_decode_tokens"] = frame["num_decode_tokens"].astype("float64")
    frame.loc[2, "num_decode_tokens"] = 2.5
    frame.to_parquet(folder / "requests.parquet")
    with pytest.raises(ValueError, match=r"requests\[2\]\.num_decode_tokens must be a whole"):
        Results.load(folder)


def test_summary_keys_cover_what_the_report_shows():
    from inference_sim.results import SUMMARY_NUMBER_KEYS

    shown = {k for k, _ in HEADLINE} | set(COMPARE_METRICS)
    assert shown <= set(SUMMARY_NUMBER_KEYS)


def test_check_records_large_and_clean_is_quiet():
    from inference_sim.results import check_records

    recs = [
        {
            "arrived_at": i / 10,
            "requestID": f"request_{i}",
            "num_prefill_tokens": 100,
            "num_decode_tokens": 10,
            "ttft_ms": 1.5,
            "itl_ms": 0.5,
            "e2e_ms": 6.0 if i % 3 else 0.0,
            "scheduling_delay_ms": 0.0,
        }
        for i in range(20000)
    ]
    check_records(recs)
    recs[19999]["itl_ms"] = "x"
    with pytest.raises(ValueError, match=r"requests\[19999\]\.itl_ms must be a number"):
        check_records(recs)
