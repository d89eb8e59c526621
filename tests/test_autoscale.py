"""Autoscaling (docs/autoscaling.md): the HPA controller, load delay, drain, cost."""

from __future__ import annotations

import json

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


def _sim(n_max=2, *, initial=1, metric="in-flight", target=1.0, interval=1000, startup=5000,
         down_window=0, lo=1, price=2.0):  # fmt: skip
    insts = [
        make_instance(
            i,
            EngineConfig(num_gpu_blocks=2000, block_size=16),
            BlackboxLatencyModel((0, 0, 0), (1000.0, 10.0, 1.0)),
        )
        for i in range(n_max)
    ]
    cfg = AutoscaleConfig(lo, n_max, metric, target, interval, startup, 0, down_window, 1, price)
    return AutoscaleClusterSimulator(
        insts, autoscale=cfg, initial=initial, routing=LeastLoaded(), check_invariants=True
    )


def test_new_replica_is_routable_exactly_after_its_load_delay():
    # Four long requests at t=0 on one replica: at the 1000 µs decision in-flight = 4 per
    # replica against a target of 1 -> ceil(1 * 4) = 4, clamped to max 2: one replica
    # loads from 1000 to 6000. A request at 5999 can only go to instance 0; one at 6001
    # goes to the new, empty instance 1.
    sim = _sim()
    reqs = [make_request(i, 0, 32, 400) for i in range(4)]
    early, late = make_request(4, 5999, 32, 2), make_request(5, 6001, 32, 2)
    sim.run([*reqs, early, late])
    assert early.handled_by == 0 and late.handled_by == 1
    ev = sim.rec.events
    assert ev[0]["kind"] == "scale_up" and ev[0]["t_s"] == 0.001 and ev[0]["by"] == 1
    assert ev[1] == {"t_s": 0.006, "kind": "ready", "replica": "instance_1"}
    assert "recommends 2" in ev[0]["reason"]
    assert sim.scaling_periods() == [(1000, 6000)]
    lat = sim.autoscaling_summary()["latency"]
    # requests arriving in [1000, 6000) (only `early`) against the rest
    assert lat["during_scaling"]["completed_requests"] == 1
    assert lat["steady"]["completed_requests"] == 5
    assert lat["during_scaling"]["ttft_p90_ms"] == pytest.approx(
        (early.first_token_time - early.arrival_time) / 1000
    )


def test_scale_down_drains_then_leaves_and_gpu_time_counts_loading():
    sim = _sim(initial=2, target=100.0, interval=1000)
    reqs = [make_request(0, 0, 32, 50), make_request(1, 0, 32, 50)]
    out = sim.run(reqs)
    assert all(r.state == RequestState.FINISHED for r in reqs)
    kinds = [e["kind"] for e in sim.rec.events]
    assert kinds[0] == "scale_down"
    # the drained replica finished its request first, then left
    assert "left" in kinds
    assert {r.handled_by for r in reqs} == {0, 1}
    s = sim.autoscaling_summary()
    # replica time: two replicas until the first decision, then one until the end
    left = next(e for e in sim.rec.events if e["kind"] == "left")["t_s"]
    expect_us = round(left * 1e6) + out.end_time
    assert sim.rec.replica_us == expect_us
    assert s["gpu_hours"] == pytest.approx(expect_us / 3.6e9)
    assert s["cost"] == pytest.approx(s["gpu_hours"] * 2.0)


def test_scale_down_window_holds_the_highest_recent_recommendation():
    # With a long scale-down window, the high recommendation of the burst keeps the
    # replicas although the load is gone.
    sim = _sim(initial=2, target=1.0, interval=1000, down_window=10**9)
    reqs = [make_request(i, 0, 32, 300) for i in range(4)]
    sim.run(reqs)
    assert not any(e["kind"] == "scale_down" for e in sim.rec.events)


def test_no_scale_down_below_the_start_before_the_window_passes():
    """Like Kubernetes' HPA (its first recommendation is the current count), a cluster that
    starts with more replicas than it needs keeps them for the scale-down window."""
    for window in (0, 5_000, 20_000):
        sim = _sim(n_max=3, initial=3, target=4.0, interval=1000, down_window=window)
        sim.run([make_request(i, 0, 32, 100) for i in range(3)])
        downs = [round(e["t_s"] * 1e6) for e in sim.rec.events if e["kind"] == "scale_down"]
        assert downs, window  # one request in flight per replica: the load does not need 3
        # HPA keeps recommendations strictly inside the window: the seed (t = 0) leaves it
        # at t = window, the first decision then may scale down.
        assert min(downs) == max(window, 1000)  # decisions every 1000 µs, the first at 1000


