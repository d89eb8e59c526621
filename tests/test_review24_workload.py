"""Review 24 of the workload generator: inference-perf's load types and multi-turn rate,
overflowing length draws, ignored spec fields said out loud, and the request-length
limit on sums. Each test but the dealer guard fails on the generator as it was before
the review."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from inference_sim.cli.main import cli
from inference_sim.workload import generate_spec_requests, parse_workload_spec
from inference_sim.workload.errors import WorkloadError
from inference_sim.workload.generate import iter_spec_requests
from inference_sim.workload.samplers import MAX_SAMPLED_LENGTH, make_length_sampler
from test_workload_spec import client, spec_of

LIMIT = 2**24


def _ip(
    stages: list[dict[str, float]],
    load_type: str,
    *,
    seed: int = 3,
    groups: int = 9,
    users: int = 5,
    multi_turn: bool = False,
    cycle: bool = False,
    question_len: int = 50,
    output_len: int = 20,
    **top: Any,
) -> Any:
    doc: dict[str, Any] = {
        "seed": seed,
        "inference_perf": {
            "stages": stages,
            "shared_prefix": {
                "num_unique_system_prompts": groups,
                "num_users_per_system_prompt": users,
                "system_prompt_len": 100,
                "question_len": question_len,
                "output_len": output_len,
                "enable_multi_turn_chat": multi_turn,
            },
            "load_type": load_type,
            "cycle_prompts": cycle,
        },
    }
    doc.update(top)
    return parse_workload_spec(doc)


def _times(spec: Any, **kw: Any) -> np.ndarray:
    return np.array([r.arrival_time for r in generate_spec_requests(spec, **kw)])


# --- 1. load_type constant is inference-perf's ConstantLoadTimer --------------------------


def test_constant_load_sends_exactly_rate_times_duration_a_stage():
    """inference-perf sends int(rate x duration) requests a stage (the last at its end);
    evenly spaced arrivals k / rate gave 134 for rate 45 over 3 s, and 24 for 10 over 2.5."""
    t = _times(_ip([{"rate": 45, "duration": 3}, {"rate": 10, "duration": 2.5}], "constant"))
    first, second = t[t < 3_000_000], t[t >= 3_000_000]
    assert (len(first), len(second)) == (135, 25)
    assert first[-1] == 2_999_999 and second[-1] == 5_499_999  # the stage end, inside it
    assert np.all(np.diff(t) >= 0) and t[0] > 0


def test_constant_load_bunches_like_poisson_and_is_seeded():
    """Rescaled exponential gaps: coefficient of variation about 1 (evenly spaced: 0)."""
    spec = _ip([{"rate": 200, "duration": 50}], "constant")
    t = _times(spec)
    gaps = np.diff(t)
    assert len(t) == 10_000
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)
    assert np.mean(gaps < np.log(2) * gaps.mean()) == pytest.approx(0.5, abs=0.03)
    assert np.array_equal(t, _times(spec))  # deterministic
    assert not np.array_equal(t, _times(_ip([{"rate": 200, "duration": 50}], "constant", seed=4)))


def test_constant_load_is_dealt_round_robin_and_cut_not_changed_by_bounds():
    """A guard for the shared stream's dealer (it held before, per client): request k
    goes to client k mod N·U, and a horizon or num_requests only cuts the stream."""
    spec = _ip([{"rate": 45, "duration": 20}], "constant")
    full = generate_spec_requests(spec)
    ids = [r.metadata["client_id"] for r in full]
    assert ids[:2] == ["prompt-0-user-0", "prompt-0-user-1"]
    assert ids[44] == "prompt-8-user-4" and ids[45] == "prompt-0-user-0"
    assert ids == [ids[k % 45] for k in range(len(ids))]
    cut = generate_spec_requests(spec, horizon=7_000_000)
    assert 0 < len(cut) < len(full)
    for a, b in zip(cut, full, strict=False):
        assert a.arrival_time == b.arrival_time
        assert np.array_equal(a.input_tokens, b.input_tokens)
    first = list(iter_spec_requests(spec, max_requests=100))
    assert [r.arrival_time for r in first] == [r.arrival_time for r in full[:100]]


def test_cycle_prompts_constant_load_is_inference_perfs_too():
    t = _times(_ip([{"rate": 30, "duration": 4}], "constant", cycle=True))
    assert len(t) == 120 and t[-1] == 3_999_999
    assert np.diff(t).std() > 0.5 * np.diff(t).mean()  # bunched, not evenly spaced


def test_evenly_spaced_is_the_old_constant_and_load_types_are_named():
    t = _times(_ip([{"rate": 45, "duration": 3}], "evenly_spaced"))
    assert len(t) == 134 and set(np.diff(t).tolist()) <= {22_222, 22_223}
    with pytest.raises(WorkloadError, match="valid: poisson, constant, evenly_spaced"):
        _ip([{"rate": 1, "duration": 1}], "even")


# --- 2. multi-turn chat: the stage rate is a request rate ---------------------------------


@pytest.mark.parametrize("load_type", ["poisson", "constant"])
def test_multi_turn_chat_stage_rate_is_the_request_rate(load_type):
    """Each arrival is one round, as inference-perf's load_lazy_data sends; a whole
    5-round session per arrival offered 5 x the rate (25 req/s at rate 5)."""
    spec = _ip(
        [{"rate": 5, "duration": 200}, {"rate": 10, "duration": 100}],
        load_type,
        groups=11,
        users=4,
        multi_turn=True,
    )
    reqs = generate_spec_requests(spec)
    t = np.array([r.arrival_time for r in reqs])
    first = np.count_nonzero(t < 200_000_000)
    second = np.count_nonzero(t >= 200_000_000)
    if load_type == "constant":
        assert (first, second) == (1000, 1000)
    else:
        assert first == pytest.approx(1000, abs=4 * 1000**0.5)
        assert second == pytest.approx(1000, abs=4 * 1000**0.5)
    per_client: dict[str, list[Any]] = {}
    for r in reqs:
        per_client.setdefault(r.metadata["client_id"], []).append(r)
    mine = per_client["prompt-3-user-2"]
    assert [r.metadata["round_index"] for r in mine[:7]] == [0, 1, 2, 3, 4, 0, 1]
    sessions = [r.metadata["session_id"] for r in mine[:10]]
    assert len(set(sessions[:5])) == 1 and len(set(sessions[5:10])) == 1
    assert sessions[0] != sessions[5]
    # the conversation accumulates: round 1 resends round 0's prompt and output
    r0, r1 = mine[0], mine[1]
    prior = np.concatenate((r0.input_tokens, r0.output_tokens))
    assert np.array_equal(r1.input_tokens[: len(prior)], prior)


# --- 3. overflowing draws go to the upper bound -------------------------------------------


def _draw(kind: str, params: dict[str, float], n: int = 50) -> np.ndarray:
    sampler = make_length_sampler(kind, params, "x")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow RuntimeWarning is silenced
        return sampler.sample(np.random.default_rng(1), n)


def test_overflowing_draws_become_the_cap_or_max_not_one_token():
    pl = {"alpha": 1.0, "xm": 1.0, "mu": 710.0, "sigma": 0.0, "mix_weight": 0.0}
    assert set(_draw("pareto_lognormal", pl).tolist()) == {MAX_SAMPLED_LENGTH}
    assert set(_draw("pareto_lognormal", {**pl, "max": 5000}).tolist()) == {5000}
    g = _draw("gaussian", {"mean": 7, "std_dev": 1e308, "min": 7, "max": 900}, 400)
    assert set(g.tolist()) == {7, 900}
    assert np.count_nonzero(g == 900) > 100  # +inf and huge draws alike: the max


# --- 4. and 5. fields the spec ignores are said -------------------------------------------


def test_aggregate_rate_beside_stages_warns_naming_both_rates(tmp_path):
    doc = spec_of(client(), aggregate_rate=100.0, stages=[{"rate": 5, "duration": 2}])
    spec = parse_workload_spec(doc)
    assert spec.aggregate_rate == 100.0
    (text,) = spec.warnings
    assert "aggregate_rate 100 req/s is ignored" in text and "5 req/s on average" in text
    same = [{"rate": 8, "duration": 600}, {"rate": 20, "duration": 600}]
    assert _ip(same, "poisson", aggregate_rate=14).warnings == ()  # the stage mean
    (text,) = _ip([{"rate": 8, "duration": 60}], "poisson", aggregate_rate=30).warnings
    assert "aggregate_rate 30 req/s is ignored" in text and "8 req/s" in text
    # blis run says it, naming the file
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(
        cli, ["run", "--model", "meta-llama/llama-3.1-8b-instruct", "--workload-spec", str(path)]
    )
    assert result.exit_code == 0, result.stderr
    assert f"workload spec {path}: aggregate_rate 100 req/s is ignored" in result.stderr


def test_servegen_data_beside_clients_or_inference_perf_warns(sim_log):
    parse_workload_spec(spec_of(client(), servegen_data={"path": "/nonexistent"}))
    assert "servegen_data is ignored: the spec has clients" in sim_log.text
    sim_log.clear()
    spec = _ip([{"rate": 8, "duration": 60}], "poisson", servegen_data={"path": "/nonexistent"})
    assert len(spec.clients) == 45
    assert "servegen_data is ignored: the inference_perf block" in sim_log.text


def test_adapter_rank_and_prefix_length_alone_warn():
    """Held back with the spec's other warnings (printed once the run's checks pass)."""
    w = parse_workload_spec(spec_of(client(adapter_rank=8))).warnings
    assert any("clients[0].adapter_rank 8 has no effect without adapter" in x for x in w)
    w = parse_workload_spec(spec_of(client(prefix_length=40))).warnings
    assert any("clients[0].prefix_length 40 has no effect without prefix_group" in x for x in w)
    both = client(adapter="a", adapter_rank=8, prefix_group="g")
    assert not any("no effect" in x for x in parse_workload_spec(spec_of(both)).warnings)


# --- 6. the request limit bounds sums too -------------------------------------------------


def test_multimodal_sum_over_the_request_limit_is_one_error():
    mm = {
        "image_count_distribution": {"type": "constant", "params": {"value": 1_000_000}},
        "image_distribution": {"type": "constant", "params": {"value": 16_000_000}},
    }
    with pytest.raises(WorkloadError, match=f"must be <= {LIMIT} tokens.*image_count"):
        generate_spec_requests(parse_workload_spec(spec_of(client(multimodal=mm))), max_requests=3)


def test_accumulated_session_context_over_the_request_limit_is_one_error():
    mt = {"max_rounds": 10_000, "think_time_us": 1000, "context_growth": "accumulate"}
    big = client(
        input_distribution={"type": "constant", "params": {"value": 1000}},
        output_distribution={"type": "constant", "params": {"value": 1000}},
        reasoning={"multi_turn": mt},
    )
    with pytest.raises(WorkloadError, match=f"must be <= {LIMIT} tokens.*got 19999000"):
        generate_spec_requests(parse_workload_spec(spec_of(big)), max_requests=3)


def test_prefix_plus_input_over_the_request_limit_is_one_error():
    c = client(prefix_group="g", prefix_length=LIMIT)
    with pytest.raises(WorkloadError, match=f"prefix_length \\+ input\\) must be <= {LIMIT}"):
        generate_spec_requests(parse_workload_spec(spec_of(c)), max_requests=1)


def test_inference_perf_endless_user_context_over_the_limit_is_one_error():
    spec = _ip(
        [{"rate": 2, "duration": 10}],
        "poisson",
        groups=1,
        users=1,
        multi_turn=True,
        cycle=True,
        question_len=6_000_000,
        output_len=1,
    )
    with pytest.raises(WorkloadError, match="user_session_0's conversation at round 2"):
        generate_spec_requests(spec)


# --- 7. horizon out of range --------------------------------------------------------------


def test_horizon_beyond_the_clock_names_the_range():
    with pytest.raises(WorkloadError, match=r"horizon must be in \[0, 9223372036854775807\]"):
        parse_workload_spec(spec_of(client(), horizon=99999999999999999999999))
    assert parse_workload_spec(spec_of(client(), horizon=2**63 - 1)).horizon == 2**63 - 1
