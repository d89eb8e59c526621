"""Review 26 of the Python API: plug-in latency models checked during the run, user
registrations under built-in names, ``simulate(res.config)`` as a results config,
``SimConfig``'s errors and static types, plug-in files edited between runs."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from inference_sim import ConfigError, Results, SimConfig, simulate
from inference_sim.cli.main import cli
from inference_sim.latency import BlackboxLatencyModel, LatencyModel, register_latency_model
from inference_sim.latency.registry import (
    _REGISTRY,
    CheckedLatencyModel,
    create_latency_model,
    is_builtin,
    lookup_latency_model,
)

MODEL = "meta-llama/llama-3.1-8b-instruct"
ROOT = Path(__file__).resolve().parents[1]


class Steady:
    """5 ms a step; a subclass changes what a later step returns."""

    inputs = "trained"
    after = 10**9  # the step from which ``late`` is returned
    late: object = 5000

    def __init__(self, alpha, beta):
        self.steps = 0

    def step_time(self, batch):
        self.steps += 1
        return self.late if self.steps > self.after else 5000

    def queueing_time(self, request):
        return 0

    def output_token_time(self):
        return 0

    def describe(self):
        return {}


class LateNegative(Steady):
    after, late = 30, -100_000


class LateFloat(Steady):
    after, late = 30, 5000.7


class LateRaise(Steady):
    def step_time(self, batch):
        if super().step_time(batch) and self.steps > 30:
            raise RuntimeError("late boom")
        return 5000


class NumpySteps(Steady):
    def step_time(self, batch):
        return np.int64(super().step_time(batch))


class WithExtras(Steady):
    async_scheduling = True

    def extend_last_step(self, extra_us):
        pass


class BadCtor(Steady):
    def __init__(self, alpha, beta):
        raise RuntimeError("ctor fail")


@pytest.fixture
def registered():
    """Register classes by name for one test, then restore the registry as it was."""
    before = dict(_REGISTRY)

    def register(name, cls):
        register_latency_model(name, cls)
        return name

    yield register
    _REGISTRY.clear()
    _REGISTRY.update(before)


def run(latency_model, **options):
    base = {"model": MODEL, "num_requests": 30, "rate": 5, "seed": 3}
    return simulate(**{**base, **options}, latency_model=latency_model)


# --- 1. a user's latency model is checked at every step -------------------------------


@pytest.mark.parametrize(
    "cls,value,problem",
    [
        (LateNegative, "-100000", "times must be >= 0"),
        (LateFloat, "5000.7", "whole microseconds"),
    ],
)
def test_a_bad_time_after_the_probe_stops_the_run_naming_model_method_value_step(
    registered, cls, value, problem
):
    """It used to run on (a negative step: e2e 10 ms instead of ~2400 ms) or crash with
    a raw TypeError deep in the engine."""
    name = registered(cls.__name__.lower(), cls)
    with pytest.raises(ConfigError) as err:
        run(name)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"--latency-model {name!r} ({cls.__name__})" in msg
    assert f"returned {value} from step_time at its 31st step" in msg
    assert problem in msg


def test_a_failure_inside_the_model_mid_run_is_one_line_chained_to_it(registered):
    with pytest.raises(ConfigError, match=r"failed in step_time at its 31st step: Runtime") as e:
        run(registered("lateraise", LateRaise))
    assert isinstance(e.value.__cause__, RuntimeError)


def test_a_late_bad_time_from_a_file_plug_in_is_exit_2(tmp_path, monkeypatch):
    (tmp_path / "late.py").write_text(
        textwrap.dedent(
            """
            class Late:
                def __init__(self, tp):
                    self.n = 0
                def step_time(self, batch):
                    self.n += 1
                    return -7 if self.n > 20 else 5000
                def queueing_time(self, request):
                    return 0
                def output_token_time(self):
                    return 0
                def describe(self):
                    return {}
            """
        ),
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    args = ["run", "--model", MODEL, "--num-requests", "30", "--rate", "5"]
    result = CliRunner().invoke(cli, [*args, "--latency-model", "late.py:Late"])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "(Late) returned -7 from step_time" in lines[0], lines


def test_numpy_integers_are_whole_microseconds_and_run_as_ints(registered):
    plain = run(registered("steady", Steady))
    numpy = run(registered("numpy-steps", NumpySteps))
    assert numpy.summary["e2e_mean_ms"] == plain.summary["e2e_mean_ms"] > 0


def test_the_proxy_keeps_what_the_engines_probe_and_builtins_stay_unwrapped(registered):
    context = {"alpha": (0.0, 0.0, 0.0), "beta": (6000.0, 17.0, 6.0)}
    extras = create_latency_model(registered("extras", WithExtras), **context)
    plain = create_latency_model(registered("steady", Steady), **context)
    assert type(extras) is CheckedLatencyModel
    assert isinstance(extras, WithExtras) and isinstance(plain, Steady)
    assert getattr(extras, "async_scheduling", False) is True
    assert callable(getattr(extras, "extend_last_step", None))
    assert not hasattr(plain, "extend_last_step") and not hasattr(plain, "step_time_from")
    assert getattr(plain, "async_scheduling", False) is False
    assert extras.steps == 0 and extras.inputs == "trained"  # the model's own attributes

    class MyBlackbox(BlackboxLatencyModel):  # priced as the built-in it extends
        inputs = "trained"

    mine = create_latency_model(registered("my-blackbox", MyBlackbox), **context)
    assert isinstance(mine, BlackboxLatencyModel) and mine.beta[0] == 6000.0
    builtin = create_latency_model("blackbox", **context)
    assert type(builtin) is BlackboxLatencyModel  # the hot path: no proxy


# --- 2. a user's model under a built-in's name is a user's model ----------------------


def test_a_user_model_registered_under_a_builtin_name_fails_in_one_line(registered):
    original = lookup_latency_model("blackbox")
    assert is_builtin(original)
    registered("blackbox", BadCtor)
    assert not is_builtin(lookup_latency_model("blackbox"))
    with pytest.raises(ConfigError, match=r"'blackbox': cannot construct it: RuntimeError: ctor"):
        simulate(model=MODEL, num_requests=5)
    register_latency_model("blackbox", original.factory, inputs=original.inputs)
    assert is_builtin(lookup_latency_model("blackbox"))  # the package's own again


# --- 3. simulate(res.config) is a results config --------------------------------------


def _document(res: Results) -> str:
    return json.dumps(res.summary_document(), sort_keys=True, default=str)


def test_res_config_replays_as_the_results_file_does(tmp_path):
    path = tmp_path / "rr.json"
    res = simulate(
        model=MODEL, workload="chatbot", rate=20, num_requests=60, seed=4, results_path=str(path)
    )
    assert "package_version" in res.config
    elsewhere = {"hardware": "A100-80", "tp": 1}
    by_mapping = simulate(res.config, **elsewhere)
    by_file = simulate(config=str(path), **elsewhere)
    assert _document(by_mapping) == _document(by_file)
    assert by_mapping.records == by_file.records
    # Without package_version the mapping is a run config that pins the H100's figures
    # (and would write results_path again: left out here).
    plain = {k: v for k, v in res.config.items() if k not in ("package_version", "results_path")}
    pinned = simulate(plain, **elsewhere)
    assert pinned.config["total_kv_blocks"] == res.config["total_kv_blocks"]
    assert by_mapping.config["total_kv_blocks"] != res.config["total_kv_blocks"]
    # The same run again, and the options SimConfig takes from it
    assert _document(simulate(res.config)) == _document(simulate(config=str(path)))
    from_mapping = SimConfig(**res.config).to_options()
    assert from_mapping == SimConfig.from_file(str(path)).to_options()
    assert SimConfig.from_options(res.config).to_options() == from_mapping


def test_a_bad_results_config_names_it_not_a_temporary_file():
    res = simulate(model=MODEL, num_requests=5)
    with pytest.raises(ConfigError) as err:
        simulate({**res.config, "ratee": 3})
    assert str(err.value).startswith("the results config: unknown option 'ratee'")
    with pytest.raises(ConfigError, match=r"the results config .* or config=, not both"):
        simulate(res.config, config="run.yaml")


def test_a_full_dump_gives_every_option_as_the_docs_say():
    """docs/python-api.md: a full model_dump() gives the defaults as options, which
    replace the chatbot preset's lengths and the derived KV block count."""
    from inference_sim.config.resolve import resolve

    cfg = SimConfig(model=MODEL, workload="chatbot", num_requests=10)
    dumped = resolve(cfg.model_dump()).options
    as_set = resolve(cfg.model_dump(exclude_unset=True)).options
    assert (as_set["prompt_tokens"], as_set["output_tokens_max"]) == (256, 1024)
    assert (dumped["prompt_tokens"], dumped["output_tokens_max"]) == (512, 7000)
    assert dumped["total_kv_blocks"] == 1_000_000 != as_set["total_kv_blocks"]
    assert cfg.model_dump(exclude_unset=True) == cfg.to_options()


