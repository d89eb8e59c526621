"""``--arrival constant|poisson|gamma`` and ``--burstiness`` (issue 20 item 6)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from click.testing import CliRunner

from inference_sim import simulate
from inference_sim.cli.main import cli
from inference_sim.planning import Deployment, format_plan, parse_slos, plan_capacity
from inference_sim.sweep import LocalBackend
from inference_sim.workload import DistributionParams, LengthDistribution, iter_distribution
from inference_sim.workload.arrivals import random_arrival_times

MODEL = "meta-llama/llama-3.1-8b-instruct"
PARAMS = DistributionParams(
    prefix_tokens=4,
    prompt=LengthDistribution(100, 30, 10, 200),
    output=LengthDistribution(50, 20, 1, 100),
)


def _gaps_s(process: str, burstiness: float, rate: float, n: int = 40_000) -> np.ndarray:
    times = random_arrival_times(
        process,
        rate,
        burstiness,
        num_requests=n,
        horizon=2**63 - 1,
        rng=np.random.default_rng(7),
    )
    assert times[0] == 0 and len(times) == n
    return np.diff(times) / 1e6


@pytest.mark.parametrize(
    ("process", "burstiness", "cv"),
    [("poisson", 1.0, 1.0), ("gamma", 0.25, 2.0), ("gamma", 4.0, 0.5)],
)
def test_random_processes_have_the_rate_and_spread_asked_for(process, burstiness, cv):
    gaps = _gaps_s(process, burstiness, rate=20.0)
    assert gaps.mean() == pytest.approx(1 / 20, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.06)


def test_horizon_bounds_random_arrivals():
    times = random_arrival_times(
        "poisson", 100.0, 1.0, num_requests=10**9, horizon=2_000_000, rng=np.random.default_rng(1)
    )
    assert times.max() < 2_000_000
    assert 150 < len(times) < 250  # about 2 s x 100 req/s


def _requests(arrival: str, burstiness: float = 1.0):
    return list(
        iter_distribution(
            PARAMS,
            rate=10.0,
            num_requests=300,
            horizon=2**63 - 1,
            rng=np.random.default_rng(3),
            arrival=arrival,
            burstiness=burstiness,
            arrival_rng=np.random.default_rng(4),
        )
    )


def test_the_process_moves_arrivals_and_keeps_every_requests_tokens():
    constant = _requests("constant")
    poisson = _requests("poisson")
    assert [r.arrival_time for r in constant] == [k * 99999 for k in range(300)]
    assert [r.arrival_time for r in poisson] != [r.arrival_time for r in constant]
    assert poisson[0].arrival_time == 0
    assert all(a.arrival_time <= b.arrival_time for a, b in itertools.pairwise(poisson))
    for a, b in zip(constant, poisson, strict=True):
        assert np.array_equal(a.input_tokens, b.input_tokens)
        assert np.array_equal(a.output_tokens, b.output_tokens)


def test_default_is_the_evenly_spaced_stream_of_before():
    default = list(
        iter_distribution(
            PARAMS, rate=10.0, num_requests=50, horizon=2**63 - 1, rng=np.random.default_rng(3)
        )
    )
    assert [r.arrival_time for r in default] == [k * 99999 for k in range(50)]


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["run", "--model", MODEL, *args])
    return result.exit_code, result.stdout, result.stderr


def _summary(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{") : stdout.rindex("}") + 1])


def test_poisson_arrivals_queue_more_than_evenly_spaced_ones(tmp_path):
    load = ["--workload", "chatbot", "--rate", "80", "--num-requests", "1500"]
    code, out, err = _run(*load)
    assert code == 0, err
    saved_at = str(tmp_path / "p.json")
    code_p, out_p, err_p = _run(*load, "--arrival", "poisson", "--results-path", saved_at)
    assert code_p == 0, err_p
    even, poisson = _summary(out), _summary(out_p)
    assert poisson["ttft_p99_ms"] > 2 * even["ttft_p99_ms"]
    saved = json.loads((tmp_path / "p.json").read_text())["config"]
    assert saved["arrival"] == "poisson" and saved["burstiness"] == 1.0
    # the same seed gives the same run again
    _, out_p2, _ = _run(*load, "--arrival", "poisson")
    assert out_p2 == out_p


def test_burstiness_alone_selects_gamma(tmp_path):
    path = tmp_path / "r.json"
    code, _, err = _run("--num-requests", "20", "--burstiness", "0.5", "--results-path", str(path))
    assert code == 0, err
    cfg = json.loads(path.read_text())["config"]
    assert cfg["arrival"] == "gamma" and cfg["burstiness"] == 0.5


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--arrival", "bursty"], "--arrival: unknown process 'bursty'; valid: constant"),
        (["--burstiness", "0"], "--burstiness must be a finite number > 0"),
        (["--arrival", "poisson", "--burstiness", "2"], "--burstiness 2 needs --arrival gamma"),
        (
            ["--workload", "traces", "--workload-traces-filepath", "TRACE", "--arrival", "poisson"],
            "--arrival shapes the distribution and preset workloads",
        ),
    ],
)
def test_bad_arrival_flags_are_one_line_errors(args, needle, tmp_path):
    trace = tmp_path / "azure.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0,10,5\n", encoding="utf-8")
    code, _, err = _run(*[str(trace) if a == "TRACE" else a for a in args])
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert needle in err


def test_run_help_says_the_default_is_evenly_spaced():
    out = CliRunner().invoke(cli, ["run", "--help"]).stdout
    flat = " ".join(out.split())
    assert "--arrival" in flat and "--burstiness" in flat
    assert "constant (evenly spaced" in flat and "[default: constant]" in flat


def test_plan_defaults_to_poisson_and_says_so():
    objectives = parse_slos(["ttft_p99_ms=100000"])
    base = {"workload": "chatbot", "num_requests": 80}
    outcome = plan_capacity(
        base,
        [Deployment(MODEL, "H100", 1)],
        objectives,
        rate=30,
        max_instances=1,
        backend=LocalBackend(1),
        saturation=False,
    )
    best = outcome.best
    assert best is not None
    assert best.summary["config"]["arrival"] == "poisson"
    assert "arrivals: poisson" in format_plan(outcome)
    direct = simulate(
        model=MODEL, hardware="H100", tp=1, rate=30, arrival="poisson", **base
    ).summary
    assert direct == best.summary
    explicit = plan_capacity(
        {**base, "arrival": "constant"},
        [Deployment(MODEL, "H100", 1)],
        objectives,
        rate=30,
        max_instances=1,
        backend=LocalBackend(1),
        saturation=False,
    )
    assert explicit.best is not None
    assert explicit.best.summary["config"]["arrival"] == "constant"
