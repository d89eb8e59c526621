"""Flags the chosen workload would ignore: the reference's are warned, ours refused.

``--rate`` with a timed trace, ``--num-requests`` and the length flags with a trace or a
workload spec, ``--workload PRESET`` with a spec used to be dropped without a word, then
were refused; the reference accepts them and ignores them (cli.md 5), so now they run
with one warning naming them (review 23). This simulator's own ``--trace-format`` with a
synthetic workload is still refused (config/unused.py). Values equal to the default say
nothing, so a results file used as ``--config`` re-runs quietly.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from inference_sim import simulate
from inference_sim.cli.main import cli
from inference_sim.workload import WorkloadError

MODEL = "meta-llama/llama-3.1-8b-instruct"
TIMED = "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,100,20\n0.5,120,30\n1.0,90,10\n"
UNTIMED = "num_prefill_tokens,num_decode_tokens\n100,20\n120,30\n90,10\n"
SPEC = """\
version: "2"
seed: 1
aggregate_rate: 10
num_requests: 6
clients:
  - id: a
    rate_fraction: 1
    arrival: {process: poisson}
    input_distribution: {type: constant, params: {value: 100}}
    output_distribution: {type: constant, params: {value: 20}}
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["run", "--model", MODEL, *args])


def _replay(trace: str | Path) -> tuple[str, ...]:
    """The flags that replay ``trace`` (the path alone is ignored, as in the reference)."""
    return ("--workload", "traces", "--workload-traces-filepath", str(trace))


def one_error(result: Result, *needles: str) -> str:
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "timed.csv").write_text(TIMED, encoding="utf-8")
    (tmp_path / "untimed.csv").write_text(UNTIMED, encoding="utf-8")
    (tmp_path / "s.yaml").write_text(SPEC, encoding="utf-8")
    return tmp_path


def one_warning(result: Result, *needles: str) -> str:
    """The run went on (exit 0) with exactly one WARNING line, holding ``needles``."""
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("WARNING")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("flags", "shown"),
    [
        (["--rate", "50"], ["--rate 50", "length trace without a time column"]),
        (["--num-requests", "2"], ["--num-requests 2"]),
        (
            ["--prompt-tokens", "900", "--prefix-tokens", "8"],
            ["--prompt-tokens 900", "--prefix-tokens 8"],
        ),
    ],
)
def test_timed_trace_warns_about_flags_it_ignores_and_replays_as_recorded(files, flags, shown):
    trace = str(files / "timed.csv")
    plain = invoke("--workload", "traces", "--workload-traces-filepath", trace, "--json")
    result = invoke("--workload", "traces", "--workload-traces-filepath", trace, *flags, "--json")
    one_warning(result, *shown, "no effect with --workload traces")
    assert json.loads(result.stdout) == json.loads(plain.stdout)  # nothing changed, config too


def test_untimed_length_trace_takes_rate_but_ignores_num_requests(files):
    trace = str(files / "untimed.csv")
    ok = invoke(*_replay(trace), "--rate", "2", "--json")
    assert ok.exit_code == 0 and ok.stderr == "", ok.stderr
    assert json.loads(ok.stdout)["completed_requests"] == 3
    args = ["--workload", "traces", "--workload-traces-filepath", trace, "--num-requests", "2"]
    line = one_warning(invoke(*args, "--json"), "--num-requests 2")
    assert "--rate" not in line  # the rate applies to this trace: not named as ignored


def test_spec_warns_about_length_flags_a_preset_and_rate(files):
    spec = str(files / "s.yaml")
    plain = json.loads(invoke("--workload-spec", spec, "--json").stdout)
    for flags, shown in (
        (["--output-tokens", "64"], "--output-tokens 64: no effect with --workload-spec"),
        (["--workload", "chatbot"], "--workload chatbot: no effect with --workload-spec"),
        (["--rate", "5"], "--rate 5: no effect with --workload-spec"),
    ):
        result = invoke("--workload-spec", spec, *flags, "--json")
        one_warning(result, shown, "s.yaml")
        assert json.loads(result.stdout) == plain, flags  # the spec's run, config included
    # --num-requests caps a spec; --aggregate-rate scales it
    ok = invoke("--workload-spec", spec, "--aggregate-rate", "5", "--num-requests", "4", "--json")
    assert ok.exit_code == 0 and ok.stderr == "", ok.stderr
    summary = json.loads(ok.stdout)
    assert summary["completed_requests"] == 4 and summary["config"]["rate"] == 5


