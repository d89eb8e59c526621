"""Review 25 of the autoscaler (docs/autoscaling.md): the idle tail, drain timing against
the GPU's busy time, per-instance output of replicas that never started, P/D flags the
pools ignore, and a start below the minimum."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_sim.cluster.autoscale import AutoscaleClusterSimulator, AutoscaleConfig
from inference_sim.core.request import RequestState
from inference_sim.instance import make_instance
from inference_sim.instance.config import EngineConfig
from inference_sim.latency.blackbox import BlackboxLatencyModel
from inference_sim.policies.routing import LeastLoaded
from simhelpers import make_request

S = 1_000_000
MODEL = dict(model="meta-llama/llama-3.1-8b-instruct", hardware="H100", tp=1)


def _fixed(step_us, *, interval, startup, initial=1, n_max=2, target=1.0, lo=1, down=0):
    """Replicas whose every step takes exactly ``step_us``."""
    insts = [
        make_instance(
            i,
            EngineConfig(num_gpu_blocks=2000, block_size=16),
            BlackboxLatencyModel((0, 0, 0), (float(step_us), 0.0, 0.0)),
        )
        for i in range(n_max)
    ]
    cfg = AutoscaleConfig(lo, n_max, "in-flight", target, interval, startup, 0, down, 1, 1.0)
    return AutoscaleClusterSimulator(
        insts, autoscale=cfg, initial=initial, routing=LeastLoaded(), check_invariants=True
    )


def _integral(rec, end):
    """Replica-µs from the recorded counts (ready + loading + draining) up to ``end``."""
    total = 0
    points = list(zip(rec.t_us, rec.ready, rec.loading, rec.draining, strict=True))
    for (t, r, lo, d), nxt in zip(points, [*points[1:], (end, 0, 0, 0)], strict=True):
        total += (r + lo + d) * (max(t, min(nxt[0], end)) - t)
    return total


# --- 1. the idle tail: a load still running when the work ends ---------------------------


@pytest.mark.parametrize(
    "startup",
    [700, 600 * S],  # the load ends before the next decision / long after the run
)
def test_a_load_unfinished_when_the_work_ends_is_billed_to_the_end_only(startup):
    # Four requests of 5 tokens on one replica, steps of 300 µs: at the 1000 µs decision
    # in-flight is 4 against a target of 1, so replica 1 starts loading; the work ends at
    # 1500 µs, before its load ends. It never becomes ready; it costs 1000 -> 1500.
    sim = _fixed(300, interval=1000, startup=startup)
    reqs = [make_request(i, 0, 32, 5) for i in range(4)]
    out = sim.run(reqs)
    assert all(r.state == RequestState.FINISHED for r in reqs)
    end = out.end_time
    assert end == 1500
    assert [e["kind"] for e in sim.rec.events] == ["scale_up"]  # no "ready" after the end
    assert sim.rec.replica_us == end + (end - 1000)
    assert sim.scaling_periods() == [(1000, end)]
    assert max(sim.rec.t_us) <= end


@pytest.mark.parametrize("pd", [False, True])
def test_no_event_after_the_end_and_gpu_time_stops_there_cli(pd):
    """The reviewer's command: a replica loading for 600 s in a run of 15.7 s used to be
    shown ready at 601 s and billed until then (615.7 s of GPU time instead of ~30.4)."""
    from inference_sim import simulate

    common = dict(MODEL, num_requests=200, rate=20, autoscale_interval=1,
                  replica_startup_s=600, check_invariants=True)  # fmt: skip
    if pd:
        res = simulate(**common, num_instances=2, prefill_instances=1, decode_instances=1,
                       decode_autoscale_max=2, decode_autoscale_target=1)  # fmt: skip
        a = res.summary["autoscaling"]["pools"]["decode"]
    else:
        res = simulate(**common, autoscale_max=2, autoscale_target=1)
        a = res.summary["autoscaling"]
    end = res.summary["vllm_estimated_duration_s"]
    assert [e["kind"] for e in a["events"]] == ["scale_up"]
    up = a["events"][0]["t_s"]
    assert a["gpu_hours"] * 3600 == pytest.approx(end + (end - up), rel=1e-6)
    assert a["latency"]["scaling_periods_s"] == [[up, pytest.approx(end)]]
    assert max(a["replicas"]["t_s"]) <= end


# --- 2. a draining replica leaves when its last step ends --------------------------------


def test_a_draining_replica_leaves_when_its_last_step_ends_not_at_the_decision():
    # Steps of 10 s. Requests 0 and 1 (one token) finish in the step 0 -> 10 s on
    # replicas 0 and 1; request 2 runs on replica 0 until 400 s. At the 1 s decision
    # replica 1 (its step applied at its start) holds nothing but its GPU is busy until
    # 10 s: it drains until then (it used to leave at 1 s, 9 s of GPU time uncounted).
    sim = _fixed(10 * S, interval=S, startup=3 * S, initial=2, target=2.0)
    reqs = [make_request(0, 0, 32, 1), make_request(1, 0, 32, 1), make_request(2, 0, 32, 40)]
    out = sim.run(reqs)
    assert [r.handled_by for r in reqs] == [0, 1, 0]
    assert reqs[1].finish_time == 10 * S
    left = [e for e in sim.rec.events if e["kind"] == "left"]
    assert left == [{"t_s": 10.0, "kind": "left", "replica": "instance_1"}]
    assert sim.rec.t_us == [0, S, 10 * S] and sim.rec.draining == [0, 1, 0]
    assert out.end_time == 400 * S
    assert sim.rec.replica_us == 410 * S == _integral(sim.rec, out.end_time)


def test_a_replica_busy_past_a_decision_keeps_its_slot_until_it_leaves():
    # Replica 1 drains from 1 s; its last step runs 10 -> 20 s. A burst at 10.5 s wants
    # it back at the 11 s decision: it still holds its slot (draining), so the scale-up
    # waits for it to leave at 20 s (it used to be stamped "left" at 20 s at 10 s,
    # started again at 11 s and ready at 14 s while its GPU ran until 20 s, the time
    # series going back from 20 to 11 s and 9 s of GPU time counted twice).
    sim = _fixed(10 * S, interval=S, startup=3 * S, initial=2, target=4.0)
    reqs = [make_request(0, 0, 32, 3), make_request(1, 0, 32, 2)]
    reqs += [make_request(2 + k, 10_500_000, 32, 3) for k in range(20)]
    out = sim.run(reqs)
    ev = [(e["t_s"], e["kind"]) for e in sim.rec.events]
    assert ev == [(1.0, "scale_down"), (20.0, "left"), (20.0, "scale_up"), (23.0, "ready")]
    assert sim.rec.t_us == sorted(sim.rec.t_us)
    assert sim.rec.replica_us == 100 * S == _integral(sim.rec, out.end_time)


@settings(max_examples=60, deadline=None)
@given(
    step=st.integers(200, 20_000),
    interval=st.integers(500, 5_000),
    startup=st.integers(0, 6_000),
    n_max=st.integers(2, 4),
    initial=st.integers(1, 4),
    target=st.sampled_from([0.5, 1.0, 2.0, 4.0]),
    down=st.sampled_from([0, 2_000]),
    reqs=st.lists(st.tuples(st.integers(0, 15_000), st.integers(1, 12)), min_size=1, max_size=25),
)
def test_properties_scaling_record_is_time_ordered_and_gpu_time_matches_it(
    step, interval, startup, n_max, initial, target, down, reqs
):
    """Over random configurations (long steps against short intervals included): the
    events and the replica series never go back in time (--check-invariants checks it
    too), every request finishes, no replica leaves before its GPU is idle, and the GPU
    time equals the series' integral up to the end."""
    sim = _fixed(step, interval=interval, startup=startup, initial=min(initial, n_max),
                 n_max=n_max, target=target, down=down)  # fmt: skip
    gaps = sorted(t for t, _n in reqs)
    rs = [make_request(i, t, 16, n) for i, (t, (_t, n)) in enumerate(zip(gaps, reqs, strict=True))]
    out = sim.run(rs)
    assert all(r.state == RequestState.FINISHED for r in rs)
    rec = sim.rec
    assert rec.t_us == sorted(rec.t_us)
    times = [e["t_s"] for e in rec.events]
    assert times == sorted(times)
    assert max(rec.t_us) <= out.end_time
    assert rec.replica_us == _integral(rec, out.end_time)
    # A replica that left had finished the last step of everything it served before.
    for e in rec.events:
        if e["kind"] == "left":
            i = int(e["replica"].removeprefix("instance_"))
            t = round(e["t_s"] * 1e6)
            served = [r for r in rs if r.handled_by == i and r.first_scheduled_time < t]
            assert all(r.finish_time <= t for r in served if r.finish_time <= out.end_time)


