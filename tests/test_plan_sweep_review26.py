"""Review 26 fixes to blis plan and blis sweep.

1. Fixed P/D pools: the extra instances are dual-role, so the count is scanned upward.
2. A plug-in calling sys.exit fails its run, with -j 1 too (sweep, plan).
3. Two runs writing one trace file under different spellings are refused.
4. results.duckdb / replicates.parquet follow a symlink; removal takes the link only.
5. A plan without --slo skips the saturation search, with a warning.
6. Input checked before plan's advice; the CLI's dead-worker hint; a dangling --out link.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from inference_sim.cli.main import cli
from inference_sim.config.errors import ConfigError
from inference_sim.planning import Deployment, format_plan, parse_slos, plan_capacity
from inference_sim.sweep import LocalBackend, load_sweep
from inference_sim.sweep.backends import execute_run, make_backend

MODEL = "meta-llama/llama-3.1-8b-instruct"
DEPLOYMENT = Deployment(MODEL, "H100", 1)

PLUGIN = """\
import os
import sys


class Exit:
    def route(self, request, state):
        sys.exit("plugin gave up")


class Die:
    def route(self, request, state):
        os._exit(9)
"""


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def _sweep_file(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


# --- 1. fixed pools: counts scanned upward from P + D ------------------------------------

POOLS = ["--prefill-instances", "1", "--decode-instances", "1"]
SUMMARIZATION = ["--hardware", "H100", "--tp", "1", "--workload", "summarization"]
SUMMARIZATION += ["--rate", "8", "--num-requests", "40"]


def test_fixed_pools_plan_the_pools_when_extra_dual_instances_hurt() -> None:
    """x3 (one dual-role instance) misses ITL where x2 meets: the first probe at
    --max-instances used to miss and the plan said no count met the SLOs."""
    result = invoke(
        "plan", "--model", MODEL, *SUMMARIZATION, "--slo", "itl_p99_ms=12",
        "--max-instances", "3", "--no-saturation", *POOLS, "--json", "-q", "-j", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["instances"] == 2 and doc["fixed_pools"] == 2
    assert [p["instances"] for p in doc["candidates"][0]["probes"]] == [2]
    # what blis run says at those counts (Poisson arrivals, as plan's)
    itl = {}
    for n in (2, 3):
        run = invoke(
            "run", "--model", MODEL, *SUMMARIZATION, "--arrival", "poisson",
            "--num-instances", str(n), *POOLS, "--json",
        )  # fmt: skip
        assert run.exit_code == 0, run.output
        itl[n] = json.loads(run.stdout)["itl_p99_ms"]
    assert itl[2] <= 12 < itl[3]
    assert doc["summary"]["itl_p99_ms"] == pytest.approx(itl[2])


class ByCountBackend:
    """Answers runs without simulating: a count meets the SLO only if it is in ``meets``
    (so more instances can hurt, as dual-role ones do)."""

    def __init__(self, meets: set[int], jobs: int = 1) -> None:
        self.meets, self.jobs = meets, jobs
        self.counts: list[int] = []

    def map(self, func, items, on_result):  # the real worker (func) is not run
        for i, opts in enumerate(items):
            n = opts["num_instances"]
            self.counts.append(n)
            summary = {
                "ttft_p99_ms": 100.0 if n in self.meets else 900.0,
                "completed_requests": 10,
                "injected_requests": 10,
                "rejected_requests": 0,
                "config": {"tp": 1, "hardware": "H100", "prefill_instances": 2,
                           "decode_instances": 1},
            }  # fmt: skip
            on_result(i, {"status": "ok", "summary": summary})

    def close(self) -> None:
        pass


@pytest.mark.parametrize("jobs", [1, 4])
def test_fixed_pools_scan_finds_the_first_count_that_meets(jobs: int) -> None:
    base = {"workload": "chatbot", "num_requests": 50, "prefill_instances": 2}
    base["decode_instances"] = 1
    backend = ByCountBackend({5, 7}, jobs=jobs)
    outcome = plan_capacity(
        base, [DEPLOYMENT], parse_slos(["ttft_p99_ms=300"]), rate=5, max_instances=8,
        backend=backend, saturation=False,
    )  # fmt: skip
    best = outcome.best
    assert best is not None and best.instances == 5
    assert [p.instances for p in best.probes] == [3, 4, 5]  # the same for every --jobs
    text = format_plan(outcome)
    assert "2 of its 5 instances dual-role" in text and "--pd-ratio" in text


def test_fixed_pools_none_meets_names_the_range_scanned() -> None:
    base = {"workload": "chatbot", "prefill_instances": 1, "decode_instances": 1}
    outcome = plan_capacity(
        base, [DEPLOYMENT], parse_slos(["ttft_p99_ms=300"]), rate=5, max_instances=4,
        backend=ByCountBackend(set()), saturation=False,
    )  # fmt: skip
    assert outcome.best is None
    assert [p.instances for p in outcome.candidates[0].probes] == [2, 3, 4]
    assert "no instance count in 2..4 meets the SLOs (instances beyond the 2" in format_plan(
        outcome
    )


def test_colocated_search_still_starts_at_max_instances() -> None:
    backend = ByCountBackend(set(range(3, 9)))
    outcome = plan_capacity(
        {"workload": "chatbot"}, [DEPLOYMENT], parse_slos(["ttft_p99_ms=300"]), rate=5,
        max_instances=8, backend=backend, saturation=False,
    )  # fmt: skip
    assert backend.counts[0] == 8 and outcome.best is not None and outcome.best.instances == 3
    assert "fixed_pools" not in outcome.to_dict()


# --- 2. SystemExit in a run is that run's failure -----------------------------------------


def test_sys_exit_in_a_plugin_is_a_failed_row_with_one_job(tmp_path: Path) -> None:
    pytest.importorskip("duckdb")
    (tmp_path / "bad.py").write_text(PLUGIN, encoding="utf-8")
    doc = {
        "base": {"model": MODEL, "num_requests": 10, "num_instances": 2},
        "cases": [{"routing_policy": "round-robin"}, {"routing_policy": "bad.py:Exit"}],
    }
    sweep = _sweep_file(tmp_path / "sw.yaml", doc)
    result = invoke("sweep", str(sweep), "--out", str(tmp_path / "o"), "-j", "1")
    assert result.exit_code == 1, result.output
    assert "2 runs: 2 run, 0 reused, 1 failed" in result.stdout
    assert "SystemExit: plugin gave up" in result.stderr
    import pandas as pd

    df = pd.read_parquet(tmp_path / "o" / "results.parquet")
    assert df["status"].tolist() == ["ok", "failed"]
    assert df["error"][1] == "SystemExit: plugin gave up"


def test_sys_exit_in_a_plan_probe_is_the_candidates_error(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(PLUGIN, encoding="utf-8")
    outcome = plan_capacity(
        {"workload": "chatbot", "num_requests": 10, "routing_policy": f"{tmp_path}/bad.py:Exit"},
        [DEPLOYMENT], parse_slos(["ttft_p99_ms=300"]), rate=5, max_instances=2,
        backend=LocalBackend(1), saturation=False,
    )  # fmt: skip
    assert outcome.candidates[0].error == "SystemExit: plugin gave up"


def test_keyboard_interrupt_in_a_run_still_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*_a: Any, **_k: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("inference_sim.runner.run_plan", interrupted)
    with pytest.raises(KeyboardInterrupt):
        execute_run({"model": MODEL, "num_requests": 5})


# --- 3. one trace file under two spellings -----------------------------------------------


def _trace_sweep(tmp_path: Path, cases: list[dict[str, Any]]) -> Path:
    base = {"model": MODEL, "num_requests": 10, "trace_level": "decisions"}
    return _sweep_file(tmp_path / "tr.yaml", {"base": base, "cases": cases})


def test_two_spellings_of_one_trace_file_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cases = [{"rate": 1, "trace_output": "d.jsonl"}, {"rate": 2, "trace_output": "./d.jsonl"}]
    with pytest.raises(ConfigError, match="written by runs 0 and 1"):
        load_sweep(_trace_sweep(tmp_path, cases))


def test_export_trace_and_trace_output_of_two_runs_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real.jsonl").write_text("", encoding="utf-8")
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "real.jsonl")
    cases = [{"rate": 1, "trace_output": "real.jsonl"}, {"rate": 2, "export_trace": "link.jsonl"}]
    with pytest.raises(ConfigError, match=re.escape("run 0's trace_output real.jsonl")):
        load_sweep(_trace_sweep(tmp_path, cases))
    one_run = [{"rate": 1, "trace_output": "e.jsonl", "export_trace": "./e.jsonl"}]
    with pytest.raises(
        ConfigError,
        match=re.escape("run 0 writes trace_output e.jsonl and export_trace ./e.jsonl to the"),
    ):
        load_sweep(_trace_sweep(tmp_path, one_run))


def test_distinct_trace_files_and_a_shared_device_are_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cases = [
        {"rate": 1, "trace_output": "a.jsonl", "export_trace": os.devnull},
        {"rate": 2, "trace_output": "b.jsonl", "export_trace": os.devnull},
    ]
    assert len(load_sweep(_trace_sweep(tmp_path, cases)).runs()) == 2


# --- 4. symlinked tables -----------------------------------------------------------------


def test_symlinked_duckdb_and_replicates_are_written_through(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    sweep = _sweep_file(tmp_path / "sw.yaml", {"base": {"model": MODEL, "num_requests": 5}})
    out, store = tmp_path / "out", tmp_path / "store"
    out.mkdir()
    store.mkdir()
    for name in ("results.duckdb", "replicates.parquet", "results.parquet"):
        (out / name).symlink_to(store / name)
    result = invoke("sweep", str(sweep), "--out", str(out), "--seeds", "1,2", "-q")
    assert result.exit_code == 0, result.output
    for name in ("results.duckdb", "replicates.parquet", "results.parquet"):
        assert (out / name).is_symlink() and (store / name).stat().st_size > 0, name
    con = duckdb.connect(str(store / "results.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (2,)
    con.close()
    assert not list(out.glob(".*")) and not list(store.glob(".*"))  # no temporary file
    # without seeds the stale means leave the folder: the link goes, its target stays
    result = invoke("sweep", str(sweep), "--out", str(out), "-q")
    assert result.exit_code == 0, result.output
    assert not os.path.lexists(out / "replicates.parquet")
    assert (store / "replicates.parquet").stat().st_size > 0
    assert (out / "results.duckdb").is_symlink()


def test_a_fifo_in_place_of_the_replicates_is_left_alone(tmp_path: Path) -> None:
    from inference_sim.sweep.run import remove_replicates

    os.mkfifo(tmp_path / "replicates.parquet")
    remove_replicates(tmp_path)
    assert os.path.exists(tmp_path / "replicates.parquet")


# --- 5. no --slo --------------------------------------------------------------------------


def test_a_plan_without_slos_skips_the_saturation_search(
    sim_log: pytest.LogCaptureFixture,
) -> None:
    backend = ByCountBackend(set(range(1, 9)))
    outcome = plan_capacity(
        {"workload": "chatbot", "num_requests": 50}, [DEPLOYMENT], [], rate=5,
        max_instances=4, backend=backend,
    )  # fmt: skip
    best = outcome.best
    assert best is not None and best.saturation_rate is None
    assert {p.rate for p in best.probes} == {5}  # no probe at 10, 20, ... 5 120 /s
    assert "saturation rate is not searched" in sim_log.text
    assert "SLOs: none (every request served)" in format_plan(outcome)


# --- 6. plan checks input before advice; CLI wording --------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        ["--slo", "ttft_p99_ms=abc"],
        ["--slo", "ttft_p99_ms=500", "--max-instances", "0"],
        ["--slo", "ttft_p99_ms=500", "--headroom", "0"],
    ],
)
def test_plan_refuses_bad_input_before_the_short_probe_warning(
    bad: list[str], sim_log: pytest.LogCaptureFixture
) -> None:
    result = invoke("plan", "--model", MODEL, "--rate", "50", *bad)  # 100 requests: 2 s
    assert result.exit_code == 2, result.output
    assert "Error: " in result.stderr
    assert "too short for queues" not in sim_log.text + result.stderr


def test_a_dead_worker_gets_the_command_lines_hint(tmp_path: Path) -> None:
    pytest.importorskip("duckdb")
    (tmp_path / "bad.py").write_text(PLUGIN, encoding="utf-8")
    doc = {
        "base": {"model": MODEL, "num_requests": 10, "num_instances": 2},
        "cases": [{"routing_policy": "bad.py:Die"}, {"routing_policy": "round-robin"}],
    }
    sweep = _sweep_file(tmp_path / "sw.yaml", doc)
    result = invoke("sweep", str(sweep), "--out", str(tmp_path / "o"), "-j", "2", "-q")
    assert result.exit_code == 1, result.output
    assert "worker process died (exit code 9)" in result.stderr
    assert "rerun with -j 1" in result.stderr and "__main__" not in result.stderr
    # from Python, the script's guard is still the likely cause and is what it says
    assert "__main__" in LocalBackend(2).died_hint
    assert make_backend("local", jobs=2).died_hint != LocalBackend(2).died_hint


def test_out_below_a_link_to_a_missing_folder_is_named(tmp_path: Path) -> None:
    pytest.importorskip("duckdb")
    sweep = _sweep_file(tmp_path / "sw.yaml", {"base": {"model": MODEL, "num_requests": 5}})
    (tmp_path / "lnk").symlink_to(tmp_path / "gone")
    result = invoke("sweep", str(sweep), "--out", str(tmp_path / "lnk" / "x"), "-q")
    assert result.exit_code == 2, result.output
    assert f"{tmp_path / 'lnk'} is a symbolic link to {tmp_path / 'gone'}, which does not" in (
        result.stderr
    )
    assert "FileExistsError" not in result.stderr
