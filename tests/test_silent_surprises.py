"""Issue 20, items 1-5: the tool never quietly runs something other than what was asked.

1. the latency model that ran, and why, in the summary, results, report, plan and sweep;
2. ``--rate`` with a workload spec scales it (or is refused), never silently dropped;
3. preset length flags apply on top of the preset, and the echoed config is what ran;
4. the report's TPOT and ITL figures are computed and labelled as docs/results.md says;
5. the README tour's slips (prefix workload, install command, labelled loop output).

CLI checks run in process through click's ``CliRunner`` (stdout and stderr apart).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner, Result

from inference_sim import Results, simulate
from inference_sim.catalog import load_catalog
from inference_sim.cli.main import cli
from inference_sim.metrics.stats import percentile_ms
from inference_sim.report.html import _num, build_report

MODEL = "meta-llama/llama-3.1-8b-instruct"
ROOT = Path(__file__).resolve().parents[1]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def run_json(*args: str) -> tuple[dict[str, Any], str]:
    result = invoke("run", "--model", MODEL, *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def bad_input(*args: str) -> str:
    """The one stderr line of a run that must stop with exit code 2."""
    result = invoke(*args)
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# --- 1. which latency model ran, and why ------------------------------------------------------

COMMON = ["--hardware", "H100", "--workload", "chatbot", "--rate", "20", "--num-requests", "40"]


def test_trained_entry_is_named_with_its_reason_and_no_warning():
    summary, stderr = run_json(*COMMON, "--tp", "2")
    assert summary["latency_model"] == "blackbox"
    assert summary["latency_model_reason"].startswith("trained entry H100/TP2")
    assert summary["config"]["latency_model"] == "blackbox"
    assert "WARNING" not in stderr


def test_auto_fallback_is_named_and_warned_on_stderr(tmp_path):
    path = tmp_path / "r.json"
    result = invoke("run", "--model", MODEL, *COMMON, "--tp", "8", "--results-path", str(path))
    assert result.exit_code == 0, result.stderr
    # stdout summary
    assert '"latency_model": "calibrated"' in result.stdout
    assert "auto fallback: no trained entry for H100/TP8" in result.stdout
    # stderr warning, naming the trained alternatives
    warning = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warning) == 1 and "no trained coefficients for" in warning[0]
    assert "on H100/TP8" in warning[0] and "using the calibrated model" in warning[0]
    assert "H100/TP2" in warning[0]
    # results file
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["latency_model"] == "calibrated"
    assert doc["latency_model_reason"].startswith("auto fallback")
    # report header
    page = build_report(Results.load(path))
    header = page[page.index('<div class="sub">') :].split("</div>", 1)[0]
    assert "latency model calibrated (auto fallback: no trained entry for H100/TP8" in header


def test_quiet_silences_the_fallback_warning_and_blackbox_refuses_to_fall_back():
    result = invoke("run", "--model", MODEL, *COMMON, "--tp", "8", "--quiet")
    assert result.exit_code == 0 and "WARNING" not in result.stderr
    line = bad_input("run", "--model", MODEL, *COMMON, "--tp", "8", "--latency-model", "blackbox")
    assert "no trained coefficients" in line and "H100/TP2" in line


def test_requested_models_say_they_were_requested():
    summary, _ = run_json(*COMMON, "--tp", "1", "--latency-model", "roofline")
    assert summary["latency_model"] == "roofline"
    assert summary["latency_model_reason"] == "requested (--latency-model roofline)"
    summary, _ = run_json(*COMMON, "--alpha-coeffs", "0,0,0", "--beta-coeffs", "1000,1,1")
    assert summary["latency_model_reason"] == "requested (--alpha-coeffs/--beta-coeffs)"


def test_plan_table_has_a_latency_model_column_and_names_the_fallback():
    result = invoke(
        "plan", "--model", MODEL, "--hardware", "H100", "--tp", "2", "--tp", "8",
        "--workload", "chatbot", "--rate", "10", "--num-requests", "40",
        "--max-instances", "1", "--no-saturation", "--jobs", "1", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "latency model" in lines[1]
    rows = {line.split()[3]: line.split()[4] for line in lines[2:4]}
    assert rows == {"2": "blackbox", "8": "calibrated"}
    assert any("latency model calibrated (auto fallback" in line for line in lines[4:])


def test_sweep_rows_and_table_name_the_latency_model(tmp_path):
    from inference_sim.sweep import LocalBackend, load_sweep, run_sweep
    from inference_sim.sweep.run import format_table

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "base": {"model": MODEL, "workload": "chatbot", "num_requests": 30},
                "grid": {"tp": [2, 8]},
            }
        ),
        encoding="utf-8",
    )
    spec = load_sweep(str(sweep))
    outcome = run_sweep(spec, tmp_path / "out", backend=LocalBackend(jobs=1), write_table=False)
    assert [r["latency_model"] for r in outcome.rows] == ["blackbox", "calibrated"]
    assert outcome.rows[1]["latency_model_reason"].startswith("auto fallback")
    table = format_table(outcome, spec).splitlines()
    assert "latency model" in table[0]
    assert "blackbox" in table[1] and "calibrated" in table[2]


# --- 2. --rate with a workload spec ---------------------------------------------------------------


def _spec(tmp_path: Path, **extra: Any) -> Path:
    doc: dict[str, Any] = {
        "version": "2",
        "seed": 5,
        "aggregate_rate": 10.0,
        "num_requests": 400,
        "clients": [
            {
                "id": name,
                "tenant_id": name,
                "rate_fraction": fraction,
                "arrival": {"process": "poisson"},
                "input_distribution": {"type": "constant", "params": {"value": 64}},
                "output_distribution": {"type": "constant", "params": {"value": 8}},
            }
            for name, fraction in (("a", 0.75), ("b", 0.25))
        ],
    }
    doc.update(extra)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def _arrival_rate(path: Path) -> float:
    doc = json.loads(path.read_text(encoding="utf-8"))
    arrivals = [r["arrived_at"] for r in doc["requests"]]
    return (len(arrivals) - 1) / (max(arrivals) - min(arrivals))


def test_aggregate_rate_scales_a_workload_spec_and_the_config_says_the_rate_that_ran(tmp_path):
    """--aggregate-rate (review 23: --rate is ignored with a spec, as in the reference)."""
    spec = _spec(tmp_path)
    own, scaled = tmp_path / "own.json", tmp_path / "scaled.json"
    for path, extra in ((own, []), (scaled, ["--aggregate-rate", "40"])):
        result = invoke(
            "run", "--model", MODEL, "--workload-spec", str(spec), *extra,
            "--results-path", str(path), "-q",
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
    own_doc = json.loads(own.read_text(encoding="utf-8"))
    scaled_doc = json.loads(scaled.read_text(encoding="utf-8"))
    assert own_doc["config"]["rate"] == 10.0  # the spec's own, not the flag's default 1.0
    assert scaled_doc["config"]["rate"] == 40.0
    assert _arrival_rate(own) == pytest.approx(10, rel=0.15)
    assert _arrival_rate(scaled) == pytest.approx(40, rel=0.15)
    # every client scaled by the same factor: the shares stay 3:1
    tenants = [r["tenant_id"] for r in scaled_doc["requests"]]
    assert tenants.count("a") / tenants.count("b") == pytest.approx(3, rel=0.25)


def test_a_staged_spec_refuses_a_different_rate_but_records_its_own(tmp_path):
    spec = _spec(tmp_path, stages=[{"rate": 10, "duration": 2}, {"rate": 40, "duration": 1}])
    line = bad_input(
        "run", "--model", MODEL, "--workload-spec", str(spec), "--aggregate-rate", "100"
    )
    assert "--aggregate-rate 100" in line and "stages" in line and "mean 20" in line
    summary, _ = run_json("--workload-spec", str(spec))
    assert summary["config"]["rate"] == pytest.approx(20.0)  # (10*2 + 40*1) / 3
    # the recorded rate repeats the run (its results file as --config)
    summary2, _ = run_json("--workload-spec", str(spec), "--rate", "20")
    assert summary2["completed_requests"] == summary["completed_requests"]


def test_plan_with_a_workload_spec_runs_the_rate_it_reports(tmp_path):
    spec = _spec(tmp_path, num_requests=600)
    result = invoke(
        "plan", "--model", MODEL, "--workload-spec", str(spec), "--rate", "60",
        "--max-instances", "1", "--no-saturation", "--jobs", "1", "-q", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["rate"] == 60
    assert doc["summary"]["config"]["rate"] == 60
    injected = doc["summary"]["injected_requests"]
    duration = doc["summary"]["vllm_estimated_duration_s"]
    assert injected / duration == pytest.approx(60, rel=0.2)  # not the spec's own 10/s


# --- 3. preset length flags -----------------------------------------------------------------------

PRESETS = load_catalog().preset_names()


@pytest.mark.parametrize("preset", PRESETS)
def test_the_echoed_config_is_the_preset_that_ran(preset):
    p = load_catalog().preset(preset)
    res = simulate(model=MODEL, workload=preset, rate=5, num_requests=60)
    for name in p.__dataclass_fields__:
        assert res.config[name] == getattr(p, name), name
    prompts = np.array([r["num_prefill_tokens"] for r in res.records])
    outputs = np.array([r["num_decode_tokens"] for r in res.records])
    assert p.prompt_tokens_min <= prompts.min() and prompts.max() <= p.prompt_tokens_max
    assert p.output_tokens_min <= outputs.min() and outputs.max() <= p.output_tokens_max
    assert abs(prompts.mean() - p.prompt_tokens) < 4 * p.prompt_tokens_stdev / np.sqrt(60) + 1


def test_a_length_flag_applies_on_top_of_the_preset():
    base, _ = run_json("--workload", "chatbot", "--num-requests", "200", "--rate", "20")
    longer, _ = run_json(
        "--workload", "chatbot", "--num-requests", "200", "--rate", "20",
        "--prompt-tokens", "2000", "--prompt-tokens-max", "4000",
    )  # fmt: skip
    assert longer["config"]["prompt_tokens"] == 2000
    assert longer["config"]["prompt_tokens_max"] == 4000
    assert longer["config"]["prompt_tokens_stdev"] == 100  # the rest stays chatbot's
    assert longer["config"]["output_tokens"] == 256
    assert longer["total_input_tokens"] / 200 == pytest.approx(2000, rel=0.05)
    assert base["total_input_tokens"] / 200 == pytest.approx(256, rel=0.1)
    assert longer["total_output_tokens"] == base["total_output_tokens"]  # outputs untouched


def test_a_preset_mean_outside_its_range_says_how_to_override():
    line = bad_input("run", "--model", MODEL, "--workload", "chatbot", "--prompt-tokens", "2000")
    assert "--prompt-tokens 2000" in line and "[2, 800]" in line
    assert "--prompt-tokens-max" in line and "--workload distribution" in line


# --- 4. TPOT and ITL in the report ----------------------------------------------------------------


@pytest.fixture(scope="module")
def busy_run() -> Results:
    return simulate(model=MODEL, workload="chatbot", rate=60, num_requests=600)


def _card(page: str, label: str) -> str:
    m = re.search(
        r'<div class="v">([^<]*)</div><div class="k">' + re.escape(label) + "</div>", page
    )
    assert m is not None, label
    return m.group(1)


def _record_tpot_p99(res: Results) -> float:
    values = sorted(
        r["itl_ms"] * 1000 for r in res.records if r["e2e_ms"] > 0 and r["num_decode_tokens"] > 1
    )
    return percentile_ms(values, 99)


def test_report_tpot_cards_are_per_request_and_itl_cards_per_token(busy_run):
    s = busy_run.summary
    tpot_p99 = _record_tpot_p99(busy_run)
    assert s["tpot_p99_ms"] == pytest.approx(tpot_p99)
    assert s["itl_p99_ms"] != pytest.approx(s["tpot_p99_ms"], rel=0.01)  # they differ here
    page = build_report(busy_run)
    assert _card(page, "TPOT p99 (ms)") == _num(s["tpot_p99_ms"])
    assert _card(page, "ITL p99 (ms)") == _num(s["itl_p99_ms"])
    assert _card(page, "TPOT mean (ms)") == _num(s["tpot_mean_ms"])
    assert _card(page, "ITL mean (ms)") == _num(s["itl_mean_ms"])


def test_report_of_an_old_results_file_computes_tpot_from_the_records(busy_run, tmp_path):
    path = tmp_path / "old.json"
    busy_run.write_json(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    for key in [k for k in doc if k.startswith("tpot_")]:
        del doc[key]
    page = build_report(Results.from_dict(doc))
    assert _card(page, "TPOT p99 (ms)") == _num(_record_tpot_p99(busy_run))
    assert _card(page, "ITL p99 (ms)") == _num(doc["itl_p99_ms"])


# --- 5. the README tour ---------------------------------------------------------------------------


def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_tour_routing_step_uses_a_workload_that_shares_prefixes():
    step = _readme().split("**6.", 1)[1].split("**7.", 1)[0]
    m = re.search(r"--workload-spec (\S+)", step)
    assert m is not None and "--workload chatbot" not in step
    spec = ROOT / m.group(1)
    groups = {c.get("prefix_group") for c in yaml.safe_load(spec.read_text())["clients"]}
    assert len(groups) > 1 and None not in groups
    summary, _ = run_json(
        "--workload-spec", str(spec), "--num-requests", "300", "--num-instances", "2",
        "--routing-policy", "weighted",
        "--routing-scorers", "prefix-affinity:3,queue-depth:2,kv-utilization:2",
    )  # fmt: skip
    assert summary["prefix_cache_hit_rate"] > 0.5


def test_tour_install_commands_fit_a_clone_and_sweeps_doc_needs_no_duckdb_cli():
    step9 = _readme().split("**9.", 1)[1].split("**10.", 1)[0]
    assert "pip install '.[sweep]'" in step9 and "inference-sim[sweep]" not in step9
    sweeps = (ROOT / "docs" / "sweeps.md").read_text(encoding="utf-8")
    shell_lines = [
        line
        for block in re.findall(r"```bash\n(.*?)```", sweeps, re.S)
        for line in block.splitlines()
    ]
    assert not any(line.strip().startswith("duckdb ") for line in shell_lines)
    assert "duckdb.connect(" in sweeps


def test_tour_trace_columns_are_described_as_token_id_lists():
    step5 = _readme().split("**5.", 1)[1].split("**6.", 1)[0]
    assert "JSON lists of token ids, not counts" in step5


def test_tour_saturation_loop_prints_each_rate_with_its_values(tmp_path):
    step3 = _readme().split("**3.", 1)[1].split("**4.", 1)[0]
    assert "--json" in step3
    code = re.search(r"python -c '(.*?)' \$r", step3, re.S)
    assert code is not None
    summary = {"ttft_p99_ms": 123.456, "responses_per_sec": 39.87}
    out = subprocess.run(
        [sys.executable, "-c", code.group(1), "60"],
        input=json.dumps(summary),
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert out.strip() == "rate 60: TTFT p99 123.5 ms, 39.9 req/s"