# --- 4. SimConfig's constructor raises ConfigError -----------------------------------


def test_the_constructor_raises_the_one_line_config_error():
    with pytest.raises(ConfigError) as err:
        SimConfig(model="x", tp="two")
    assert str(err.value) == "--tp must be an integer, got 'two'"
    with pytest.raises(ConfigError, match=r"unknown option 'ratee'"):
        SimConfig(model="x", ratee=3)
    with pytest.raises(ConfigError) as err:
        SimConfig(config="run.yaml")
    assert "config is not a SimConfig field" in str(err.value)
    assert "SimConfig.from_file" in str(err.value) and "simulate(config=" in str(err.value)
    assert SimConfig(model="x", max_num_seqs=8).max_num_running_reqs == 8  # valid input


# --- 5. the protocol asks for nothing the documented plug-in lacks -------------------


def test_the_latency_protocol_has_no_name_attribute():
    assert "name" not in getattr(LatencyModel, "__annotations__", {})
    doc = (ROOT / "docs" / "python-api.md").read_text(encoding="utf-8")
    example = doc[doc.index("# my_latency.py") :]
    example = example[: example.index("```")]
    assert "name =" not in example and "self.name" not in example


# --- 6. a plug-in file edited between runs -------------------------------------------


def test_an_edited_plug_in_file_is_loaded_again(tmp_path):
    """An edit of the same size right after the first run (same modification second):
    the new code runs, not the module cached from the first load."""
    path = tmp_path / "edited.py"
    source = textwrap.dedent(
        """
        class Fixed:
            def __init__(self, tp):
                pass
            def step_time(self, batch):
                return 4000
            def queueing_time(self, request):
                return 0
            def output_token_time(self):
                return 0
            def describe(self):
                return {}
        """
    )
    path.write_text(source, encoding="utf-8")
    opts = {"model": MODEL, "num_requests": 1, "hardware": "H100", "tp": 1}
    first = simulate(**opts, latency_model=f"{path}:Fixed")
    path.write_text(source.replace("4000", "6000"), encoding="utf-8")
    second = simulate(**opts, latency_model=f"{path}:Fixed")
    assert first.summary["itl_mean_ms"] == pytest.approx(4.0)
    assert second.summary["itl_mean_ms"] == pytest.approx(6.0)
    again = simulate(**opts, latency_model=f"{path}:Fixed")  # unchanged: the cached module
    assert again.summary == second.summary


