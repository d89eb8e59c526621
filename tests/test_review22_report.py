"""Review 22 (report and sweep area): comparison labels, the nested blocks and time series
of a results file, number formatting of the P/D tables, stale figures of `blis plot`, and
sweeps (stale replicates, seed ranges, config files per part, plug-ins in workers)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from inference_sim import Results, compare, simulate
from inference_sim.cli.main import cli
from inference_sim.config.errors import ConfigError
from inference_sim.core.extras import have
from inference_sim.core.rng import MAX_SEED
from inference_sim.report.html import build_report
from inference_sim.sweep import LocalBackend, parse_sweep, run_sweep

MODEL = "meta-llama/llama-3.1-8b-instruct"
TINY = {"model": MODEL, "workload": "chatbot", "num_requests": 6, "rate": 10}
needs_table = pytest.mark.skipif(
    not (have("pandas") and have("pyarrow") and have("duckdb")), reason="needs the sweep extra"
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path, dict[str, Any]]:
    """Two small results files (rates 10 and 20) and the first one's document."""
    folder = tmp_path_factory.mktemp("runs")
    a, b = folder / "a.json", folder / "b.json"
    simulate(model=MODEL, num_requests=8, rate=10, seed=3).write_json(a)
    simulate(model=MODEL, num_requests=8, rate=20, seed=3).write_json(b)
    return a, b, json.loads(a.read_text())


def _error_line(result) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


# --- 1. comparison labels -----------------------------------------------------------------


def test_compare_refuses_a_label_given_twice_or_the_metric_column(runs):
    a, b, _ = runs
    ra, rb = Results.load(a), Results.load(b)
    with pytest.raises(ValueError, match="'x' is given to two runs"):
        compare([ra, rb], labels=["x", "x"])
    with pytest.raises(ValueError, match="'metric' is reserved"):
        compare([ra, rb], labels=["metric", "y"])
    with pytest.raises(ValueError, match="'metric' is reserved"):
        compare({"metric": ra, "y": rb})
    # distinct labels still give each run its own column
    table = compare([ra, rb], labels=["calm", "busy"])
    rows = table if isinstance(table, list) else table.reset_index().to_dict("records")
    rate = next(r for r in rows if r["metric"] == "responses_per_sec")
    assert rate["calm"] == ra.summary["responses_per_sec"]
    assert rate["busy"] == rb.summary["responses_per_sec"]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [(["x", "x"], "--label 'x' is given to two runs"), (["metric", "y"], "'metric' is reserved")],
)
def test_report_label_checks_are_one_line(runs, tmp_path, labels, expected):
    a, b, _ = runs
    args = ["report", str(a), str(b), "-o", str(tmp_path / "cmp.html")]
    for label in labels:
        args += ["--label", label]
    line = _error_line(CliRunner().invoke(cli, args))
    assert expected in line
    assert not (tmp_path / "cmp.html").exists()


# --- 2./3. nested blocks and the time series -------------------------------------------


def _set(doc: dict[str, Any], key: str, value: Any) -> None:
    doc[key] = value


BAD_BLOCKS = [
    ("slo_metrics", "x", "slo_metrics must be an object"),
    ("slo_metrics", {"batch": 5}, "slo_metrics.batch must be an object, got 5"),
    ("stages", [1, 2], "stages[0] must be an object, got 1"),
    ("stages", {"a": 1}, "stages must be a list of objects"),
    ("pd", "x", "pd must be an object, got 'x'"),
    ("pd", {"pools": {"prefill": 3}}, "pd.pools.prefill must be an object, got 3"),
    ("autoscaling", {"events": 5}, "autoscaling.events must be a list of objects, got 5"),
    ("autoscaling", {"gpu_hours": "x"}, "autoscaling.gpu_hours must be a finite number"),
    (
        "autoscaling",
        {"replicas": {"t_s": [0, 1], "ready": [1]}},
        "autoscaling.replicas.ready has 1 values for 2 times",
    ),
    ("autoscaling", {"pools": {"decode": {"events": [3]}}}, "autoscaling.pools.decode.events[0]"),
    ("lora", {"adapters": 5}, "lora.adapters must be an object of figures per adapter, got 5"),
    ("lora", {"instances": {"instance_0": []}}, "lora.instances.instance_0 must be an object"),
    (
        "fidelity",
        {"coefficients": "shipped", "expected_abs_error_pct": {"e2e": {"median": 1}}},
        "fidelity.expected_abs_error_pct.e2e has no max",
    ),
]


