"""Per-request records are built from the columnar log when read (issue 9: memory grows
with requests in flight, not with requests simulated), yet behave like the list of dicts
they replace, and the results file streams them with the same bytes."""

from __future__ import annotations

import json

import pytest

from inference_sim import simulate
from inference_sim.metrics.request_log import RecordView


@pytest.fixture(scope="module")
def results():
    return simulate(
        model="meta-llama/llama-3.1-8b-instruct",
        workload="chatbot",
        rate=20,
        num_requests=120,
        num_instances=2,
        seed=3,
    )


def test_records_are_a_lazy_view_that_acts_like_a_list(results):
    view = results.records
    assert isinstance(view, RecordView)
    as_list = list(view)
    assert len(view) == len(as_list) == 120
    assert view[0] == as_list[0] and view[-1] == as_list[-1]
    assert view[10:13] == as_list[10:13]
    assert view == as_list and as_list == list(view)
    assert [r["requestID"] for r in view] == [f"request_{i}" for i in range(120)]
    with pytest.raises(IndexError):
        view[120]
    first_ttft = as_list[0]["ttft_ms"]
    view[0]["ttft_ms"] = -1.0  # entries are fresh dicts: the view is not changed
    assert view[0]["ttft_ms"] == first_ttft > 0


def test_results_file_streams_the_same_records(results, tmp_path):
    path = tmp_path / "r.json"
    results.write_json(path)
    text = path.read_text(encoding="utf-8")
    assert text == json.dumps(results.to_dict(), indent=2)  # the same bytes as in memory
    assert json.loads(text)["requests"] == list(results.records)
    assert isinstance(results.to_dict()["requests"], list)
    assert path.stat().st_mode & 0o777 == 0o644
