"""No lost results (issue 11): Ctrl-C during ``blis run`` writes the results so far, marked
``"interrupted": true`` (exit 130); an interrupted sweep leaves only complete files and
resumes; every writer replaces its file atomically (absent or complete, never half)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inference_sim.config.resolve import resolve
from inference_sim.metrics.output import write_json_atomic
from inference_sim.runner import run_plan
from inference_sim.workload.trace_v2 import TraceV2Writer
from inference_sim.workload.traces import write_csv_trace

MODEL = "meta-llama/llama-3.1-8b-instruct"
SRC = Path(__file__).resolve().parents[1] / "src"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(autouse=True)
def _sigint_not_ignored():
    """These tests send SIGINT to themselves or a child. A suite started in the background
    (``cmd &``) inherits SIGINT ignored, which ``blis run`` rightly keeps ignoring; give the
    tests Python's usual handler and restore whatever was there."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _default_sigint() -> None:
    """In the child before exec: SIGINT back to the default, so Python installs its handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "inference_sim", *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def _wait_for(proc: subprocess.Popen[str], marker: str, seconds: float = 30.0) -> list[str]:
    """Read stderr lines until one contains ``marker``."""
    assert proc.stderr is not None
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return seen
    proc.kill()
    raise AssertionError(f"never saw {marker!r}; stderr: {''.join(seen)}")


# --- blis run ---------------------------------------------------------------------------


def test_sigint_during_a_long_run_writes_partial_results(tmp_path):
    out = tmp_path / "results.json"
    trace = tmp_path / "workload"
    args = ["run", "--model", MODEL, "--num-requests", "5000000", "--rate", "200"]
    args += ["--results-path", str(out), "--export-trace", str(trace), "--log", "info"]
    proc = _start(args, tmp_path)
    try:
        _wait_for(proc, "starting:")
        time.sleep(0.5)  # well into the simulation loop
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert 'marked "interrupted": true' in err
    doc = json.loads(out.read_text())  # complete, valid JSON
    assert doc["interrupted"] is True
    assert 0 < doc["injected_requests"] < 5_000_000
    # The requests consumed so far, as a complete trace v2 pair.
    rows = trace.read_text().splitlines()
    assert len(rows) > 1 and (tmp_path / "workload.yaml").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_ctrl_c_before_the_simulation_exits_130_without_results(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from inference_sim.cli.main import cli

    def interrupted(raw):
        raise KeyboardInterrupt

    monkeypatch.setattr(sys.modules["inference_sim.config.resolve"], "resolve", interrupted)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["run", "--model", MODEL, "--results-path", str(out)])
    assert result.exit_code == 130
    assert result.stderr.strip() == "Error: interrupted; no results written"
    assert not out.exists()


def _interrupt_after(calls: int, times: int = 1):
    """A progress callback that sends ``times`` SIGINTs to this process on its ``calls``-th
    call (Python runs the handler right after each)."""
    count = [0]

    def progress(events: int, now: int) -> None:
        count[0] += 1
        if count[0] == calls:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)

    return progress


def test_interruptible_run_returns_consistent_partial_results():
    plan = resolve({"model": MODEL, "num_requests": 200_000, "rate": 200})
    results = run_plan(plan, progress=_interrupt_after(2), interruptible=True)
    s = results.summary
    assert s["interrupted"] is True
    assert 0 < s["completed_requests"] < 200_000
    # Every request consumed so far is accounted for.
    assert s["injected_requests"] == (
        s["completed_requests"] + s["still_queued"] + s["still_running"] + s["dropped_unservable"]
    )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_a_second_sigint_aborts_at_once():
    plan = resolve({"model": MODEL, "num_requests": 200_000, "rate": 200})
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, progress=_interrupt_after(2, times=2), interruptible=True)


def test_without_interruptible_sigint_raises_so_sweeps_never_keep_a_partial_run():
    plan = resolve({"model": MODEL, "num_requests": 200_000, "rate": 200})
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, progress=_interrupt_after(1))


def test_a_finished_run_is_not_marked_interrupted():
    results = run_plan(resolve({"model": MODEL, "num_requests": 20}), interruptible=True)
    assert "interrupted" not in results.summary


# --- blis sweep ---------------------------------------------------------------------------


@pytest.mark.slow
def test_interrupted_sweep_leaves_complete_files_and_resumes(tmp_path):
    pytest.importorskip("pandas")
    pytest.importorskip("duckdb")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        f"base: {{model: {MODEL}, num_requests: 1500, rate: 50}}\n"
        "grid: {seed: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}\n"
    )
    out = tmp_path / "out"
    proc = _start(["sweep", str(sweep), "--out", str(out), "--jobs", "1"], tmp_path)
    try:
        _wait_for(proc, "run 1 ok", seconds=60)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    finished = sorted((out / "runs").glob("*.json"))
    assert 2 <= len(finished) < 10
    for path in finished:
        doc = json.loads(path.read_text())  # complete, valid
        assert "interrupted" not in json.dumps(doc)
    assert not (out / "results.parquet").exists()  # the table comes only at the end
    assert not [p for p in (out / "runs").iterdir() if p.name.endswith(".tmp")]
    # The rerun reuses the finished runs and runs only the others.
    rerun = subprocess.run(
        [sys.executable, "-m", "inference_sim", "sweep", str(sweep), "--out", str(out)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stderr.count("reused") == len(finished)
    assert len(list((out / "runs").glob("*.json"))) == 10
    assert (out / "results.parquet").exists()


# --- atomic writers -----------------------------------------------------------------------


class Boom(Exception):
    pass


def _no_temp_files(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], list(folder.iterdir())


def test_results_json_is_absent_or_complete(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    write_json_atomic(target, {"a": 1})

    def failing_writer(doc, level=0):
        yield '{"half": '
        raise Boom

    monkeypatch.setattr("inference_sim.core.outfiles.indented_json", failing_writer)
    with pytest.raises(Boom):
        write_json_atomic(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 1}  # the old file, untouched
    _no_temp_files(tmp_path)


def test_csv_trace_is_absent_or_complete(tmp_path):
    from inference_sim.core.request import Request

    def requests():
        yield Request(0, 0, [1, 2, 3], [4])
        raise Boom

    target = tmp_path / "t.csv"
    with pytest.raises(Boom):
        write_csv_trace(requests(), target)
    assert not target.exists()
    _no_temp_files(tmp_path)


def test_trace_v2_export_is_absent_or_complete(tmp_path):
    from inference_sim.core.request import Request

    writer = TraceV2Writer(tmp_path / "w")
    writer.write(Request(0, 0, [1, 2, 3], [4]))
    writer.abort()  # what run_plan does when the run fails
    assert not list(tmp_path.iterdir())


def test_failed_run_leaves_no_results_file(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from inference_sim.cli.main import cli

    def fail(*a, **k):
        raise RuntimeError("engine exploded")

    monkeypatch.setattr("inference_sim.runner.collect_results", fail)
    out = tmp_path / "r.json"
    args = ["run", "--model", MODEL, "--num-requests", "5", "--results-path", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: simulation failed: RuntimeError: engine exploded"
    assert not out.exists()
    _no_temp_files(tmp_path)


def test_an_interrupted_run_marks_its_partial_export(tmp_path, sim_log):
    """The export holds the requests read before the stop: its header says so (a replay
    of it would otherwise pass for the whole workload), and so does the log."""
    path = tmp_path / "ex.csv"
    plan = resolve(
        {"model": MODEL, "num_requests": 200_000, "rate": 200, "export_trace": str(path)}
    )
    run_plan(plan, progress=_interrupt_after(2), interruptible=True)
    header = (tmp_path / "ex.yaml").read_text()
    assert header.startswith("# partial: the run was interrupted;")
    assert "--export-trace" in sim_log.text and "partial" in sim_log.text
    rows = path.read_text().count("\n") - 1
    assert 0 < rows < 200_000 and f"; {rows} requests exported" in header
    from inference_sim.workload.trace_v2 import read_trace_v2_header

    assert read_trace_v2_header(tmp_path / "ex.yaml").trace_version == 2  # still reads


def test_a_finished_run_exports_no_partial_note(tmp_path):
    path = tmp_path / "ex.csv"
    run_plan(resolve({"model": MODEL, "num_requests": 20, "export_trace": str(path)}))
    assert not (tmp_path / "ex.yaml").read_text().startswith("#")
