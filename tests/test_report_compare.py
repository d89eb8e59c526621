"""``blis report a.json b.json -o cmp.html``: runs overlaid and side by side (issue 20 item 12)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from browser import chromium_or_skip, render
from inference_sim import simulate
from inference_sim.cli.main import cli
from inference_sim.report.html import _num

MODEL = "meta-llama/llama-3.1-8b-instruct"
RUN = {"model": MODEL, "hardware": "H100", "tp": 1, "workload": "chatbot", "num_requests": 150}
CHARTS = 3 + 6  # TTFT/TPOT/E2E CDFs, six cluster time series


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[list[Path], list[dict]]:
    folder = tmp_path_factory.mktemp("runs")
    paths, summaries = [], []
    for rate in (10, 60):
        res = simulate(**RUN, rate=rate, arrival="poisson")
        path = folder / f"r{rate}.json"
        res.write_json(path)
        paths.append(path)
        summaries.append(res.summary)
    return paths, summaries


def _report(paths, out, *extra):
    return CliRunner().invoke(cli, ["report", *map(str, paths), "-o", str(out), *extra])


def test_comparison_page_overlays_runs_with_a_legend_and_a_side_by_side_table(files, tmp_path):
    paths, summaries = files
    out = tmp_path / "cmp.html"
    result = _report(paths, out)
    assert result.exit_code == 0, result.stderr
    html = out.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)  # self-contained
    charts = re.findall(r'<svg class="chart".*?</svg>', html, flags=re.S)
    assert len(charts) == CHARTS
    for chart in charts:  # one line per run, and a legend naming both
        assert chart.count('class="mark"') == 2
        assert ">rate=10<" in chart and ">rate=60<" in chart
    for chart_id in ("cmp-cdf-ttft_ms", "cmp-cdf-itl_ms", "cmp-cdf-e2e_ms", "cmp-ts-queue_depth"):
        assert f'id="{chart_id}"' in html
    table = re.search(r'<table id="summary">(.*?)</table>', html, flags=re.S)
    assert table is not None
    header = re.findall(r"<th[^>]*>(.*?)</th>", table.group(1))
    assert [re.sub(r"<[^>]+>", "", h) for h in header] == ["metric", "rate=10", "rate=60"]
    for key in ("ttft_p99_ms", "e2e_p99_ms", "responses_per_sec"):
        row = re.search(rf'<td class="l">{key}</td>(.*?)</tr>', table.group(1))
        assert row is not None, key
        cells = re.findall(r"<td>(.*?)</td>", row.group(1))
        assert cells == [_num(s[key]) for s in summaries]
    assert summaries[1]["ttft_p99_ms"] > summaries[0]["ttft_p99_ms"]


def test_labels_name_the_runs_and_must_match_the_files(files, tmp_path):
    paths, _ = files
    out = tmp_path / "cmp.html"
    result = _report(paths, out, "--label", "quiet", "--label", "busy", "--title", "Load test")
    assert result.exit_code == 0, result.stderr
    html = out.read_text(encoding="utf-8")
    assert "<h1>Load test</h1>" in html and ">quiet<" in html and ">busy<" in html
    bad = _report(paths, out, "--label", "only-one")
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "--label given 1 time(s) for 2 results" in bad.stderr
    missing = _report([paths[0], tmp_path / "nope.json"], out)
    assert missing.exit_code == 2 and "nope.json: no such file" in missing.stderr


def test_one_file_still_gives_the_single_run_report(files, tmp_path):
    out = tmp_path / "one.html"
    result = _report(files[0][:1], out)
    assert result.exit_code == 0, result.stderr
    assert 'id="summary"' not in out.read_text(encoding="utf-8")


def test_comparison_renders_in_headless_chromium(files, tmp_path):
    chromium_or_skip()
    page = tmp_path / "cmp.html"
    assert _report(files[0], page).exit_code == 0
    _dom, attrs, console = render(page, tmp_path / "profile")
    assert attrs.get("data-charts") == str(CHARTS), attrs
    assert attrs.get("data-charts-rendered") == str(CHARTS), attrs
    assert attrs.get("data-errors") == "0", attrs
    assert console == []


def test_comparison_shows_each_calibrated_runs_fidelity(files, tmp_path):
    """Two runs side by side, one calibrated on an L40S (a datasheet GPU) and one
    blackbox: the page says how far the calibrated one can be trusted, and that the
    other has no figure."""
    paths, _ = files
    cal = simulate(**{**RUN, "hardware": "L40S", "latency_model": "calibrated"}, rate=10)
    cal_path = tmp_path / "cal.json"
    cal.write_json(cal_path)
    out = tmp_path / "cmp.html"
    res = _report([paths[0], cal_path], out, "--label", "blackbox", "--label", "calibrated")
    assert res.exit_code == 0, res.stderr
    page = out.read_text(encoding="utf-8")
    assert "<h2>Fidelity</h2>" in page and "L40S (datasheet), TP 1" in page
    e2e = cal.summary["fidelity"]["expected_abs_error_pct"]["e2e"]
    assert f"{e2e['median']} % ({e2e['max']} %)" in page
    plain = tmp_path / "plain.html"
    assert _report(paths, plain).exit_code == 0
    assert "<h2>Fidelity</h2>" not in plain.read_text(encoding="utf-8")
