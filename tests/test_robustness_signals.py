"""One Ctrl-C never loses a run (issue 21 item 4; issue 20 item 14's SIGTERM).

Each timing window of ``blis run`` is driven deterministically: a hook at that phase
sends the signal to this very process (Python runs the handler right after), no sleeps.
A first SIGINT or SIGTERM after the run has started ends with complete results (partial
and marked if the simulation had not finished), exit 130 or 143; a second one abandons
at once and leaves no temporary file; at start-up the first one ends the command with
one line and no traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from inference_sim.cli.main import cli
from inference_sim.interrupts import Abandoned, RunSignals

MODEL = "meta-llama/llama-3.1-8b-instruct"
SRC = Path(__file__).resolve().parents[1] / "src"
CODE = {signal.SIGINT: 130, signal.SIGTERM: 143}
WORD = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


class StraySignal(BaseException):
    """A SIGTERM that reached the test's own handler: blis did not handle it."""


@pytest.fixture(autouse=True)
def _live_handlers():
    """SIGINT as Python's usual (a background suite inherits it ignored); SIGTERM fails the
    test instead of killing pytest should blis ever not handle it. Both restored."""
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)

    def stray(signum: int, frame: Any) -> None:
        raise StraySignal(signum)

    previous_term = signal.signal(signal.SIGTERM, stray)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)


def _send(*signals: int) -> None:
    for sig in signals:
        os.kill(os.getpid(), sig)


def _hook(monkeypatch: Any, target: str, *signals: int) -> None:
    """Wrap ``target`` (``module.attr`` or ``module.Class.attr``) to send ``signals``
    first, then do its work."""
    owner_path, attr = target.rsplit(".", 1)
    try:
        owner: Any = __import__(owner_path, fromlist=[attr])
    except ImportError:
        mod, cls = owner_path.rsplit(".", 1)
        owner = getattr(__import__(mod, fromlist=[cls]), cls)
    real = getattr(owner, attr)
    calls = []

    def hooked(*a: Any, **k: Any) -> Any:
        if not calls:  # the first call only (the JSON writer calls itself per level)
            calls.append(1)
            _send(*signals)
        return real(*a, **k)

    monkeypatch.setattr(owner, attr, hooked)


class _SignallingBar:
    """Stands in for the progress bar: sends signals on its ``at``-th call (mid-run)."""

    every_events = 1000
    signals: tuple[int, ...] = ()
    at = 3

    def __init__(self, *a: Any, **k: Any) -> None:
        self.calls = 0

    def attach(self, instances: Any, expected: Any) -> None:
        pass

    def __call__(self, events: int, now: int) -> None:
        self.calls += 1
        if self.calls == self.at:
            _send(*self.signals)

    def close(self) -> None:
        pass


def _mid_run(monkeypatch: Any, *signals: int) -> None:
    bar = type("Bar", (_SignallingBar,), {"signals": signals})
    monkeypatch.setattr("inference_sim.report.progress.ProgressBar", bar)


def _args(tmp_path: Path, requests: int = 300) -> list[str]:
    return [
        "run",
        "--model",
        MODEL,
        "--num-requests",
        str(requests),
        "--rate",
        "200",
        "--results-path",
        str(tmp_path / "r.json"),
        "--export-trace",
        str(tmp_path / "w"),
        "--trace-level",
        "decisions",
        "--trace-output",
        str(tmp_path / "d.jsonl"),
        "--progress",
    ]


def _blis(args: list[str]) -> Any:
    return CliRunner().invoke(cli, args)


def _no_temp_files(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], list(folder.iterdir())


# --- start-up: the first signal ends the command, nothing to keep -------------------------

