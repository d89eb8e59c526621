"""Review 23 (CLI): commands the reference accepts run here, with one warning where a flag
is ignored, and their results match the reference's shape.

* ``--rate`` with a workload spec is ignored (warned), as the reference does;
  ``--aggregate-rate`` scales a spec, and ``blis plan`` probes rates with it.
* ``--workload-traces-filepath`` without ``--workload traces`` is ignored (warned).
* Reference flags a workload ignores, scorers with a router that reads none, ``--seed
  -1``, ``--roofline=t`` and ``blis help`` run; genuinely bad values still exit 2.
* Per-request records carry ``model`` only when it differs from ``--model``.
* The docs say what the code does (troubleshooting messages, GPU table, kv-offload).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from inference_sim import simulate
from inference_sim.cli.main import _bool_values, cli
from inference_sim.core.rng import MAX_SEED, seed_from_int64

MODEL = "meta-llama/llama-3.1-8b-instruct"
DOCS = Path(__file__).resolve().parents[1] / "docs"

SPEC = """\
version: "2"
seed: 3
aggregate_rate: 20
num_requests: 40
clients:
  - id: a
    rate_fraction: 1
    arrival: {process: poisson}
    input_distribution: {type: constant, params: {value: 100}}
    output_distribution: {type: constant, params: {value: 10}}
"""
STAGED = """\
version: "2"
seed: 3
clients:
  - id: a
    rate_fraction: 1
    arrival: {process: poisson}
    input_distribution: {type: constant, params: {value: 100}}
    output_distribution: {type: constant, params: {value: 10}}
stages:
  - {rate: 5, duration: 2}
"""
TRACE = (
    "arrival_time,request_id,model,prefill_tokens,decode_tokens\n"
    '0.0,r0,other-model,"[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]","[7,7,7]"\n'
    '0.25,r1,other-model,"[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18]","[9]"\n'
)


def run(*args: Any) -> Result:
    return CliRunner().invoke(cli, ["run", "--model", MODEL, *map(str, args)])


def summary(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, (result.stderr, result.exception)
    return json.loads(result.stdout)


def warnings(result: Result) -> list[str]:
    return [ln for ln in result.stderr.splitlines() if ln.startswith("WARNING")]


def one_warning(result: Result, *needles: str) -> dict[str, Any]:
    """Exit 0 with exactly one WARNING line holding ``needles``; the JSON summary."""
    doc = summary(result)
    (line,) = warnings(result)
    for needle in needles:
        assert needle in line, line
    return doc


def one_error(result: Result, *needles: str) -> str:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "s.yaml").write_text(SPEC, encoding="utf-8")
    (tmp_path / "staged.yaml").write_text(STAGED, encoding="utf-8")
    (tmp_path / "t.csv").write_text(TRACE, encoding="utf-8")
    return tmp_path


# --- 1. --rate with a workload spec: ignored (the reference's rule); --aggregate-rate ----


def test_rate_with_a_spec_is_ignored_with_one_warning(files):
    """``--rate 1`` (the reference's default, passed by its scripts) used to scale the
    spec to 1 request/s: 40 requests over ~40 s instead of ~2 s."""
    spec = files / "s.yaml"
    plain = summary(run("--workload-spec", spec, "--json"))
    assert plain["vllm_estimated_duration_s"] < 5
    for rate in ("1", "7.5"):
        doc = one_warning(
            run("--workload-spec", spec, "--rate", rate, "--json"),
            f"--rate {rate}: no effect with --workload-spec",
            "aggregate_rate (20 requests/s)",
            f"--aggregate-rate {rate}",
        )
        assert doc == plain
    assert plain["config"]["rate"] == 20 and "aggregate_rate" not in plain["config"]


def test_a_rate_equal_to_the_spec_s_says_nothing(files):
    """A results file used as --config repeats the spec's rate: it replays quietly."""
    result = run("--workload-spec", files / "s.yaml", "--rate", "20", "--json")
    assert result.exit_code == 0 and warnings(result) == [], result.stderr


def test_aggregate_rate_scales_the_spec(files):
    spec = files / "s.yaml"
    plain = summary(run("--workload-spec", spec, "--json"))
    fast = run("--workload-spec", spec, "--aggregate-rate", "80", "--json")
    assert fast.stderr == ""
    doc = summary(fast)
    assert doc["config"]["rate"] == 80 and doc["config"]["aggregate_rate"] == 80
    assert doc["injected_requests"] == plain["injected_requests"] == 40
    assert doc["vllm_estimated_duration_s"] < plain["vllm_estimated_duration_s"] / 2
    # as --rate used to: the same numbers as writing the rate into the spec
    (files / "s80.yaml").write_text(SPEC.replace("aggregate_rate: 20", "aggregate_rate: 80"))
    edited = summary(run("--workload-spec", files / "s80.yaml", "--json"))
    for key in ("e2e_mean_ms", "ttft_p99_ms", "vllm_estimated_duration_s"):
        assert doc[key] == edited[key], key


def test_a_staged_spec_ignores_rate_and_refuses_aggregate_rate(files):
    staged = files / "staged.yaml"
    plain = summary(run("--workload-spec", staged, "--json"))
    doc = one_warning(
        run("--workload-spec", staged, "--rate", "7", "--json"),
        "--rate 7: no effect",
        "load stages set the rates (mean 5 requests/s)",
    )
    assert doc == plain  # it used to exit 2
    one_error(
        run("--workload-spec", staged, "--aggregate-rate", "7"),
        "--aggregate-rate 7: the workload spec",
        "sets its own rates in load stages (mean 5 requests/s)",
    )
    assert run("--workload-spec", staged, "--aggregate-rate", "5", "--json").exit_code == 0


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--aggregate-rate", "5", "--num-requests", "3"], "no effect without --workload-spec"),
        (["--aggregate-rate", "-1"], "--aggregate-rate must be a finite number >= 0"),
        (["--aggregate-rate", "nan"], "--aggregate-rate must be a finite number >= 0"),
    ],
)
def test_aggregate_rate_refusals(flags, needle):
    one_error(run(*flags), needle)


