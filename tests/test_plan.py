"""Capacity planning: the fewest instances meeting the SLOs, the saturation rate, the CLI."""

from __future__ import annotations

import json
import math
import re

import pytest
from click.testing import CliRunner

from inference_sim import simulate
from inference_sim.cli.main import cli
from inference_sim.config.errors import ConfigError
from inference_sim.planning import (
    Deployment,
    format_plan,
    meets,
    parse_prices,
    parse_slo,
    parse_slos,
    plan_capacity,
)
from inference_sim.sweep import LocalBackend

MODEL = "meta-llama/llama-3.1-8b-instruct"
# 400 requests/s of chatbot on H100 TP1 with at most 32 running requests per instance:
# p99 TTFT falls from ~19 s (1 instance) to ~1.2 s (8 instances).
BASE = {"workload": "chatbot", "num_requests": 400, "max_num_seqs": 32}
# blis plan runs Poisson arrivals unless told otherwise (blis run: evenly spaced).
POISSON = {"arrival": "poisson"}
DEPLOYMENT = Deployment(MODEL, "H100", 1)
RATE = 400.0
SLOS = ["ttft_p99_ms=3000", "e2e_p99_ms<=9000"]


@pytest.fixture(scope="module")
def by_hand() -> dict[int, dict]:
    """Summaries for N = 1..8, run directly."""
    return {
        n: simulate(
            model=MODEL, hardware="H100", tp=1, rate=RATE, num_instances=n, **BASE, **POISSON
        ).summary
        for n in range(1, 9)
    }


def test_slo_parsing():
    assert str(parse_slo("ttft_p99_ms=500")) == "ttft_p99_ms <= 500"
    assert str(parse_slo("responses_per_sec >= 50")) == "responses_per_sec >= 50"
    assert parse_slo("mean_tpot_ms=40").metric == "tpot_mean_ms"
    for bad in ("ttft_p99_ms", "ttft_p99_ms<500", "x=abc", "x=inf"):
        with pytest.raises(ConfigError):
            parse_slo(bad)
    assert parse_prices(["2.5"]) == 2.5
    assert parse_prices(["H100=4", "A100-80=2"]) == {"H100": 4.0, "A100-80": 2.0}
    with pytest.raises(ConfigError):
        parse_prices(["H100=cheap"])


def test_fewest_instances_matches_runs_by_hand(by_hand):
    objectives = parse_slos(SLOS)
    expected = min(n for n, s in by_hand.items() if meets(objectives, s))
    assert 2 < expected < 8  # the case is not trivial
    assert not meets(objectives, by_hand[expected - 1])
    probes = []
    outcome = plan_capacity(
        BASE,
        [DEPLOYMENT],
        objectives,
        rate=RATE,
        max_instances=8,
        backend=LocalBackend(1),
        saturation=False,
        gpu_hour_price=2.0,
        on_probe=lambda d, p: probes.append(p.instances),
    )
    best = outcome.best
    assert best is not None and best.instances == expected
    assert best.summary == by_hand[expected]
    assert best.gpus == expected and best.cost_per_hour == 2.0 * expected
    assert probes[0] == 8 and len(probes) <= 4  # bisection, not a scan
    # the latency-model column names the model the runs used (issue 20, item 1)
    assert re.search(rf"H100\s+1\s+blackbox\s+{expected}\s", format_plan(outcome))


