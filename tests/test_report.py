"""The HTML report (self-contained, rendered in headless Chromium) and the PNG plots."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from browser import chromium_or_skip, render
from inference_sim import Results, simulate
from inference_sim.cli.main import cli
from inference_sim.report.html import build_report
from inference_sim.report.svg import cdf_points, nice_ticks

MODEL = "meta-llama/llama-3.1-8b-instruct"
SPEC = """
version: "2"
seed: 3
stages: [{rate: 40, duration: 3}, {rate: 90, duration: 2}]
clients:
  - id: chat
    slo_class: critical
    rate_fraction: 0.7
    arrival: {process: poisson}
    input_distribution: {type: gaussian, params: {mean: 300, std_dev: 80, min: 16, max: 1000}}
    output_distribution: {type: gaussian, params: {mean: 120, std_dev: 40, min: 4, max: 400}}
  - id: batch
    slo_class: batch
    rate_fraction: 0.3
    arrival: {process: poisson}
    input_distribution: {type: gaussian, params: {mean: 900, std_dev: 200, min: 16, max: 3000}}
    output_distribution: {type: gaussian, params: {mean: 300, std_dev: 80, min: 4, max: 900}}
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Results:
    spec = tmp_path_factory.mktemp("spec") / "spec.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    return simulate(model=MODEL, workload_spec=str(spec), num_instances=3)


@pytest.fixture(scope="module")
def results_file(results, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("res") / "results.json"
    results.write_json(path)
    return path


def test_report_is_self_contained_with_every_section(results):
    html = build_report(results)
    # No fetches: no external scripts, styles, images or fonts.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "url(" not in html and "@import" not in html
    assert html.count('<svg class="chart"') == 3 + 6 + 6  # CDFs, cluster, per instance
    for chart_id in ("cdf-ttft_ms", "cdf-itl_ms", "cdf-e2e_ms", "ts-cluster-queue_depth"):
        assert f'id="{chart_id}"' in html
    for section in (
        "Per instance",
        "Per SLO class",
        "Per load stage",
        "Configuration",
        "All metrics",
    ):
        assert f"<h2>{section}</h2>" in html
    assert ">critical<" in html and ">batch<" in html  # per-SLO table and CDF lines
    assert "workload_spec" in html  # the config table


def test_report_command_from_json_and_parquet(results, results_file, tmp_path):
    out = tmp_path / "r.html"
    result = CliRunner().invoke(cli, ["report", str(results_file), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert out.read_text(encoding="utf-8") == build_report(results)
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    folder = results.to_parquet(tmp_path / "pq")
    out2 = tmp_path / "r2.html"
    result = CliRunner().invoke(cli, ["report", str(folder), "-o", str(out2)])
    assert result.exit_code == 0, result.stderr
    assert out2.read_text(encoding="utf-8").count('<svg class="chart"') == 15


def test_report_command_bad_input(tmp_path):
    missing = CliRunner().invoke(cli, ["report", str(tmp_path / "nope.json")])
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    junk = tmp_path / "junk.json"
    junk.write_text("[1, 2]")
    bad = CliRunner().invoke(cli, ["report", str(junk)])
    assert bad.exit_code == 2 and "not a results file" in bad.stderr


def test_chart_helpers():
    assert nice_ticks(0, 97) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(0.0, 1.0)[-1] == 1.0
    xs, ys = cdf_points([3.0, 1.0, 2.0])
    assert xs == [1.0, 1.0, 2.0, 3.0] and ys == [0.0, 1 / 3, 2 / 3, 1.0]
    xs, ys = cdf_points(list(range(10_000)), points=100)
    assert len(xs) == 101 and ys[-1] == 1.0 and xs[-1] == 9999


def test_report_renders_in_headless_chromium(results, tmp_path):
    chromium_or_skip()
    page = tmp_path / "report.html"
    page.write_text(build_report(results), encoding="utf-8")
    dom, attrs, console = render(page, tmp_path / "profile")
    assert attrs.get("data-charts") == "15", attrs
    assert attrs.get("data-charts-rendered") == "15", attrs
    assert attrs.get("data-errors") == "0", attrs
    assert dom.count('data-rendered="1"') == 15
    assert console == []


def test_plot_command_writes_pngs(results_file, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "plots"
    result = CliRunner().invoke(cli, ["plot", str(results_file), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["latency_cdf.png", "timeseries_cluster.png", "timeseries_instances.png"]
    for p in out.iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert p.stat().st_size > 10_000


def test_plot_without_matplotlib_names_the_extra(results_file, monkeypatch):
    import inference_sim.core.extras as extras

    real = extras.importlib.import_module

    def fake(name, *a, **k):
        if name == "matplotlib":
            raise ImportError("no matplotlib")
        return real(name, *a, **k)

    monkeypatch.setattr(extras.importlib, "import_module", fake)
    result = CliRunner().invoke(cli, ["plot", str(results_file)])
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: blis plot needs matplotlib: pip install 'inference-sim[plot]'\n"
    )
