"""Results API: per-request DataFrame, time series, Parquet, config files, progress, quiet."""

from __future__ import annotations

import io
import json
import math

import pytest
import yaml
from click.testing import CliRunner, Result

import inference_sim.results as results_mod
from inference_sim import Results, simulate
from inference_sim.cli.main import cli
from inference_sim.config.errors import ConfigError
from inference_sim.config.resolve import resolve
from inference_sim.metrics.timeseries import TIMESERIES_COLUMNS
from inference_sim.report.progress import ProgressBar
from inference_sim.results import REQUEST_COLUMNS
from inference_sim.runner import run_plan

MODEL = "meta-llama/llama-3.1-8b-instruct"
RUN = {"model": MODEL, "workload": "chatbot", "rate": 40, "num_requests": 300}


@pytest.fixture(scope="module")
def two_instances() -> Results:
    return simulate(**RUN, num_instances=2, routing_policy="least-loaded")


def _blis(*args: str) -> Result:
    """``blis ARGS`` in process (stdout and stderr captured separately)."""
    return CliRunner().invoke(cli, list(args))


# --- requests ---------------------------------------------------------------------------


def test_requests_dataframe_columns_and_dtypes(two_instances):
    pd = pytest.importorskip("pandas")
    df = two_instances.requests
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == list(REQUEST_COLUMNS)
    assert len(df) == 300 == len(two_instances.records)
    for name, kind in REQUEST_COLUMNS.items():
        dtype = df[name].dtype
        if kind == "int":
            assert dtype == "int64", name
        elif kind == "float":
            assert dtype == "float64", name
        else:
            assert pd.api.types.is_string_dtype(dtype), name
    assert df["requestID"].tolist() == [f"request_{i}" for i in range(300)]
    assert set(df["handled_by"]) == {"instance_0", "instance_1"}
    assert (df["slo_class"] == "").all()
    # the frame holds the same values as the records
    first = two_instances.records[0]
    for key, value in first.items():
        assert df.iloc[0][key] == value, key
    assert df["ttft_ms"].mean() == pytest.approx(two_instances.summary["ttft_mean_ms"])


def test_requests_fall_back_to_records_without_pandas(two_instances, monkeypatch):
    monkeypatch.setattr(results_mod, "have", lambda module: False)
    assert two_instances.requests is two_instances.records
    rows = two_instances.timeseries
    assert isinstance(rows, list) and list(rows[0]) == list(TIMESERIES_COLUMNS)


