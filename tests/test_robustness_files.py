"""Output files (issue 21, items 1-3): write what was asked, replace nothing that is not ours.

Devices, FIFOs and pipes are written through, symlinks followed, regular files replaced
atomically; every output path is checked before the run (folders, missing folders,
too-long names), an output that names an input is refused, and no temporary file is
ever left behind. Special files are made under tmp_path, never real devices.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from inference_sim.cli.main import cli
from inference_sim.core.outfiles import (
    OutputFile,
    OutputPathError,
    check_output_file,
    check_output_folder,
    output_path,
    same_file,
    write_text,
)

MODEL = "meta-llama/llama-3.1-8b-instruct"
RUN = ["run", "--model", MODEL, "--num-requests", "5", "--log", "error"]
LONG = "x" * 300  # longer than any file system's 255-byte name limit

SPEC = """\
version: "2"
seed: 1
aggregate_rate: 10
num_requests: 5
clients:
  - id: a
    rate_fraction: 1
    arrival: {process: poisson}
    input_distribution: {type: constant, params: {value: 20}}
    output_distribution: {type: constant, params: {value: 4}}
"""


def blis(args: list[Any]) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_error(result: Any) -> str:
    """Exit 2 with exactly one ``Error:`` line and no traceback; the line."""
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("Error: ")]
    return line


def leftovers(folder: Path) -> list[str]:
    """Temporary files anywhere under ``folder``."""
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]


@pytest.fixture
def no_run(monkeypatch):
    """Fail the test if the simulation starts: the check must come before it."""

    def started(*a, **k):
        raise AssertionError("the run started before the bad output path was refused")

    monkeypatch.setattr("inference_sim.runner.run_plan", started)


def _char_device(path: Path) -> Path:
    """A node with /dev/null's numbers, under tmp_path (the issue's safe repro)."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot make a device node here: {exc}")
    return path


def _drain(path_or_fd: Any, sink: list[bytes]) -> threading.Thread:
    def read() -> None:
        if isinstance(path_or_fd, int):
            with os.fdopen(path_or_fd, "rb") as fh:
                sink.append(fh.read())
        else:
            with open(path_or_fd, "rb") as fh:
                sink.append(fh.read())

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t


# --- item 1: special files are written through, never replaced --------------------------


def test_a_device_stays_a_device(tmp_path):
    dev = _char_device(tmp_path / "n")
    result = blis([*RUN, "--results-path", dev])
    assert result.exit_code == 0, result.stderr
    assert stat.S_ISCHR(os.stat(dev).st_mode)  # still the device, not a regular file
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("flag", ["--results-path", "--trace-output", "--export-trace"])
def test_every_run_output_writes_through_a_device(tmp_path, flag):
    dev = _char_device(tmp_path / "n")
    args = [*RUN, flag, dev]
    if flag == "--trace-output":
        args += ["--trace-level", "decisions"]
    result = blis(args)
    assert result.exit_code == 0, result.stderr
    assert stat.S_ISCHR(os.stat(dev).st_mode)
    assert leftovers(tmp_path) == []


def test_a_fifo_reader_gets_the_whole_results_file(tmp_path):
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = _drain(fifo, got)
    result = blis([*RUN, "--results-path", fifo])
    reader.join(10)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(got[0])  # complete, valid JSON
    assert doc["completed_requests"] == 5
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert leftovers(tmp_path) == []


def test_a_pipe_as_in_bash_process_substitution(tmp_path):
    """``--results-path >(jq .)`` passes /dev/fd/N, a pipe: it must be written into."""
    if not os.path.isdir("/dev/fd"):
        pytest.skip("no /dev/fd")
    r, w = os.pipe()
    got: list[bytes] = []
    reader = _drain(r, got)
    try:
        result = blis([*RUN, "--results-path", f"/dev/fd/{w}"])
    finally:
        os.close(w)
    reader.join(10)
    assert result.exit_code == 0, result.stderr
    assert json.loads(got[0])["completed_requests"] == 5


def test_report_writes_through_a_fifo(tmp_path):
    results = tmp_path / "r.json"
    assert blis([*RUN, "--results-path", results]).exit_code == 0
    fifo = tmp_path / "page"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = _drain(fifo, got)
    result = blis(["report", results, "-o", fifo])
    reader.join(10)
    assert result.exit_code == 0, result.stderr
    assert got[0].startswith(b"<!DOCTYPE html>") or b"<html" in got[0][:200]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_symlink_is_followed_and_kept(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target.name)
    assert blis([*RUN, "--results-path", link]).exit_code == 0
    assert link.is_symlink() and os.readlink(link) == target.name
    assert json.loads(target.read_text())["completed_requests"] == 5