def test_plan_probes_a_spec_s_rates_with_aggregate_rate(files):
    from inference_sim.planning.plan import Deployment, plan_capacity
    from inference_sim.planning.slo import parse_slos
    from inference_sim.sweep.backends import LocalBackend

    outcome = plan_capacity(
        {"workload_spec": str(files / "s.yaml")}, [Deployment(MODEL, "H100", 1)],
        parse_slos(["ttft_p99_ms=100000"]), rate=10, max_instances=1,
        backend=LocalBackend(1), rate_tolerance=0.5,
    )  # fmt: skip
    probes = outcome.best.probes  # type: ignore[union-attr]
    assert {p.rate for p in probes} >= {10.0, 20.0}
    for p in probes:  # each probe ran the spec at its own rate, not the spec's 20
        assert p.summary["config"]["rate"] == p.rate
        assert p.summary["config"]["aggregate_rate"] == p.rate


# --- 2. a trace path without --workload traces: ignored, as the reference -----------------


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        ([], "no effect without --workload traces (the workload is distribution, the default)"),
        (["--workload", "distribution"], "no effect with --workload distribution"),
        (["--workload", "chatbot"], "no effect with --workload chatbot"),
    ],
)
def test_a_trace_path_without_workload_traces_is_ignored(files, flags, needle):
    trace = files / "t.csv"
    result = run("--workload-traces-filepath", trace, *flags, "--num-requests", 3, "--json")
    doc = one_warning(result, f"--workload-traces-filepath {trace}: {needle}")
    assert doc["injected_requests"] == 3  # the synthetic workload, not the 2-row trace
    assert doc["config"]["workload_traces_filepath"] == ""
    assert doc == summary(run(*flags, "--num-requests", 3, "--json"))


def test_a_trace_path_beside_a_spec_is_ignored(files):
    spec, trace = files / "s.yaml", files / "t.csv"
    plain = summary(run("--workload-spec", spec, "--json"))
    doc = one_warning(
        run("--workload-spec", spec, "--workload-traces-filepath", trace, "--json"),
        f"--workload-traces-filepath {trace}: no effect with --workload-spec",
    )
    assert doc == plain


def test_a_trace_path_from_a_config_file_follows_the_config_s_workload(files, tmp_path):
    """The workload a --config file gives decides, as if it were a flag."""
    config = tmp_path / "run.yaml"
    config.write_text("workload: traces\n", encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["run", "--model", MODEL, "--config", str(config),
              "--workload-traces-filepath", str(files / "t.csv"), "--json"],
    )  # fmt: skip
    assert summary(result)["injected_requests"] == 2 and warnings(result) == []


# --- 3. combinations the reference accepts and ignores --------------------------------------