def test_results_file_round_trip(two_instances, tmp_path):
    path = tmp_path / "r.json"
    two_instances.write_json(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert list(doc)[-4:] == ["requests", "timeseries", "instances", "config"]
    back = Results.load(path)
    assert back.records == two_instances.records
    assert back.summary == two_instances.summary
    assert back.instance_summaries == two_instances.instance_summaries
    assert back.timeseries_table == json.loads(json.dumps(two_instances.timeseries_table))


# --- time series ------------------------------------------------------------------------


def test_timeseries_sampling(two_instances):
    table = two_instances.timeseries_table
    cols = table["columns"]
    assert list(cols) == list(TIMESERIES_COLUMNS)
    n_rows = len(cols["time_s"])
    assert n_rows % 3 == 0  # cluster + 2 instances per sample
    samples = n_rows // 3
    assert 200 <= samples <= 401
    times = cols["time_s"][::3]
    assert times[0] == 0.0 and times == sorted(times)
    interval = table["interval_us"]
    assert all(round(t * 1e6) % interval == 0 for t in times[:-1])
    summary = two_instances.summary
    assert times[-1] == pytest.approx(summary["vllm_estimated_duration_s"])
    assert cols["instance"][:3] == ["cluster", "instance_0", "instance_1"]
    for k in range(0, n_rows, 3):
        for col in ("queue_depth", "running", "completed_requests", "output_tokens"):
            assert cols[col][k] == cols[col][k + 1] + cols[col][k + 2], (col, k)
        assert 0.0 <= cols["kv_utilization"][k] <= 1.0
    assert cols["completed_requests"][-3] == summary["completed_requests"]
    assert cols["output_tokens"][-3] == summary["total_output_tokens"]
    # the rates integrate back to the counters
    tokens = sum(
        cols["tokens_per_sec"][k] * (cols["time_s"][k] - cols["time_s"][k - 3])
        for k in range(3, n_rows, 3)
    )
    assert tokens == pytest.approx(summary["total_output_tokens"], rel=1e-9)
    assert max(cols["running"][::3]) > 0


def test_timeseries_dataframe(two_instances):
    pytest.importorskip("pandas")
    ts = two_instances.timeseries
    assert list(ts.columns) == list(TIMESERIES_COLUMNS)
    assert ts["time_s"].dtype == "float64" and ts["queue_depth"].dtype == "int64"
    assert ts["cache_hit_rate"].dtype == "float64"
    cluster = ts[ts["instance"] == "cluster"]
    assert cluster["completed_requests"].iloc[-1] == two_instances.summary["completed_requests"]


@pytest.mark.parametrize(
    "extra",
    [
        {"num_instances": 3, "rate": 120, "num_requests": 600},
        {"horizon": 4_000_000, "rate": 80},
        {"exact_steps": True},
        {"timeseries_interval": 250_000},
        {"workload": "distribution", "prefix_tokens": 300, "rate": 150, "num_instances": 2},
    ],
)
def test_sampling_never_changes_results(extra):
    opts = {**RUN, **extra}
    plain = run_plan(resolve(opts), timeseries=False).to_dict()
    sampled = run_plan(resolve(opts)).to_dict()
    ts = sampled.pop("timeseries")
    assert sampled == plain
    if "timeseries_interval" in extra:
        assert ts["interval_us"] == 250_000
        times = ts["columns"]["time_s"][::2]  # cluster, instance_0 per sample
        assert times[1] - times[0] == pytest.approx(0.25)


def test_bad_timeseries_interval_is_a_config_error():
    with pytest.raises(ConfigError, match="--timeseries-interval"):
        simulate(**RUN, timeseries_interval=-5)


# --- Parquet ----------------------------------------------------------------------------


def test_parquet_round_trip(two_instances, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    out = two_instances.to_parquet(tmp_path / "pq")
    assert sorted(p.name for p in out.iterdir()) == [
        "requests.parquet",
        "summary.json",
        "timeseries.parquet",
    ]
    req = pd.read_parquet(out / "requests.parquet")
    pd.testing.assert_frame_equal(req, two_instances.requests)
    ts = pd.read_parquet(out / "timeseries.parquet")
    pd.testing.assert_frame_equal(ts, two_instances.timeseries)
    back = Results.load(out)
    assert back.records == two_instances.records
    assert back.summary == two_instances.summary
    assert back.timeseries_table["columns"] == two_instances.timeseries_table["columns"]


def test_parquet_keeps_fields_only_some_records_have(tmp_path):
    """KV reloads appear on the records that had one; the frame and the Parquet round trip
    used to take optional columns from the first record only (dropping them here)."""
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    res = simulate(**{**RUN, "num_requests": 200}, kv_cpu_blocks=2000, total_kv_blocks=800)
    has = [r for r in res.records if "kv_reloads" in r]
    assert has and "kv_reloads" not in res.records[0]  # the case this test is about
    assert "kv_reloads" in res.requests.columns
    assert str(res.requests["kv_reloads"].dtype) == "Int64"  # integers with gaps
    back = Results.load(res.to_parquet(tmp_path / "pq"))
    assert back.records == res.records


# --- config files -----------------------------------------------------------------------


def test_config_file_equals_the_same_flags(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": MODEL,
                "workload": "chatbot",
                "rate": 25,
                "num_requests": 60,
                "num_instances": 2,
                "max_num_seqs": 32,  # vLLM spelling
                "enable_prefix_caching": False,
                "seed": 5,
            }
        ),
        encoding="utf-8",
    )
    flags = [
        "--model", MODEL, "--workload", "chatbot", "--rate", "25", "--num-requests", "60",
        "--num-instances", "2", "--max-num-running-reqs", "32",
        "--no-enable-prefix-caching", "--seed", "5",
    ]  # fmt: skip
    a = _blis("run", "--config", str(cfg), "--results-path", str(tmp_path / "a.json"), "-q")
    b = _blis("run", *flags, "--results-path", str(tmp_path / "b.json"), "-q")
    assert a.exit_code == 0, a.stderr
    assert b.exit_code == 0, b.stderr
    assert a.stdout == b.stdout
    doc_a = json.loads((tmp_path / "a.json").read_text(encoding="utf-8"))
    doc_b = json.loads((tmp_path / "b.json").read_text(encoding="utf-8"))
    doc_a["config"].pop("results_path")
    doc_b["config"].pop("results_path")
    assert doc_a == doc_b
    assert doc_a["config"]["seed"] == 5 and doc_a["config"]["package_version"]
    # flags win over the file
    c = _blis(
        "run", "--config", str(cfg), "--rate", "30", "--results-path", str(tmp_path / "c.json")
    )
    assert c.exit_code == 0, c.stderr
    doc_c = json.loads((tmp_path / "c.json").read_text(encoding="utf-8"))
    assert doc_c["config"]["rate"] == 30.0 and doc_c["config"]["max_num_running_reqs"] == 32