def test_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to("made.json")
    assert blis([*RUN, "--results-path", link]).exit_code == 0
    assert link.is_symlink()
    assert json.loads((tmp_path / "made.json").read_text())["completed_requests"] == 5


def test_a_regular_file_is_replaced_atomically_and_keeps_its_mode(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    os.chmod(target, 0o640)
    assert blis([*RUN, "--results-path", target]).exit_code == 0
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    assert json.loads(target.read_text())["completed_requests"] == 5
    assert leftovers(tmp_path) == []


def test_a_socket_is_refused_before_the_run(tmp_path, no_run):
    import socket

    path = tmp_path / "s"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(path))
    except OSError as exc:  # path too long for AF_UNIX on some systems
        pytest.skip(str(exc))
    try:
        line = one_error(blis([*RUN, "--results-path", path]))
    finally:
        sock.close()
    assert "--results-path" in line and "socket" in line


# --- item 2: an output never replaces an input --------------------------------------------


def _inputs(tmp_path: Path) -> dict[str, Path]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    trace = tmp_path / "trace"
    assert blis([*RUN, "--export-trace", trace]).exit_code == 0  # trace + trace.yaml
    run_config = tmp_path / "run.yaml"
    run_config.write_text("seed: 3\n")
    bundle = tmp_path / "bundle.yaml"
    bundle.write_text("routing:\n  policy: round-robin\n")
    return {
        "spec": spec,
        "trace": trace,
        "header": tmp_path / "trace.yaml",
        "config": run_config,
        "bundle": bundle,
    }


TRACE_IN = ["--workload", "traces", "--workload-traces-filepath"]
RUN_TRACE = ["run", "--model", MODEL, "--log", "error"]


@pytest.mark.parametrize(
    ("args", "victim", "words"),
    [
        (["--workload-spec", "{spec}", "--results-path", "{spec}"], "spec", "--workload-spec"),
        ([*TRACE_IN, "{trace}", "--results-path", "{trace}"], "trace", "--workload-traces"),
        ([*TRACE_IN, "{trace}", "--export-trace", "{trace}"], "trace", "--workload-traces"),
        # the same trace v2 pair, named by its header
        ([*TRACE_IN, "{header}", "--export-trace", "{trace}"], "header", "--workload-traces"),
        ([*TRACE_IN, "{trace}", "--results-path", "{header}"], "header", "--workload-traces"),
        (["--config", "{config}", "--results-path", "{config}"], "config", "--config"),
        (["--policy-config", "{bundle}", "--results-path", "{bundle}"], "bundle", "--policy"),
        (
            ["--trace-level", "decisions", "--workload-spec", "{spec}", "--trace-output", "{spec}"],
            "spec",
            "--workload-spec",
        ),
    ],
)
def test_an_output_that_is_an_input_is_refused_before_the_run(
    tmp_path, args, victim, words, monkeypatch
):
    paths = _inputs(tmp_path)
    before = paths[victim].read_bytes()
    filled = [a.format(**{k: str(v) for k, v in paths.items()}) for a in args]
    monkeypatch.setattr("inference_sim.runner.run_plan", _never)
    # a trace replays all its rows: --num-requests would be refused (config/unused.py)
    run = RUN_TRACE if TRACE_IN[-1] in args else RUN
    line = one_error(blis([*run, *filled]))
    assert words in line and "input" in line, line
    assert paths[victim].read_bytes() == before


def _never(*a: Any, **k: Any) -> None:
    raise AssertionError("the run started before the bad output path was refused")


def test_two_outputs_cannot_share_a_file(tmp_path, no_run):
    out = tmp_path / "r.json"
    args = [*RUN, "--results-path", out, "--trace-level", "decisions", "--trace-output", out]
    line = one_error(blis(args))
    assert "--trace-output" in line and "--results-path" in line
    line = one_error(blis([*RUN, "--results-path", out, "--export-trace", out]))
    assert "--export-trace" in line
    assert not out.exists()


def test_a_hard_link_to_an_input_is_the_same_file(tmp_path, no_run):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    alias = tmp_path / "alias.yaml"
    os.link(spec, alias)
    line = one_error(blis([*RUN, "--workload-spec", spec, "--results-path", alias]))
    assert "--workload-spec" in line
    assert spec.read_text() == SPEC


def test_two_outputs_to_a_device_are_fine(tmp_path):
    dev = _char_device(tmp_path / "n")
    args = [*RUN, "--results-path", dev, "--trace-level", "decisions", "--trace-output", dev]
    assert blis(args).exit_code == 0


