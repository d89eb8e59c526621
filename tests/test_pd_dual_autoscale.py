"""Autoscaling the dual-role instances of a P/D cluster as a pool of their own
(--dual-autoscale-*, docs/autoscaling.md)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_sim.cluster.pd import PDClusterSimulator
from inference_sim.cluster.scaler import AutoscaleConfig
from inference_sim.core.request import RequestState
from inference_sim.core.rng import RandomStreams
from inference_sim.instance.config import EngineConfig
from inference_sim.instance.pd import PDInstance
from inference_sim.latency.blackbox import BlackboxLatencyModel
from inference_sim.policies.routing import LeastLoaded, RoundRobin
from simhelpers import make_request

BETA = (1000.0, 10.0, 1.0)


def _cluster(roles, autoscale, *, decider="never", blocks=20_000):
    insts = []
    for i, role in enumerate(roles):
        inst = PDInstance(
            i,
            EngineConfig(num_gpu_blocks=blocks, block_size=16),
            BlackboxLatencyModel((0, 0, 0), BETA),
        )
        inst.role = role
        insts.append(inst)
    return PDClusterSimulator(
        insts,
        decode_routing=LeastLoaded(),
        prefill_routing=RoundRobin(),
        decider=decider,
        bandwidth_gbps=1.0,
        base_latency_us=20,
        block_bytes=[250_000.0] * len(roles),
        check_invariants=True,
        autoscale=autoscale,
    )


def test_dual_pool_replica_routable_exactly_after_its_drawn_load():
    # A prefill instance and two dual-role ones, one of them up at start; decider never:
    # the decode routing (least loaded over ready decode-capable instances) serves every
    # request colocated. Four long requests at 0 sit on instance 1: at the 1000 µs
    # decision in-flight = 4 against a target of 1 -> ceil(1 * 4) = 4, clamped to 2, so
    # instance 2 loads for draw 0 of the stream replica-startup:both (seed 3, mean 5000
    # µs, cv 0.5). A request one µs before the load ends can only go to instance 1; one
    # µs after goes to the new, empty instance 2.
    sigma2 = math.log(1 + 0.25)
    draw = RandomStreams(3).keyed("replica-startup:both", 0)
    d = round(float(draw.lognormal(math.log(5000) - sigma2 / 2, math.sqrt(sigma2))))
    assert d != 5000
    ready = 1000 + d
    cfg = AutoscaleConfig(
        1, 2, "in-flight", 1.0, 1000, 5000, 0, 10**9, startup_cv=0.5, seed=3, pool="both"
    )
    sim = _cluster(["prefill", "both", "both"], {"both": (cfg, 1)})
    reqs = [make_request(i, 0, 32, 400) for i in range(4)]
    early, late = make_request(4, ready - 1, 32, 2), make_request(5, ready + 1, 32, 2)
    sim.run([*reqs, early, late])
    assert early.handled_by == 1 and late.handled_by == 2
    assert sim.pd.per_request[5]["decode_instance"] == "instance_2"
    ev = sim.scalers["both"].rec.events
    assert ev[0]["kind"] == "scale_up" and ev[0]["t_s"] == 0.001 and ev[0]["by"] == 1
    assert ev[1] == {"t_s": ready / 1e6, "kind": "ready", "replica": "instance_2",
                     "load_s": d / 1e6}  # fmt: skip
    assert all(r.state == RequestState.FINISHED for r in [*reqs, early, late])
    a = sim.autoscaling_summary()
    assert list(a["pools"]) == ["both"] and a["pools"]["both"]["peak_replicas"] == 2
    # the prefill-only instance never decodes
    assert sim.instances[0].stats.completed == 0


def test_dual_replica_drains_then_leaves():
    # Two dual-role instances, both up, no scale-down window and a target no load
    # reaches: the first decision scales down to one while the victim still runs prompts
    # (and holds KV for transfers to the decode instance); it takes no new request, leaves
    # only once empty, and every request finishes.
    cfg = AutoscaleConfig(1, 2, "in-flight", 100.0, 500, 5000, 0, 0, pool="both")
    sim = _cluster(["decode", "both", "both"], {"both": (cfg, 2)}, decider="always")
    reqs = [make_request(i, 100 * i, 300, 20) for i in range(12)]
    out = sim.run(reqs)
    assert all(r.state == RequestState.FINISHED for r in reqs)
    ev = sim.scalers["both"].rec.events
    down = next(e for e in ev if e["kind"] == "scale_down")
    left = next(e for e in ev if e["kind"] == "left")
    assert left["t_s"] >= down["t_s"]
    gone = int(left["replica"].rsplit("_", 1)[1])
    # nothing was routed to the replica after it started draining
    arrivals = [r.arrival_time for r in reqs if r.handled_by == gone]
    assert all(t <= down["t_s"] * 1e6 for t in arrivals)
    for inst in out.instances:
        assert inst.held == 0 and inst.kv.tables == {}


@settings(max_examples=20, deadline=None)
@given(
    extra=st.sampled_from([["prefill"], ["decode"], ["prefill", "decode"], []]),
    n_dual=st.integers(2, 4),
    initial=st.integers(1, 4),
    lens=st.lists(
        st.tuples(st.integers(1, 200), st.integers(1, 30), st.integers(0, 3000)),
        min_size=1,
        max_size=25,
    ),
    decider=st.sampled_from(["never", "always"]),
    target=st.floats(0.2, 4.0),
    cv=st.sampled_from([0.0, 0.7]),
)
def test_properties_dual_pool_bounds_and_every_request_finishes_once(
    extra, n_dual, initial, lens, decider, target, cv
):
    roles = [*extra, *(["both"] * n_dual)]
    cfg = AutoscaleConfig(1, n_dual, "in-flight", target, 700, 2000, 0, 1500, startup_cv=cv,
                          pool="both")  # fmt: skip
    sim = _cluster(roles, {"both": (cfg, min(initial, n_dual))}, decider=decider, blocks=60)
    t, reqs = 0, []
    for i, (p, o, gap) in enumerate(lens):
        t += gap
        reqs.append(make_request(i, t, p, o))
    out = sim.run(reqs)  # --check-invariants: conservation, KV held, replicas in bounds
    decode_capable = {i for i, r in enumerate(roles) if r != "prefill"}
    for r in reqs:
        assert r.state in (RequestState.FINISHED, RequestState.DROPPED)
        if r.state == RequestState.FINISHED:
            assert r.handled_by in decode_capable
    finished = [r for r in reqs if r.state == RequestState.FINISHED]
    assert sum(inst.stats.completed for inst in out.instances) == len(finished)
    rec = sim.scalers["both"].rec
    for r, lo in zip(rec.ready, rec.loading, strict=True):
        assert 1 <= r + lo <= n_dual
    for inst in out.instances:
        assert inst.held == 0 and inst.kv.tables == {}


# --- through `blis run` --------------------------------------------------------------
MODEL = ("--model", "meta-llama/llama-3.1-8b-instruct", "--num-requests", "60", "--rate", "20")


def _blis(*args: str):
    from click.testing import CliRunner

    from inference_sim.cli.main import cli

    return CliRunner().invoke(cli, ["run", *MODEL, *args])


def test_dual_pool_through_blis(tmp_path):
    path = tmp_path / "r.json"
    res = _blis(
        "--num-instances", "3", "--prefill-instances", "1", "--decode-instances", "1",
        "--dual-autoscale-max", "3", "--dual-autoscale-target", "1",
        "--autoscale-interval", "0.5", "--replica-startup-s", "1", "--check-invariants",
        "--results-path", str(path),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(path.read_text())
    both = doc["autoscaling"]["pools"]["both"]
    assert both["max_replicas"] == 3 and both["events"][0]["kind"] == "scale_up"
    assert 1 <= min(both["replicas"]["ready"]) <= max(both["replicas"]["ready"]) <= 3
    assert both["replica_startup_reason"] == "--replica-startup-s"  # as colocated runs say
    assert doc["pd"]["dual_instances"] == 3  # built up to the max
    assert doc["config"]["dual_autoscale_max"] == 3
    assert doc["completed_requests"] == 60


def test_fixed_dual_instances_leave_results_unchanged_in_config(tmp_path):
    path = tmp_path / "r.json"
    res = _blis("--num-instances", "3", "--prefill-instances", "1", "--decode-instances", "1",
                "--results-path", str(path))  # fmt: skip
    assert res.exit_code == 0, res.output
    cfg = json.loads(path.read_text())["config"]
    assert not any(k.startswith("dual_autoscale") for k in cfg)
    assert "replica_startup_cv" not in cfg


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--num-instances", "2", "--prefill-instances", "1", "--decode-instances", "1",
          "--dual-autoscale-max", "2", "--dual-autoscale-target", "1"),
         "--dual-autoscale-max needs dual-role instances at start"),
        (("--dual-autoscale-max", "2", "--dual-autoscale-target", "1"), "needs disaggregation"),
        (("--num-instances", "3", "--prefill-instances", "1", "--dual-autoscale-target", "1"),
         "--dual-autoscale-target needs --dual-autoscale-max > 0"),
        (("--num-instances", "3", "--prefill-instances", "1", "--decode-instances", "1",
          "--dual-autoscale-max", "2", "--dual-autoscale-min", "3",
          "--dual-autoscale-target", "1"),
         "--dual-autoscale-min 3 > --dual-autoscale-max 2"),
        (("--num-instances", "5", "--prefill-instances", "1", "--decode-instances", "1",
          "--dual-autoscale-max", "2", "--dual-autoscale-target", "1"),
         "leaves 3 dual-role instances > --dual-autoscale-max 2"),
        (("--num-instances", "3", "--prefill-instances", "1", "--decode-instances", "1",
          "--dual-autoscale-max", "2", "--dual-autoscale-target", "1",
          "--dual-autoscale-metric", "cpu"),
         "--dual-autoscale-metric"),
    ],
)  # fmt: skip
def test_bad_dual_autoscale_inputs_one_line_exit_2(args, needle):
    res = _blis(*args)
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.output


def test_autoscaled_pools_count_the_kv_of_replicas_that_existed():
    """Each pool's total_kv_blocks sums its replicas that existed (two pools of four
    members, one and two started, claimed four each: 2.7x the cluster's figure)."""
    from inference_sim import simulate

    res = simulate(
        model="meta-llama/llama-3.1-8b-instruct", num_requests=600, rate=40, num_instances=2,
        prefill_instances=1, decode_instances=1, pd_decider="always",
        prefill_autoscale_max=4, decode_autoscale_max=4, prefill_autoscale_target=2,
        decode_autoscale_target=100, autoscale_interval=1, check_invariants=True,
    )  # fmt: skip
    s = res.summary
    pools = s["pd"]["pools"]
    assert (
        pools["prefill"]["total_kv_blocks"] + pools["decode"]["total_kv_blocks"]
        == (s["total_kv_blocks"])
    )
