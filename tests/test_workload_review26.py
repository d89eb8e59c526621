"""Review 26 of the workload spec: arrival numbers that passed validation and then broke
generation (gamma cv, stages, rate fractions), the truncation warning repeated once per
arrival block, ``workload describe --seed -1``, and fields dropped silently (a later
client's prefix_length in a group, input_distribution on a multimodal client). Each test
fails on the code as it was before the review."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from inference_sim.cli.main import cli
from inference_sim.workload import generate_spec_requests, parse_workload_spec
from inference_sim.workload.errors import WorkloadError
from inference_sim.workload.samplers import UnitGaps
from test_workload_spec import client, spec_of

MODEL = "meta-llama/llama-3.1-8b-instruct"


def _write(tmp_path: Path, doc: dict[str, Any], name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- 1. arrival numbers that broke generation ---------------------------------------------


@pytest.mark.parametrize("cv", [1e-200, 1e-160, 1e200, 1e4])
@pytest.mark.parametrize("command", ["run", "describe"])
def test_gamma_cv_outside_its_range_is_one_line_exit_2(tmp_path, cv, command) -> None:
    """cv 1e-200 crashed (ZeroDivisionError), 1e-160 and 1e200 gave NaN gaps (every
    arrival 1 µs apart, numpy warnings on stderr), 1e4 collapsed every gap to 1 µs."""
    doc = spec_of(client(), client(id="b", arrival={"process": "gamma", "cv": cv}))
    doc["num_requests"] = 20
    path = _write(tmp_path, doc)
    args = (
        ["run", "--model", MODEL, "--workload-spec", str(path)]
        if command == "run"
        else ["workload", "describe", str(path)]
    )
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    (line,) = _lines(result.stderr)
    assert "clients[1].arrival.cv: gamma CV must be in [1e-150, 1000]" in line
    assert str(path) in line and "Error" in line


@pytest.mark.parametrize(("process", "cv"), [("gamma", 1e-150), ("gamma", 1e-10),
                                             ("gamma", 1000.0), ("weibull", 0.01),
                                             ("weibull", 10.4)])  # fmt: skip
def test_arrival_cv_at_the_ends_of_its_range_gives_finite_gaps_quietly(process, cv) -> None:
    doc = spec_of(client(arrival={"process": process, "cv": cv}), aggregate_rate=10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning
        for top in ({}, {"stages": [{"rate": 10, "duration": 100}]}):
            times = np.array([r.arrival_time for r in generate_spec_requests(
                parse_workload_spec({**doc, **top}), max_requests=200)])  # fmt: skip
            assert len(times) == 200 and (np.diff(times) >= 0).all()
    if process == "gamma" and cv < 1:  # near-constant gaps, mean 1 / rate (100 000 µs)
        assert np.diff(times).mean() == pytest.approx(100_000, rel=0.01)


def test_unit_gaps_refuse_a_degenerate_gamma_from_any_source() -> None:
    """ServeGen rows and code build UnitGaps without the spec's check."""
    with pytest.raises(WorkloadError, match=r"gamma CV must be in \[1e-150, 1000\]"):
        UnitGaps("gamma", 1e-200)
    with pytest.raises(WorkloadError, match=r"weibull CV must be in \[0.01, 10.4\]"):
        UnitGaps("weibull", 50.0)


@pytest.mark.parametrize(
    ("top", "needle"),
    [
        ({"stages": [{"rate": 1, "duration": 1e305}]}, "stages[0]: the stage ends at 1e+305 s"),
        (
            {"stages": [{"rate": 1e308, "duration": 100}, {"rate": 1, "duration": 5}]},
            "stages[0].rate 1e+308 req/s: the stages' requests (rate x duration) overflow",
        ),
        (
            {"clients": [client(rate_fraction=1e308), client(id="b", rate_fraction=1e308)]},
            "clients: the rate_fraction values sum to more than a float holds",
        ),
    ],
)
def test_stage_and_rate_fraction_overflows_are_refused(top, needle) -> None:
    """A 1e305 s stage crashed (OverflowError); rate x duration overflowing put every
    arrival at 0; an infinite rate_fraction sum made every rate NaN."""
    doc = {**spec_of(client()), "num_requests": 5, **top}
    with pytest.raises(WorkloadError) as err:
        parse_workload_spec(doc)
    assert needle in str(err.value)


