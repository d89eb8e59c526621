"""``SimConfig`` and ``blis config schema`` (issue 20 item 13): one options table for all."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from inference_sim import SimConfig, simulate
from inference_sim.cli.main import cli
from inference_sim.config.errors import ConfigError
from inference_sim.config.model import config_schema, option_choices
from inference_sim.config.options import ALIASES, OPTIONS
from inference_sim.config.resolve import normalize_options
from inference_sim.sweep import parse_sweep
from inference_sim.workload.arrivals import ARRIVAL_PROCESSES
from inference_sim.workload.formats import TRACE_FORMATS

MODEL = "meta-llama/llama-3.1-8b-instruct"


def test_every_option_is_a_field_with_its_default_and_help():
    assert list(SimConfig.model_fields) == [spec.name for spec in OPTIONS]
    defaults = SimConfig()
    for spec in OPTIONS:
        field = SimConfig.model_fields[spec.name]
        assert getattr(defaults, spec.name) == spec.default, spec.name
        assert field.description == spec.help
    assert defaults.to_options() == {}  # nothing set: catalog defaults still apply


def test_aliases_and_dashes_map_to_the_canonical_field():
    for alias, name in ALIASES.items():
        cfg = SimConfig.model_validate({alias: 3 if name != "tp" else 2})
        assert name in cfg.to_options()
    cfg = SimConfig.model_validate({"max-num-seqs": "8", "alpha_coeffs": "1,2,3"})
    assert cfg.to_options() == {"max_num_running_reqs": 8, "alpha_coeffs": [1.0, 2.0, 3.0]}


@pytest.mark.parametrize(
    "bad",
    [
        {"tp": "two"},
        {"rate": "fast"},
        {"enable_prefix_caching": "maybe"},
        {"alpha_coeffs": "1,x"},
        {"tpp": 1},
        {"max_num_seqs": 4, "max_num_running_reqs": 5},
    ],
)
def test_bad_values_give_the_same_one_line_error_as_the_cli_path(bad):
    with pytest.raises(ConfigError) as from_model:
        SimConfig.from_options(bad)
    with pytest.raises(ConfigError) as from_resolver:
        normalize_options(bad)
    assert str(from_model.value) == str(from_resolver.value)
    assert "\n" not in str(from_model.value)


def test_fixed_value_sets_come_from_their_owners():
    choices = option_choices()
    assert choices["arrival"] == ARRIVAL_PROCESSES
    assert choices["trace_format"] == TRACE_FORMATS
    with pytest.raises(ConfigError, match="--arrival"):
        SimConfig.from_options({"arrival": "bursty"})
    schema = config_schema()
    assert schema["properties"]["arrival"]["enum"] == list(ARRIVAL_PROCESSES)


def test_simulate_takes_a_sim_config_and_keywords_win():
    cfg = SimConfig(model=MODEL, workload="chatbot", num_requests=30, rate=4)
    by_model = simulate(cfg, rate=6).summary
    by_keywords = simulate(model=MODEL, workload="chatbot", num_requests=30, rate=6).summary
    assert by_model == by_keywords
    as_dict = simulate({"model": MODEL, "workload": "chatbot", "num_requests": 30, "rate": 6})
    assert as_dict.summary == by_keywords
    with pytest.raises(ConfigError, match="SimConfig or a mapping"):
        simulate(42)


def test_config_schema_command_validates_run_config_files(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    out = tmp_path / "schema.json"
    result = CliRunner().invoke(cli, ["config", "schema", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    schema = json.loads(out.read_text(encoding="utf-8"))
    printed = CliRunner().invoke(cli, ["config", "schema"])
    assert json.loads(printed.stdout) == schema
    names = {spec.name for spec in OPTIONS} | set(ALIASES) | {"lora"}  # + the lora: block
    assert set(schema["properties"]) == names
    good = yaml.safe_load(
        "model: meta-llama/llama-3.1-8b-instruct\nmax_num_seqs: 64\nrate: 20\n"
        "arrival: poisson\nalpha_coeffs: [1, 2, 3]\nenable_prefix_caching: false\n"
    )
    jsonschema.validate(good, schema)
    for bad in ({"rate": "fast"}, {"ratee": 2}, {"arrival": "bursty"}, {"tp": 1.5}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    # the same file runs with blis run --config
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({**good, "num_requests": 10}), encoding="utf-8")
    run = CliRunner().invoke(cli, ["run", "--config", str(cfg)])
    assert run.exit_code == 0, run.stderr


def test_sweeps_check_value_types_before_running():
    doc = {"base": {"model": MODEL}, "grid": {"rate": [5, "fast"]}}
    with pytest.raises(ConfigError, match=r"grid: --rate must be a number, got 'fast'"):
        parse_sweep(doc)
    with pytest.raises(ConfigError, match=r"cases\[0\]: --tp must be an integer"):
        parse_sweep({"base": {"model": MODEL}, "cases": [{"tp": "x"}]})


def test_workload_spec_may_be_inline_in_the_model_and_the_schema():
    spec = {"clients": [{"id": "a"}]}
    assert SimConfig(workload_spec=spec).to_options() == {"workload_spec": spec}
    kinds = {s.get("type") for s in config_schema()["properties"]["workload_spec"]["anyOf"]}
    assert kinds == {"string", "object"}


def test_every_kind_of_option_converts_as_on_the_command_line():
    cfg = SimConfig(horizon="10s", slo=["ttft_p99_ms=500"], alpha_coeffs="1,2,3")
    options, _ = normalize_options({"horizon": "10s", "slo": ["ttft_p99_ms=500"]})
    assert cfg.horizon == options["horizon"] == 10_000_000
    assert cfg.slo == options["slo"] == ["ttft_p99_ms=500"]
    props = config_schema()["properties"]
    assert {s.get("type") for s in props["horizon"]["anyOf"]} == {"integer", "string"}


def test_a_full_dump_runs_again_like_the_config():
    """model_dump() names every option, defaults included; options that need a feature
    (P/D, autoscaling) must not count as given at their default values."""
    from inference_sim import SimConfig, simulate

    cfg = SimConfig(model="meta-llama/llama-3.1-8b-instruct", num_requests=20)
    dumped = cfg.model_dump()
    assert "decode_autoscale_max" in dumped and "autoscale_down_window" in dumped
    assert simulate(dumped).summary["completed_requests"] == 20  # runs (was refused)
    assert SimConfig(**dumped) == cfg
    # The set fields alone run exactly like the config (a full dump makes every default
    # explicit: --total-kv-blocks 1000000 then replaces the trained count, as on the CLI).
    assert simulate(cfg.model_dump(exclude_unset=True)).summary == simulate(cfg).summary


def test_a_plug_in_latency_model_is_a_valid_config_value(tmp_path):
    """`blis run` and simulate() take plug-in latency models; SimConfig, run-config files
    and sweep files used to refuse them (the built-in names were a closed set)."""
    from inference_sim import SimConfig
    from inference_sim.config.errors import ConfigError

    cfg = SimConfig(model="meta-llama/llama-3.1-8b-instruct", latency_model="my_lat.py:Step")
    assert cfg.latency_model == "my_lat.py:Step"
    assert SimConfig(model="m", latency_model="roofline").latency_model == "roofline"
    with pytest.raises(ConfigError, match=r"latency-model.*valid: auto, .*module.path:ClassName"):
        SimConfig.from_options({"model": "m", "latency_model": "bogus"})