def test_report_refuses_to_overwrite_its_input(tmp_path):
    results = tmp_path / "r.json"
    assert blis([*RUN, "--results-path", results]).exit_code == 0
    before = results.read_bytes()
    line = one_error(blis(["report", results, "-o", results]))
    assert "--output" in line and "RESULTS" in line
    link = tmp_path / "link.html"
    link.symlink_to(results.name)
    one_error(blis(["report", results, "-o", link]))
    assert results.read_bytes() == before


# --- item 3: every path checked before the run; no temporary file left --------------------


@pytest.mark.parametrize("flag", ["--results-path", "--trace-output", "--export-trace"])
def test_a_too_long_file_name_fails_before_the_run(tmp_path, flag, no_run):
    args = [*RUN, flag, tmp_path / f"{LONG}.json"]
    if flag == "--trace-output":
        args += ["--trace-level", "decisions"]
    line = one_error(blis(args))
    assert flag in line and "bytes; the file system allows at most" in line, line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("make", "path", "words"),
    [
        (lambda p: p.mkdir(), "out", "is a folder"),
        (lambda p: p.parent.write_text("x"), "file/r.json", "not a folder"),
        (lambda p: None, "missing/r.json", "does not exist"),
    ],
)
def test_results_path_mismatches_fail_before_the_run(tmp_path, make, path, words, no_run):
    target = tmp_path / path
    make(target)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    line = one_error(blis([*RUN, "--results-path", target]))
    assert line.startswith(f"Error: --results-path {target}") and words in line, line
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.fixture
def results_file(tmp_path):
    out = tmp_path / "base.json"
    assert blis([*RUN, "--results-path", out]).exit_code == 0
    return out


def test_report_into_a_folder_fails_cleanly(tmp_path, results_file):
    folder = tmp_path / "somedir"
    folder.mkdir()
    line = one_error(blis(["report", results_file, "-o", folder]))
    assert "is a folder" in line
    assert list(folder.iterdir()) == [] and leftovers(tmp_path) == []


def test_report_with_a_too_long_name_fails_cleanly(tmp_path, results_file):
    line = one_error(blis(["report", results_file, "-o", tmp_path / f"{LONG}.html"]))
    assert "at most" in line
    assert leftovers(tmp_path) == []


def test_a_failing_report_write_leaves_no_temporary_file(tmp_path, results_file, monkeypatch):
    target = tmp_path / "page.html"
    target.write_text("old page")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("inference_sim.core.outfiles.os.fsync", disk_full)
    result = CliRunner().invoke(cli, ["report", str(results_file), "-o", str(target)])
    assert result.exit_code == 1 and "No space left" in result.stderr
    assert target.read_text() == "old page"
    assert leftovers(tmp_path) == []


def test_output_file_drops_its_temporary_file_on_any_exception(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), OutputFile(target) as fh:
        fh.write("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_plot_into_an_existing_file_fails_before_reading(tmp_path, results_file):
    pytest.importorskip("matplotlib")
    line = one_error(blis(["plot", results_file, "-o", results_file]))
    assert "not a folder" in line
    line = one_error(blis(["plot", results_file, "-o", tmp_path / LONG]))
    assert "at most" in line
    assert json.loads(results_file.read_text())["completed_requests"] == 5


def test_sweep_out_mismatches_fail_before_any_run(tmp_path, monkeypatch):
    pytest.importorskip("pandas")
    pytest.importorskip("duckdb")
    pytest.importorskip("pyarrow")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"base: {{model: {MODEL}, num_requests: 5}}\ngrid: {{seed: [1, 2]}}\n")
    monkeypatch.setattr(
        "inference_sim.sweep.run.run_sweep",
        lambda *a, **k: (_ for _ in ()).throw(AssertionError("a run started")),
    )
    existing = tmp_path / "file"
    existing.write_text("x")
    line = one_error(blis(["sweep", sweep, "--out", existing, "--jobs", "1"]))
    assert "--out" in line and "not a folder" in line
    line = one_error(blis(["sweep", sweep, "--out", tmp_path / LONG, "--jobs", "1"]))
    assert "at most" in line
    assert existing.read_text() == "x"


# --- the helpers themselves ---------------------------------------------------------------


def test_check_output_file_rules(tmp_path):
    check_output_file(tmp_path / "new.json")  # a new file in a folder we can write
    (tmp_path / "old.json").write_text("x")
    check_output_file(tmp_path / "old.json")
    for bad, words in (
        (tmp_path, "is a folder"),
        (tmp_path / "nope" / "r.json", "does not exist"),
        (tmp_path / "old.json" / "r.json", "not a folder"),
        (tmp_path / LONG, "at most"),
        (f"{tmp_path}/new/", "ends with a slash"),
        ("", "empty"),
    ):
        with pytest.raises(OutputPathError, match=words):
            check_output_file(bad)
    assert leftovers(tmp_path) == []  # the writability probe cleans up after itself