@pytest.mark.parametrize(("key", "value", "expected"), BAD_BLOCKS)
def test_a_nested_block_of_the_wrong_type_is_one_line_naming_file_and_field(
    runs, tmp_path, key, value, expected
):
    _, _, doc = runs
    bad = copy.deepcopy(doc)
    bad[key] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    line = _error_line(CliRunner().invoke(cli, ["report", str(path), "-o", str(tmp_path / "r")]))
    assert str(path) in line and expected in line, line
    with pytest.raises(ValueError, match=key):
        Results.load(path)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda ts: ts.update(interval_us="x"), "timeseries.interval_us must be a whole number"),
        (lambda ts: ts.update(interval_us=2.5), "timeseries.interval_us must be a whole number"),
        (lambda ts: ts.update(interval_us=-1), "timeseries.interval_us must be a whole number"),
        (
            lambda ts: ts["columns"]["instance"].pop(),
            "timeseries.columns.instance has",
        ),
        (
            lambda ts: ts["columns"]["queue_depth"].__setitem__(0, "a"),
            "timeseries.columns.queue_depth[0] must be a number or null, got 'a'",
        ),
        (lambda ts: ts["columns"].pop("running"), "timeseries.columns.running is missing"),
    ],
)
def test_a_bad_time_series_is_one_line_naming_the_field(runs, tmp_path, edit, expected):
    _, _, doc = runs
    bad = copy.deepcopy(doc)
    edit(bad["timeseries"])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    line = _error_line(CliRunner().invoke(cli, ["report", str(path), "-o", str(tmp_path / "r")]))
    assert str(path) in line and expected in line, line


def test_what_blis_run_writes_still_loads(runs, tmp_path):
    """The checks refuse only shapes `blis run` never writes: a real P/D run (its
    ``pd`` block and pools) reads back and reports."""
    path = tmp_path / "pd.json"
    simulate(
        model=MODEL,
        hardware="H100",
        tp=1,
        num_instances=2,
        prefill_instances=1,
        decode_instances=1,
        num_requests=10,
        rate=5,
        seed=1,
    ).write_json(path)
    res = Results.load(path)
    assert res.summary["pd"]["pools"]
    assert "Prefill/decode" in build_report(res)


# --- 4. P/D tables format their numbers ---------------------------------------------------


def test_pd_tables_format_numbers_like_the_other_tables(runs):
    _, _, doc = runs
    summary = copy.deepcopy(doc)
    summary["pd"] = {
        "transfers": 31820087296,
        "kv_transfer_p90_ms": 12.260200000000001,
        "pools": {"decode": {"instances": 3, "ttft_p90_ms": 216.7933, "itl_p99_ms": 9.193}},
    }
    html = build_report(Results.from_dict(summary))
    assert "12.260200000000001" not in html and "216.7933" not in html
    assert "<td>kv_transfer_p90_ms</td><td>12.26</td>" in html
    assert "<td>216.8</td>" in html and "<td>31,820,087,296</td>" in html


# --- 5. blis plot removes the figures this run does not have ---------------------------


@pytest.mark.skipif(not have("matplotlib"), reason="needs the plot extra")
def test_plot_removes_a_stale_per_instance_figure(tmp_path, monkeypatch):
    from inference_sim.report import plots
    from inference_sim.report.plots import write_plots

    def save(fig: Any, path: Path) -> Path:  # the figures' pixels do not matter here
        path.write_bytes(b"png")
        return path

    monkeypatch.setattr(plots, "_save", save)
    out = tmp_path / "plots"
    write_plots(simulate(model=MODEL, num_requests=8, num_instances=2, seed=1), out)
    assert (out / "timeseries_instances.png").exists()
    (out / "notes.txt").write_text("mine")
    written = write_plots(simulate(model=MODEL, num_requests=8, num_instances=1, seed=1), out)
    assert sorted(p.name for p in out.iterdir()) == [
        "latency_cdf.png",
        "notes.txt",
        "timeseries_cluster.png",
    ]
    assert {p.name for p in written} == {"latency_cdf.png", "timeseries_cluster.png"}