def test_events_out_of_time_order_are_an_invariant_violation():
    from inference_sim.engine.invariants import InvariantViolation

    sim = _fixed(1000, interval=1000, startup=0)
    sc = sim.scaler
    sc._event({"t_s": 2.0, "kind": "scale_up", "by": 1, "reason": ""})
    with pytest.raises(InvariantViolation, match="out of time order"):
        sc._event({"t_s": 1.0, "kind": "left", "replica": "instance_1"})
    sc._record(5 * S)
    with pytest.raises(InvariantViolation, match="replica counts recorded"):
        sc._record(4 * S)


def _pd_fixed(step_us, *, target):
    """A prefill instance and an autoscaled decode pool of two (both up at start, decider
    never: the decode replicas serve whole requests), every step ``step_us`` long."""
    from inference_sim.cluster.pd import PDClusterSimulator
    from inference_sim.instance.pd import PDInstance
    from inference_sim.policies.routing import RoundRobin

    insts = []
    for i, role in enumerate(["prefill", "decode", "decode"]):
        inst = PDInstance(i, EngineConfig(num_gpu_blocks=2000, block_size=16),
                          BlackboxLatencyModel((0, 0, 0), (float(step_us), 0.0, 0.0)))  # fmt: skip
        inst.role = role
        insts.append(inst)
    cfg = AutoscaleConfig(1, 2, "in-flight", target, S, 3 * S, 0, 0, 1, 1.0, pool="decode")
    return PDClusterSimulator(
        insts, decode_routing=LeastLoaded(), prefill_routing=RoundRobin(), decider="never",
        bandwidth_gbps=1.0, base_latency_us=20, block_bytes=[250_000.0] * 3,
        check_invariants=True, autoscale={"decode": (cfg, 2)},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("target", "reqs", "events", "replica_s"),
    [
        # as the first colocated case: it used to leave at 1 s (401 s of replica time)
        (2.0, [(0, 1), (0, 1), (0, 40)], [(1.0, "scale_down"), (10.0, "left")], 410),
        # as the second: it used to be stamped "left" at 20 s at 10 s, then started again
        # at 11 s (the series going back to 11 s; 109 s of replica time)
        (4.0, [(0, 3), (0, 2)] + [(10_500_000, 3)] * 20,
         [(1.0, "scale_down"), (20.0, "left"), (20.0, "scale_up"), (23.0, "ready")], 100),
    ],
)  # fmt: skip
def test_pd_a_draining_decode_replica_leaves_when_its_last_step_ends(
    target, reqs, events, replica_s
):
    sim = _pd_fixed(10 * S, target=target)
    rs = [make_request(i, t, 32, n) for i, (t, n) in enumerate(reqs)]
    out = sim.run(rs)
    assert all(r.state == RequestState.FINISHED for r in rs)
    assert [r.handled_by for r in rs[:2]] == [1, 2]
    rec = sim.scalers["decode"].rec
    assert [(e["t_s"], e["kind"]) for e in rec.events] == events
    assert rec.t_us == sorted(rec.t_us)
    assert rec.replica_us == replica_s * S == _integral(rec, out.end_time)