STARTUP = ["inference_sim.config.resolve.resolve", "inference_sim.config.outputs.check_run_outputs"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("phase", STARTUP)
def test_a_signal_at_start_up_exits_at_once_without_results(tmp_path, monkeypatch, phase, sig):
    _hook(monkeypatch, phase, sig)
    result = _blis(_args(tmp_path))
    assert result.exit_code == CODE[sig], result.stderr
    assert result.stderr.strip() == f"Error: {WORD[sig]}; no results written"
    assert list(tmp_path.iterdir()) == []  # no results, no temporary file


# --- after the run started: the first signal keeps complete results ----------------------

# Phases where the simulation has not run yet or is running: it stops early (or finishes).
BEFORE_OR_DURING = [
    "inference_sim.runner.build_requests",
    "inference_sim.runner.build_simulator",
    "mid-run",
]
# Phases after the simulation finished: the results are complete and not marked.
AFTER = [
    "inference_sim.runner.collect_results",
    "inference_sim.workload.trace_v2.TraceV2Writer.close",
    "inference_sim.analysis.run.RunAnalysis.write_trace",
    "inference_sim.results.Results.report",
    "inference_sim.results.Results.write_json",
    "inference_sim.core.outfiles.indented_json",  # in the middle of writing the results file
    "inference_sim.core.outfiles.os.replace",  # just before the results file is renamed in place
]


def _arm(monkeypatch: Any, phase: str, *signals: int) -> None:
    if phase == "mid-run":
        _mid_run(monkeypatch, *signals)
    elif phase == "inference_sim.core.outfiles.os.replace":
        import inference_sim.core.outfiles as outfiles

        real = os.replace

        def replace(src: Any, dst: Any) -> None:
            if str(dst).endswith("r.json"):
                _send(*signals)
            real(src, dst)

        monkeypatch.setattr(outfiles.os, "replace", replace)
    else:
        _hook(monkeypatch, phase, *signals)


def _check_complete_outputs(tmp_path: Path) -> dict[str, Any]:
    doc = json.loads((tmp_path / "r.json").read_text())  # complete, valid JSON
    assert (tmp_path / "w").exists() and (tmp_path / "w.yaml").exists()
    rows = (tmp_path / "w").read_text().splitlines()
    # The trace has what the run consumed (the arrival read ahead of a stop included).
    assert 0 <= len(rows) - 1 - doc["injected_requests"] <= 1
    lines = (tmp_path / "d.jsonl").read_text().splitlines()
    assert all(json.loads(ln) for ln in lines)
    _no_temp_files(tmp_path)
    return doc


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("phase", BEFORE_OR_DURING)
def test_a_first_signal_during_the_run_writes_results(tmp_path, monkeypatch, phase, sig):
    requests = 200_000 if phase == "mid-run" else 300
    _arm(monkeypatch, phase, sig)
    result = _blis(_args(tmp_path, requests))
    assert result.exit_code == CODE[sig], result.stderr
    assert "Traceback" not in result.stderr
    doc = _check_complete_outputs(tmp_path)
    if doc.get("interrupted"):
        assert 0 < doc["injected_requests"] < requests
        assert f"{WORD[sig].capitalize()}: partial results" in result.stderr
        assert f"written to {tmp_path / 'r.json'}" in result.stderr
    else:  # a short run may finish before the stop is looked at: complete results
        assert doc["completed_requests"] == requests
    if phase == "mid-run":
        assert doc["interrupted"] is True


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("phase", AFTER)
def test_a_first_signal_after_the_simulation_keeps_the_complete_results(
    tmp_path, monkeypatch, phase, sig
):
    _arm(monkeypatch, phase, sig)
    result = _blis(_args(tmp_path))
    assert result.exit_code == CODE[sig], result.stderr
    doc = _check_complete_outputs(tmp_path)
    assert "interrupted" not in doc
    assert doc["completed_requests"] == 300
    assert f"{WORD[sig].capitalize()} after the simulation had finished" in result.stderr


# --- a second signal abandons, and leaves nothing half-written ----------------------------


@pytest.mark.parametrize(
    "signals",
    [
        (signal.SIGINT, signal.SIGINT),
        (signal.SIGTERM, signal.SIGTERM),
        (signal.SIGTERM, signal.SIGINT),
    ],
)
def test_two_signals_mid_run_abandon_and_leave_no_temporary_file(tmp_path, monkeypatch, signals):
    _mid_run(monkeypatch, *signals)
    result = _blis(_args(tmp_path, 200_000))
    first = signals[0]
    assert result.exit_code == CODE[first], result.stderr
    assert (
        result.stderr.strip() == f"Error: {WORD[first]} twice; stopped at once, no results written"
    )
    assert list(tmp_path.iterdir()) == []  # no results, no export trace, no temporary file


@pytest.mark.parametrize("second_at", AFTER)
def test_a_second_signal_while_writing_abandons_cleanly(tmp_path, monkeypatch, second_at):
    old = tmp_path / "r.json"
    old.write_text('{"old": true}')
    if second_at != "inference_sim.runner.collect_results":
        _arm(monkeypatch, "inference_sim.runner.collect_results", signal.SIGINT)
        _arm(monkeypatch, second_at, signal.SIGINT)
    else:
        _arm(monkeypatch, second_at, signal.SIGINT, signal.SIGINT)
    result = _blis(_args(tmp_path))
    assert result.exit_code == 130, result.stderr
    assert "twice" in result.stderr and "Traceback" not in result.stderr
    doc = json.loads(old.read_text())
    if second_at == "inference_sim.results.Results.report":
        assert doc["completed_requests"] == 300  # written before the stdout summary
        assert f"stopped at once, results written to {old}" in result.stderr
    else:
        assert "no results written" in result.stderr
        assert doc == {"old": True}  # the older file, untouched
    _no_temp_files(tmp_path)


def test_a_signal_ignored_at_start_stays_ignored(tmp_path, monkeypatch):
    """``nohup`` / background jobs: SIGINT ignored before blis started is not taken up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _arm(monkeypatch, "inference_sim.runner.collect_results", signal.SIGINT)
    result = _blis(_args(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert "interrupted" not in _check_complete_outputs(tmp_path)


def test_handlers_are_restored_after_the_run(tmp_path):
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    assert _blis(_args(tmp_path)).exit_code == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# --- RunSignals on its own (no signal sent) -------------------------------------------------


class _Sim:
    stop_requested = False


def test_run_signals_phases():
    s = RunSignals()
    with pytest.raises(Abandoned) as info:
        s.handle(signal.SIGTERM)  # start-up: ends at once
    assert info.value.exit_code == 143
    s = RunSignals()
    s.start_run()
    s.handle(signal.SIGINT)  # before the simulator exists: kept for it
    sim = _Sim()
    s.attach(sim)
    assert sim.stop_requested and s.interrupted and s.exit_code == 130
    with pytest.raises(Abandoned) as info:
        s.handle(signal.SIGTERM)  # the second one abandons; the code is the first's
    assert info.value.exit_code == 130
    s.handle(signal.SIGINT)  # later ones are ignored: clean-up runs to the end


# --- the real process: start-up before click, and exit statuses -----------------------------


def _driver(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "driver.py"
    script.write_text(
        textwrap.dedent(
            """\
            import os, signal, sys
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            """
        )
        + textwrap.dedent(body)
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("module", ["inference_sim.results", "inference_sim.cli.main"])
def test_ctrl_c_while_blis_imports_exits_130_without_a_traceback(tmp_path, module):
    proc = _driver(
        tmp_path,
        f"""\
        sys.argv = ["blis", "run", "--model", "{MODEL}", "--num-requests", "5"]

        class Interrupter:
            def find_spec(self, name, path=None, target=None):
                if name == "{module}":
                    os.kill(os.getpid(), signal.SIGINT)
                return None

        sys.meta_path.insert(0, Interrupter())
        from inference_sim.cli import main
        main()
        """,
    )
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "Error: interrupted"
    assert proc.stdout == ""


def test_ctrl_c_while_click_parses_exits_130(capsys, monkeypatch):
    from inference_sim.cli.main import main

    def interrupted(*a: Any, **k: Any) -> Any:
        _send(signal.SIGINT)

    monkeypatch.setattr("inference_sim.catalog.load_catalog", interrupted)
    with pytest.raises(SystemExit) as info:
        main(["models"])
    assert info.value.code == 130
    assert capsys.readouterr().err.strip() == "Error: interrupted"


@pytest.mark.parametrize(
    ("phase", "code", "complete"),
    [
        ("inference_sim.config.resolve.resolve", 143, False),
        ("inference_sim.runner.collect_results", 143, True),
    ],
)
def test_sigterm_in_a_real_process(tmp_path, phase, code, complete):
    owner, attr = phase.rsplit(".", 1)
    proc = _driver(
        tmp_path,
        f"""\
        import importlib
        owner = importlib.import_module("{owner}")
        real = owner.{attr}

        def hooked(*a, **k):
            os.kill(os.getpid(), signal.SIGTERM)
            return real(*a, **k)

        owner.{attr} = hooked
        from inference_sim.cli import main
        main(["run", "--model", "{MODEL}", "--num-requests", "50", "--results-path", "r.json"])
        """,
    )
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    if complete:
        assert json.loads((tmp_path / "r.json").read_text())["completed_requests"] == 50
        assert "Terminated after the simulation had finished" in proc.stderr
    else:
        assert proc.stderr.strip() == "Error: terminated; no results written"
        assert not (tmp_path / "r.json").exists()
    _no_temp_files(tmp_path)


def test_sigterm_stops_a_sweep_and_its_workers(tmp_path):
    """SIGTERM while a sweep's workers run: handled as Ctrl-C (the workers are stopped by
    the backend's clean-up), one line, exit 143 -- it used to kill the parent at once
    (status -15, no message) and leave the workers running."""
    (tmp_path / "s.yaml").write_text(
        f"base: {{model: {MODEL}, num_requests: 3000, rate: 50}}\ngrid: {{seed: [1, 2]}}\n",
        encoding="utf-8",
    )
    proc = _driver(
        tmp_path,
        """\
        import inference_sim.sweep.backends as backends
        real = backends.wait
        sent = []

        def hooked(*a, **k):
            if not sent:
                sent.append(1)
                os.kill(os.getpid(), signal.SIGTERM)
            return real(*a, **k)

        backends.wait = hooked
        from inference_sim.cli import main
        main(["sweep", "s.yaml", "--out", "o", "--jobs", "2"])
        """,
    )
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "Error: terminated"
    assert "Traceback" not in proc.stderr
