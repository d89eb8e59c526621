"""Sweeps: expansion, local process pool, reruns, failures, Parquet/DuckDB, Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from inference_sim import simulate
from inference_sim.cli.main import cli
from inference_sim.config.errors import ConfigError
from inference_sim.sweep import LocalBackend, load_sweep, parse_sweep, run_key, run_sweep

MODEL = "meta-llama/llama-3.1-8b-instruct"
BASE = {"model": MODEL, "workload": "chatbot", "num_requests": 40}
SWEEP = {
    "base": BASE,
    "grid": {"rate": [10, 20], "num_instances": [1, 2]},
    "cases": [{"routing_policy": "least-loaded"}, {"routing_policy": "round-robin"}],
}

BOOM = '''
import os


class Boom:
    """Raises inside the worker on the first routing decision."""

    def route(self, request, state):
        raise RuntimeError("boom in a worker")


class Die:
    """Kills the worker process outright."""

    def route(self, request, state):
        os._exit(3)
'''


def _write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def test_expansion_order_and_keys(tmp_path):
    spec = load_sweep(_write(tmp_path / "s.yaml", SWEEP))
    runs = spec.runs()
    assert len(runs) == 8
    got = [
        (r.options["rate"], r.options["num_instances"], r.options["routing_policy"]) for r in runs
    ]
    assert got[:3] == [(10, 1, "least-loaded"), (10, 1, "round-robin"), (10, 2, "least-loaded")]
    assert got[-1] == (20, 2, "round-robin")
    assert [r.index for r in runs] == list(range(8))
    assert len({r.key for r in runs}) == 8
    # the key depends on the options only, not on how they were written
    same = parse_sweep({"base": {**BASE, "rate": 10, "num_instances": 1}, "cases": SWEEP["cases"]})
    assert same.runs()[0].key == runs[0].key
    assert run_key({"b": 1, "a": 2}) == run_key({"a": 2, "b": 1})
    assert spec.varied() == ["rate", "num_instances", "routing_policy"]


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"base": BASE, "grid": {"ratee": [1]}}, "unknown run option 'ratee'"),
        ({"base": BASE, "extra": 1}, "unknown key 'extra'"),
        ({"base": BASE, "cases": []}, "cases must be a non-empty list"),
        ({"base": BASE, "grid": {"rate": []}}, "grid.rate is an empty list"),
        ({"base": {"max_num_seqs": 1, "max_num_running_reqs": 2}}, "given twice"),
        ({}, "no runs"),
    ],
)
def test_bad_sweep_files(doc, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_sweep(doc)


def test_local_sweep_writes_parquet_and_duckdb_and_reruns_skip(tmp_path):
    pd = pytest.importorskip("pandas")
    duckdb = pytest.importorskip("duckdb")
    pytest.importorskip("pyarrow")
    spec = load_sweep(_write(tmp_path / "s.yaml", SWEEP))
    out = tmp_path / "out"
    first = run_sweep(spec, out, backend=LocalBackend(2))
    assert first.reused == 0 and not first.failed
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == 8 and df["run"].tolist() == list(range(8))
    assert list(df.columns[:4]) == ["run", "run_key", "status", "error"]
    assert {"rate", "num_instances", "routing_policy", "hardware", "tp", "ttft_p99_ms"} <= set(
        df.columns
    )
    assert (df["status"] == "ok").all()
    # each row is the run's own summary: compare one with a direct run
    direct = simulate(**BASE, rate=20, num_instances=2, routing_policy="least-loaded")
    row = df[(df["rate"] == 20) & (df["num_instances"] == 2)]
    row = row[row["routing_policy"] == "least-loaded"].iloc[0]
    for key in ("ttft_p99_ms", "e2e_mean_ms", "completed_requests", "responses_per_sec"):
        assert row[key] == direct.summary[key], key
    assert json.loads(row["config_json"])["num_instances"] == 2
    con = duckdb.connect(str(out / "results.duckdb"), read_only=True)
    try:
        count, mean = con.execute("SELECT count(*), avg(ttft_p99_ms) FROM runs").fetchone()
    finally:
        con.close()
    assert count == 8 and mean == pytest.approx(df["ttft_p99_ms"].mean())
    assert not list(out.glob(".*"))  # no temporary files left
    # a rerun runs nothing and writes the same table
    again = run_sweep(spec, out, backend=LocalBackend(2))
    assert again.reused == 8
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), df)
    # a grown sweep runs only the new points
    grown = dict(SWEEP, grid={"rate": [10, 20, 30], "num_instances": [1, 2]})
    more = run_sweep(load_sweep(_write(tmp_path / "s2.yaml", grown)), out, backend=LocalBackend(1))
    assert more.reused == 8 and len(more.runs) == 12


def test_a_failing_run_is_reported_and_the_rest_complete(tmp_path):
    pytest.importorskip("pandas")
    pytest.importorskip("duckdb")
    pytest.importorskip("pyarrow")
    plugin = tmp_path / "boom.py"
    plugin.write_text(BOOM, encoding="utf-8")
    doc = {
        "base": {**BASE, "rate": 10, "num_instances": 2},
        "cases": [
            {"routing_policy": "round-robin"},
            {"routing_policy": f"{plugin}:Boom"},  # raises in the worker
            {"routing_policy": f"{plugin}:Die"},  # the worker process dies
            {"routing_policy": "least-loaded"},
        ],
    }
    sweep_file = _write(tmp_path / "s.yaml", doc)
    result = CliRunner().invoke(cli, ["sweep", str(sweep_file), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "4 runs: 4 run, 0 reused, 2 failed" in result.stdout
    assert "RuntimeError: boom in a worker" in result.stderr
    assert "worker process died (exit code 3)" in result.stderr
    import pandas as pd

    df = pd.read_parquet(tmp_path / "o" / "results.parquet")
    assert df["status"].tolist() == ["ok", "failed", "failed", "ok"]
    assert df["error"][1].startswith("RuntimeError: boom in a worker")
    assert df["ttft_p99_ms"].isna().tolist() == [False, True, True, False]
    assert len(list((tmp_path / "o" / "runs").glob("*.json"))) == 2  # only the finished
    # a rerun retries only the failures
    rerun = CliRunner().invoke(cli, ["sweep", str(sweep_file), "--out", str(tmp_path / "o")])
    assert "4 runs: 2 run, 2 reused, 2 failed" in rerun.stdout


def test_sweep_command_bad_input_exits_2(tmp_path):
    bad = _write(tmp_path / "bad.yaml", {"base": BASE, "grid": {"nope": [1]}})
    result = CliRunner().invoke(cli, ["sweep", str(bad)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: {bad}: grid: unknown run option 'nope'; see `blis run --help`"
    ]


def test_missing_extra_is_named(tmp_path, monkeypatch):
    import inference_sim.core.extras as extras

    real = extras.importlib.import_module

    def fake(name, *a, **k):
        if name == "duckdb":
            raise ImportError("no duckdb")
        return real(name, *a, **k)

    monkeypatch.setattr(extras.importlib, "import_module", fake)
    result = CliRunner().invoke(cli, ["sweep", str(_write(tmp_path / "s.yaml", SWEEP))])
    assert result.exit_code == 2
    assert result.stderr == "Error: blis sweep needs duckdb: pip install 'inference-sim[sweep]'\n"


def test_ray_backend_gives_the_same_table(tmp_path):
    ray = pytest.importorskip("ray")
    pd = pytest.importorskip("pandas")
    pytest.importorskip("duckdb")
    from inference_sim.sweep import RayBackend

    spec = load_sweep(_write(tmp_path / "s.yaml", SWEEP))
    local = run_sweep(spec, tmp_path / "local", backend=LocalBackend(1))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        backend = RayBackend()
        assert not backend.owned  # uses the cluster this test started
        remote = run_sweep(spec, tmp_path / "ray", backend=backend)
        backend.close()
    finally:
        ray.shutdown()
    assert not local.failed and not remote.failed
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "local" / "results.parquet"),
        pd.read_parquet(tmp_path / "ray" / "results.parquet"),
    )


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"base": {**BASE, "results_path": "r.json"}}, "results_path has no effect in a sweep"),
        (
            {"base": {**BASE, "export_trace": "t.csv"}, "grid": {"rate": [1, 2]}},
            "export_trace t.csv is written by runs 0 and 1",
        ),
        (
            {"base": BASE, "cases": [{"trace_output": "d.jsonl", "rate": r} for r in (1, 2)]},
            "trace_output d.jsonl is written by runs 0 and 1",
        ),
    ],
)
def test_outputs_a_sweep_would_drop_or_overwrite_are_refused(doc, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_sweep(doc)


def test_one_output_path_per_run_is_fine():
    cases = [{"export_trace": f"t{r}.csv", "rate": r} for r in (1, 2)]
    assert len(parse_sweep({"base": BASE, "cases": cases}).runs()) == 2
    # the same options twice run once: one writer
    same = [{"export_trace": "t.csv", "rate": 1}] * 2
    assert len(parse_sweep({"base": BASE, "cases": same}).runs()) == 2


def test_seeds_that_would_share_a_trace_path_are_refused():
    """--seeds / --replicates add the seed after the file is read: the output check runs
    again then (every seed used to overwrite the one export_trace file)."""
    from inference_sim.sweep.run import with_seeds

    spec = parse_sweep({"base": {**BASE, "export_trace": "x.csv"}})
    with pytest.raises(ConfigError, match=r"export_trace x\.csv is written by runs 0 and 1"):
        with_seeds(spec, [1, 2])


def test_a_point_written_twice_counts_its_seeds_once(tmp_path):
    from inference_sim.sweep.run import replicate_rows, with_seeds

    cases = [{"routing_policy": "round-robin"}] * 2 + [{"routing_policy": "least-loaded"}]
    spec = with_seeds(
        parse_sweep({"base": {**BASE, "num_instances": 2, "num_requests": 12}, "cases": cases}),
        [1, 2, 3],
    )
    outcome = run_sweep(spec, tmp_path / "out", backend=LocalBackend(1))
    rows = replicate_rows(spec, outcome, 0.95)
    assert [row["n"] for row in rows] == [3, 3]
    assert json.loads(rows[0]["seeds"]) == [1, 2, 3]


def test_replicates_start_from_the_seed_of_the_base_config_file(tmp_path):
    """``sweep --replicates`` starts from the base's seed, also when a ``config:`` file
    gives it (it started from 42 then), as ``run --config`` and ``plan --config`` do."""
    pytest.importorskip("pandas")
    import pandas as pd

    _write(tmp_path / "cfg.yaml", {"model": MODEL, "seed": 7, "num_requests": 5})
    sweep = _write(tmp_path / "s.yaml", {"base": {"config": "cfg.yaml"}, "grid": {"rate": [5]}})
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["sweep", str(sweep), "--replicates", "2", "--out", str(out)])
    assert res.exit_code == 0, res.stderr
    seeds = pd.read_parquet(out / "replicates.parquet")["seeds"].tolist()
    assert [json.loads(s) for s in seeds] == [[7, 8]]