# --- 3. replicas that never started ------------------------------------------------------


def test_per_instance_blocks_list_only_replicas_that_existed():
    from inference_sim import simulate

    res = simulate(**MODEL, num_requests=40, rate=10, num_instances=2, autoscale_max=20,
                   autoscale_target=1000)  # fmt: skip
    assert res.summary["autoscaling"]["peak_replicas"] == 2
    assert [s["instance_id"] for s in res.instance_summaries] == ["instance_0", "instance_1"]
    plain = simulate(**MODEL, num_requests=40, rate=10, num_instances=2)
    assert res.records == plain.records
    assert res.summary["total_kv_blocks"] == plain.summary["total_kv_blocks"]


# --- 4. colocated bounds with autoscaled P/D pools ---------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "name"),
    [("--autoscale-min", "2", "min"), ("--autoscale-target", "7", "target")],
)
def test_colocated_bounds_with_autoscaled_pools_are_refused(flag, value, name):
    from click.testing import CliRunner

    from inference_sim.cli.main import cli

    res = CliRunner().invoke(cli, [
        "run", "--model", MODEL["model"], "--num-requests", "20", "--rate", "5",
        "--num-instances", "2", "--prefill-instances", "1", "--decode-instances", "1",
        "--decode-autoscale-max", "2", "--decode-autoscale-target", "1", flag, value,
    ])  # fmt: skip
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    assert f"{flag} {value}: no effect on autoscaled P/D pools" in lines[0]
    assert f"--decode-autoscale-{name}" in lines[0] and f"--prefill-autoscale-{name}" in lines[0]