def test_synthetic_workload_refuses_trace_flags():
    one_error(
        invoke("--workload", "chatbot", "--trace-format", "csv"), "--trace-format csv", "chatbot"
    )
    one_error(invoke("--trace-block-size", "64"), "--trace-block-size 64", "distribution")


def test_results_file_of_a_trace_run_still_reruns(files, tmp_path):
    """A results file repeats every option, defaults included (--rate 1, --num-requests 100)."""
    out = tmp_path / "r.json"
    trace = str(files / "timed.csv")
    first = invoke(
        "--workload", "traces", "--workload-traces-filepath", trace, "--results-path", str(out)
    )
    assert first.exit_code == 0, first.stderr
    config = json.loads(out.read_text())["config"]
    assert config["rate"] == 1.0 and config["num_requests"] == 100
    again = CliRunner().invoke(cli, ["run", "--config", str(out), "--json"])
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["completed_requests"] == 3
    # ... and a rate given on top of it is ignored with a warning, as any other
    warned = CliRunner().invoke(cli, ["run", "--config", str(out), "--rate", "9", "--json"])
    one_warning(warned, "--rate 9")
    assert json.loads(warned.stdout)["completed_requests"] == 3


def test_simulate_warns_the_same(files, sim_log):
    res = simulate(
        model=MODEL,
        workload="traces",
        workload_traces_filepath=str(files / "timed.csv"),
        rate=7,
    )
    assert res.summary["completed_requests"] == 3
    assert "--rate 7: no effect with --workload traces" in sim_log.text


# --- engine features that are off, and policy/latency flags that do not apply -------------

EAGLE2 = ["--speculative-method", "eagle", "--num-speculative-tokens", "2"]
NGRAM2 = ["--speculative-method", "ngram", "--num-speculative-tokens", "2"]


@pytest.mark.parametrize(
    ("flags", "shown"),
    [
        (["--max-cpu-loras", "4"], ["--max-cpu-loras 4", "LoRA off", "--max-loras"]),
        (["--lora-disk-latency", "5"], ["--lora-disk-latency 5", "LoRA off"]),
        (["--spec-ngram-cpu-us", "50"], ["--spec-ngram-cpu-us", "needs --speculative-method"]),
        (
            [*EAGLE2, "--spec-ngram-cpu-us", "50"],
            ["--spec-ngram-cpu-us is only for --speculative-method ngram, not eagle"],
        ),
    ],
)
def test_options_of_a_feature_that_is_off_are_refused(flags, shown):
    one_error(invoke("--num-requests", "5", *flags), *shown)


def test_the_same_options_apply_once_the_feature_is_on():
    for flags in (
        [
            "--kv-cpu-blocks",
            "200",
            "--kv-offload-threshold",
            "0.5",
            "--kv-transfer-link",
            "pcie-gen5",
        ],
        ["--max-loras", "2", "--max-cpu-loras", "4", "--lora-disk-latency", "5"],
        [*NGRAM2, "--spec-ngram-cpu-us", "50"],
    ):
        result = invoke("--num-requests", "5", *flags, "--json")
        assert result.exit_code == 0, (flags, result.stderr)
        assert result.stderr == "", result.stderr


@pytest.mark.parametrize(
    ("flags", "warning"),
    [
        (["--sampling", "plain"], "--sampling has no effect"),
        (["--token-bucket-capacity", "5"], "--token-bucket-capacity has no effect"),
        (["--kv-offload-threshold", "0.5"], "--kv-offload-threshold 0.5: no effect without a CPU"),
        (["--kv-transfer-link", "pcie-gen4"], "--kv-transfer-link pcie-gen4: no effect without"),
    ],
)
def test_flags_that_do_not_apply_to_the_chosen_model_or_policy_warn(flags, warning):
    """As --routing-scorers without weighted routing: a warning on stderr, the run goes on."""
    result = invoke("--num-requests", "5", *flags, "--json")
    assert result.exit_code == 0, result.stderr
    assert warning in result.stderr
    assert json.loads(result.stdout)["completed_requests"] == 5
    quiet = invoke("--num-requests", "5", "--json")  # without the flag: nothing said
    assert quiet.stderr == ""