@pytest.mark.parametrize(
    ("flags", "shown"),
    [
        (["--num-requests", "2"], "--num-requests 2"),
        (["--rate", "2"], "--rate 2"),
        (
            ["--prompt-tokens", "70", "--prefix-tokens", "284"],
            "--prefix-tokens 284, --prompt-tokens 70",
        ),
    ],
)
def test_trace_replay_warns_about_reference_flags_it_ignores(files, flags, shown):
    replay = ["--workload", "traces", "--workload-traces-filepath", files / "t.csv"]
    plain = summary(run(*replay, "--json"))
    doc = one_warning(run(*replay, *flags, "--json"), shown, "no effect with --workload traces")
    assert doc == plain and doc["injected_requests"] == 2


@pytest.mark.parametrize(
    ("flags", "shown"),
    [
        (["--prompt-tokens", "100"], "--prompt-tokens 100"),
        (["--prefix-tokens", "284"], "--prefix-tokens 284"),
        (["--workload", "chatbot"], "--workload chatbot"),
        (["--workload", "traces", "--workload-traces-filepath", "{trace}"],
         "--workload traces, --workload-traces-filepath {trace}"),
    ],
)  # fmt: skip
def test_spec_warns_about_reference_flags_it_ignores(files, flags, shown):
    trace = str(files / "t.csv")
    flags = [f.format(trace=trace) for f in flags]
    spec = files / "s.yaml"
    plain = summary(run("--workload-spec", spec, "--json"))
    doc = one_warning(
        run("--workload-spec", spec, *flags, "--json"),
        shown.format(trace=trace) + ": no effect with --workload-spec",
    )
    assert doc == plain  # the config records the spec's run, not the ignored flags


@pytest.mark.parametrize("scorers", ["foo:1", "queue-depth:0", "nonsense"])
def test_scorers_with_a_router_that_reads_none_are_only_warned_about(scorers):
    plain = summary(run("--num-requests", 3, "--json"))
    doc = one_warning(
        run("--num-requests", 3, "--routing-scorers", scorers, "--json"),
        "--routing-scorers has no effect when routing policy is 'round-robin'",
    )
    doc["config"].pop("routing_scorers")
    plain["config"].pop("routing_scorers")
    assert doc == plain


def test_scorers_are_still_checked_for_weighted_routing():
    one_error(
        run("--routing-policy", "weighted", "--routing-scorers", "foo:1"),
        "--routing-scorers: unknown routing scorer 'foo'",
    )
    one_error(
        run("--routing-policy", "weighted", "--routing-scorers", "queue-depth:0"),
        "weight must be a finite positive number",
    )


def test_a_negative_seed_is_its_two_s_complement(files):
    assert seed_from_int64(-1) == MAX_SEED
    assert seed_from_int64(-(2**63)) == 2**63
    assert seed_from_int64(-(2**63) - 1) == -(2**63) - 1  # out of int64: left to the check
    assert seed_from_int64(7) == 7
    minus = summary(run("--seed", -1, "--num-requests", 3, "--json"))
    assert minus["config"]["seed"] == MAX_SEED
    assert minus == summary(run("--seed", MAX_SEED, "--num-requests", 3, "--json"))
    # a spec's seed is the reference's int64 too
    (files / "neg.yaml").write_text(SPEC.replace("seed: 3", "seed: -5"), encoding="utf-8")
    (files / "pos.yaml").write_text(SPEC.replace("seed: 3", f"seed: {2**64 - 5}"))
    neg = summary(run("--workload-spec", files / "neg.yaml", "--json"))
    pos = summary(run("--workload-spec", files / "pos.yaml", "--json"))
    assert neg["config"]["seed"] == 2**64 - 5
    neg["config"].pop("workload_spec"), pos["config"].pop("workload_spec")
    assert neg == pos


def test_seeds_outside_64_bits_are_still_refused():
    one_error(run("--seed", -(2**63) - 1), "--seed must be")
    one_error(run("--seed", 2**64), "--seed must be")


@pytest.mark.parametrize(
    ("value", "flag"),
    [(v, "--roofline") for v in ("1", "t", "T", "TRUE", "true", "True")]
    + [(v, "--no-roofline") for v in ("0", "f", "F", "FALSE", "false", "False")],
)
def test_boolean_flags_take_go_s_parse_bool_values(value, flag):
    assert _bool_values(["run", f"--roofline={value}"]) == ["run", flag]


def test_roofline_equals_t_runs(capsys):
    from inference_sim.cli.main import main

    args = ["run", "--model", MODEL, "--hardware", "H100", "--tp", "1", "--num-requests", "2"]
    with pytest.raises(SystemExit) as done:
        main([*args, "--roofline=t", "--json"])
    assert done.value.code == 0
    assert json.loads(capsys.readouterr().out)["latency_model"] == "roofline"
    with pytest.raises(SystemExit) as done:
        main([*args, "--roofline=f", "--json"])
    assert done.value.code == 0
    assert json.loads(capsys.readouterr().out)["latency_model"] == "blackbox"