def test_scale_up_follows_hpa_default_rate_limit():
    """HPA's default behavior.scaleUp: per 15 s period at most +4 replicas or +100 %,
    whichever is more (selectPolicy Max): 1 -> 5 -> 10 -> 16, not 1 -> 16 at once."""
    from inference_sim.cluster.scaler import SCALE_UP_PERIOD_US

    period = SCALE_UP_PERIOD_US
    insts = [
        make_instance(i, EngineConfig(num_gpu_blocks=4000, block_size=16),
                      BlackboxLatencyModel((0, 0, 0), (1000.0, 10.0, 1.0)))
        for i in range(16)
    ]  # fmt: skip
    cfg = AutoscaleConfig(1, 16, "in-flight", 1.0, period, 10**9, 0, 0, 1, 1.0)
    sim = AutoscaleClusterSimulator(insts, autoscale=cfg, initial=1, routing=LeastLoaded())
    sim.run([make_request(i, 0, 32, 20_000) for i in range(64)])
    ups = [(round(e["t_s"] * 1e6), e["by"]) for e in sim.rec.events if e["kind"] == "scale_up"]
    assert ups[:3] == [(period, 4), (2 * period, 5), (3 * period, 6)], ups


def test_ttft_metric_reads_first_tokens_not_only_finished_requests():
    """vLLM records TTFT at the first token: a decision sees the requests still running,
    and with no first token since the last decision there is no metric (no decision)."""
    insts = [
        make_instance(i, EngineConfig(num_gpu_blocks=4000, block_size=16),
                      BlackboxLatencyModel((0, 0, 0), (1000.0, 10.0, 1.0)))
        for i in range(2)
    ]  # fmt: skip
    cfg = AutoscaleConfig(1, 2, "ttft-p90", 0.001, 50_000, 10**9, 0, 0, 1, 1.0)
    sim = AutoscaleClusterSimulator(insts, autoscale=cfg, initial=1, routing=LeastLoaded())
    # Long outputs: nothing finishes before the first decision at 50 ms.
    sim.run([make_request(i, 0, 32, 500) for i in range(4)])
    first = next(e for e in sim.rec.events if e["kind"] == "scale_up")
    assert round(first["t_s"] * 1e6) == 50_000  # was: only after the first completions
    assert "ttft-p90=" in first["reason"]


@settings(max_examples=20, deadline=None)
@given(
    n_max=st.integers(2, 4),
    initial=st.integers(1, 4),
    gaps=st.lists(st.integers(0, 4000), min_size=1, max_size=30),
    metric=st.sampled_from(["kv-utilization", "queue-depth", "in-flight", "ttft-p90"]),
    target=st.floats(0.05, 5.0),
)
def test_properties_bounds_and_every_request_finishes(n_max, initial, gaps, metric, target):
    sim = _sim(n_max, initial=initial, metric=metric, target=target, startup=3000)
    t, reqs = 0, []
    for i, g in enumerate(gaps):
        t += g
        reqs.append(make_request(i, t, 40, 30))
    out = sim.run(reqs)  # --check-invariants: replica counts within [min, max]
    assert all(r.state == RequestState.FINISHED for r in reqs)
    assert sum(i.stats.completed for i in out.instances) == len(reqs)
    rec = sim.rec
    for r, lo, d in zip(rec.ready, rec.loading, rec.draining, strict=True):
        assert 1 <= r + lo <= n_max and r >= 1 and d >= 0


MODEL = ("--model", "meta-llama/llama-3.1-8b-instruct", "--rate", "30", "--num-requests", "600")


def _blis(*args):
    from click.testing import CliRunner

    from inference_sim.cli.main import cli

    return CliRunner().invoke(cli, ["run", *MODEL, *args])