def test_config_file_in_python_and_results_file_as_config(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {MODEL}\nworkload: chatbot\nrate: 15\nnum_requests: 40\n")
    res = simulate(config=str(cfg), seed=9)
    assert res.config["rate"] == 15.0 and res.config["seed"] == 9
    res.write_json(tmp_path / "r.json")
    again = simulate(config=str(tmp_path / "r.json"))
    assert again.records == res.records
    assert {k: v for k, v in again.summary.items() if k != "config"} == {
        k: v for k, v in res.summary.items() if k != "config"
    }


def _big_results_file(tmp_path, res, *, indent: int | None = 2, config_last: bool = True):
    """``res``'s results document with its records repeated to over 200 KB."""
    doc = res.to_dict()
    doc["requests"] = doc["requests"] * 40
    if not config_last:
        doc = {"config": doc.pop("config"), **doc}
    path = tmp_path / ("big.json" if config_last else "reordered.json")
    path.write_text(json.dumps(doc, indent=indent), encoding="utf-8")
    assert path.stat().st_size > 200_000
    return path


def test_config_reads_only_the_end_of_a_large_results_file(tmp_path, monkeypatch):
    """--config r.json takes r's config section from its end: a results file larger than
    any run config is neither read nor parsed whole (issue 21's limits)."""
    import importlib
    import tracemalloc

    import inference_sim.core.inputs as inputs_mod
    from inference_sim.config.resolve import load_run_config

    resolve_mod = importlib.import_module("inference_sim.config.resolve")  # not the function

    res = simulate(model=MODEL, workload="chatbot", rate=20, num_requests=40, seed=4)
    small = tmp_path / "small.json"
    res.write_json(small)
    want = load_run_config(small)
    assert want["seed"] == 4 and "package_version" not in want
    monkeypatch.setattr(resolve_mod, "MAX_CONFIG_BYTES", 50_000)  # a whole read: refused
    monkeypatch.setattr(inputs_mod, "RESULTS_TAIL_BYTES", 20_000)
    for indent in (2, None):  # Results.write_json's layout, and compact json.dump
        big = _big_results_file(tmp_path, res, indent=indent)
        tracemalloc.start()
        try:
            got = load_run_config(big)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert got == want
        assert peak < big.stat().st_size / 4, (peak, big.stat().st_size)
    again = simulate(config=str(big))
    assert again.records == res.records
    # Keys reordered by hand (config first) in a file over the limit: one clear line.
    moved = _big_results_file(tmp_path, res, config_last=False)
    with pytest.raises(ConfigError, match=r"read from its end.*keep that section last"):
        load_run_config(moved)


def test_results_config_tail_skips_inner_config_keys(tmp_path):
    from inference_sim.core.inputs import results_config_tail

    inner = {"workload_spec": {"config": {"a": 1}}, "package_version": "0"}
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"requests": [{"config": 2}], "config": inner}, indent=2))
    assert results_config_tail(path) == {"config": inner}
    path.write_text("config: {rate: 3}\n")  # YAML: not a results file
    assert results_config_tail(path) is None


def test_config_file_paths_are_relative_to_the_file(tmp_path):
    sub = tmp_path / "conf"
    sub.mkdir()
    (sub / "trace.csv").write_text(
        "arrival_s,id,model,input_tokens,output_tokens\n"
        '0.0,r0,,"[1,2,3,4,5,6,7,8]","[1,2,3]"\n'
        '0.1,r1,,"[1,2,3,4,5,6,7,8]","[1,2,3,4]"\n'
    )
    (sub / "run.yaml").write_text(
        f"model: {MODEL}\nworkload: traces\nworkload_traces_filepath: trace.csv\n"
    )
    res = simulate(config=str(sub / "run.yaml"))
    assert res.summary["completed_requests"] == 2


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("rate: [1, 2]\n", "--rate"),
        ("no_such_option: 1\n", "unknown option 'no_such_option'"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("rate: [1\n", "invalid YAML"),
    ],
)
def test_bad_config_files(tmp_path, text, needle):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"model: {MODEL}\n" + text if not text.startswith("-") else text)
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        simulate(config=str(cfg))
    r = _blis("run", "--config", str(cfg))
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1