# --- blis tune: outputs its runs would drop or overwrite --------------------------------


@pytest.mark.parametrize(
    ("assignment", "shown"),
    [
        ("results_path=r.json", "--set results_path={}: no effect with blis tune"),
        ("export_trace=t", "--set export_trace={}: every trial of blis tune would replace"),
        ("trace_output=d.jsonl", "--set trace_output={}: every trial of blis tune"),
    ],
)
def test_tune_refuses_outputs_its_trials_would_drop_or_overwrite(tmp_path, assignment, shown):
    """As a sweep's results_path/export_trace (sweep/spec.py): refused before any trial."""
    name, _, value = assignment.partition("=")
    result = CliRunner().invoke(
        cli,
        ["tune", "--model", MODEL, "--trials", "1", "--set", f"{name}={tmp_path / value}"],
    )
    one_error(result, shown.format(tmp_path / value))
    assert list(tmp_path.iterdir()) == []  # nothing ran, nothing written


# --- blis plan: workloads that fix their own rate ---------------------------------------

STAGED = SPEC.replace("num_requests: 6\n", "stages:\n  - {rate: 5, duration: 1}\n")


def plan(*args: str) -> Result:
    return CliRunner().invoke(
        cli,
        ["plan", "--model", MODEL, "--rate", "4", "--slo", "ttft_p99_ms=5000", "--jobs", "1",
         "--max-instances", "1", "--no-saturation", "-q", *args],
    )  # fmt: skip


def test_plan_refuses_a_timed_trace_and_a_staged_spec_once(files):
    """Each candidate used to print the run's refusal of --rate, and plan exited 0."""
    line = one_error(
        plan("--hardware", "H100,A100", *_replay(files / "timed.csv")),
        "timed.csv: blis plan cannot vary the rate of a timed trace",
    )
    assert "candidate" not in line
    (files / "staged.yaml").write_text(STAGED, encoding="utf-8")
    one_error(
        plan("--workload-spec", str(files / "staged.yaml")),
        "staged.yaml: blis plan cannot vary the rate of a staged spec",
    )


def test_plan_names_what_is_wrong_with_a_csv_that_is_no_trace(files):
    """Two length columns under names a length trace does not know read as the
    reference format, which needs five: its own error, not "a timed trace"."""
    (files / "two.csv").write_text("input_tokens,output_tokens\n100,10\n", encoding="utf-8")
    one_error(
        plan("--workload", "traces", "--workload-traces-filepath", str(files / "two.csv")),
        "expected at least 5 columns",
    )


def test_plan_still_takes_an_untimed_trace_and_a_spec_it_can_scale(files):
    for flags in (
        ["--workload", "traces", "--workload-traces-filepath", str(files / "untimed.csv")],
        ["--workload-spec", str(files / "s.yaml")],
    ):
        result = plan(*flags, "--json")
        assert result.exit_code == 0, (flags, result.stderr)
        best = json.loads(result.stdout)["candidates"][0]
        assert not best["error"] and best["instances"] == 1, best


# --- --gpu-memory-utilization with a block count that is not derived from memory ---------


@pytest.mark.parametrize(
    ("flags", "source"),
    [
        ([], "the trained entry H100/TP2"),
        (["--latency-model", "roofline"], "the trained entry H100/TP2"),
        (["--total-kv-blocks", "9000"], "--total-kv-blocks 9000"),
    ],
)
def test_memory_utilization_warns_when_the_blocks_are_not_derived(flags, source):
    """A warning naming where the block count came from; the run goes on unchanged."""
    args = ["--num-requests", "5", "--hardware", "H100", "--tp", "2", *flags, "--json"]
    base = invoke(*args)
    result = invoke(*args, "--gpu-memory-utilization", "0.5")
    assert result.exit_code == 0, result.stderr
    assert "--gpu-memory-utilization 0.5: no effect" in result.stderr
    assert f"the KV block count comes from {source}" in result.stderr
    _assert_only_the_echo_differs(result, base, "gpu_memory_utilization", 0.5)