def test_results_file_has_autoscaling_section(tmp_path):
    path = tmp_path / "r.json"
    res = _blis(
        "--autoscale-max", "3", "--autoscale-target", "4", "--autoscale-interval", "2",
        "--replica-startup-s", "5", "--results-path", str(path), "--check-invariants",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    a = json.loads(path.read_text())["autoscaling"]
    assert a["replica_startup_s"] == 5.0 and a["gpu_hour_price"] == 3.0  # H100 default
    assert a["events"][0]["kind"] == "scale_up"
    ready_at = [e["t_s"] for e in a["events"] if e["kind"] == "ready"]
    assert ready_at and ready_at[0] == pytest.approx(a["events"][0]["t_s"] + 5.0)
    assert len(a["replicas"]["t_s"]) == len(a["replicas"]["ready"]) >= 2
    assert a["cost"] == pytest.approx(a["gpu_hours"] * 3.0)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--autoscale-max", "2", "--autoscale-min", "3", "--autoscale-target", "1"),
         "--autoscale-min 3 > --autoscale-max 2"),
        (("--autoscale-max", "2"), "--autoscale-target is required with --autoscale-max"),
        (("--autoscale-max", "2", "--autoscale-target", "16", "--autoscale-metric",
          "kv-utilization"), "fraction of the KV cache in use (0-1)"),
        (("--autoscale-max", "2", "--autoscale-target", "1", "--autoscale-metric", "cpu"),
         "--autoscale-metric"),
        (("--autoscale-target", "3",), "needs autoscaling"),
        (("--autoscale-max", "2", "--autoscale-target", "1", "--num-instances", "3"),
         "--num-instances 3 > --autoscale-max 2"),
        (("--autoscale-max", "2", "--autoscale-target", "1", "--replica-startup-s", "-5"),
         "--replica-startup-s"),
    ],
)  # fmt: skip
def test_bad_autoscale_inputs_one_line_exit_2(args, needle):
    res = _blis(*args)
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.output


def test_a_start_below_the_min_warns_and_loads_up_to_the_min(tmp_path):
    path = tmp_path / "r.json"
    res = _blis("--autoscale-max", "3", "--autoscale-min", "2", "--autoscale-target", "5",
                "--num-instances", "1", "--results-path", str(path))  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (
        "--num-instances 1 is below --autoscale-min 2: starting with 1 ready and 1 loading "
        "from t=0" in res.stderr
    )
    replicas = json.loads(path.read_text())["autoscaling"]["replicas"]
    assert (replicas["ready"][0], replicas["loading"][0]) == (1, 1)


def test_html_report_charts_replicas_and_events(tmp_path):
    from inference_sim import simulate
    from inference_sim.report.html import build_report

    res = simulate(
        model="meta-llama/llama-3.1-8b-instruct", rate=30, num_requests=400, autoscale_max=3,
        autoscale_target=4, autoscale_interval=2, replica_startup_s=5,
    )  # fmt: skip
    page = build_report(res)
    assert 'id="autoscaling-replicas"' in page
    assert "scale_up" in page and "GPU-hours" in page
    during = res.summary["autoscaling"]["latency"]["during_scaling"]
    assert "during scaling" in page
    assert f"<td>{during['ttft_p90_ms']:.1f}</td>" in page
    pd = simulate(
        model="meta-llama/llama-3.1-8b-instruct", num_requests=50, num_instances=3,
        prefill_instances=1, decode_instances=2,
    )  # fmt: skip
    assert "Prefill/decode disaggregation" in build_report(pd)


def test_every_bundled_gpu_has_a_price_and_aliases_share_it():
    """docs/autoscaling.md lists a GPU-hour price for each bundled GPU; an alias
    (A100-80 for A100-SXM) is priced as its GPU, not as an unknown one."""
    from inference_sim import simulate
    from inference_sim.catalog.loader import load_catalog
    from inference_sim.config.autoscale import GPU_HOUR_PRICE

    assert set(load_catalog().gpu_names()) <= set(GPU_HOUR_PRICE)
    res = simulate(model="meta-llama/llama-3.1-8b-instruct", hardware="A100-80", tp=1,
                   num_requests=10, autoscale_max=2, autoscale_target=4)  # fmt: skip
    assert res.summary["autoscaling"]["gpu_hour_price"] == GPU_HOUR_PRICE["A100-SXM"]


def _scaler_with(ready: int, loading: int, metric: str = "in-flight", target: float = 16.0):
    from inference_sim.cluster.scaler import LOADING, READY

    sim = _sim(n_max=ready + loading + 1, initial=1, metric=metric, target=target)
    sc = sim.scaler
    for i in sc.members:
        sc.state[i] = READY if i < ready else LOADING if i < ready + loading else 0
    sc._refresh_lists()
    return sc