# --- progress and quiet -----------------------------------------------------------------


class _FakeInstance:
    class stats:
        completed = 0


def test_progress_bar_only_after_a_second_and_cleared_on_a_terminal():
    now = [0.0]
    stream = io.StringIO()
    bar = ProgressBar(stream, clock=lambda: now[0], tty=True)
    inst = _FakeInstance()
    bar.attach([inst], 100)
    inst.stats.completed = 10
    now[0] = 0.5
    bar(1000, 2_000_000)
    assert stream.getvalue() == ""  # runs shorter than a second show nothing
    now[0] = 2.0
    inst.stats.completed = 50
    bar(2000, 4_000_000)
    text = stream.getvalue()
    assert text.startswith("\r[") and "50%" in text and "50/100 requests" in text
    assert "simulated 4.0 s" in text and "25 req/s" in text
    bar.close()
    assert stream.getvalue().endswith("\r\x1b[K")


def test_progress_bar_in_a_file_prints_lines():
    now = [5.0]
    stream = io.StringIO()
    bar = ProgressBar(stream, clock=lambda: now[0], tty=False, min_seconds=0)
    bar.attach([], None)
    bar(10, 1_000_000)
    now[0] = 6.0
    bar(20, 2_000_000)  # throttled: one line per 5 s when not a terminal
    now[0] = 11.0
    bar(30, 3_000_000)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in stream.getvalue()
    assert lines[0].startswith("0 requests | simulated 1.0 s")


def test_run_progress_flag_and_quiet():
    args = ["run", "--model", MODEL, "--workload", "chatbot", "--num-requests", "1000"]
    args += ["--rate", "100", "--max-num-seqs", "64"]
    forced = _blis(*args, "--progress")
    assert forced.exit_code == 0, forced.stderr
    assert "requests | simulated" in forced.stderr and "1,000 requests" in forced.stderr
    quiet = _blis(*args, "--progress", "--quiet")
    assert quiet.exit_code == 0
    assert quiet.stderr == ""
    assert quiet.stdout.startswith("=== Simulation Metrics ===")
    default = _blis(*args)  # stderr is not a terminal: no bar
    assert "requests | simulated" not in default.stderr


def test_python_api_properties_are_consistent(two_instances):
    assert two_instances.config["num_instances"] == 2
    assert len(two_instances.instance_summaries) == 2
    assert not math.isnan(two_instances.summary["ttft_p99_ms"])


def test_a_tiny_fixed_timeseries_interval_is_coarsened_not_stalling():
    """A 1 µs interval over minutes of simulated time would take ~1e8 samples; the fixed
    interval is kept until 20 000 samples, then doubled (docs/python-api.md)."""
    from inference_sim.metrics.timeseries import MAX_FIXED_SAMPLES

    res = simulate(
        model="meta-llama/llama-3.1-8b-instruct",
        workload="chatbot",
        rate=20,
        num_requests=200,
        timeseries_interval=1,
    )
    table = res.timeseries_table
    times = table["columns"]["time_s"]
    assert table["interval_us"] > 1
    assert len(set(times)) <= MAX_FIXED_SAMPLES + 1
    plain = simulate(
        model="meta-llama/llama-3.1-8b-instruct", workload="chatbot", rate=20, num_requests=200
    )
    assert res.summary["e2e_p99_ms"] == plain.summary["e2e_p99_ms"]


def test_api_input_mistakes_name_the_problem(tmp_path):
    """compare() with a typo in a metric or a path instead of Results, write_json to a
    folder-like or missing path, Results.load of a file that is not JSON: one clear
    message each (they used to give a row of None, a misleading message, a file named
    like the folder, a temporary file's name, a bare JSON error)."""
    from inference_sim import compare
    from inference_sim.core.outfiles import OutputPathError

    a = simulate(model=MODEL, num_requests=5)
    b = simulate(model=MODEL, num_requests=5, rate=2)
    with pytest.raises(ValueError, match=r"unknown metric 'ttft_p99_msx'.*ttft_p99_ms"):
        compare([a, b], metrics=["ttft_p99_msx"])
    with pytest.raises(ValueError, match="item 1 is a str, not Results"):
        compare([a, "file.json"])
    with pytest.raises(OutputPathError, match="ends with a slash"):
        a.write_json(f"{tmp_path}/newdir/")
    assert not (tmp_path / "newdir").exists()
    with pytest.raises(OutputPathError, match="does not exist"):
        a.write_json(tmp_path / "missing" / "x.json")
    junk = tmp_path / "junk.json"
    junk.write_text("junk")
    with pytest.raises(ValueError, match=r"junk.json: not a results file: not JSON"):
        Results.load(junk)


