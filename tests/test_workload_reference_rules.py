"""Workload rules a spec review found missing (workload spec sections 5.4, 6, 8.1, 15, 16):
each test fails on the generator as it was before."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference_sim.core.rng import RandomStreams
from inference_sim.workload import generate_spec_requests, parse_workload_spec
from inference_sim.workload.trace_v2 import export_trace_v2, load_trace_v2, replay_trace_v2
from test_workload_spec import client as _client


def _gen(clients: list[dict[str, Any]], n: int = 0, horizon: int = 2**62, **top: Any):
    doc: dict[str, Any] = {"version": "2", "seed": 7, "aggregate_rate": 500.0, "clients": clients}
    doc.update(top)
    return generate_spec_requests(parse_workload_spec(doc), max_requests=n, horizon=horizon)


SESSIONS = _client(
    reasoning={
        "multi_turn": {"max_rounds": 5, "think_time_us": 500_000, "context_growth": "accumulate"}
    },
)


def test_num_requests_caps_each_client_at_twice_it() -> None:
    """Spec 8.1: each client stops at 2·M requests, so a multi-turn client starts no new
    session once its sessions hold 2·M: with M = 5 two 5-round sessions, whose rounds
    0, 0, 1, 1, 2 are the earliest five (sessions start every 2 ms, rounds 0.5 s apart)."""
    five = _gen([SESSIONS], n=5)
    rounds = [r.metadata["round_index"] for r in five]
    assert rounds == [0, 0, 1, 1, 2]
    assert len({r.metadata["session_id"] for r in five}) == 2
    many = _gen([SESSIONS], n=500)
    assert len({r.metadata["session_id"] for r in many}) == 200  # 1000 requests' worth
    per_round = collections.Counter(r.metadata["round_index"] for r in many)
    assert per_round[0] == 200 and per_round[1] == 200 and per_round[2] == 100
    # Without M (a horizon instead) sessions start at every arrival.
    open_ended = _gen([SESSIONS], horizon=20_000)
    assert {r.metadata["round_index"] for r in open_ended} == {0}


def test_an_explicit_max_above_the_cap_is_honoured() -> None:
    """The 1,000,000-token cap of unbounded laws gives way to an explicit max."""
    wide = _client(
        input_distribution={"type": "exponential", "params": {"mean": 1_000_000, "max": 5_000_000}}
    )
    lens = np.array([r.num_prompt_tokens for r in _gen([wide], n=200)])
    assert lens.max() > 1_000_000 and lens.max() <= 5_000_000
    gauss = _client(
        input_distribution={
            "type": "gaussian",
            "params": {"mean": 2e6, "std_dev": 1e5, "min": 1.5e6, "max": 3e6},
        }
    )
    lens = np.array([r.num_prompt_tokens for r in _gen([gauss], n=50)])
    assert 1.9e6 < lens.mean() < 2.1e6


@pytest.mark.parametrize("law", [
    {"type": "exponential", "params": {"mean": 200, "min": 10.5, "max": 100.5}},
    {"type": "pareto_lognormal", "params": {"alpha": 1.5, "xm": 50, "mu": 5, "sigma": 1,
                                            "mix_weight": 0.5, "min": 10.5, "max": 100.5}},
])  # fmt: skip
def test_fractional_bounds_are_truncated_for_every_law(law) -> None:
    lens = np.array([r.num_prompt_tokens for r in _gen([_client(input_distribution=law)], n=500)])
    assert lens.max() == 100 and lens.min() >= 10  # truncated, as the warning says
    assert (lens == 100).sum() > 5  # draws above the max land on it
    spec = {"version": "2", "seed": 7, "aggregate_rate": 500.0}
    warned = parse_workload_spec({**spec, "clients": [_client(input_distribution=law)]}).warnings
    assert any("max 100.5 is truncated to 100" in w for w in warned)  # said once, by the spec


def test_empty_prompts_of_a_degenerate_gaussian_replay_from_an_export(tmp_path: Path) -> None:
    zero = _client(
        input_distribution={
            "type": "gaussian",
            "params": {"mean": 0, "std_dev": 0, "min": 0, "max": 0},
        }
    )
    reqs = _gen([zero], n=5)
    assert [r.num_prompt_tokens for r in reqs] == [0] * 5
    export_trace_v2(reqs, tmp_path / "t.csv")
    _header, records = load_trace_v2(tmp_path / "t.csv")
    again = list(replay_trace_v2(records, streams=RandomStreams(1)))
    assert [r.num_prompt_tokens for r in again] == [0] * 5
    assert [r.arrival_time for r in again] == [r.arrival_time for r in reqs]


def test_a_client_named_like_a_fallback_key_keeps_the_others_draws() -> None:
    """Unnamed clients draw from ``#<position>``; a client explicitly named ``#1`` used
    to share that stream, so naming one client changed another's arrivals."""
    unnamed = _client(id="", tenant_id="Y")
    plain = _gen([_client(id="z", tenant_id="X"), unnamed], horizon=200_000)
    clash = _gen([_client(id="#1", tenant_id="X"), unnamed], horizon=200_000)
    times = {
        name: [r.arrival_time for r in reqs if r.tenant_id == "Y"]
        for name, reqs in (("plain", plain), ("clash", clash))
    }
    assert times["plain"] == times["clash"]
    x_plain = [r.arrival_time for r in plain if r.tenant_id == "X"]
    x_clash = [r.arrival_time for r in clash if r.tenant_id == "X"]
    assert x_plain != x_clash  # X's own key changed with its name: its draws may change


def test_inference_perf_block_is_ignored_next_to_clients(sim_log) -> None:
    """Spec 8.1 / 16: the block is expanded only without clients; its stage rates used
    to override the clients' aggregate_rate."""
    block = {
        "stages": [{"rate": 5, "duration": 10}],
        "shared_prefix": {
            "num_unique_system_prompts": 1,
            "num_users_per_system_prompt": 1,
            "system_prompt_len": 10,
            "question_len": 10,
            "output_len": 10,
        },
    }
    reqs = _gen([_client()], horizon=2_000_000, aggregate_rate=100.0, inference_perf=block)
    assert 150 <= len(reqs) <= 250  # 100 req/s for 2 s, not 5 req/s
    assert "inference_perf is ignored" in sim_log.text


def test_servegen_rows_with_a_nan_rate_are_skipped(tmp_path: Path) -> None:
    """A ``nan`` rate parsed as a float, won the best-row search and hung generation."""
    (tmp_path / "chunk-1-trace.csv").write_text(
        "0,nan,2.0,Gamma\n5,inf,2.0,Gamma\n10,4,2.0,Gamma\n"
    )
    (tmp_path / "chunk-1-dataset.json").write_text(
        '{"0": {"input_tokens": "{100: 1}", "output_tokens": "{10: 1}"}}'
    )
    spec = parse_workload_spec(
        {"aggregate_rate": 10, "num_requests": 20, "servegen_data": {"path": str(tmp_path)}}
    )
    assert spec.clients[0].rate_fraction == 4.0
    assert any("skipped 2 malformed" in w for w in spec.warnings)
    assert len(generate_spec_requests(spec, max_requests=20)) == 20