@pytest.mark.parametrize(
    ("ready", "loading", "value", "expected"),
    [
        (2, 0, 35.0, 5),  # ceil(2 x 35 / 16)
        (2, 2, 35.0, 4),  # loaders counted at 0: 70 / 4 / 16 = 1.09, within tolerance
        (1, 2, 20.0, 3),  # 20 / 3 / 16 < 1: the direction turns, the count stays
        (2, 1, 8.0, 2),  # scale down, loaders at the target: (16 + 16) / 3 / 16 -> ceil(2)
        (2, 1, 40.0, 5),  # 80 / 3 / 16 = 1.67 over all 3: ceil(3 x 1.67) = 5
    ],
)
def test_hpa_counts_loading_replicas_as_hpa_counts_pods_without_metrics(
    ready, loading, value, expected
):
    """replica_calculator.go: a pod without a metric (still loading) counts as 0 for a
    scale up and at the target for a scale down; no change if that turns the direction
    or lands within the 10 % tolerance."""
    sc = _scaler_with(ready, loading)
    got = sc._recommendation(value, ready + loading, loading)
    assert got == expected


def test_a_pool_metric_ignores_loading_replicas_and_no_reading_means_no_decision():
    sc = _scaler_with(2, 2, metric="ttft-p90", target=100.0)
    assert sc._recommendation(300.0, 4, 2) == 6  # ceil(2 ready x 3): one value for the pool
    assert _scaler_with(0, 2)._recommendation(5.0, 2, 2) is None  # nobody reports


def test_scale_down_removes_the_replica_ready_for_the_shortest_time():
    """Kubernetes' ReplicaSet deletes the newest ready pod, whatever it holds (the
    simulator used to drain the least busy one, which flattered GPU-hours)."""
    sc = _scaler_with(3, 0)
    sc.since.update({0: 0, 1: 9_000, 2: 4_000})
    sc._scale_down(10_000, 1, "test")
    assert sc.ready == [0, 2]  # instance 1 (ready since 9 ms) drained: empty, it left
    assert sc.rec.events[-1] == {"t_s": 0.01, "kind": "left", "replica": "instance_1"}


# --- review 22: replicas that leave, restart, and controller inputs ---------------------


def _trace(tmp_path, rows, header="arrived_at,num_prefill_tokens,num_decode_tokens"):
    path = tmp_path / "t.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return str(path)


def test_a_draining_replica_whose_last_request_is_dropped_leaves(tmp_path):
    """The request routed to the draining replica is too long for its cache and dropped
    at enqueue: nothing is left there, so it leaves at once (it used to stay forever,
    holding a slot of --autoscale-max)."""
    from inference_sim import simulate

    res = simulate(
        model="meta-llama/llama-3.1-8b-instruct", hardware="H100", tp=1, workload="traces",
        workload_traces_filepath=_trace(tmp_path, ["0.0,100,20", "15.0,3000,20", "40.0,100,20"]),
        num_instances=2, routing_policy="round-robin", autoscale_max=2, autoscale_target=16,
        autoscale_down_window=0, total_kv_blocks=100, check_invariants=True,
    )  # fmt: skip
    events = res.summary["autoscaling"]["events"]
    kinds = [e["kind"] for e in events]
    assert kinds == ["scale_down", "left"]
    assert events[1]["t_s"] == pytest.approx(15.0, abs=0.01)
    assert res.summary["dropped_unservable"] == 1


def test_a_replica_started_again_has_empty_caches_and_routers_forget_it(tmp_path):
    """A replica that left and comes back is a new vLLM process: no prefix cache (its
    first shared-prefix prompt is computed whole) and no router memory of the old one."""
    from inference_sim import simulate

    rows = [f"{t / 2:.3f},1100,50,g,1000" for t in range(20)]  # 0 - 9.5 s, one prefix
    rows += [f"{50 + t / 10:.3f},1100,300,g,1000" for t in range(200)]  # 50 - 70 s
    res = simulate(
        model="meta-llama/llama-3.1-8b-instruct", hardware="H100", tp=1, workload="traces",
        workload_traces_filepath=_trace(
            tmp_path, rows, "arrived_at,num_prefill_tokens,num_decode_tokens,prefix_group,"
            "prefix_len"),
        num_instances=2, routing_policy="round-robin", autoscale_max=2, autoscale_target=4,
        autoscale_interval=5, autoscale_down_window=0, replica_startup_s=5,
        check_invariants=True,
    )  # fmt: skip
    kinds = [e["kind"] for e in res.summary["autoscaling"]["events"]]
    assert "left" in kinds and "ready" in kinds[kinds.index("left") :]
    ready_at = next(e["t_s"] for e in res.summary["autoscaling"]["events"] if e["kind"] == "ready")
    back = sorted(
        (r for r in res.records if r["handled_by"] == "instance_1" and r["arrived_at"] >= ready_at),
        key=lambda r: r["arrived_at"],
    )
    cold = min(r["ttft_ms"] for r in res.records if r["arrived_at"] == 0.0)
    assert back and back[0]["ttft_ms"] >= cold  # computed whole, as the very first prompt