def test_a_calibrated_results_file_replays_as_config(tmp_path):
    """The coefficients and sampler flags a calibrated run records are not options: the
    file replays (same summary), and custom coefficients say how to replay them."""
    first = tmp_path / "r.json"
    args = ["run", "--model", "qwen/qwen2.5-7b-instruct", "--latency-model", "calibrated",
            "--hardware", "H100", "--tp", "1", "--num-requests", "5"]  # fmt: skip
    assert CliRunner().invoke(cli, [*args, "--results-path", str(first)]).exit_code == 0
    again = tmp_path / "again.json"
    res = CliRunner().invoke(cli, ["run", "--config", str(first), "--results-path", str(again)])
    assert res.exit_code == 0, res.stderr
    a, b = (json.loads(p.read_text()) for p in (first, again))
    assert a["e2e_mean_ms"] == b["e2e_mean_ms"] and a["requests"] == b["requests"]
    doc = json.loads(first.read_text())
    doc["config"]["calibrated_coefficients"]["step_us"] += 1.0
    custom = tmp_path / "custom.json"
    custom.write_text(json.dumps(doc))
    res = CliRunner().invoke(cli, ["run", "--config", str(custom)])
    assert res.exit_code == 0, res.stderr
    assert "not this version's shipped set" in res.stderr
    # A run with a coefficient file that changed after it: the replay says so too.
    coeffs = tmp_path / "k.json"
    coeffs.write_text(json.dumps(a["config"]["calibrated_coefficients"]))
    with_file = tmp_path / "f.json"
    ok = CliRunner().invoke(cli, [*args, "--latency-coeffs", str(coeffs),
                                  "--results-path", str(with_file)])  # fmt: skip
    assert ok.exit_code == 0, ok.stderr
    same = CliRunner().invoke(cli, ["run", "--config", str(with_file)])
    assert same.exit_code == 0 and "differ" not in same.stderr
    changed = dict(a["config"]["calibrated_coefficients"], step_us=1.0)
    coeffs.write_text(json.dumps(changed))
    res = CliRunner().invoke(cli, ["run", "--config", str(with_file)])
    assert res.exit_code == 0, res.stderr
    assert f"its --latency-coeffs file {coeffs} has changed since" in res.stderr


@pytest.mark.parametrize("blocks", [[], ["--total-kv-blocks", "5000"]])
def test_a_pd_results_file_with_its_own_pool_gpu_replays_as_config(tmp_path, blocks):
    """The main deployment's recorded step-time model, coefficients and block count are
    not handed to a pool with its own GPU on replay (unless they were given)."""
    first, again = tmp_path / "r.json", tmp_path / "again.json"
    args = ["run", "--model", "meta-llama/llama-3.1-8b-instruct", "--hardware", "H100",
            "--num-instances", "2", "--prefill-instances", "1", "--decode-instances", "1",
            "--decode-hardware", "A100-40GB", "--num-requests", "5", *blocks]  # fmt: skip
    assert CliRunner().invoke(cli, [*args, "--results-path", str(first)]).exit_code == 0
    res = CliRunner().invoke(cli, ["run", "--config", str(first), "--results-path", str(again)])
    assert res.exit_code == 0, res.stderr
    a, b = (json.loads(p.read_text()) for p in (first, again))
    assert a["pd"]["pools"] == b["pd"]["pools"]
    assert a["pd"]["pools"]["decode"]["latency_model"] == "calibrated"
    assert a["requests"] == b["requests"]


def test_a_results_file_without_its_config_section_is_not_a_run_config(tmp_path):
    """Its summary keys used to read as options: "unknown option 'instance_id'"."""
    path = tmp_path / "r.json"
    simulate(model="meta-llama/llama-3.1-8b-instruct", num_requests=3).write_json(path)
    doc = json.loads(path.read_text())
    del doc["config"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="a results file without its config section"):
        resolve({"config": str(path)})


def test_a_horizon_under_a_millisecond_warns_about_the_unit(sim_log):
    resolve({"model": "meta-llama/llama-3.1-8b-instruct", "horizon": "0.4"})
    assert "--horizon is 0 µs: no event runs" in sim_log.text
    sim_log.clear()
    resolve({"model": "meta-llama/llama-3.1-8b-instruct", "horizon": "2s"})
    assert "--horizon" not in sim_log.text