def test_saturation_rate_by_bisection():
    objectives = parse_slos(["ttft_p99_ms=200"])
    base = {"workload": "chatbot", "num_requests": 150}
    outcome = plan_capacity(
        base,
        [DEPLOYMENT],
        objectives,
        rate=20,
        max_instances=2,
        backend=LocalBackend(1),
        rate_tolerance=0.1,
    )
    best = outcome.best
    assert best is not None and best.instances == 1
    sat = best.saturation_rate
    assert sat is not None and sat >= 20
    at = [p for p in best.probes if p.instances == 1]
    assert all(p.ok for p in at if p.rate <= sat)
    above = min(p.rate for p in at if not p.ok)
    assert sat < above <= sat * 1.1 / 0.9 + 1e-9  # within the tolerance
    # the probe at that rate offered load for as long as the target's run did
    n = math.ceil(150 * sat / 20)
    direct = simulate(
        model=MODEL, hardware="H100", tp=1, rate=sat, workload="chatbot", num_requests=n, **POISSON
    ).summary
    probe = next(p for p in at if p.rate == sat)
    assert direct == probe.summary and meets(objectives, direct)


def test_infeasible_and_broken_candidates_rank_last():
    outcome = plan_capacity(
        {"workload": "chatbot", "num_requests": 60},
        [Deployment(MODEL, "H100", 1), Deployment(MODEL, "NoSuchGPU", 1)],
        parse_slos(["ttft_p99_ms=0.001"]),
        rate=10,
        max_instances=2,
        backend=LocalBackend(1),
    )
    assert outcome.best is None
    assert [c.instances for c in outcome.candidates] == [None, None]
    text = format_plan(outcome)
    assert "no instance count <= 2 meets the SLOs" in text
    assert "NoSuchGPU" in text


def test_unknown_slo_metric_is_bad_input():
    with pytest.raises(ConfigError, match="not a summary metric"):
        plan_capacity(
            {"workload": "chatbot", "num_requests": 20},
            [DEPLOYMENT],
            parse_slos(["ttft_p42_ms=1"]),
            rate=5,
            max_instances=1,
            backend=LocalBackend(1),
        )


def test_plan_command_json(by_hand):
    objectives = parse_slos(SLOS)
    expected = min(n for n, s in by_hand.items() if meets(objectives, s))
    args = ["plan", "--model", MODEL, "--hardware", "H100", "--tp", "1", "--workload"]
    args += ["chatbot", "--rate", "400", "--num-requests", "400", "--max-num-seqs", "32"]
    args += ["--slo", SLOS[0], "--slo", SLOS[1], "--max-instances", "8", "--json"]
    args += ["--no-saturation", "--jobs", "2", "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["instances"] == expected
    assert doc["summary"]["ttft_p99_ms"] == by_hand[expected]["ttft_p99_ms"]
    assert doc["summary"]["config"]["num_instances"] == expected
    assert doc["slos"] == ["ttft_p99_ms <= 3000", "e2e_p99_ms <= 9000"]
    assert len(doc["candidates"]) == 1


def test_plan_command_bad_input():
    result = CliRunner().invoke(cli, ["plan", "--model", MODEL, "--rate", "5", "--slo", "x<1"])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--slo" in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [("num_instances", "2"), ("rate", "7"), ("hardware", "x"), ("results_path", "x"),
     ("trace_output", "x")],
)  # fmt: skip
def test_plan_refuses_a_set_it_would_drop(name, value):
    # a value of the option's type: one that is not is refused first, for its type
    result = CliRunner().invoke(
        cli,
        ["plan", "--model", MODEL, "--rate", "5", "--slo", "ttft_p99_ms=500", "--set",
         f"{name}={value}"],
    )  # fmt: skip
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--set {name}" in lines[0], lines


def test_plan_own_options_all_have_a_hint():
    from inference_sim.planning.cli import _OWN_HINTS, _PLAN_OWN

    assert set(_OWN_HINTS) == set(_PLAN_OWN)