def test_routers_forget_a_replica_that_left():
    from inference_sim.policies.prefix import PrefixCacheIndex
    from inference_sim.policies.routing import PrefixAffinity, Weighted
    from inference_sim.policies.scorers import AdapterAffinityScorer

    index = PrefixCacheIndex(3)
    index.record([1, 2, 3], 1)
    index.record([1, 2], 2)
    index.forget(1)
    assert index.match_lengths([1, 2, 3], 3) == [0, 0, 2]
    affinity = PrefixAffinity()
    affinity.owner = {"a": 1, "b": 2}
    affinity.forget(1)
    assert affinity.owner == {"b": 2}
    adapters = AdapterAffinityScorer(3, max_loras=2)
    adapters.recent = {1: {"x": None}, 2: {"y": None}}
    weighted = Weighted([(adapters, 1.0)])
    weighted.forget(1)
    assert adapters.recent == {2: {"y": None}}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--autoscale-max", "3", "--autoscale-target", "4", "--autoscale-interval", "1e-7"),
         "--autoscale-interval must be a number of seconds >= 0.000001"),
        (("--autoscale-max", "3", "--autoscale-target", "4", "--autoscale-min", "0"),
         "--autoscale-min 0: scale to zero is not modelled"),
    ],
)  # fmt: skip
def test_controller_inputs_it_cannot_honour_are_refused(args, needle):
    res = _blis(*args)
    assert res.exit_code == 2 and needle in res.output, res.output


def test_cluster_figures_count_only_replicas_that_existed():
    """Three of four replicas never start: the cluster's KV capacity, its KV utilisation
    over time and the HOL-blocking comparison leave them out (they diluted utilisation
    4x and made the one busy replica look like head-of-line blocking)."""
    from inference_sim import simulate

    res = simulate(
        model="meta-llama/llama-3.1-8b-instruct", hardware="H100", tp=1, num_requests=300,
        rate=30, max_num_seqs=8, num_instances=1, autoscale_max=4, autoscale_target=1000,
        timeseries_interval=500_000, check_invariants=True,
    )  # fmt: skip
    s = res.summary
    assert s["autoscaling"]["peak_replicas"] == 1
    assert res.instance_summaries == []  # one replica existed: no per-instance blocks
    one = simulate(model="meta-llama/llama-3.1-8b-instruct", hardware="H100", tp=1,
                   num_requests=1)  # fmt: skip
    assert s["total_kv_blocks"] == one.summary["total_kv_blocks"]
    assert s["hol_blocking_events"] == 0
    cols = res.timeseries_table["columns"]
    rows = list(zip(cols["time_s"], cols["instance"], cols["kv_utilization"], strict=True))
    cluster = {t: u for t, name, u in rows if name == "cluster"}
    first = {t: u for t, name, u in rows if name == "instance_0"}
    assert cluster == first and max(cluster.values()) > 0


def test_a_fixed_size_autoscaled_pool_refreshes_snapshots_as_the_plain_cluster():
    """Pools share the cluster's KV snapshot cache and refresh clock (admission decisions
    advance it too): an autoscaled cluster that never scales routes as the plain one."""
    from inference_sim import simulate

    common = dict(
        model="meta-llama/llama-3.1-8b-instruct", num_instances=3, num_requests=400,
        rate=60, routing_policy="weighted", routing_scorers="kv-utilization:1",
        snapshot_refresh_interval=100_000, routing_latency=70_000,
    )  # fmt: skip
    plain = simulate(**common)
    scaled = simulate(**common, autoscale_max=3, autoscale_min=3, autoscale_target=100)
    assert scaled.records == plain.records


def test_a_restarted_replica_with_a_cpu_tier_keeps_kv_conservation():
    """A replica that comes back loses its CPU tier's entries (a new server): the tier's
    counters account for them, so --check-invariants holds (it stopped the run)."""
    from inference_sim import simulate

    res = simulate(
        model="meta-llama/llama-3.1-8b-instruct", total_kv_blocks=100, kv_cpu_blocks=10,
        autoscale_max=7, autoscale_target=10, autoscale_down_window=1, check_invariants=True,
    )  # fmt: skip
    kinds = [e["kind"] for e in res.summary["autoscaling"]["events"]]
    assert "left" in kinds and kinds.count("scale_up") >= 2
    assert res.summary["completed_requests"] + res.summary["dropped_unservable"] == 100