def test_memory_utilization_is_quiet_when_it_sizes_the_kv_cache():
    args = ["--num-requests", "5", "--hardware", "L40S", "--tp", "1", "--latency-model",
            "roofline", "--json"]  # fmt: skip
    half = invoke(*args, "--gpu-memory-utilization", "0.5")
    assert half.exit_code == 0, half.stderr
    assert "--gpu-memory-utilization" not in half.stderr
    full = invoke(*args)
    blocks = [json.loads(r.stdout)["config"]["total_kv_blocks"] for r in (half, full)]
    assert blocks[0] < blocks[1]


# --- --snapshot-refresh-interval with routing that reads no cached signal ----------------


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        ([], "routing policy round-robin"),
        (["--routing-policy", "least-loaded"], "routing policy least-loaded"),
        (["--routing-policy", "vllm-dp"], "routing policy vllm-dp"),
        (
            ["--routing-policy", "weighted", "--routing-scorers", "queue-depth:1"],
            "routing policy weighted (scorers queue-depth:1)",
        ),
    ],
)
def test_refresh_interval_warns_when_no_policy_reads_the_cached_signals(flags, named):
    args = ["--num-requests", "8", "--num-instances", "2", "--rate", "50", *flags, "--json"]
    base = invoke(*args)
    result = invoke(*args, "--snapshot-refresh-interval", "50000")
    assert result.exit_code == 0, result.stderr
    assert f"--snapshot-refresh-interval 50000: no effect with {named}" in result.stderr
    _assert_only_the_echo_differs(result, base, "snapshot_refresh_interval", 50000)