# --- 6. sweeps ----------------------------------------------------------------------------


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@needs_table
def test_a_rerun_without_seeds_removes_the_stale_replicates_table(tmp_path):
    from inference_sim.sweep.run import replicate_rows, with_seeds, write_replicates

    spec = parse_sweep({"base": TINY, "grid": {"num_instances": [1, 2]}})
    seeded = with_seeds(spec, [1, 2])
    outcome = run_sweep(seeded, tmp_path, backend=LocalBackend(jobs=1))
    write_replicates(replicate_rows(seeded, outcome, 0.95), tmp_path)
    assert (tmp_path / "replicates.parquet").exists()
    run_sweep(spec, tmp_path, backend=LocalBackend(jobs=1))
    assert not (tmp_path / "replicates.parquet").exists()
    assert (tmp_path / "results.parquet").exists()


def test_seeds_out_of_range_are_refused_when_the_sweep_is_loaded(tmp_path):
    from inference_sim.sweep.run import with_seeds

    with pytest.raises(ConfigError, match=r"grid: seed must be in \[0, 18446744073709551615\]"):
        parse_sweep({"base": TINY, "grid": {"seed": [1, MAX_SEED + 1]}}, "s.yaml")
    with pytest.raises(ConfigError, match="cases\\[0\\]: seed must be in"):
        parse_sweep({"base": TINY, "cases": [{"seed": -1}]}, "s.yaml")
    spec = parse_sweep({"base": {**TINY, "seed": MAX_SEED}}, "s.yaml")  # the largest is fine
    with pytest.raises(ConfigError, match="--seeds/--replicates: seed must be in"):
        with_seeds(spec, [MAX_SEED, MAX_SEED + 1])


@needs_table
def test_replicates_past_the_largest_seed_stop_before_any_run(tmp_path):
    sweep = _write(tmp_path / "big.yaml", {"base": {**TINY, "seed": MAX_SEED}})
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["sweep", str(sweep), "--out", str(out), "--replicates", "2"])
    line = _error_line(result)
    assert f"seed must be in [0, {MAX_SEED}]" in line and str(MAX_SEED + 1) in line
    assert not out.exists()


@needs_table
def test_the_table_takes_integers_too_large_for_its_columns(tmp_path):
    """A failed row may hold any integer (a spec built by hand skips the sweep file's
    checks): the table is still written, that column as text."""
    import pandas as pd

    from inference_sim.sweep.run import write_tables

    rows = [
        {"run": 0, "status": "ok", "seed": 1, "n": -1},
        {"run": 1, "status": "failed", "seed": 2**64, "n": 2**63},
    ]
    write_tables(rows, tmp_path)
    table = pd.read_parquet(tmp_path / "results.parquet")
    assert list(table["seed"]) == ["1", str(2**64)] and list(table["n"]) == ["-1", str(2**63)]
    write_tables([{"run": 0, "seed": 1}, {"run": 1, "seed": MAX_SEED}], tmp_path)
    assert list(pd.read_parquet(tmp_path / "results.parquet")["seed"]) == [1, MAX_SEED]


def test_each_parts_config_file_merges_key_by_key(tmp_path):
    """base < grid < case, and within a part its own keys above its config file's."""
    _write(tmp_path / "rc.yaml", {"seed": 100, "rate": 7})
    _write(tmp_path / "rc2.yaml", {"num_requests": 30})
    _write(tmp_path / "g1.yaml", {"num_requests": 25, "arrival": "poisson"})
    base = {**TINY, "num_requests": 50, "config": "rc.yaml"}
    spec = parse_sweep(
        {"base": base, "cases": [{"config": "rc2.yaml"}, {"num_requests": 40}]},
        "s.yaml",
        str(tmp_path),
    )
    got = [(r.options["seed"], r.options["rate"], r.options["num_requests"]) for r in spec.runs()]
    # the base's own rate (10) beats its file's (7); the base file's seed stays; the
    # case's file beats the base's num_requests
    assert got == [(100, 10, 30), (100, 10, 40)]
    assert all("config" not in r.options for r in spec.runs())
    grid = parse_sweep(
        {"base": base, "grid": {"config": ["g1.yaml", "rc2.yaml"], "arrival": ["constant"]}},
        "s.yaml",
        str(tmp_path),
    )
    got = [(r.options["num_requests"], r.options["arrival"]) for r in grid.runs()]
    assert got == [(25, "constant"), (30, "constant")]  # the grid's key beats its file's
    assert "num_requests" in grid.varied() and "config" not in grid.option_names()


