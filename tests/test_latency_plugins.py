"""Latency models through their registry: built-ins, ``register_latency_model`` and
``--latency-model module:Class`` / ``file.py:Class`` plug-ins, with one-line errors."""

from __future__ import annotations

import sys
import textwrap

import pytest
from click.testing import CliRunner

from inference_sim import simulate
from inference_sim.cli.main import cli
from inference_sim.config import ConfigError
from inference_sim.latency import latency_model_names, register_latency_model
from inference_sim.latency.registry import _REGISTRY

MODEL = "meta-llama/llama-3.1-8b-instruct"

SOURCE = textwrap.dedent(
    """
    class FixedStep:
        '''Every step takes step_us; prices nothing else.'''

        name = "fixed-step"

        def __init__(self, tp, step_us=4000):
            self.tp = tp
            self.step_us = step_us

        def step_time(self, batch):
            return self.step_us

        def queueing_time(self, request):
            return 0

        def output_token_time(self):
            return 0

        def describe(self):
            return {"latency_model": self.name, "step_us": self.step_us}

    class FromTrained(FixedStep):
        '''Uses the trained beta0 as its step time (inputs = "trained").'''

        inputs = "trained"

        def __init__(self, beta):
            super().__init__(tp=1, step_us=int(beta[0]))

    class NotAModel:
        def __init__(self, tp):
            pass
    """
)


@pytest.fixture
def plugin(tmp_path, monkeypatch) -> str:
    (tmp_path / "my_latency.py").write_text(SOURCE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_latency"
    sys.modules.pop("my_latency", None)


def one_at_a_time(**options):
    """Requests far apart: every ITL sample is exactly one step."""
    base = {"model": MODEL, "num_requests": 5, "rate": 0.5, "hardware": "H100", "tp": 1}
    return simulate(**{**base, **options})


def test_builtins_register_themselves():
    assert {"blackbox", "roofline", "calibrated"} <= set(latency_model_names())


def test_plugin_by_module_path_prices_every_step(plugin):
    res = one_at_a_time(latency_model=f"{plugin}:FixedStep")
    assert res.summary["completed_requests"] == 5
    assert res.summary["itl_mean_ms"] == pytest.approx(4.0)
    assert res.config["latency_model"] == f"{plugin}:FixedStep"


def test_plugin_by_file_path_through_the_cli(plugin, tmp_path):
    spec = f"{tmp_path / 'my_latency.py'}:FixedStep"
    args = ["run", "--model", MODEL, "--num-requests", "3", "--rate", "0.5"]
    args += ["--hardware", "H100", "--tp", "1", "--latency-model", spec]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert '"itl_mean_ms": 4.0' in result.stdout


def test_trained_inputs_receive_the_catalog_coefficients(plugin):
    trained = one_at_a_time(latency_model="blackbox")
    beta0 = trained.config["beta_coeffs"][0]
    res = one_at_a_time(latency_model=f"{plugin}:FromTrained")
    assert res.config["beta_coeffs"][0] == beta0
    assert res.summary["itl_mean_ms"] == pytest.approx(int(beta0) / 1000)


def test_registered_name_is_usable_like_a_builtin(plugin):
    import my_latency  # type: ignore[import-not-found]

    register_latency_model("fixed-6ms", lambda tp: my_latency.FixedStep(tp, step_us=6000))
    try:
        assert "fixed-6ms" in latency_model_names()
        res = one_at_a_time(latency_model="fixed-6ms")
        assert res.summary["itl_mean_ms"] == pytest.approx(6.0)
    finally:
        _REGISTRY.pop("fixed-6ms", None)


def test_not_a_latency_model_is_a_one_line_error(plugin):
    with pytest.raises(ConfigError, match=r"not a latency model \(missing step_time"):
        one_at_a_time(latency_model=f"{plugin}:NotAModel")


def test_unknown_name_lists_the_valid_ones():
    args = ["run", "--model", MODEL, "--num-requests", "3", "--latency-model", "fastest"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown model 'fastest'" in lines[0]
    assert "blackbox" in lines[0] and "module.path:ClassName" in lines[0]


def test_missing_plugin_module_is_a_one_line_error():
    with pytest.raises(ConfigError, match="cannot import 'no_such_module_xyz'"):
        one_at_a_time(latency_model="no_such_module_xyz:Model")


def test_documented_example_runs(tmp_path, monkeypatch):
    """The plug-in in docs/python-api.md works as shown: each step costs 5 ms plus 30 µs
    a token over TP, so a lone request's one-token decode steps at TP 1 take 5.03 ms."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "python-api.md").read_text()
    code = doc[doc.index("# my_latency.py") :]
    code = code[: code.index("```")]
    (tmp_path / "my_latency.py").write_text(code, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    res = one_at_a_time(latency_model="my_latency.py:TokensPerStep", num_requests=1)
    assert res.summary["itl_mean_ms"] == pytest.approx(5.03)


BROKEN = textwrap.dedent(
    """
    class Base:
        def __init__(self):
            pass

        def step_time(self, batch):
            return 1000

        def queueing_time(self, request):
            return 0

        def output_token_time(self):
            return 0

        def describe(self):
            return {}

    class Boom(Base):
        def __init__(self, tp):
            raise RuntimeError("no table for this tp")

    class Negative(Base):
        def step_time(self, batch):
            return -5

    class Fractional(Base):
        def step_time(self, batch):
            return 12.7

    class Raises(Base):
        def step_time(self, batch):
            raise KeyError("decode_tokens")
    """
)


@pytest.mark.parametrize(
    "cls,message",
    [
        ("Boom", "cannot construct it: RuntimeError: no table for this tp"),
        ("Negative", "prices one step of 2048 prompt tokens at -5 µs: times must be >= 0"),
        ("Fractional", "at 12.7: latency models return whole microseconds"),
        ("Raises", "failed to price one step of 2048 prompt tokens: KeyError"),
    ],
)
def test_a_broken_plugin_is_one_line_and_exit_2(tmp_path, monkeypatch, cls, message):
    """A plug-in that fails to build, or prices a step below zero, in fractions of a µs
    or not at all, is refused before the run starts: one line naming it, exit code 2
    (it used to crash mid-run with exit 1, or run on with negative latencies)."""
    (tmp_path / "broken.py").write_text(BROKEN, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    args = ["run", "--model", MODEL, "--num-requests", "3", "--hardware", "H100", "--tp", "1"]
    result = CliRunner().invoke(cli, [*args, "--latency-model", f"broken.py:{cls}"])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], lines
    assert f"broken.py:{cls}" in lines[0]
