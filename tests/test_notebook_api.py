"""Notebook habits (issue 20 item 10): repr, _repr_html_, compare, inline specs and traces."""

from __future__ import annotations

import json
from xml.etree import ElementTree

import pytest

from inference_sim import ConfigError, Results, compare, simulate
from inference_sim.workload import WorkloadError

MODEL = "meta-llama/llama-3.1-8b-instruct"
RUN = {"model": MODEL, "hardware": "H100", "tp": 1, "workload": "chatbot", "num_requests": 60}
SPEC = {
    "version": "2",
    "seed": 11,
    "aggregate_rate": 12,
    "num_requests": 80,
    "clients": [
        {
            "id": "chat",
            "rate_fraction": 1,
            "arrival": {"process": "poisson"},
            "input_distribution": {
                "type": "gaussian",
                "params": {"mean": 200, "std_dev": 50, "min": 10, "max": 500},
            },
            "output_distribution": {"type": "exponential", "params": {"mean": 60}},
        }
    ],
}


@pytest.fixture(scope="module")
def two_runs() -> tuple[Results, Results]:
    return simulate(**RUN, rate=10), simulate(**RUN, rate=40)


def test_repr_names_the_run_and_its_headline_numbers(two_runs):
    res = two_runs[0]
    text = repr(res)
    assert text.startswith("<Results: ") and "\n" not in text
    assert "H100 TP1 x1" in text and "chatbot at 10 req/s" in text
    assert f"{res.summary['completed_requests']} completed" in text
    assert f"TTFT p99 {res.summary['ttft_p99_ms']:.3g} ms" in text


def test_html_view_has_the_metrics_table_and_two_cdfs(two_runs):
    res = two_runs[0]
    html = res._repr_html_()
    root = ElementTree.fromstring(
        html.replace("<style>", "<style><![CDATA[").replace("</style>", "]]></style>")
    )  # well-formed markup, parsed as XML
    cells = ["".join(td.itertext()) for td in root.iter("td")]
    assert "TTFT p99 (ms)" in cells
    shown = cells[cells.index("TTFT p99 (ms)") + 1]
    assert float(shown.replace(",", "")) == pytest.approx(res.summary["ttft_p99_ms"], rel=1e-2)
    svgs = [el for el in root.iter() if el.tag.endswith("svg")]
    assert len(svgs) == 2
    assert all(
        any(p.get("class") == "mark" for p in s.iter() if p.tag.endswith("path")) for s in svgs
    )


def test_compare_puts_runs_side_by_side_labelled_by_what_differs(two_runs):
    pd = pytest.importorskip("pandas")
    a, b = two_runs
    table = compare([a, b])
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["rate=10", "rate=40"]
    assert table.loc["ttft_p99_ms", "rate=40"] == b.summary["ttft_p99_ms"]
    assert table.loc["responses_per_sec", "rate=10"] == a.summary["responses_per_sec"]
    same = a.compare(b, labels=["low", "high"])
    assert list(same.columns) == ["low", "high"]
    by_name = compare({"x": a, "y": b}, metrics=["e2e_p99_ms"])
    assert by_name.to_dict() == {
        "x": {"e2e_p99_ms": a.summary["e2e_p99_ms"]},
        "y": {"e2e_p99_ms": b.summary["e2e_p99_ms"]},
    }
    with pytest.raises(ValueError, match="needs one or more Results"):
        compare([])


def test_workload_spec_as_a_dict_runs_like_the_file(tmp_path):
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    from_file = simulate(model=MODEL, workload_spec=str(path))
    from_dict = simulate(model=MODEL, workload_spec=SPEC)
    strip = lambda s: {k: v for k, v in s.items() if k != "config"}  # noqa: E731
    assert strip(from_dict.summary) == strip(from_file.summary)
    assert from_dict.config["workload_spec"] == SPEC  # the config says what ran
    # the results file repeats the run
    out = tmp_path / "r.json"
    from_dict.write_json(out)
    again = simulate(config=str(out))
    assert strip(again.summary) == strip(from_dict.summary)
    with pytest.raises(WorkloadError, match=r"workload_spec \(inline\): "):
        simulate(model=MODEL, workload_spec={"clients": "nope"})


def test_trace_as_a_dataframe_replays_a_runs_requests():
    pd = pytest.importorskip("pandas")
    first = simulate(model=MODEL, workload_spec=SPEC)
    replay = simulate(model=MODEL, trace=first.requests)
    assert replay.summary["completed_requests"] == first.summary["completed_requests"]
    assert replay.summary["total_input_tokens"] == first.summary["total_input_tokens"]
    assert replay.summary["total_output_tokens"] == first.summary["total_output_tokens"]
    got = [r["arrived_at"] for r in replay.records]
    want = [r["arrived_at"] - first.records[0]["arrived_at"] for r in first.records]
    assert got == pytest.approx(sorted(want), abs=2e-6)
    assert replay.config["workload_traces_filepath"] == f"<DataFrame: {len(first.records)} rows>"
    # lengths only, no times: arrivals at the rate, spaced as --arrival says
    frame = pd.DataFrame({"prompt_len": [100, 200, 300], "output_len": [5, 6, 7]})
    even = simulate(model=MODEL, trace=frame, rate=2)
    assert [r["arrived_at"] for r in even.records] == pytest.approx([0, 0.5, 1.0], abs=1e-5)
    lists = simulate(model=MODEL, trace=frame.to_dict("records"), rate=2)
    assert lists.summary["total_input_tokens"] == 600
    with pytest.raises(WorkloadError, match="no output-length column"):
        simulate(model=MODEL, trace=pd.DataFrame({"prompt_len": [1]}))
    # An in-memory trace with another workload is refused before anything runs; a trace
    # file says "replayed only with --workload traces" (issue 21, item 11).
    with pytest.raises(WorkloadError, match="needs workload 'traces'"):
        simulate(model=MODEL, trace=frame, workload="chatbot")
    with pytest.raises(ConfigError, match="not both"):
        simulate(model=MODEL, trace=frame, workload_traces_filepath="x.csv")


def test_results_repr_survives_a_results_file_round_trip(tmp_path, two_runs):
    path = tmp_path / "r.json"
    two_runs[1].write_json(path)
    loaded = Results.load(path)
    assert repr(loaded) == repr(two_runs[1])
    assert json.loads(path.read_text())["config"]["rate"] == 40
