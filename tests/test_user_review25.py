"""New-user walkthrough (review 25): what the tool says about a run matches the run.

A. the report and the comparison page describe a spec or trace run as it was made (the
   spec file and its rate, the trace and its format), and leave the distribution's
   options out of the configuration table;
B. the ``auto`` fallback warning says what happened and what runs instead;
C. a run missing both --hardware and --tp names both, with ``blis models``' row, in GiB;
D. ``blis tune`` marks the trials that reused an earlier configuration's result;
E. did-you-mean for sweep keys, every unknown ``--config`` key at once, ``--slo`` names
   and units, choice values in any case;
F. rounded "misses" figures, the calibrated model's
   ``starting:`` line, docs/sweeps.md's column.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from inference_sim import Results, simulate
from inference_sim.cli.main import cli
from inference_sim.config.errors import ConfigError
from inference_sim.config.resolve import load_run_config, resolve
from inference_sim.metrics.slo import parse_slo, parse_slos, violations
from inference_sim.report.compare import build_comparison
from inference_sim.report.html import build_report
from inference_sim.results import unused_workload_options, workload_text

MODEL = "meta-llama/llama-3.1-8b-instruct"
ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "shared-prefixes.yaml"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def error_line(result: Result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0].removeprefix("Error: ")


def warnings(result: Result) -> list[str]:
    return [ln for ln in result.stderr.splitlines() if ln.startswith("WARNING")]


# --- A. the workload as the run had it --------------------------------------------------------


@pytest.fixture(scope="module")
def spec_run() -> Results:
    return simulate(model=MODEL, workload_spec=str(SPEC), num_requests=60, num_instances=2)


def _header(page: str) -> str:
    return page[page.index('<div class="sub">') :].split("</div>", 1)[0]


def _config_options(page: str) -> list[str]:
    section = page.split("<h2>Configuration</h2>", 1)[1]
    table = section.split("</table>", 1)[0]
    return re.findall(r'<tr><td class="l">([^<]*)</td>', table)


def test_report_header_names_the_spec_file_and_its_rate(spec_run):
    header = _header(build_report(spec_run))
    assert "workload spec shared-prefixes.yaml at 40 req/s" in header
    assert "workload distribution" not in header


def test_report_configuration_leaves_out_the_distribution_options(spec_run):
    page = build_report(spec_run)
    shown = _config_options(page)
    assert "workload_spec" in shown and "rate" in shown and "num_requests" in shown
    for name in ("arrival", "prompt_tokens", "output_tokens", "workload", "trace_format"):
        assert name not in shown, name
    note = page.split("<h2>Configuration</h2>", 1)[1]
    assert "Not shown: workload, " in note and "prompt_tokens" in note


def test_distribution_run_keeps_its_options_and_shows_its_rate():
    res = simulate(model=MODEL, rate=7, arrival="poisson", num_requests=20)
    page = build_report(res)
    assert "workload distribution at 7 req/s (poisson)" in _header(page)
    shown = _config_options(page)
    assert "arrival" in shown and "prompt_tokens" in shown
    assert "workload_spec" not in shown and "trace_format" not in shown


def test_comparison_legend_describes_each_workload(spec_run):
    other = simulate(model=MODEL, workload="chatbot", rate=40, num_requests=20)
    page = build_comparison([spec_run, other], labels=["spec", "preset"])
    legend = page.split('<ul class="legend" id="runs">', 1)[1].split("</ul>", 1)[0]
    assert "workload spec shared-prefixes.yaml at 40 req/s" in legend
    assert "workload chatbot at 40 req/s" in legend
    assert "workload distribution" not in legend and "rate 40/s" not in legend


def test_workload_text_for_traces_and_inline_specs(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"timestamp": 0, "input_length": 10, "output_length": 2}\n')
    cfg = {"workload": "traces", "workload_traces_filepath": str(trace), "rate": 1.0}
    assert workload_text({**cfg, "trace_format": "mooncake"}) == "trace t.jsonl (mooncake)"
    assert workload_text({**cfg, "trace_format": "auto"}) == "trace t.jsonl (mooncake)"
    assert workload_text({**cfg, "trace_format": "auto", "trace_speedup": 2.0}) == (
        "trace t.jsonl (mooncake) replayed x2"
    )
    assert "num_requests" in unused_workload_options(cfg)
    assert workload_text({"workload_spec": {"clients": []}, "rate": 5.0}) == (
        "workload spec (inline) at 5 req/s"
    )


# --- B. the fallback warning ------------------------------------------------------------------


def test_fallback_warning_for_an_untrained_model_says_what_runs():
    result = invoke("run", "--model", "qwen/qwen3-14b", "--hardware", "A100", "--tp", "1",
                    "--num-requests", "5")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    (line,) = warnings(result)
    assert line.startswith(
        "WARNING no trained coefficients for qwen/qwen3-14b (the catalog has none for this "
        "model); using the calibrated model (expected E2E-mean error "
    )
    assert "requires trained coefficients" not in line and "auto fallback" not in line


def test_fallback_warning_for_an_untrained_tp_names_the_deployment():
    result = invoke("run", "--model", MODEL, "--hardware", "H100", "--tp", "8",
                    "--num-requests", "5")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    (line,) = warnings(result)
    assert line.startswith(
        f"WARNING no trained coefficients for {MODEL} on H100/TP8 (vLLM v0.8.4); trained: "
    )
    assert "H100/TP2" in line and "using the calibrated model" in line
    assert "--log info prints the fidelity line" in line
    assert "requires trained coefficients" not in line


def test_explicit_blackbox_still_refuses():
    line = error_line(invoke("run", "--model", MODEL, "--hardware", "H100", "--tp", "8",
                             "--latency-model", "blackbox", "--num-requests", "5"))  # fmt: skip
    assert line.startswith(f"no trained coefficients for --model {MODEL} --hardware H100 --tp 8")
    assert "Pick a trained combination" in line


def test_docs_quote_the_new_warning():
    cli_md = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert "requires trained coefficients" not in cli_md
    assert "`no trained coefficients for <model> on <GPU>/TP<n> (vLLM <v>); trained:" in cli_md


# --- C. every missing flag at once, in GiB -----------------------------------------------------


def test_missing_hardware_and_tp_are_named_together_with_the_models_row():
    from inference_sim.catalog import load_catalog
    from inference_sim.catalog.listing import models_table

    row = next(r for r in models_table(load_catalog(None)) if r["model"] == "qwen/qwen3-14b")
    with pytest.raises(ConfigError) as exc:
        resolve({"model": "Qwen/Qwen3-14B"})
    msg = str(exc.value)
    assert (
        f"needs --hardware and --tp; `blis models` suggests --hardware {row['gpu']} "
        f"--tp {row['tp']} (known GPUs: "
    ) in msg
    with pytest.raises(ConfigError, match=r"needs --hardware; `blis models` suggests --hardware"):
        resolve({"model": "Qwen/Qwen3-14B", "tp": 2})


def test_tp_message_gives_weights_and_memory_in_gib():
    from inference_sim.catalog import load_catalog
    from inference_sim.catalog.architecture import bundled_architecture

    arch = bundled_architecture("qwen/qwen3-14b")
    gpu = load_catalog(None).gpu("H100")
    with pytest.raises(ConfigError) as exc:
        resolve({"model": "Qwen/Qwen3-14B", "hardware": "H100"})
    msg = str(exc.value)
    assert f"its weights ({arch.weight_bytes() / 2**30:.1f} GiB) fit at --tp 1 on H100" in msg
    assert f"({gpu.usable_memory_bytes / 2**30:.0f} GiB each)" in msg
    assert " GB)" not in msg  # converted, not relabelled: 29.5 GB is 27.5 GiB
    assert f"{arch.weight_bytes() / 1e9:.1f}" not in msg


# --- D. blis tune marks reused trials ---------------------------------------------------------


def test_tune_marks_repeats_and_counts_distinct_configurations():
    pytest.importorskip("optuna")
    from inference_sim.planning.tune import bundle_yaml, tune

    seen = []
    outcome = tune(
        {"model": MODEL, "num_requests": 10},
        weights={"throughput": 1.0},
        trials=6,
        policies=("round-robin", "least-loaded"),
        on_trial=seen.append,
    )
    assert outcome.distinct == 2
    repeats = [t for t in outcome.trials if t.repeat_of is not None]
    assert len(repeats) == 4
    for t in repeats:
        first = outcome.trials[t.repeat_of]
        assert first.repeat_of is None and first.options() == t.options()
        assert t.note == f" (repeat of trial {t.repeat_of}, not re-run)"
    doc = outcome.to_dict()
    assert doc["distinct_configurations"] == 2
    assert [t["repeat_of"] for t in doc["trials"]] == [t.repeat_of for t in outcome.trials]
    assert "# best of 6 trials, 2 distinct configurations:" in bundle_yaml(outcome)


def test_tune_command_prints_the_repeats():
    pytest.importorskip("optuna")
    result = invoke("tune", "--model", MODEL, "--num-requests", "10", "--trials", "5",
                    "--policies", "round-robin,least-loaded")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert any(re.search(r"\(repeat of trial \d, not re-run\)$", ln) for ln in lines)
    assert "5 trials, 2 distinct configurations (3 repeats reused an earlier trial's result)" in (
        lines
    )


# --- E. error consistency ---------------------------------------------------------------------


def test_sweep_unknown_key_gets_a_did_you_mean():
    from inference_sim.sweep.spec import parse_sweep

    with pytest.raises(ConfigError) as exc:
        parse_sweep({"base": {"model": MODEL, "num_request": 100}, "grid": {"rate": [1]}})
    assert str(exc.value) == (
        "<sweep>: base: unknown run option 'num_request' (did you mean \"num_requests\"?); "
        "see `blis run --help`"
    )


def test_config_file_reports_every_unknown_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"model: {MODEL}\nnum_request: 100\nrat: 5\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_run_config(path)
    assert str(exc.value) == (
        f"--config {path}: unknown options 'num_request' (did you mean \"num_requests\"?), "
        "'rat' (did you mean \"rate\"?); see `blis run --help`"
    )
    with pytest.raises(ConfigError, match=r"unknown options 'num_request' .*'ratee'"):
        simulate(model=MODEL, num_request=5, ratee=3)


def test_slo_without_its_unit_suffix_gets_a_did_you_mean():
    line = error_line(invoke("run", "--model", MODEL, "--num-requests", "5",
                             "--slo", "ttft_p99=500"))  # fmt: skip
    assert line.endswith('; did you mean "ttft_p99_ms"?')
    from inference_sim.metrics.slo import check_metrics

    with pytest.raises(ConfigError, match=r'not a summary metric \(did you mean "ttft_p99_ms"\?\)'):
        check_metrics(parse_slos(["ttft_p99=500"]), {"ttft_p99_ms": 1.0})


def test_slo_bound_may_repeat_its_unit():
    assert parse_slo("ttft_p99_ms=500ms") == parse_slo("ttft_p99_ms=500")
    assert parse_slo("p99_ttft_ms <= 20 ms") == parse_slo("ttft_p99_ms=20")
    assert parse_slo("ttft_p99_ms=1e3ms").bound == 1000
    with pytest.raises(ConfigError, match="is a number of milliseconds"):
        parse_slo("ttft_p99_ms=0.5s")
    with pytest.raises(ConfigError, match="a plain number, without a unit"):
        parse_slo("responses_per_sec>=5/s")
    summary = simulate(model=MODEL, num_requests=5, slo=["ttft_p99_ms=500ms"]).summary
    assert "slo_attainment" in summary


def test_choice_values_are_taken_in_any_case():
    upper = simulate(model=MODEL, num_requests=20, rate=5, arrival="Poisson",
                     workload="Chatbot", latency_model="Blackbox")  # fmt: skip
    lower = simulate(model=MODEL, num_requests=20, rate=5, arrival="poisson",
                     workload="chatbot", latency_model="blackbox")  # fmt: skip
    assert upper.config["arrival"] == "poisson" and upper.config["workload"] == "chatbot"
    assert upper.records == lower.records
    result = invoke("run", "--model", MODEL, "--num-requests", "5", "--arrival", "Gamma",
                    "--burstiness", "0.5", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["config"]["arrival"] == "gamma"


# --- F. cosmetics -----------------------------------------------------------------------------


def test_misses_are_rounded_like_the_tables():
    summary = {"completed_requests": 10, "injected_requests": 10, "ttft_p99_ms": 1088.14059,
               "responses_per_sec": 3.1415926}  # fmt: skip
    got = violations(parse_slos(["ttft_p99_ms=500", "responses_per_sec>=5"]), summary)
    assert got == ["ttft_p99_ms = 1088.1 (want <= 500)", "responses_per_sec = 3.142 (want >= 5)"]


def test_calibrated_start_line_names_the_coefficients_not_alpha_beta():
    result = invoke("run", "--model", MODEL, "--hardware", "H100", "--tp", "8",
                    "--num-requests", "5", "--log", "info")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    (start,) = [ln for ln in result.stderr.splitlines() if ln.startswith("INFO starting:")]
    assert "alpha=" not in start and "beta=" not in start
    assert "latency model calibrated: coefficients from the shipped set" in start
    result = invoke("run", "--model", MODEL, "--hardware", "H100", "--tp", "2",
                    "--num-requests", "5", "--log", "info")  # fmt: skip
    (start,) = [ln for ln in result.stderr.splitlines() if ln.startswith("INFO starting:")]
    assert "alpha=[" in start and "beta=[" in start  # blackbox: they price the steps


def test_sweeps_doc_puts_the_reason_column_where_it_is():
    text = (ROOT / "docs" / "sweeps.md").read_text(encoding="utf-8")
    assert "`latency_model_reason` column of the table says why" not in text
    assert "`latency_model_reason` column of `results.parquet` and `results.duckdb`" in text


def test_plan_warns_when_probes_are_too_short_for_queues(
    sim_log: pytest.LogCaptureFixture,
) -> None:
    """planning.md's first example with the default 100 requests at 60/s planned a
    saturation rate of 157.5 req/s (86.2 with 1 000 requests) without a word."""
    args = ["plan", "--model", MODEL, "--hardware", "H100", "--tp", "1", "--workload"]
    args += ["chatbot", "--rate", "60", "--slo", "ttft_p99_ms=500", "--max-instances", "1"]
    args += ["--no-saturation"]
    assert invoke(*args).exit_code == 0
    assert "--num-requests 100 at --rate 60 is 1.7 s of arrivals" in sim_log.text
    assert "give --num-requests 600 or more" in sim_log.text
    sim_log.clear()
    assert invoke(*args, "--num-requests", "600").exit_code == 0
    assert "arrivals per probe" not in sim_log.text
