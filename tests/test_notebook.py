"""The example notebook runs top to bottom (issue 20 item 10), executed with nbclient."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "rate_sweep.ipynb"


def test_example_notebook_runs_top_to_bottom(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")  # kept clean
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    # the first cell's Results renders as a table with inline CDFs
    assert "isim-results" in html[0] and html[0].count("<svg") == 2
    assert any("<table" in h and "140 req/s" in h for h in html[1:])  # compare() table
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the sweep's plot
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    found = re.search(r"TTFT p99 above 500 ms from (\d+) req/s", text)
    assert found is not None, text
    assert 60 <= int(found.group(1)) <= 140