def test_plan_takes_the_deployment_a_config_file_names(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"model: {MODEL}\nhardware: A100-80\ntp: 1\nworkload: chatbot\nnum_requests: 30\n"
    )
    args = ["plan", "--config", str(cfg), "--rate", "2", "--slo", "ttft_p99_ms=5000"]
    args += ["--max-instances", "1", "--no-saturation", "--jobs", "1", "--json", "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.stderr  # was: "--model is required"
    (cand,) = json.loads(result.stdout)["candidates"]
    assert (cand["hardware"], cand["tp"]) == ("A100-80", 1), cand
    flags = CliRunner().invoke(cli, [*args, "--hardware", "H100"])
    assert json.loads(flags.stdout)["candidates"][0]["hardware"] == "H100"  # flags win


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--hardware", "H101"], "no candidate could run: "),
        (["--hardware", "H100", "--tp", "3"], "not divisible by TP=3"),
        (["--slo", "ttft_p99_ms=-5"], "the bound must be >= 0"),
        (["--slo", "e2e_mean_ms<=0"], "a time is never at most 0"),
    ],
)
def test_plan_bad_input_before_or_instead_of_a_table(args, needle):
    """Every candidate failing (a typo in the GPU, a TP the model cannot split) or an SLO
    that can never hold is bad input: one line, exit 2 -- not a table of errors, exit 0."""
    slo = [] if any(a.startswith("ttft") or a.startswith("e2e") for a in args) else [
        "--slo", "ttft_p99_ms=500"]  # fmt: skip
    base = ["plan", "--model", MODEL, "--rate", "5", "--num-requests", "20", "--no-saturation"]
    result = CliRunner().invoke(cli, [*base, *slo, *args, "--jobs", "1", "-q"])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert result.stdout == ""