@pytest.mark.parametrize(
    ("args", "first"),
    [
        (["help"], "Usage: blis [OPTIONS] COMMAND [ARGS]..."),
        (["help", "run"], "Usage: blis run [OPTIONS]"),
        (["help", "workload", "describe"], "Usage: blis workload describe [OPTIONS] FILE"),
    ],
)
def test_blis_help(args, first):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(first)


def test_blis_help_of_an_unknown_command_is_one_error():
    one_error(CliRunner().invoke(cli, ["help", "nope"]), "blis help: unknown command 'nope'")


def test_num_requests_below_zero_with_a_spec_is_refused(files):
    """cli.md 3 step 7: --num-requests replaces the spec's count, and the reference's
    generator refuses a negative count (workload.md 8: maxRequests must be
    non-negative), so it is bad input here too; 0 means no cap."""
    spec = files / "s.yaml"
    result = run("--workload-spec", spec, "--num-requests", -1, "--horizon", "4s")
    assert result.exit_code == 2 and "--num-requests must be >= 0" in result.stderr
    doc = summary(run("--workload-spec", spec, "--num-requests", 0, "--horizon", "4s", "--json"))
    assert doc["injected_requests"] > 40  # the spec's own 40 no longer caps it


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--horizon", "-5"], "--horizon must be a duration"),
        (["--num-requests", "0"], "--num-requests must be > 0 for --workload distribution"),
        (["--num-requests", "-1"], "--num-requests must be >= 0"),
        (["--rate", "-2"], "--rate must be a finite number > 0"),
        (["--rate", "abc"], "is not a valid float"),
    ],
)
def test_genuinely_bad_values_are_still_refused(args, needle):
    result = run(*args)
    assert result.exit_code == 2 and needle in result.stderr, result.stderr


def test_positional_arguments_are_still_refused():
    assert run("extra").exit_code == 2


# --- 4. per-request records: `model` only when it says something ------------------------


def test_plain_records_have_no_model_key(tmp_path):
    out = tmp_path / "r.json"
    summary(run("--num-requests", 3, "--results-path", out, "--json"))
    records = json.loads(out.read_text())["requests"]
    assert records[0] == {  # the reference's golden record's keys (cli.md 8.7)
        k: records[0][k]
        for k in ("arrived_at", "requestID", "num_prefill_tokens", "num_decode_tokens",
                  "ttft_ms", "itl_ms", "e2e_ms", "scheduling_delay_ms", "handled_by")
    }  # fmt: skip
    assert not any("model" in r for r in records)


def test_the_csv_trace_s_model_column_is_not_read(files, tmp_path):
    out = tmp_path / "r.json"
    replay = ["--workload", "traces", "--workload-traces-filepath", files / "t.csv"]
    summary(run(*replay, "--results-path", out, "--json"))
    assert not any("model" in r for r in json.loads(out.read_text())["requests"])


def test_a_spec_client_s_model_is_kept_when_it_differs(files, tmp_path):
    client_a = "  - id: a\n    rate_fraction: 1\n"
    two = SPEC.replace(client_a, client_a + "    model: other/model\n")
    two += (
        "  - id: b\n    rate_fraction: 1\n    model: Meta-Llama/Llama-3.1-8B-Instruct\n"
        "    arrival: {process: poisson}\n"
        "    input_distribution: {type: constant, params: {value: 100}}\n"
        "    output_distribution: {type: constant, params: {value: 10}}\n"
    )
    (files / "two.yaml").write_text(two, encoding="utf-8")
    res = simulate(model=MODEL, workload_spec=str(files / "two.yaml"))
    models = {r.get("model") for r in res.records}
    assert models == {"other/model", None}  # the run's own model (any case) is left out


# --- 5, 6. the docs say what the code does ----------------------------------------------


