"""Review 23 fixes to blis plan, blis tune and the sweep's replicates table."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest
from click.testing import CliRunner

from inference_sim.cli.main import cli
from inference_sim.config.errors import ConfigError
from inference_sim.planning import Deployment, format_plan, parse_slos, plan_capacity
from inference_sim.sweep import LocalBackend

MODEL = "meta-llama/llama-3.1-8b-instruct"
DEPLOYMENT = Deployment(MODEL, "H100", 1)


class FailBelowBackend:
    """Answers runs without simulating: a count below ``least`` fails to run (as fixed
    pools larger than it do), every other count meets the SLO."""

    def __init__(self, least: int, jobs: int = 1) -> None:
        self.jobs = jobs
        self.least = least
        self.counts: list[int] = []

    def map(self, func, items, on_result):  # the real worker (func) is not run
        for i, opts in enumerate(items):
            n = opts["num_instances"]
            self.counts.append(n)
            if n < self.least:
                on_result(i, {"status": "failed", "error": f"pools exceed --num-instances {n}"})
                continue
            summary = {
                "ttft_p99_ms": 100.0,
                "completed_requests": 10,
                "injected_requests": 10,
                "rejected_requests": 0,
                "config": {"tp": 1, "hardware": "H100"},
            }
            on_result(i, {"status": "ok", "summary": summary})

    def close(self) -> None:
        pass


def test_fixed_pools_start_the_search_at_their_sum() -> None:
    """--prefill-instances 1 --decode-instances 1: x4 and x2 met, then x1 (fewer than
    the pools) failed to run and the answer was discarded (instances null, exit 0)."""
    base = {"workload": "chatbot", "num_requests": 200}
    base |= {"prefill_instances": 1, "decode_instances": 1}
    outcome = plan_capacity(
        base, [DEPLOYMENT], parse_slos(["ttft_p99_ms=300"]), rate=20, max_instances=4,
        backend=LocalBackend(1), saturation=False,
    )  # fmt: skip
    best = outcome.best
    assert best is not None and best.instances == 2 and not best.error
    assert 1 not in [p.instances for p in best.probes]


def test_fixed_pools_above_max_instances_are_one_reason() -> None:
    base = {"workload": "chatbot", "prefill_instances": 2, "decode_instances": 3}
    backend = FailBelowBackend(5)
    outcome = plan_capacity(
        base, [DEPLOYMENT], parse_slos(["ttft_p99_ms=300"]), rate=20, max_instances=4,
        backend=backend, saturation=False,
    )  # fmt: skip
    assert outcome.best is None and backend.counts == []
    assert "(5) exceed --max-instances 4" in outcome.candidates[0].error


def test_a_probe_that_fails_below_a_count_that_met_is_a_miss(caplog) -> None:
    """A run error at a count bisected below one that met keeps the answer found."""
    backend = FailBelowBackend(3)
    with caplog.at_level(logging.WARNING, logger="inference_sim"):
        outcome = plan_capacity(
            {"workload": "chatbot"}, [DEPLOYMENT], parse_slos(["ttft_p99_ms=300"]), rate=20,
            max_instances=8, backend=backend, saturation=False,
        )  # fmt: skip
    best = outcome.best
    assert best is not None and best.instances == 3 and not best.error
    missed = [p for p in best.probes if p.instances < 3]
    assert missed and all(not p.ok and "run failed" in p.why[0] for p in missed)
    # the same answer whatever the slots (look-ahead treats the error the same way)
    again = plan_capacity(
        {"workload": "chatbot"}, [DEPLOYMENT], parse_slos(["ttft_p99_ms=300"]), rate=20,
        max_instances=8, backend=FailBelowBackend(3, jobs=4), saturation=False,
    )  # fmt: skip
    assert again.best is not None and again.best.instances == 3


def test_a_first_probe_that_fails_still_ends_the_search() -> None:
    outcome = plan_capacity(
        {"workload": "chatbot"}, [DEPLOYMENT], parse_slos(["ttft_p99_ms=300"]), rate=20,
        max_instances=4, backend=FailBelowBackend(99), saturation=False,
    )  # fmt: skip
    assert outcome.best is None and "pools exceed" in outcome.candidates[0].error


def test_a_length_trace_without_times_is_planned_with_poisson_arrivals(tmp_path) -> None:
    """It has no times of its own: its probes used to run evenly spaced ("constant")
    arrivals while the title said "arrivals: the trace's"."""
    trace = tmp_path / "lengths.csv"
    rows = "\n".join(f"{100 + 7 * i},{20 + i % 5}" for i in range(60))
    trace.write_text(f"num_prefill_tokens,num_decode_tokens\n{rows}\n", encoding="utf-8")
    base = {"workload": "traces", "workload_traces_filepath": str(trace)}
    outcome = plan_capacity(
        base, [DEPLOYMENT], parse_slos(["ttft_p99_ms=100000"]), rate=20, max_instances=1,
        backend=LocalBackend(1), saturation=False,
    )  # fmt: skip
    assert outcome.arrival == "poisson"
    assert outcome.best is not None
    assert outcome.best.summary["config"]["arrival"] == "poisson"
    assert "arrivals: poisson" in format_plan(outcome)


def test_a_single_seed_is_reported() -> None:
    backend = FailBelowBackend(1)
    outcome = plan_capacity(
        {"workload": "chatbot"}, [DEPLOYMENT], parse_slos(["ttft_p99_ms=300"]), rate=20,
        max_instances=1, backend=backend, saturation=False, seeds=[7],
    )  # fmt: skip
    assert outcome.to_dict()["seeds"] == [7]
    assert "; seed 7" in format_plan(outcome).splitlines()[0]


def test_plan_warns_that_it_sets_a_specs_aggregate_rate(tmp_path, sim_log) -> None:
    spec = tmp_path / "w.yaml"
    spec.write_text(
        "version: '2'\nseed: 1\naggregate_rate: 10\nnum_requests: 20\nclients:\n"
        "  - id: a\n    rate_fraction: 1\n    arrival: {process: poisson}\n"
        "    input_distribution: {type: constant, params: {value: 50}}\n"
        "    output_distribution: {type: constant, params: {value: 5}}\n",
        encoding="utf-8",
    )
    args = ["plan", "--model", MODEL, "--hardware", "H100", "--tp", "1"]
    args += ["--workload-spec", str(spec), "--aggregate-rate", "50", "--rate", "100"]
    args += ["--slo", "ttft_p99_ms=100000", "--max-instances", "1", "--no-saturation"]
    result = CliRunner().invoke(cli, [*args, "--jobs", "1", "--json"])
    assert result.exit_code == 0, result.stderr
    assert "--aggregate-rate 50 is not used by blis plan" in result.stderr + sim_log.text
    assert json.loads(result.stdout)["rate"] == 100


def test_replicates_identify_points_by_resolved_values(tmp_path) -> None:
    """A case that sets no max_num_seqs got a null there in replicates.parquet
    (results.parquet has the resolved value), so the two could not be joined."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    import yaml

    sweep = tmp_path / "s.yaml"
    base = {"model": MODEL, "workload": "chatbot", "num_requests": 20, "rate": 10}
    cases = [{"max_num_seqs": 8}, {"routing_policy": "least-loaded"}]
    sweep.write_text(yaml.safe_dump({"base": base, "cases": cases}))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["sweep", str(sweep), "--out", str(out), "--seeds", "1,2", "-q", "-j", "1"]
    )
    assert result.exit_code == 0, result.stderr
    runs = pd.read_parquet(out / "results.parquet")
    reps = pd.read_parquet(out / "replicates.parquet")
    assert reps["max_num_running_reqs"].notna().all()
    assert reps["routing_policy"].notna().all()
    joined = runs.merge(reps, on=["max_num_running_reqs", "routing_policy"])
    assert len(joined) == len(runs) == 4