def test_plan_keeps_rows_of_failed_candidates_beside_good_ones():
    args = ["plan", "--model", MODEL, "--rate", "5", "--num-requests", "20", "--no-saturation",
            "--slo", "ttft_p99_ms=5000", "--hardware", "H100", "--tp", "1", "--tp", "3",
            "--max-instances", "1", "--jobs", "1", "--json", "-q"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.stderr
    cands = json.loads(result.stdout)["candidates"]
    assert any(c.get("error") for c in cands) and any(not c.get("error") for c in cands)


def test_gpu_hour_prices_under_any_spelling_of_the_gpu() -> None:
    from inference_sim.planning.plan import _price_for

    prices = {"NVIDIA H100 80GB HBM3": 3.0, "a100-80gb": 1.5, "*": 9.0}
    assert _price_for(prices, "H100") == 3.0
    assert _price_for(prices, "A100-SXM") == 1.5
    assert _price_for(prices, "L40S") == 9.0  # the default price
    assert _price_for({"A100-40GB": 1.0}, "A100-SXM") is None  # another card: no price


def test_a_gpu_only_in_the_hardware_config_is_priced_under_any_spelling(tmp_path) -> None:
    import json

    from inference_sim.planning.plan import _price_for, _pricing_catalog

    hw = tmp_path / "hw.json"
    figures = {"TFlopsPeak": 500, "BwPeakTBs": 2.5, "BwEffConstant": 0.8,
               "mfuPrefill": 0.5, "mfuDecode": 0.3, "memoryGB": 96}  # fmt: skip
    hw.write_text(json.dumps({"GX-96GB": figures}))
    catalog = _pricing_catalog({"hardware_config": str(hw)})
    assert catalog is not None
    prices = {"NVIDIA GX 96GB": 2.0, "*": 9.0}
    assert _price_for(prices, "GX-96GB", catalog) == 2.0
    assert _price_for(prices, "GX-96GB") == 9.0  # the bundled catalog does not know it
    assert _pricing_catalog({"hardware_config": str(tmp_path / "missing.json")}) is None


def test_a_price_for_a_gpu_nobody_knows_is_refused() -> None:
    from inference_sim.planning.plan import _check_price_keys

    _check_price_keys({"NVIDIA H100 80GB HBM3": 3.0, "*": 1.0}, None)
    with pytest.raises(ConfigError, match=r"--gpu-hour-price H10O=3: unknown GPU; known: "):
        _check_price_keys({"H10O": 3.0}, None)


def test_a_price_reaches_the_gpu_under_its_alias_spelling() -> None:
    """--hardware A100-80 resolves to the A100-SXM: a price keyed by either spelling (or
    the long name) applies; it used to fall through to the * price."""
    from inference_sim.planning.plan import _price_for

    for key in ("A100-SXM", "a100-sxm", "NVIDIA A100-SXM4-80GB"):
        assert _price_for({key: 2.2, "*": 1.0}, "A100-80") == 2.2, key


def test_pd_pools_on_their_own_gpus_are_priced_at_their_prices() -> None:
    from inference_sim.planning.plan import CandidatePlan, _cost_per_hour

    cand = CandidatePlan(Deployment(MODEL, "H100", 1))
    cand.hardware, cand.tp, cand.gpus = "H100", 1, 3
    config = {"prefill_instances": 1, "decode_instances": 2, "decode_hardware": "L40S"}
    prices = {"H100": 4.0, "L40S": 1.0}
    assert _cost_per_hour(prices, cand, 3, config, None) == 4.0 + 2 * 1.0
    assert _cost_per_hour(prices, cand, 3, {}, None) == 3 * 4.0
    assert _cost_per_hour({"H100": 4.0}, cand, 3, config, None) is None  # L40S unpriced


def test_saturation_probes_scale_the_requests_a_spec_generates(tmp_path) -> None:
    """A workload spec with its own num_requests: a probe at twice the rate runs twice
    its requests (the same window). Scaling the flag's default 100 instead gave probes a
    tenth of the window, and a saturation rate far above what the deployment sustains."""
    spec = tmp_path / "w.yaml"
    spec.write_text(
        "version: '2'\nseed: 1\naggregate_rate: 10\nnum_requests: 300\nclients:\n"
        "  - id: a\n    rate_fraction: 1\n    arrival: {process: poisson}\n"
        "    input_distribution: {type: constant, params: {value: 200}}\n"
        "    output_distribution: {type: constant, params: {value: 20}}\n",
        encoding="utf-8",
    )
    outcome = plan_capacity(
        {"workload_spec": str(spec)}, [DEPLOYMENT], parse_slos(["ttft_p99_ms=100000"]),
        rate=10, max_instances=1, backend=LocalBackend(1), rate_tolerance=0.5,
    )  # fmt: skip
    probes = outcome.best.probes  # type: ignore[union-attr]
    for p in probes:
        done = p.summary["injected_requests"]
        assert done == math.ceil(300 * p.rate / 10), (p.rate, done)
    assert any(p.rate > 10 for p in probes)


def test_plan_table_says_how_far_each_calibrated_candidate_can_be_trusted() -> None:
    """H100 (measured) and L40S (datasheet) ranked side by side: each calibrated row gets
    its expected error under the table, so a close ranking is read with its error bars."""
    outcome = plan_capacity(
        {"workload": "chatbot", "num_requests": 30, "latency_model": "calibrated"},
        [Deployment(MODEL, "H100", 1), Deployment(MODEL, "L40S", 1)],
        parse_slos(["ttft_p99_ms=5000"]), rate=5, max_instances=1,
        backend=LocalBackend(1), saturation=False,
    )  # fmt: skip
    text = format_plan(outcome)
    assert "calibrated model on H100 (measured): expected |error| E2E" in text
    assert "calibrated model on L40S (datasheet): expected |error| E2E" in text


def test_a_probe_the_horizon_cuts_short_says_so() -> None:
    """Requests still in flight at --horizon make the probe miss; the reason names it."""
    from inference_sim.metrics.slo import violations

    cut = {"injected_requests": 10, "completed_requests": 4, "still_queued": 1, "still_running": 5}
    (reason,) = violations([], cut)
    assert reason == (
        "served 4 of 10 requests (0 rejected, 6 unfinished when the run ended: "
        "raise or drop --horizon)"
    )
    rejected = {"injected_requests": 10, "completed_requests": 9, "rejected_requests": 2}
    assert violations([], rejected) == ["served 9 of 10 requests (2 rejected)"]