def test_check_output_folder_rules(tmp_path):
    check_output_folder(tmp_path / "new" / "deeper")  # made later, parents included
    check_output_folder(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputPathError, match="not a folder"):
        check_output_folder(tmp_path / "f")
    with pytest.raises(OutputPathError, match="at most"):
        check_output_folder(tmp_path / LONG / "x")
    (tmp_path / "dangling").symlink_to("gone")
    with pytest.raises(OutputPathError, match="does not exist"):  # mkdir would fail later
        check_output_folder(tmp_path / "dangling")
    assert not (tmp_path / "new").exists()


def test_output_path_copies_through_a_fifo_and_cleans_up(tmp_path):
    fifo = tmp_path / "f.parquet"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = _drain(fifo, got)
    with output_path(fifo) as tmp:
        Path(tmp).write_bytes(b"PAR1 data")
    reader.join(10)
    assert got == [b"PAR1 data"]
    assert not Path(tmp).exists()


def test_output_path_failure_leaves_the_old_file(tmp_path):
    target = tmp_path / "t.parquet"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), output_path(target) as tmp:
        Path(tmp).write_bytes(b"half")
        raise RuntimeError
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_same_file(tmp_path):
    a = tmp_path / "a"
    write_text(a, "x")
    (tmp_path / "l").symlink_to("a")
    assert same_file(tmp_path / "l", a)
    assert same_file(tmp_path / "sub" / ".." / "a", a) or not (tmp_path / "sub").exists()
    assert not same_file(tmp_path / "b", a)
    fifo = tmp_path / "p"
    os.mkfifo(fifo)
    assert not same_file(fifo, fifo)  # a FIFO or device can take two outputs


# --- the other commands that write files check them first too ------------------------------


def test_plan_plot_path_is_checked_before_the_search(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr("inference_sim.planning.plan.plan_capacity", _never)
    args = ["plan", "--model", MODEL, "--rate", "5", "--slo", "ttft_p99_ms=500"]
    line = one_error(blis([*args, "--plot", tmp_path]))
    assert line.startswith(f"Error: --plot {tmp_path}: cannot write: is a folder"), line


def test_tune_output_is_checked_before_the_trials(tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    monkeypatch.setattr("inference_sim.planning.tune.tune", _never)
    line = one_error(blis(["tune", "--model", MODEL, "--output", tmp_path / LONG]))
    assert "--output" in line and "at most" in line


@pytest.mark.parametrize("flag", ["--out", "--report"])
def test_calibrate_outputs_are_checked_before_the_fit(tmp_path, monkeypatch, flag):
    monkeypatch.setattr("inference_sim.calibrate.runs.load_runs", _never)
    line = one_error(blis(["calibrate", tmp_path / "runs.csv", flag, tmp_path]))
    assert line.startswith(f"Error: {flag} {tmp_path}: cannot write: is a folder"), line


def test_a_closed_stdout_does_not_lose_the_results_file(tmp_path, monkeypatch):
    """``blis run ... --results-path r.json | head``: the file is written before stdout."""

    def closed(self: Any) -> str:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("inference_sim.results.Results.report", closed)
    out = tmp_path / "r.json"
    result = blis([*RUN, "--results-path", out])
    assert result.exit_code == 1
    assert "simulation failed" not in result.stderr
    assert json.loads(out.read_text())["completed_requests"] == 5


def test_a_folder_refusing_new_files_is_not_called_unwritable(tmp_path, monkeypatch):
    """An existing folder where creating a file fails with ENOENT (/proc) is reported
    with the system's reason, not as a permission problem; EACCES stays "not writable"."""
    import errno as _errno
    import tempfile as _tempfile

    from inference_sim.core.outfiles import OutputPathError, check_output_file

    def refuse(code):
        def mkstemp(*args, **kwargs):
            raise OSError(code, os.strerror(code))

        return mkstemp

    monkeypatch.setattr(_tempfile, "mkstemp", refuse(_errno.ENOENT))
    with pytest.raises(OutputPathError, match=r"cannot hold a new file \(No such file"):
        check_output_file(tmp_path / "r.json")
    monkeypatch.setattr(_tempfile, "mkstemp", refuse(_errno.EACCES))
    with pytest.raises(OutputPathError, match=r"is not writable \(Permission denied"):
        check_output_file(tmp_path / "r.json")
