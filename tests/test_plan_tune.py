"""Policy tuning with Optuna (skipped without the `tune` extra) and the fitness score."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from inference_sim import simulate
from inference_sim.cli.main import cli
from inference_sim.config.errors import ConfigError
from inference_sim.planning.fitness import fitness, parse_weights
from inference_sim.planning.tune import bundle_dict, params_to_options

MODEL = "meta-llama/llama-3.1-8b-instruct"
BASE = {
    "model": MODEL,
    "workload": "distribution",
    "prefix_tokens": 400,
    "rate": 120,
    "num_requests": 200,
    "num_instances": 3,
    "max_num_seqs": 16,
}


def test_fitness_score():
    w = parse_weights("p99_ttft:3,throughput:1")
    perfect = {"ttft_p99_ms": 0.0, "responses_per_sec": 1e12, "completed_requests": 5}
    perfect["injected_requests"] = 5
    assert fitness(perfect, w) == pytest.approx(1.0)
    half = {"ttft_p99_ms": 1000.0, "responses_per_sec": 100.0}
    half.update(completed_requests=4, injected_requests=4)
    assert fitness(half, w) == pytest.approx(0.5)
    partial = dict(half, completed_requests=2, rejected_requests=0)
    assert fitness(partial, w) == pytest.approx(0.25)  # half the requests served
    for bad in ("p99_nope:1", "p99_ttft:x", "p99_ttft:-1", "p99_ttft:0"):
        with pytest.raises(ConfigError):
            parse_weights(bad)


def test_bundle_of_trial_parameters_runs():
    params = {"routing_policy": "weighted", "w:queue-depth": 2, "w:kv-utilization": 0}
    params["w:prefix-affinity"] = 3
    assert params_to_options(params) == {
        "routing_policy": "weighted",
        "routing_scorers": "queue-depth:2,prefix-affinity:3",
    }
    doc = bundle_dict(params)
    assert doc == {
        "routing": {
            "policy": "weighted",
            "scorers": [
                {"name": "queue-depth", "weight": 2},
                {"name": "prefix-affinity", "weight": 3},
            ],
        }
    }


def test_tune_command_prints_a_ready_bundle(tmp_path):
    pytest.importorskip("optuna")
    out = tmp_path / "best.yaml"
    args = ["tune", "--model", MODEL, "--workload", "distribution", "--prefix-tokens", "400"]
    args += ["--rate", "120", "--num-requests", "200", "--num-instances", "3"]
    args += ["--max-num-seqs", "16", "--trials", "6", "--jobs", "1", "-o", str(out), "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("# blis tune on")
    assert out.read_text(encoding="utf-8") == result.stdout
    bundle = yaml.safe_load(result.stdout)
    assert bundle["routing"]["policy"] in (
        "round-robin",
        "least-loaded",
        "prefix-affinity",
        "weighted",
    )
    score_line = next(ln for ln in result.stdout.splitlines() if "best of 6 trials" in ln)
    best_score = float(score_line.split("fitness ")[1].split()[0])
    # the bundle reproduces the best score, and it beats (or ties) round-robin
    tuned = simulate(**BASE, policy_config=str(out))
    w = parse_weights("p99_ttft:3,mean_e2e:1,throughput:2")
    assert fitness(tuned.summary, w) == pytest.approx(best_score, abs=5e-5)
    baseline = simulate(**BASE, routing_policy="round-robin")
    assert fitness(tuned.summary, w) >= fitness(baseline.summary, w) - 1e-12


def test_tune_is_deterministic():
    pytest.importorskip("optuna")
    from inference_sim.planning.tune import tune
    from inference_sim.sweep import LocalBackend

    w = parse_weights("p99_ttft:1")
    a = tune(BASE, weights=w, trials=4, backend=LocalBackend(1), seed=7)
    b = tune(BASE, weights=w, trials=4, backend=LocalBackend(1), seed=7)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.score for t in a.trials] == [t.score for t in b.trials]


def test_tune_bad_input_exits_2():
    pytest.importorskip("optuna")
    result = CliRunner().invoke(cli, ["tune", "--model", MODEL, "--fitness-weights", "zzz:1"])
    assert result.exit_code == 2
    assert "--fitness-weights" in result.stderr


@pytest.mark.parametrize(
    ("flag", "value"), [("--policies", "round-robin,bogus"), ("--scorers", "bogus")]
)
def test_tune_checks_every_name_before_any_trial(flag, value):
    """A typo used to surface as skipped or failed trials, depending on which the sampler
    drew first (and the job count)."""
    pytest.importorskip("optuna")
    args = ["tune", "--model", MODEL, "--rate", "5", "--num-requests", "20", "--trials", "3"]
    result = CliRunner().invoke(cli, [*args, flag, value, "--jobs", "1"])
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{flag}: unknown" in lines[0] and "'bogus'" in lines[0]
