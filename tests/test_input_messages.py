"""Bad input that used to give a misleading message, a raw library error or exit 1: each
now ends with one line naming the problem and exit code 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from inference_sim.cli.main import cli

MODEL = "meta-llama/llama-3.1-8b-instruct"
RUNS = Path(__file__).resolve().parents[2] / "shared/calibration/vllm-0.15.1/training_runs.csv"


def one_line_error(result, needle: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines


@pytest.fixture
def replicates_file(tmp_path) -> Path:
    # Function scope: an in-process `blis run` rebinds the package logger, which the
    # autouse fixture of conftest.py restores only around function-scoped setup.
    path = tmp_path / "rep.json"
    args = ["run", "--model", MODEL, "--num-requests", "10", "--seeds", "1,2"]
    res = CliRunner().invoke(cli, [*args, "--results-path", str(path), "-q"])
    assert res.exit_code == 0, res.stderr
    return path


def test_report_names_a_replicates_file_for_what_it_is(replicates_file, tmp_path):
    res = CliRunner().invoke(cli, ["report", str(replicates_file), "-o", str(tmp_path / "r.html")])
    one_line_error(res, "a --seeds/--replicates results file")
    assert "blis run --seed N --results-path" in res.stderr


def test_a_replicates_file_as_config_repeats_its_first_run(replicates_file):
    doc = json.loads(replicates_file.read_text())
    res = CliRunner().invoke(cli, ["run", "--config", str(replicates_file), "--json", "-q"])
    assert res.exit_code == 0, res.stderr  # was: unknown option 'seeds'
    first = doc["runs"][0]
    assert json.loads(res.stdout)["e2e_mean_ms"] == first["e2e_mean_ms"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [("[]", "not a results file (expected a JSON object)"), ("", "not JSON (Expecting value")],
)
def test_report_of_a_file_that_is_not_results(tmp_path, text, needle):
    path = tmp_path / "x.json"
    path.write_text(text)
    res = CliRunner().invoke(cli, ["report", str(path), "-o", str(tmp_path / "r.html")])
    one_line_error(res, needle)
    assert res.stderr.count("not a results file") <= 1


@pytest.mark.parametrize(
    ("target", "needle"), [("", "is a folder"), ("nodir/x.json", "does not exist")]
)
def test_config_schema_output_that_cannot_be_written(tmp_path, target, needle):
    res = CliRunner().invoke(cli, ["config", "schema", "-o", str(tmp_path / target)])
    one_line_error(res, needle)


@pytest.mark.skipif(not RUNS.exists(), reason="needs ../shared/calibration")
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--prompt-scale", "-1"], "--prompt-scale must be a finite number > 0"),
        (["--duration-scale", "0"], "--duration-scale must be a finite number > 0"),
        (["--rounds", "0"], "--rounds must be >= 1"),
        (["--max-evals", "0"], "--max-evals must be >= 1"),
        (["--params", "bogus", "--write-specs", "SPECS"], "--params: unknown coefficient"),
    ],
)
def test_calibrate_numbers_and_names_are_checked_first(tmp_path, args, needle):
    runs = tmp_path / "runs.csv"
    with open(RUNS, encoding="utf-8") as fh:
        runs.write_text("".join(fh.readlines()[:4]))
    args = [a.replace("SPECS", str(tmp_path / "specs")) for a in args]
    res = CliRunner().invoke(cli, ["calibrate", str(runs), *args, "--jobs", "1", "-q",
                                   "--out", str(tmp_path / "c.json")])  # fmt: skip
    one_line_error(res, needle)


@pytest.mark.skipif(not RUNS.exists(), reason="needs ../shared/calibration")
def test_calibrate_names_a_missing_column(tmp_path):
    with open(RUNS, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))[:4]
    drop = rows[0].index("ttft_mean_ms")
    path = tmp_path / "runs.csv"
    with open(path, "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([r[:drop] + r[drop + 1 :] for r in rows])
    res = CliRunner().invoke(cli, ["calibrate", str(path), "--jobs", "1", "-q",
                                   "--out", str(tmp_path / "c.json")])  # fmt: skip
    one_line_error(res, "no ttft_mean_ms column")
