"""Review 26, CLI parity: usage errors on one line, Go's integer syntax, the unread
``./defaults.yaml`` warning, new stdout sections after the reference's, and the
differences page listing what the CLI refuses or reads differently."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from inference_sim.cli.main import cli

MODEL = "meta-llama/llama-3.1-8b-instruct"
M = ("--model", MODEL, "--num-requests", "3")
DOCS = Path(__file__).resolve().parents[1] / "docs"
DIFFERENCES = (DOCS / "differences.md").read_text(encoding="utf-8")


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def one_error_line(*args: str) -> str:
    """The one stderr line of a usage error or bad input (exit 2, nothing on stdout)."""
    result = invoke(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


# --- defect 6: usage errors are one line --------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (
            ("run", *M, "--foo"),
            ("No such option '--foo'", "did you mean", "(see 'blis run --help')"),
        ),
        (("run", *M, "--num-requests", "abc"), ("'abc' is not a valid integer", "blis run --help")),
        (("run", "--model", MODEL, "--num-requests"), ("requires an argument", "blis run --help")),
        (("run", *M, "stray"), ("unexpected extra argument (stray)", "blis run --help")),
        (("runn",), ("No such command 'runn'; did you mean 'run'?", "(see 'blis --help')")),
        (("--foo",), ("No such option '--foo'", "(see 'blis --help')")),
        (("workload", "describe"), ("Missing argument 'FILE'", "blis workload describe --help")),
        (("models", "--bad"), ("No such option '--bad'", "(see 'blis models --help')")),
    ],
)
def test_usage_errors_are_one_line_exit_2(args, needles):
    line = one_error_line(*args)
    for needle in needles:
        assert needle in line, line
    assert "Usage:" not in line and "Try '" not in line


def test_blis_alone_is_one_line_naming_the_commands():
    """differences.md: `blis` alone is refused with one line (the reference prints help)."""
    line = one_error_line()
    assert line.startswith("Error: no command given; commands: ")
    assert "run" in line and "models" in line and line.endswith("(see 'blis --help')")
    assert "no command given; commands: describe" in one_error_line("workload")


def test_help_and_version_still_exit_0_on_stdout():
    for args in (("--help",), ("run", "--help"), ("--version",)):
        result = invoke(*args)
        assert result.exit_code == 0, (args, result.stderr)
        assert result.stdout and result.stderr == ""


def test_a_bad_boolean_value_says_so():
    line = one_error_line("run", *M, "--roofline=maybe")
    assert line == (
        "Error: --roofline: 'maybe' is not a valid boolean (true/false) (see 'blis run --help')"
    )


def test_go_booleans_work_in_process():
    """--flag=false is translated by the group itself, so CliRunner gets it too."""
    result = invoke("run", *M, "--roofline=false", "--json")
    assert result.exit_code == 0, result.stderr
    assert '"latency_model": "blackbox"' in result.stdout


def test_the_project_own_errors_keep_their_form():
    line = one_error_line("run", *M, "--output", "yaml")
    assert line == "Error: --output: unknown format 'yaml'; valid: text, json"


# --- defect 7: integers as Go's strconv.ParseInt(s, 0, 64) ---------------------------------


@pytest.mark.parametrize(("text", "count"), [("0x3", 3), ("0b11", 3), ("0o3", 3), ("003", 3)])
def test_go_integer_prefixes(text, count):
    result = invoke("run", "--model", MODEL, "--num-requests", text, "--json")
    assert result.exit_code == 0, result.stderr
    assert f'"injected_requests": {count},' in result.stdout


@pytest.mark.parametrize("text", ["010", "08"])
def test_a_leading_zero_go_reads_as_octal_is_refused(text):
    line = one_error_line("run", "--model", MODEL, "--num-requests", text)
    assert f"'{text}' is ambiguous: the reference (Go) reads a leading 0 as octal" in line
    assert "'010' is ambiguous" in one_error_line("run", *M, "--horizon", "010")


def test_parse_integer_go_syntax():
    from inference_sim.config.numbers import leading_zero_problem, parse_integer

    assert [parse_integer(t) for t in ("0x10", "-0x10", "0o17", "0b101", "0X1f")] == [
        16,
        -16,
        15,
        5,
        31,
    ]
    assert parse_integer("010") is None and parse_integer("0xg") is None
    assert parse_integer("007") == 7 and parse_integer("00") == 0 and parse_integer("1e3") == 1000
    assert leading_zero_problem("010") == (
        "'010' is ambiguous: the reference (Go) reads a leading 0 as octal (8); "
        "write 10, or 0o10 for 8"
    )


# --- defect 1: ./defaults.yaml is not read silently ----------------------------------------


def _defaults_file(folder: Path) -> None:
    (folder / "defaults.yaml").write_text(
        yaml.safe_dump({"defaults": {}, "models": [], "workloads": {}, "version": "x"}),
        encoding="utf-8",
    )


NOTE = "./defaults.yaml is not read (the reference reads it by default)"


def test_a_defaults_file_in_the_working_directory_is_warned_about(tmp_path, monkeypatch):
    _defaults_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = invoke("run", *M)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count(NOTE) == 1, result.stderr
    assert "--defaults-filepath defaults.yaml" in result.stderr
    models = invoke("models")
    assert models.exit_code == 0 and models.stderr.count(NOTE) == 1


def test_no_warning_when_named_or_absent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert NOTE not in invoke("run", *M).stderr  # no file
    _defaults_file(tmp_path)
    named = invoke("run", *M, "--defaults-filepath", "defaults.yaml")
    assert named.exit_code == 0, named.stderr
    assert NOTE not in named.stderr
    (tmp_path / "run.yaml").write_text("defaults_filepath: defaults.yaml\n", encoding="utf-8")
    assert NOTE not in invoke("run", *M, "--config", "run.yaml").stderr
    assert NOTE not in invoke("run", *M, "--quiet").stderr


# --- defect 9: new stdout sections after the reference's -----------------------------------


def test_tenant_fairness_comes_after_the_trace_summary(tmp_path):
    def client(cid: str, tenant: str, slo: str) -> dict:
        return {
            "id": cid,
            "tenant_id": tenant,
            "slo_class": slo,
            "rate_fraction": 1.0,
            "arrival": {"process": "constant"},
            "input_distribution": {"type": "constant", "params": {"value": 64}},
            "output_distribution": {"type": "constant", "params": {"value": 8}},
        }

    spec = tmp_path / "w.yaml"
    doc = {
        "version": "2",
        "seed": 5,
        "aggregate_rate": 20.0,
        "num_requests": 10,
        "clients": [client("a", "alice", "critical"), client("b", "bob", "batch")],
    }
    spec.write_text(yaml.safe_dump(doc), encoding="utf-8")
    result = invoke(
        "run",
        "--model",
        MODEL,
        "--workload-spec",
        str(spec),
        "--trace-level",
        "decisions",
        "--summarize-trace",
    )
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    order = [
        out.index(h)
        for h in ("=== Per-SLO Metrics ===", "=== Trace Summary ===", "=== Tenant Fairness ===")
    ]
    assert order == sorted(order), out


# --- defects 2-5 and 8: documented differences ---------------------------------------------


@pytest.mark.parametrize(
    "needle",
    [
        "`./defaults.yaml` in the working directory is read by default",
        "negative `--alpha-coeffs` / `--beta-coeffs` are accepted",
        "`--tp 3` runs a 32-head model",
        "`--roofline` without `--hardware` or `--tp > 0` stops",
        "the first error is the one of the spec's validation order",
        "`--trace-level` is case-sensitive",
        "a usage error (unknown flag, unparsable value",
        "integer flags are Go's `strconv.ParseInt(s, 0, 64)`",
        "`tpot_p99_ms`",
        "`latency_model_reason`",
        "`slo_distributions`",
        "`=== Tenant\nFairness ===` (2+ tenants) last",
    ],
)
def test_differences_page_lists_it(needle):
    assert needle in DIFFERENCES


def test_documented_refusals_are_real():
    """The rows of defect 2 and 4 describe what the CLI does."""
    assert "--alpha-coeffs[0] must be >= 0" in one_error_line(
        "run", *M, "--alpha-coeffs", "-1,0,0", "--beta-coeffs", "1000,1,1"
    )
    assert "not divisible by TP=3 (vLLM refuses it)" in one_error_line(
        "run", *M, "--tp", "3", "--hardware", "H100", "--alpha-coeffs", "1,1,1",
        "--beta-coeffs", "1000,1,1",
    )  # fmt: skip
    assert "--num-instances must be > 0" in one_error_line(
        "run", *M, "--rate", "0", "--num-instances", "0"
    )
    result = invoke("run", *M, "--roofline", "--json")
    assert result.exit_code == 0 and '"latency_model": "roofline"' in result.stdout
    assert invoke("run", *M, "--trace-level", "DECISIONS").exit_code == 0


def test_new_keys_listed_are_the_keys_written(tmp_path):
    """Every key a plain run appends after the reference's is named in "New keys"."""
    path = tmp_path / "r.json"
    result = invoke("run", *M, "--results-path", str(path))
    assert result.exit_code == 0, result.stderr
    import json

    keys = list(json.loads(path.read_text(encoding="utf-8")))
    new = keys[keys.index("dropped_unservable") + 1 :]
    section = DIFFERENCES.split("## New keys", 1)[1]
    missing = [k for k in new if f"`{k}`" not in section]
    assert not missing, missing


def test_trace_level_docs_agree_with_the_code():
    cli_md = (DOCS / "cli.md").read_text(encoding="utf-8")
    row = next(line for line in cli_md.splitlines() if line.startswith("| `--trace-level`"))
    assert "Case-sensitive" not in row and "Any case" in row
