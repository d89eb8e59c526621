"""Routing inside a pool (an autoscaled cluster's ready replicas, one side of a P/D pair):
the router sees the members at positions 0..k-1, and those positions shift whenever the
set changes. What a policy remembers about an instance must follow the instance, a
plug-in may name a member by its id, and decision traces score the pool the router saw."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from inference_sim.cli.main import cli
from inference_sim.cluster.autoscale import route_among
from inference_sim.cluster.snapshot import SnapshotProvider
from inference_sim.instance import make_instance
from inference_sim.instance.config import EngineConfig
from inference_sim.latency.blackbox import BlackboxLatencyModel
from inference_sim.policies import PolicyError
from inference_sim.policies.routing import PrefixAffinity, Weighted
from simhelpers import make_request

SHARED = list(range(7000, 7064))  # four complete 16-token blocks


def cli_run(*args: str):
    return CliRunner().invoke(cli, list(args))


def _instances(n: int = 4) -> list:
    return [
        make_instance(
            i,
            EngineConfig(num_gpu_blocks=2000, block_size=16),
            BlackboxLatencyModel((0, 0, 0), (1000.0, 10.0, 1.0)),
        )
        for i in range(n)
    ]


def _route(policy, insts, members, pending, index, now=0):
    provider = SnapshotProvider([insts[i] for i in members])
    return route_among(policy, provider, members, pending, make_request(index, now, SHARED, 4), now)


@pytest.mark.parametrize(
    "policy",
    [
        Weighted([("prefix-affinity", 3.0), ("queue-depth", 2.0)], block_size=16, num_instances=4),
        PrefixAffinity(block_size=16),
    ],
    ids=["weighted-prefix-affinity", "prefix-affinity"],
)
def test_prefix_memory_follows_the_instance_when_the_pool_changes(policy) -> None:
    insts = _instances()
    # Pool [0, 1, 2]; instance 1 is the least loaded, so the prompt's blocks go there.
    first = _route(policy, insts, [0, 1, 2], [5, 0, 5, 5], 0)
    assert first.instance == 1
    # The pool becomes [3, 2, 1] with equal loads: instance 1, now at position 2, holds
    # the prefix. Keyed by position, the memory pointed at position 1 (instance 2).
    again = _route(policy, insts, [3, 2, 1], [0, 0, 0, 0], 1, now=10)
    assert again.instance == 1 and again.decision.target == 2
    # Without instance 1 nobody holds it: no member gets the credit.
    gone = _route(policy, insts, [0, 2, 3], [0, 0, 0, 0], 2, now=20)
    if isinstance(policy, Weighted):
        assert len(set(gone.decision.scores)) == 1  # equal scores: no affinity anywhere


class _LastMember:
    """A plug-in naming its choice by id: the last snapshot the router showed it."""

    def route(self, request, state):
        return state.snapshots[-1].id


class _ArgminNumpy:
    """A plug-in returning a numpy integer (np.argmin over the loads)."""

    def route(self, request, state):
        loads = [s.queue_depth + s.batch_size + s.pending_requests for s in state.snapshots]
        return np.argmin(loads)


def test_plugins_may_name_a_member_by_id_or_return_numpy_integers() -> None:
    insts = _instances()
    by_id = _route(_LastMember(), insts, [0, 2, 3], [0, 0, 0, 0], 0)
    assert by_id.instance == 3 and by_id.decision.target == 2
    by_numpy = _route(_ArgminNumpy(), insts, [0, 2, 3], [4, 0, 2, 0], 1)
    assert by_numpy.instance == 3  # loads 4, 2, 0 over members 0, 2, 3
    with pytest.raises(
        PolicyError,
        match=r"chose 'instance_1', which is not among the instances it was shown "
        r"\(instance_0, instance_2, instance_3\)",
    ):
        _route(type("Bad", (), {"route": lambda s, r, st: "instance_1"})(), insts,
               [0, 2, 3], [0, 0, 0, 0], 2)  # fmt: skip


def test_pd_routing_plugin_returning_an_id_runs(tmp_path) -> None:
    plugin = tmp_path / "lastplug.py"
    plugin.write_text(
        "class LastInst:\n"
        "    def route(self, request, state):\n"
        "        return state.snapshots[-1].id\n",
        encoding="utf-8",
    )
    out = tmp_path / "pd.json"
    r = cli_run(
        "run", "--model", "meta-llama/llama-3.1-8b-instruct", "--num-instances", "3",
        "--prefill-instances", "1", "--decode-instances", "2", "--num-requests", "12",
        "--rate", "20", "--routing-policy", f"{plugin}:LastInst", "--results-path", str(out),
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    records = json.loads(out.read_text(encoding="utf-8"))["requests"]
    assert {rec["decode_instance"] for rec in records} == {"instance_2"}


def test_autoscaled_trace_regret_covers_the_ready_replicas_only(tmp_path) -> None:
    """One replica ever ready: the weighted router's regret is 0 (it takes the best
    score, cluster spec 14); counting replicas that were off made it 41 on average."""
    out = tmp_path / "as.json"
    r = cli_run(
        "run", "--model", "meta-llama/llama-3.1-8b-instruct", "--num-instances", "1",
        "--autoscale-max", "3", "--autoscale-target", "1000", "--num-requests", "100",
        "--rate", "20", "--routing-policy", "weighted", "--trace-level", "decisions",
        "--counterfactual-k", "2", "--summarize-trace", "--results-path", str(out),
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    summary = json.loads(out.read_text(encoding="utf-8"))["trace_summary"]
    assert summary["target_distribution"] == {"instance_0": 100}
    assert summary["mean_regret"] == 0.0 and summary["max_regret"] == 0.0