@pytest.mark.parametrize(
    "flags",
    [
        ["--routing-policy", "weighted"],  # the default profile has kv-utilization
        ["--routing-policy", "weighted", "--routing-scorers", "kv-utilization:1"],
    ],
)
def test_refresh_interval_is_quiet_when_a_scorer_reads_kv_utilisation(flags):
    result = invoke("--num-requests", "8", "--num-instances", "2", *flags,
                    "--snapshot-refresh-interval", "50000", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "--snapshot-refresh-interval" not in result.stderr


# --- --trace-block-size with a trace that has no hash_ids --------------------------------

MOONCAKE = (
    '{"timestamp": 0, "input_length": 100, "output_length": 10, "hash_ids": [1, 2]}\n'
    '{"timestamp": 100, "input_length": 120, "output_length": 10, "hash_ids": [1, 3]}\n'
)


def test_trace_block_size_is_refused_for_a_trace_that_is_not_mooncake(files):
    """Only a Mooncake trace's hash_ids have a block size; as --trace-format without a trace."""
    for name, fmt in (("timed.csv", []), ("untimed.csv", ["--trace-format", "lengths"])):
        trace = str(files / name)
        one_error(
            invoke(*_replay(trace), *fmt, "--trace-block-size", "64"),
            f"--trace-block-size 64: no effect with the lengths trace {trace}",
            "Mooncake",
        )
    with pytest.raises(WorkloadError, match="--trace-block-size 64: no effect with the lengths"):
        simulate(model=MODEL, workload="traces", trace=[{"input": 10, "output": 2}],
                 trace_block_size=64)  # fmt: skip


def test_trace_block_size_applies_to_a_mooncake_trace(files):
    """Two hash_ids for 100 tokens: right at 64-token blocks, wrong at the default 512."""
    (files / "m.jsonl").write_text(MOONCAKE, encoding="utf-8")
    trace = str(files / "m.jsonl")
    replay = ("--workload", "traces", "--workload-traces-filepath", trace)
    one_error(invoke(*replay), "is --trace-block-size right?")
    ok = invoke(*replay, "--trace-block-size", "64", "--json")
    assert ok.exit_code == 0 and ok.stderr == "", ok.stderr
    assert json.loads(ok.stdout)["completed_requests"] == 2


def _assert_only_the_echo_differs(result, base, key: str, value: object) -> None:
    """A warned-about flag changed nothing in the results but the option it echoes."""
    assert base.stderr == ""
    with_flag, without = (json.loads(r.stdout) for r in (result, base))
    assert with_flag["config"].pop(key) == value
    without["config"].pop(key)
    assert with_flag == without


# --- a warning per command, not per run (sweep, plan and tune repeat their options) ----

_WARNED = ["--total-kv-blocks", "20000", "--gpu-memory-utilization", "0.8"]
_NO_EFFECT = "--gpu-memory-utilization 0.8: no effect"


class _Keep(logging.Handler):
    """Records the simulator's warnings, wherever the command's stderr goes."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())


@pytest.fixture
def warnings_given():
    log = logging.getLogger("inference_sim")
    keep = _Keep()
    log.addHandler(keep)
    yield keep.seen
    log.removeHandler(keep)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_plan_gives_a_base_option_warning_once(jobs, warnings_given):
    """Every probe of a plan resolves the same options; the warning used to print once
    per probe (in each worker process)."""
    args = ["plan", "--model", "meta-llama/llama-3.1-8b-instruct", "--hardware", "H100"]
    args += ["--tp", "1", "--rate", "5", "--slo", "ttft_p99_ms=2000", "--num-requests", "60"]
    args += ["--no-saturation", "--max-instances", "4", "--jobs", jobs, *_WARNED]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.stderr.count(" meets") >= 2  # several probes ran
    assert sum(_NO_EFFECT in w for w in warnings_given) == 1
    # Scoped to the command: the next command warns again, once.
    CliRunner().invoke(cli, args)
    assert sum(_NO_EFFECT in w for w in warnings_given) == 2


@pytest.mark.parametrize("repeat", [["--seeds", "1,2,3"], ["--replicates", "3"]])
def test_repeated_runs_give_a_warning_once(repeat):
    result = invoke("--num-requests", "10", *repeat, *_WARNED)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count(_NO_EFFECT) == 1  # was once up front plus once per seed


def test_a_run_hands_its_warnings_to_the_caller(warnings_given):
    from inference_sim.sweep.backends import execute_run, relay_warnings

    opts = {"model": "meta-llama/llama-3.1-8b-instruct", "hardware": "H100", "tp": 1,
            "num_requests": 5, "total_kv_blocks": 20000,
            "gpu_memory_utilization": 0.8}  # fmt: skip
    result = execute_run(opts)
    assert result["status"] == "ok"
    assert not warnings_given  # held, not printed in the worker
    assert [w for w in result["warnings"] if _NO_EFFECT in w]
    relay_warnings(result)
    assert "warnings" not in result  # never stored with the run's results
    assert any(_NO_EFFECT in w for w in warnings_given)


def test_one_coefficient_list_alone_warns_that_the_other_is_zero():
    """Given coefficients replace the trained entry whole (the reference's rule): alpha
    alone leaves beta at zero and the default KV cache -- legal, but worth a warning."""
    from click.testing import CliRunner

    from inference_sim.cli.main import cli

    model = ["--model", "meta-llama/llama-3.1-8b-instruct", "--num-requests", "5"]
    alone = CliRunner().invoke(cli, ["run", *model, "--alpha-coeffs", "1,2,3"])
    assert alone.exit_code == 0, alone.stderr
    assert "--alpha-coeffs given without --beta-coeffs" in alone.stderr
    assert "--total-kv-blocks default" in alone.stderr
    extra = CliRunner().invoke(
        cli, ["run", *model, "--alpha-coeffs", "1,2,3", "--beta-coeffs", "6000,17,6,99"]
    )
    assert extra.exit_code == 0, extra.stderr
    assert "--beta-coeffs: only the first 3 values are used, 4 given" in extra.stderr
    assert "given without" not in extra.stderr
    both = CliRunner().invoke(
        cli, ["run", *model, "--alpha-coeffs", "1,2,3", "--beta-coeffs", "6000,17,6"]
    )
    assert both.exit_code == 0 and "WARNING" not in both.stderr


def _blis_run(*args):
    from click.testing import CliRunner

    from inference_sim.cli.main import cli

    base = ["run", "--model", "meta-llama/llama-3.1-8b-instruct", "--num-requests", "5"]
    return CliRunner().invoke(cli, [*base, *args])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--num-instances", "2", "--prefill-instances", "1", "--decode-instances", "1",
          "--pd-prefix-threshold", "100"],
         "--pd-prefix-threshold 100: no effect with --pd-decider always"),
        (["--autoscale-max", "2", "--autoscale-target", "5", "--replica-startup-s", "5",
          "--replica-load-bandwidth", "7"], "--replica-load-bandwidth: no effect"),
        (["--json", "--output", "text"], "--json conflicts with --output text"),
    ],
)  # fmt: skip
def test_own_flags_without_effect_are_refused(args, needle):
    res = _blis_run(*args)
    assert res.exit_code == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines


def test_policy_settings_without_effect_warn(tmp_path):
    """Reference-style flags and bundle keys the chosen policy ignores: a warning each
    (as --routing-scorers without weighted routing), the run goes on."""
    bundle = tmp_path / "b.yaml"
    bundle.write_text(
        "routing:\n  policy: round-robin\n  scorers:\n    - {name: queue-depth, weight: 2}\n"
        "admission:\n  policy: always-admit\n  token_bucket_capacity: 5\n"
    )
    res = _blis_run("--policy-config", str(bundle))
    assert res.exit_code == 0, res.stderr
    assert f"routing.scorers of --policy-config {bundle} has no effect" in res.stderr
    assert "--token-bucket-capacity (from --policy-config" in res.stderr
    res = _blis_run("--priority-policy", "slo-based")
    assert res.exit_code == 0 and "orders nothing with --scheduler fcfs" in res.stderr
    quiet = _blis_run("--priority-policy", "slo-based", "--scheduler", "priority-fcfs")
    assert quiet.exit_code == 0 and "WARNING" not in quiet.stderr
    pd = _blis_run("--num-instances", "2", "--prefill-instances", "1", "--decode-instances", "1",
                   "--prefill-routing-scorers", "queue-depth:1")  # fmt: skip
    assert pd.exit_code == 0 and "--prefill-routing-scorers has no effect" in pd.stderr


@pytest.mark.parametrize("process", ["poisson", "constant"])
def test_a_spec_cv_the_process_ignores_is_said(tmp_path, process):
    """The reference accepts a cv on any process (workload spec 5.4), so specs written for
    it carry one on poisson: the run goes ahead and a warning says the cv does nothing."""
    spec = tmp_path / "w.yaml"
    spec.write_text(
        "version: '2'\nseed: 1\naggregate_rate: 5\nnum_requests: 5\nclients:\n"
        "  - id: a\n    rate_fraction: 1\n"
        f"    arrival: {{process: {process}, cv: 3}}\n"
        "    input_distribution: {type: constant, params: {value: 100}}\n"
        "    output_distribution: {type: constant, params: {value: 10}}\n"
    )
    res = _blis_run("--workload-spec", str(spec), "--log", "warn")
    assert res.exit_code == 0, res.stderr
    assert f"arrival.cv 3 has no effect with process {process}" in res.stderr


def test_plan_says_which_config_options_it_drops(tmp_path, warnings_given):
    """`--set num_instances=3` is refused; the same key in a --config file used to vanish."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "model: meta-llama/llama-3.1-8b-instruct\nnum_instances: 3\nnum_requests: 20\n"
        f"results_path: {tmp_path}/x.json\n"
    )
    args = ["plan", "--config", str(cfg), "--rate", "5", "--slo", "ttft_p99_ms=5000",
            "--max-instances", "1", "--no-saturation", "--jobs", "1"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.stderr
    assert any("--config: num_instances 3 is not used by blis plan" in w for w in warnings_given)
    assert any("--config: results_path" in w for w in warnings_given)
    assert not (tmp_path / "x.json").exists()


def test_a_cpu_tier_at_the_reference_transfer_default_warns():
    """100 tokens/µs (the reference's default) is thousands of GB/s for a real model: a CPU
    hit would look free. A warning says so; a link or a bandwidth given silences it."""
    result = invoke("--num-requests", "5", "--kv-cpu-blocks", "200", "--json")
    assert result.exit_code == 0, result.stderr
    assert "far above any host link" in result.stderr and "6554 GB/s" in result.stderr
    for given in (["--kv-transfer-link", "pcie-gen4"], ["--kv-transfer-bandwidth", "50"]):
        quiet = invoke("--num-requests", "5", "--kv-cpu-blocks", "200", *given, "--json")
        assert quiet.exit_code == 0 and "host link" not in quiet.stderr, quiet.stderr