class FakeTuneBackend:
    """Scores every configuration from a hash of its options (no simulation)."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs

    def map(self, func, items, on_result):
        for i, opts in enumerate(items):
            key = json.dumps({k: opts.get(k) for k in ("routing_policy", "routing_scorers")})
            h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
            summary = {
                "ttft_p99_ms": 100.0 + h % 900,
                "e2e_mean_ms": 1000.0 + h % 500,
                "responses_per_sec": 10.0 + h % 50,
                "completed_requests": 10,
                "injected_requests": 10,
                "rejected_requests": 0,
            }
            on_result(i, {"status": "ok", "summary": summary})

    def close(self) -> None:
        pass


def test_tune_trials_do_not_depend_on_the_jobs() -> None:
    """Batches as large as the slots changed what the sampler proposed past its random
    start-up trials: --tune-seed promised the same trials for the same command."""
    pytest.importorskip("optuna")
    from inference_sim.planning.fitness import DEFAULT_WEIGHTS, parse_weights
    from inference_sim.planning.tune import tune

    w = parse_weights(DEFAULT_WEIGHTS)
    got = [
        [t.params for t in tune({}, weights=w, trials=24, backend=FakeTuneBackend(j)).trials]
        for j in (1, 3)
    ]
    assert got[0] == got[1]


def test_a_negative_sweep_seed_names_its_unsigned_equivalent(tmp_path) -> None:
    from inference_sim.sweep.spec import check_seed

    with pytest.raises(ConfigError, match="unsigned equivalent 18446744073709551613"):
        check_seed(-3, "s.yaml")