def test_a_stage_rate_underflowing_to_zero_leaks_no_numpy_warning() -> None:
    doc = {**spec_of(client()), "stages": [{"rate": 5e-324, "duration": 100}]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert generate_spec_requests(parse_workload_spec(doc), max_requests=5) == []


# --- 2. the truncation warning: once per field, held back, naming file and field ---------

_MM = {
    "text_distribution": {"type": "constant", "params": {"value": 20.5}},
    "image_count_distribution": {"type": "constant", "params": {"value": 1}},
    "image_distribution": {"type": "constant", "params": {"value": 576.5}},
}


def test_truncation_is_said_once_per_field_with_file_and_path(tmp_path, sim_log) -> None:
    """It was logged on load and again for every arrival block of a multimodal client
    (hundreds of lines), as ``text.params.value`` / ``image.params.value``."""
    doc = spec_of(client(id="m", multimodal=_MM), aggregate_rate=1000.0, num_requests=5000)
    path = _write(tmp_path, doc)
    result = CliRunner().invoke(cli, ["workload", "describe", "--json", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["requests"] == 5000
    # one record per line (the fixture's handler can see a record twice: on the package
    # logger and, through propagation, on the root)
    records = list({id(r): r for r in sim_log.records}.values())
    truncated = [r.getMessage() for r in records if "is truncated to" in r.getMessage()]
    assert truncated == [
        f"workload spec {path}: clients[0].multimodal.text_distribution.params.value 20.5 "
        "is truncated to 20 (token counts are whole numbers; the reference truncates too)",
        f"workload spec {path}: clients[0].multimodal.image_distribution.params.value 576.5 "
        "is truncated to 576 (token counts are whole numbers; the reference truncates too)",
    ]


def test_truncation_is_held_back_behind_the_unbounded_error(tmp_path, sim_log) -> None:
    """docs/workloads.md: a run its checks stop prints its one error line alone."""
    path = _write(tmp_path, spec_of(client(id="m", multimodal=_MM)))
    result = CliRunner().invoke(cli, ["run", "--model", MODEL, "--workload-spec", str(path)])
    assert result.exit_code == 2
    assert "requires either num_requests" in result.stderr
    assert not [m for m in sim_log.messages if "truncated" in m]
    spec = parse_workload_spec(spec_of(client(id="m", multimodal=_MM)))
    assert sum("is truncated to" in w for w in spec.warnings) == 2


# --- 3. describe --seed reads the reference's int64 seeds as run does --------------------


def test_describe_reads_a_negative_seed_as_its_twos_complement() -> None:
    spec = "examples/diurnal-burst.yaml"
    runner = CliRunner()
    minus_one = runner.invoke(cli, ["workload", "describe", "--json", "--seed=-1", spec])
    assert minus_one.exit_code == 0, minus_one.output
    top = runner.invoke(cli, ["workload", "describe", "--json", f"--seed={2**64 - 1}", spec])
    assert minus_one.stdout == top.stdout
    low = runner.invoke(cli, ["workload", "describe", f"--seed={-(2**63) - 1}", spec])
    assert low.exit_code == 2
    assert "--seed must be in [-2**63, 18446744073709551615]" in low.stderr


# --- 4. fields that change nothing are said ----------------------------------------------


def test_a_later_clients_different_prefix_length_is_said() -> None:
    a = client(id="a", prefix_group="g")
    b = client(id="b", prefix_group="g", prefix_length=2000)
    (text,) = [w for w in parse_workload_spec(spec_of(a, b)).warnings if "prefix" in w]
    assert text == (
        'clients[1].prefix_length 2000 has no effect: prefix group "g" takes its length '
        "(50) from clients[0], the first client naming it"
    )
    same = [a, client(id="b", prefix_group="g", prefix_length=50), client(id="c", prefix_group="g")]
    assert not parse_workload_spec(spec_of(*same)).warnings
    other = client(id="c", prefix_group="h", prefix_length=2000)
    assert not parse_workload_spec(spec_of(a, other)).warnings


def test_input_distribution_on_a_multimodal_client_is_said() -> None:
    mm = {
        "image_count_distribution": {"type": "constant", "params": {"value": 1}},
        "image_distribution": {"type": "constant", "params": {"value": 576}},
    }
    (text,) = parse_workload_spec(spec_of(client(multimodal=mm))).warnings
    assert text.startswith("clients[0].input_distribution has no effect on a multimodal client")
    # a multi-turn client draws input_distribution; its multimodal block is what is unused
    turns = {"multi_turn": {"max_rounds": 2, "think_time_us": 10}}
    (text,) = parse_workload_spec(spec_of(client(multimodal=mm, reasoning=turns))).warnings
    assert text.startswith("clients[0].multimodal has no effect with reasoning.multi_turn")
    ratio = {"reason_ratio_distribution": {"type": "constant", "params": {"value": 30}}}
    (text,) = parse_workload_spec(spec_of(client(reasoning=ratio))).warnings
    assert "reason_ratio_distribution has no effect without reasoning.multi_turn" in text