# --- 7. static types ------------------------------------------------------------------


def test_the_static_fields_of_sim_config_match_the_options_table():
    """config/model.py's TYPE_CHECKING class lists every field, typed as stored: an
    option added to the table must be added there too (regenerate with the lines below)."""
    from inference_sim.config.model import static_field_lines

    source = (ROOT / "src" / "inference_sim" / "config" / "model.py").read_text()
    block = re.search(r"# BEGIN static fields.*?\n(.*?)\n\s*# END static fields", source, re.S)
    assert block is not None
    written = [line.strip() for line in block.group(1).splitlines()]
    assert written == static_field_lines(), "\n".join(static_field_lines())
    cfg = SimConfig(alpha_coeffs="1,2,3", horizon="10s", slo="ttft_p99_ms=200")
    kinds = dict(line.split(": ", 1) for line in written)
    assert kinds["alpha_coeffs"] == "list[float]" and cfg.alpha_coeffs == [1.0, 2.0, 3.0]
    assert kinds["horizon"] == "int" and cfg.horizon == 10_000_000
    assert kinds["slo"] == "list[str]" and cfg.slo == ["ttft_p99_ms=200"]


def test_documented_names_resolve_to_real_types_for_type_checkers():
    source = (ROOT / "src" / "inference_sim" / "__init__.py").read_text()
    checking = source[source.index("if TYPE_CHECKING:") :]
    assert "from inference_sim.config.model import SimConfig" in checking.split("\n\n")[0]