def _doc(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def test_cli_doc_describes_the_fallback_for_an_untrained_gpu_tp():
    result = run("--hardware", "A100-80", "--tp", "8", "--num-requests", 2, "--json")
    (line,) = warnings(result)
    assert line.startswith("WARNING no trained coefficients for ")
    assert "on A100-80/TP8" in line and "using the calibrated model" in line
    text = _doc("cli.md")
    assert "stops\nwith a message listing the trained combinations" not in text
    assert "`no trained coefficients for <model> on <GPU>/TP<n> (vLLM <v>); trained:" in text
    assert "Please provide model config folder" in _doc("differences.md")


def _pattern(documented: str) -> re.Pattern[str]:
    """A troubleshooting message with its ``<placeholders>`` as wildcards."""
    parts = re.split(r"<[a-z0-9 ]+>", documented)
    return re.compile(".+?".join(re.escape(p) for p in parts))


@pytest.mark.parametrize(
    ("args", "documented"),
    [
        (
            ["--latency-model", "foo"],
            "--latency-model: unknown model '<x>'; valid: auto, blackbox, calibrated, roofline "
            "(or a plug-in as module.path:ClassName)",
        ),
        (
            ["--autoscale-max", "2"],
            "--autoscale-target is required with --autoscale-max: the value of "
            "--autoscale-metric (<metric>) per replica the autoscaler keeps (docs/autoscaling.md)",
        ),
        (
            ["--horizon", "-5"],
            "--horizon must be a duration: µs, or a number with a unit (us, µs, ms, s, m, h), "
            "got '<v>'",
        ),
    ],
)
def test_troubleshooting_quotes_the_real_messages(args, documented):
    assert f"`{documented}`" in _doc("troubleshooting.md")
    line = one_error(run(*args))
    assert _pattern(documented).fullmatch(line.removeprefix("Error: ")), line


def test_kv_offload_doc_spells_the_flag_and_says_the_tier_fills():
    text = _doc("kv-offload.md")
    assert "--enable-prefix-caching false" not in text and "stays\nempty" not in text
    assert "With `--no-enable-prefix-caching` it is not\nempty" in text


def test_roofline_gpu_table_lists_every_bundled_gpu():
    """A100-40GB and H100-PCIe were in the catalog but not in the table."""
    from inference_sim.catalog import load_catalog

    table = _doc("roofline.md").split("## GPUs", 1)[1].split("###", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 5 and cells[1][:1].isdigit():
            rows[cells[0].split(" ")[0]] = (float(cells[1]), float(cells[2]))
    catalog = load_catalog(None)
    for name in catalog.gpu_names():
        gpu = catalog.gpu(name)
        assert rows.get(name) == (gpu.peak_tflops, gpu.peak_bandwidth_tbs), name


def test_tune_bundle_header_names_the_workload(files):
    from inference_sim.planning.cli import _workload_label

    assert _workload_label({"workload_spec": "w.yaml"}) == "workload spec w.yaml"
    assert _workload_label({"workload": "traces", "workload_traces_filepath": "t.csv"}) == (
        "trace t.csv"
    )
    assert _workload_label({"workload": "chatbot"}) == "chatbot"
    assert _workload_label({}) == "distribution"


def test_a_sweep_varying_rate_over_spec_runs_is_refused_and_aggregate_rate_scales():
    from inference_sim.config.errors import ConfigError
    from inference_sim.sweep.spec import parse_sweep

    spec = str(Path(__file__).resolve().parents[1] / "examples" / "shared-prefixes.yaml")
    base = {"model": "meta-llama/llama-3.1-8b-instruct", "workload_spec": spec}
    with pytest.raises(ConfigError, match="vary aggregate_rate"):
        parse_sweep({"base": base, "grid": {"rate": [10, 20]}})
    with pytest.raises(ConfigError, match="vary aggregate_rate"):
        parse_sweep({"base": base, "cases": [{"rate": 10}, {"rate": 20}]})
    runs = parse_sweep({"base": base, "grid": {"aggregate_rate": [10, 20]}}).runs()
    assert [r.options["aggregate_rate"] for r in runs] == [10, 20]
    # a rate axis without a spec is the usual sweep
    plain = {"model": "meta-llama/llama-3.1-8b-instruct", "workload": "chatbot"}
    assert len(parse_sweep({"base": plain, "grid": {"rate": [10, 20]}}).runs()) == 2


def test_a_negative_seed_in_the_api_or_a_config_file_is_the_reference_s_int64():
    from inference_sim.config.errors import ConfigError

    a = simulate(model="meta-llama/llama-3.1-8b-instruct", num_requests=5, seed=-1)
    b = simulate(model="meta-llama/llama-3.1-8b-instruct", num_requests=5, seed=MAX_SEED)
    assert a.summary == b.summary and a.config["seed"] == MAX_SEED
    with pytest.raises(ConfigError, match="--seed must be in"):
        simulate(model="meta-llama/llama-3.1-8b-instruct", num_requests=5, seed=-(2**63) - 1)