def test_a_bad_config_file_of_a_case_is_one_line(tmp_path):
    _write(tmp_path / "big.yaml", {"seed": MAX_SEED + 1})
    with pytest.raises(ConfigError, match=r"s.yaml: config .*big.yaml: seed must be in"):
        parse_sweep({"base": TINY, "cases": [{"config": "big.yaml"}]}, "s.yaml", str(tmp_path))
    with pytest.raises(ConfigError, match=r"s.yaml: config .*nope.yaml: cannot read"):
        parse_sweep({"base": TINY, "grid": {"config": ["nope.yaml"]}}, "s.yaml", str(tmp_path))


def test_a_case_config_file_runs_with_the_base_file_seed(tmp_path):
    _write(tmp_path / "rc.yaml", {"seed": 100})
    _write(tmp_path / "rc3.yaml", {"num_requests": 5})
    spec = parse_sweep(
        {"base": {**TINY, "config": "rc.yaml"}, "cases": [{"config": "rc3.yaml"}]},
        "s.yaml",
        str(tmp_path),
    )
    outcome = run_sweep(spec, tmp_path / "out", backend=LocalBackend(jobs=1), write_table=False)
    config = outcome.results[0]["summary"]["config"]
    assert (config["seed"], config["num_requests"]) == (100, 5)


class StepPlugin:
    """A latency plug-in at a module's top level: a worker can import it by name."""

    def __init__(self, tp: int) -> None:
        self.tp = tp

    def step_time(self, batch: Any) -> int:
        return 4000

    def queueing_time(self, request: Any) -> int:
        return 0

    def output_token_time(self) -> int:
        return 0

    def describe(self) -> dict[str, Any]:
        return {"latency_model": "review22-step"}


def _plugin_spec(latency: str) -> Any:
    options = {
        "model": MODEL,
        "hardware": "H100",
        "tp": 1,
        "latency_model": latency,
        "num_instances": 2,
        "routing_policy": "review22-least",
        "num_requests": 6,
        "rate": 10,
    }
    return parse_sweep({"base": options, "grid": {"seed": [1, 2]}})


@pytest.fixture
def registered():  # type: ignore[no-untyped-def]
    """Names registered from Python for one test (not at import: a worker that imports
    this module must not get them that way)."""
    from inference_sim.latency.registry import _REGISTRY
    from inference_sim.policies import ROUTING, LeastLoaded

    ROUTING.register("review22-least", LeastLoaded)
    try:
        yield
    finally:
        ROUTING._factories.pop("review22-least", None)
        _REGISTRY.pop("review22-step", None)
        _REGISTRY.pop("review22-local", None)


def test_registered_plugins_work_in_worker_processes(tmp_path, registered):
    from inference_sim.latency import register_latency_model

    register_latency_model("review22-step", StepPlugin)
    spec = _plugin_spec("review22-step")
    outcome = run_sweep(spec, tmp_path, backend=LocalBackend(jobs=2), write_table=False)
    assert [r["status"] for r in outcome.results] == ["ok", "ok"], outcome.results
    serial = run_sweep(spec, tmp_path / "serial", backend=LocalBackend(jobs=1), write_table=False)
    for par, one in zip(outcome.results, serial.results, strict=True):
        assert par["summary"] == one["summary"]


def test_a_plugin_a_worker_cannot_import_runs_in_this_process(tmp_path, registered, sim_log):
    from inference_sim.latency import register_latency_model

    class LocalStep(StepPlugin):  # inside a function: no worker can import it
        pass

    register_latency_model("review22-local", LocalStep)
    outcome = run_sweep(
        _plugin_spec("review22-local"),
        tmp_path,
        backend=LocalBackend(jobs=2),
        write_table=False,
    )
    assert [r["status"] for r in outcome.results] == ["ok", "ok"], outcome.results
    want = "cannot be sent to worker processes: running the 2 runs in this process"
    assert want in sim_log.text