# --- 5. a start below the minimum pays the start-up --------------------------------------


def test_a_start_below_the_min_loads_the_rest_from_t0():
    """HPA raises the count to its min at once, and the new pods load: one replica
    ready at 0, two loading from 0 to 5 s (they used to be ready, free, at 0)."""
    from inference_sim import simulate

    res = simulate(**MODEL, num_requests=200, rate=20, num_instances=1, autoscale_min=3,
                   autoscale_max=3, autoscale_target=1000, replica_startup_s=5,
                   check_invariants=True)  # fmt: skip
    a = res.summary["autoscaling"]
    ev = [(e["t_s"], e["kind"], e.get("by"), e.get("replica")) for e in a["events"]]
    assert ev == [
        (0.0, "scale_up", 2, None),
        (5.0, "ready", None, "instance_1"),
        (5.0, "ready", None, "instance_2"),
    ]
    assert "below the min 3" in a["events"][0]["reason"]
    assert (a["replicas"]["ready"][0], a["replicas"]["loading"][0]) == (1, 2)
    early = [r for r in res.records if r["arrived_at"] < 5.0]
    assert early and {r["handled_by"] for r in early} == {"instance_0"}
    assert a["latency"]["scaling_periods_s"][0] == [0.0, 5.0]


def test_a_pd_pool_started_below_its_min_loads_the_rest():
    from inference_sim import simulate

    res = simulate(**MODEL, num_requests=100, rate=20, num_instances=2, prefill_instances=1,
                   decode_instances=1, decode_autoscale_min=2, decode_autoscale_max=2,
                   decode_autoscale_target=1000, replica_startup_s=3,
                   check_invariants=True)  # fmt: skip
    pool = res.summary["autoscaling"]["pools"]["decode"]
    kinds = [(e["t_s"], e["kind"]) for e in pool["events"]]
    assert kinds == [(0.0, "scale_up"), (3.0, "ready")]
    assert (pool["replicas"]["ready"][0], pool["replicas"]["loading"][0]) == (1, 1)
