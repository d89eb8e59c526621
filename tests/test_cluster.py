"""The cluster layer: event order, latencies, pending requests, snapshot freshness,
behaviour of routing and admission, conservation, anomaly counters, per-SLO output."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference_sim import simulate
from inference_sim.cli.main import cli
from inference_sim.cluster.simulator import ClusterSimulator, SimulationOutcome
from inference_sim.config.policies import build_policies
from inference_sim.core.request import Request, RequestState
from inference_sim.engine.events import NEVER
from inference_sim.instance.config import EngineConfig
from inference_sim.instance.fast_engine import FastInstance
from inference_sim.latency.blackbox import BlackboxLatencyModel
from inference_sim.metrics.anomalies import (
    count_pairs_over_twice,
    hol_blocking_events,
    priority_inversions,
    slo_metrics,
)
from inference_sim.metrics.request_log import RequestLog
from inference_sim.metrics.summary import build_records, build_summary
from inference_sim.policies import (
    AlwaysBusiest,
    LeastLoaded,
    RejectAll,
    RoundRobin,
    TokenBucket,
    Weighted,
)
from inference_sim.policies.routing import PrefixAffinity
from inference_sim.results import stdout_report
from simhelpers import fresh_tokens, make_request

MODEL = "meta-llama/llama-3.1-8b-instruct"


def build(
    n: int = 2,
    *,
    alpha: tuple[float, float, float] = (0.0, 0.0, 0.0),
    beta: tuple[float, float, float] = (1000.0, 1.0, 1.0),
    blocks: int = 20_000,
    max_num_seqs: int = 256,
    wait_hooks: list[Any] | None = None,
    **cluster: Any,
) -> ClusterSimulator:
    cfg = EngineConfig(
        num_gpu_blocks=blocks, block_size=16, max_num_seqs=max_num_seqs, max_num_batched_tokens=2048
    )
    insts = [
        FastInstance(
            i,
            cfg,
            BlackboxLatencyModel(alpha, beta),
            order_wait_queue=wait_hooks[i] if wait_hooks else None,
        )
        for i in range(n)
    ]
    return ClusterSimulator(insts, **cluster)


class Recorder:
    """A decision hook keeping (kind, request index, clock, decision, snapshots)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, int, Any, list[Any]]] = []

    def __call__(self, kind, request, state, decision) -> None:
        snaps = [
            (s.queue_depth, s.batch_size, s.pending_requests, s.kv_utilization)
            for s in state.snapshots
        ]
        self.events.append((kind, request.index, state.clock, decision, snaps))


def ttfts(out: SimulationOutcome) -> dict[int, int]:
    col = np.frombuffer(out.log.ttft, dtype=np.int64)
    idx = np.frombuffer(out.log.index, dtype=np.int64)
    return dict(zip(idx.tolist(), col.tolist(), strict=True))


# --- event ordering ---------------------------------------------------------------------------


def test_simultaneous_decisions_admissions_then_routings_in_push_order():
    rec = Recorder()
    sim = build(3, routing=LeastLoaded(), decision_hook=rec)
    sim.run([make_request(i, 0, 32, 2) for i in range(3)])
    assert [(k, i) for k, i, *_ in rec.events] == [
        ("admission", 0), ("admission", 1), ("admission", 2),
        ("routing", 0), ("routing", 1), ("routing", 2),
    ]  # fmt: skip
    routes = [e for e in rec.events if e[0] == "routing"]
    # each decision sees the previous ones as pending, so least-loaded spreads them
    assert [e[3].target for e in routes] == [0, 1, 2]
    assert [[p for _, _, p, _ in e[4]] for e in routes] == [[0, 0, 0], [1, 0, 0], [1, 1, 0]]


def test_routing_runs_before_an_enqueue_at_the_same_tick():
    # alpha0 = 100 µs: request 0 routed at 0 enters the queue at 100, when request 1 is routed
    rec = Recorder()
    sim = build(2, alpha=(100.0, 0.0, 0.0), routing=LeastLoaded(), decision_hook=rec)
    sim.run(
        [make_request(0, 0, 32, 50), make_request(1, 100, 32, 50), make_request(2, 5000, 32, 5)]
    )
    routes = {e[1]: e for e in rec.events if e[0] == "routing"}
    assert routes[1][4][0] == (0, 0, 1, 0.0)  # still pending at instance 0
    assert routes[1][3].target == 1
    q, b, p, kv = routes[2][4][0]
    assert (q, b, p) == (0, 1, 0) and kv > 0  # long since enqueued and running


def test_cluster_events_and_enqueues_run_before_a_step_at_the_same_tick():
    # both arrive at 0 on one instance: both are queued before the step at 0 and share it
    out = build(1).run([make_request(0, 0, 16, 3), make_request(1, 0, 16, 3)])
    t = ttfts(out)
    assert t[0] == t[1] == 1000 + 32  # one step prefilling 32 tokens


def test_lower_instance_index_steps_first_at_equal_times():
    order = []

    class Spy(FastInstance):
        def step(self, now, t_limit=NEVER, horizon=NEVER):
            order.append((now, self.index))
            return super().step(now, t_limit, horizon)

    cfg = EngineConfig(
        num_gpu_blocks=1000, block_size=16, max_num_seqs=8, max_num_batched_tokens=512
    )
    insts = [Spy(i, cfg, BlackboxLatencyModel((0, 0, 0), (1000, 1, 1))) for i in range(3)]
    ClusterSimulator(insts, routing=RoundRobin()).run([make_request(i, 0, 16, 2) for i in range(3)])
    assert order[:3] == [(0, 0), (0, 1), (0, 2)]


# --- latencies ---------------------------------------------------------------------------------


def _spaced(n: int = 4) -> list[Request]:
    return [make_request(i, i * 1_000_000, 40 + i, 5) for i in range(n)]


def test_single_instance_applies_admission_and_routing_latency_exactly():
    base = build(1).run(_spaced())
    late = build(1, admission_latency=300, routing_latency=700).run(_spaced())
    b, lt = ttfts(base), ttfts(late)
    assert {i: lt[i] - b[i] for i in b} == {i: 1000 for i in b}
    s0, s1 = build_summary(base), build_summary(late)
    assert s1["e2e_mean_ms"] == pytest.approx(s0["e2e_mean_ms"] + 1.0)


def test_single_instance_latencies_through_simulate():
    common = {"model": MODEL, "num_requests": 5, "rate": 1.0}
    s0 = simulate(**common).summary
    s1 = simulate(**common, admission_latency=10_000, routing_latency=2_500).summary
    assert s1["ttft_mean_ms"] == pytest.approx(s0["ttft_mean_ms"] + 12.5)
    assert s1["e2e_mean_ms"] == pytest.approx(s0["e2e_mean_ms"] + 12.5)


def test_reject_all_applies_to_one_instance_too():
    out = build(1, admission=RejectAll()).run(_spaced())
    s = build_summary(out)
    assert (s["rejected_requests"], s["completed_requests"], s["injected_requests"]) == (4, 0, 0)


def test_negative_latency_rejected():
    with pytest.raises(ValueError, match="--routing-latency"):
        build(1, routing_latency=-1)


# --- pending requests and snapshots ---------------------------------------------------------------


def test_pending_counters_return_to_zero_and_count_in_flight_at_a_horizon():
    reqs = [make_request(i, 0, 32, 3) for i in range(4)]
    sim = build(2, alpha=(500.0, 0.0, 0.0))
    sim.run(reqs)
    assert sim.snapshots.pending == [0, 0]
    sim = build(2, alpha=(500.0, 0.0, 0.0), horizon=100)
    out = sim.run([make_request(i, 0, 32, 3) for i in range(4)])
    assert sim.snapshots.pending == [2, 2]
    assert out.in_flight == {0: 2, 1: 2}
    assert build_summary(out)["still_queued"] == 4


def _kv_seen(interval: int) -> list[tuple[int, float]]:
    rec = Recorder()
    sim = build(1, routing=LeastLoaded(), snapshot_refresh_interval=interval, decision_hook=rec)
    sim.run([make_request(i, i * 10_000, 64, 400) for i in range(8)])
    return [(e[2], e[4][0][3]) for e in rec.events if e[0] == "routing"]


def test_kv_signals_are_live_without_a_refresh_interval():
    seen = _kv_seen(0)
    assert seen[0] == (0, 0.0)
    assert all(kv > 0 for _, kv in seen[1:])


def test_kv_signals_refresh_periodically_and_read_zero_before_the_first_refresh():
    seen = dict(_kv_seen(25_000))
    assert seen[0] == seen[10_000] == seen[20_000] == 0.0  # before the first refresh
    assert seen[30_000] > 0.0  # refreshed at the admission decision at 30 000
    assert seen[40_000] == seen[30_000]  # 40 000 - 30 000 < 25 000: stale
    assert seen[50_000] == seen[30_000]
    assert seen[60_000] > seen[30_000]  # refreshed again


def test_stale_kv_signal_sends_everything_to_instance_0():
    # cluster.md 20: kv-utilization only, refresh every 50 ms, all arrivals within 40 ms
    common = {"model": MODEL, "num_instances": 4, "num_requests": 200, "rate": 5000}
    common |= {"routing_policy": "weighted", "routing_scorers": "kv-utilization:1"}
    stale = simulate(**common, snapshot_refresh_interval=50_000)
    assert [s["completed_requests"] for s in stale.instance_summaries] == [200, 0, 0, 0]
    fresh = simulate(**common)
    assert all(s["completed_requests"] > 0 for s in fresh.instance_summaries)


def test_acceptance_distributions_round_robin_and_always_busiest():
    common = {"model": MODEL, "num_instances": 4, "num_requests": 200, "rate": 5000}
    rr = simulate(**common, routing_policy="round-robin")
    assert [s["completed_requests"] for s in rr.instance_summaries] == [50, 50, 50, 50]
    busiest = simulate(**common, routing_policy="always-busiest")
    assert [s["completed_requests"] for s in busiest.instance_summaries] == [200, 0, 0, 0]
    assert busiest.summary["hol_blocking_events"] == 1
    records = busiest.records
    assert {r["handled_by"] for r in records} == {"instance_0"}


# --- behaviour --------------------------------------------------------------------------------


def _prefix_groups(tail: int, groups: int = 6, per_group: int = 16, gap: int = 20_000):
    prefixes = [fresh_tokens(1024) for _ in range(groups)]
    reqs = []
    for k in range(groups * per_group):
        g = (k * 5) % groups  # interleaved groups
        reqs.append(Request(k, k * gap, prefixes[g] + fresh_tokens(tail), fresh_tokens(20)))
    return reqs


@pytest.mark.parametrize(
    ("policy", "tail"),
    [
        (lambda: PrefixAffinity(16), 9),  # same complete blocks, short distinct tails
        (lambda: Weighted(None, block_size=16, num_instances=4), 200),  # default profile
        (
            lambda: Weighted(
                [("prefix-affinity", 3.0), ("load-balance", 1.0)], block_size=16, num_instances=4
            ),
            200,
        ),
    ],
)
def test_prefix_affinity_beats_round_robin_on_shared_prefixes(policy, tail):
    beta = (2000.0, 20.0, 5.0)  # prefill-heavy, so cache hits shorten TTFT
    rr = build_summary(build(4, beta=beta, routing=RoundRobin()).run(_prefix_groups(tail)))
    pa = build_summary(build(4, beta=beta, routing=policy()).run(_prefix_groups(tail)))
    assert pa["prefix_cache_hit_rate"] > rr["prefix_cache_hit_rate"]
    assert pa["ttft_mean_ms"] < rr["ttft_mean_ms"]


def test_prefix_affinity_with_distribution_prefix_tokens_raises_the_hit_rate():
    # One prefix shared by every request: round-robin misses it once per instance, the
    # default weighted profile once. (With a single prefix group, concentrating requests
    # costs as much TTFT as the extra hits save, so only the hit rate is compared here.)
    common = {"model": MODEL, "num_instances": 4, "num_requests": 120, "rate": 20}
    common |= {"prefix_tokens": 1024, "prompt_tokens": 64, "prompt_tokens_stdev": 16}
    common |= {"output_tokens": 32, "output_tokens_stdev": 8}
    rr = simulate(**common).summary
    pa = simulate(**common, routing_policy="weighted").summary
    assert pa["prefix_cache_hit_rate"] > rr["prefix_cache_hit_rate"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_least_loaded_p99_ttft_never_worse_than_always_busiest(seed):
    def reqs() -> list[Request]:
        rng = np.random.default_rng(seed)
        arrivals = np.cumsum(rng.exponential(3000, 150))
        prompts = rng.integers(16, 600, 150)
        outputs = rng.integers(2, 120, 150)
        return [
            make_request(i, int(t), int(p), int(o))
            for i, (t, p, o) in enumerate(zip(arrivals, prompts, outputs, strict=True))
        ]

    ll = build_summary(build(3, max_num_seqs=8, routing=LeastLoaded()).run(reqs()))
    ab = build_summary(build(3, max_num_seqs=8, routing=AlwaysBusiest()).run(reqs()))
    assert ll["ttft_p99_ms"] <= ab["ttft_p99_ms"]
    assert ll["completed_requests"] == ab["completed_requests"] == 150


def test_token_bucket_rejects_more_as_refill_falls():
    rejected = []
    for refill in (1e6, 20_000, 5_000, 1_000, 100):
        reqs = [make_request(i, i * 10_000, 200, 4) for i in range(100)]  # 20k tokens/s offered
        out = build(2, admission=TokenBucket(2_000, refill)).run(reqs)
        rejected.append(out.rejected)
    assert rejected == sorted(rejected)
    assert rejected[0] == 0 and rejected[-1] > rejected[2] > 0


# --- conservation and determinism (hypothesis) -------------------------------------------------

POLICY_OPTIONS = st.fixed_dictionaries(
    {
        "admission_policy": st.sampled_from(["always-admit", "token-bucket", "reject-all"]),
        "token_bucket_capacity": st.sampled_from([300.0, 2_000.0, 1e6]),
        "token_bucket_refill_rate": st.sampled_from([100.0, 10_000.0]),
        "routing_policy": st.sampled_from(
            [
                "round-robin",
                "least-loaded",
                "prefix-affinity",
                "always-busiest",
                "weighted",
                "vllm-dp",
            ]
        ),
        "routing_scorers": st.sampled_from(
            [
                "",
                "queue-depth:1",
                "kv-utilization:2,load-balance:1",
                "prefix-affinity:3,queue-depth:1",
            ]
        ),
        "priority_policy": st.sampled_from(["constant", "slo-based", "inverted-slo"]),
        "scheduler": st.sampled_from(["fcfs", "priority-fcfs", "sjf", "reverse-priority"]),
        "snapshot_refresh_interval": st.sampled_from([0, 5_000]),
        "seed": st.just(0),
    }
)


@st.composite
def cluster_runs(draw):
    options = draw(POLICY_OPTIONS)
    n = draw(st.integers(1, 3))
    count = draw(st.integers(1, 14))
    shared = fresh_tokens(48)
    specs = []
    t = 0
    for _ in range(count):
        t += draw(st.sampled_from([0, 0, 500, 3_000, 20_000]))
        prompt = draw(st.integers(1, 80))
        specs.append(
            (
                t,
                prompt,
                draw(st.booleans()),
                draw(st.integers(1, 12)),
                draw(st.sampled_from(["", "gold", "batch"])),
            )
        )
    cluster = {
        "admission_latency": draw(st.sampled_from([0, 0, 250])),
        "routing_latency": draw(st.sampled_from([0, 0, 400])),
        "horizon": draw(st.sampled_from([NEVER, NEVER, 30_000])),
    }
    engine = {
        "blocks": draw(st.sampled_from([6, 40, 5_000])),
        "max_num_seqs": draw(st.sampled_from([1, 3, 64])),
    }
    return options, n, shared, specs, cluster, engine


def _run(options, n, shared, specs, cluster, engine):
    reqs = []
    for i, (t, prompt, share, out, slo) in enumerate(specs):
        tokens = (shared + list(range(prompt))) if share else fresh_tokens(prompt)
        reqs.append(Request(i, t, tokens, list(range(out)), slo_class=slo))
    ps = build_policies(dict(options), n, 16)
    sim = build(
        n,
        alpha=(50.0, 1.0, 10.0),
        wait_hooks=ps.wait_queue_hooks,
        admission=ps.admission,
        routing=ps.routing,
        snapshot_refresh_interval=ps.snapshot_refresh_interval,
        priority_policy=ps.priority_policy,
        check_invariants=True,
        **cluster,
        **engine,
    )
    out = sim.run(reqs)
    summary = build_summary(out)
    per_instance = [build_summary(out, [inst], instance_id=inst.name) for inst in out.instances]
    return out, summary, per_instance, build_records(out)


def _inversions_by_definition(out: SimulationOutcome) -> int:
    """Priority inversions counted pair by pair: two finished requests of one instance and
    SLO class, the earlier arrival (then the lower index) taking more than twice as long
    end to end as the later one; none under the constant priority policy."""
    if out.priority_policy in ("", "constant"):
        return 0
    log = out.log
    groups: dict[tuple[int, str], list[int]] = {}
    for row in range(len(log.finished)):
        if log.finished[row] == 1:
            key = (log.instance[row], log.slo_class.get(row) or "default")
            groups.setdefault(key, []).append(row)
    total = 0
    for rows in groups.values():
        rows.sort(key=lambda r: (log.arrival[r], log.index[r]))
        total += sum(log.e2e[a] > 2 * log.e2e[b] for i, a in enumerate(rows) for b in rows[i + 1 :])
    return total


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster_runs())
def test_conservation_and_determinism_across_cluster_configs(run):
    out, s, per_instance, records = _run(*run)
    options, n, _shared, specs, cluster, _engine = run
    injected = s["injected_requests"]
    assert (
        injected
        == s["completed_requests"]
        + s["still_queued"]
        + s["still_running"]
        + s["dropped_unservable"]
    )
    assert out.generated == injected + s["rejected_requests"] + s["rejected_too_long"]
    if cluster["horizon"] == NEVER:
        assert out.generated == len(specs)
        assert s["still_queued"] == s["still_running"] == 0
    # admitted-or-arriving but not yet routed at the horizon: counted as queued by the
    # cluster block only (no instance owns them yet)
    unrouted = out.in_flight.get(-1, 0)
    if options["admission_policy"] == "reject-all":
        assert injected == unrouted
    assert sum(p["injected_requests"] for p in per_instance) + unrouted == injected
    assert sum(p["completed_requests"] for p in per_instance) == s["completed_requests"]
    assert s["hol_blocking_events"] <= max(0, n - 1)
    assert s["priority_inversions"] == _inversions_by_definition(out)
    if options["priority_policy"] == "constant":
        assert s["priority_inversions"] == 0
    _, s2, per2, records2 = _run(*run)
    assert (s2, per2, records2) == (s, per_instance, records)


# --- anomaly counters and per-SLO metrics ---------------------------------------------------------


def _finished(index: int, arrival: int, e2e: int, instance: int = 0, slo: str = "") -> Request:
    r = Request(index, arrival, [1, 2], [3], slo_class=slo)
    r.state = RequestState.FINISHED
    r.first_token_time = arrival + e2e
    r.itl_sum = 0
    r.handled_by = instance
    return r


def test_priority_inversions_per_instance_and_class():
    log = RequestLog()
    # instance 0, default class, arrival order e2e 100, 40, 60, 10: pairs with e_i > 2 e_j
    for k, e in enumerate([100, 40, 60, 10]):
        log.add(_finished(k, k * 10, e))
    # the same values on another class and another instance count separately
    log.add(_finished(4, 0, 100, slo="gold"))
    log.add(_finished(5, 5, 10, slo="gold"))
    log.add(_finished(6, 0, 100, instance=1))
    log.add(_finished(7, 1, 10, instance=0, slo="other"))
    # expected: (100,40),(100,10),(40,10),(60,10) = 4; gold: 1; instance 1 alone: 0; other: 0
    assert priority_inversions(log, "slo-based") == 5
    assert priority_inversions(log, "constant") == 0
    assert priority_inversions(log, "") == 0


def test_priority_inversions_ties_in_arrival_use_generation_order():
    log = RequestLog()
    log.add(_finished(1, 0, 10))
    log.add(_finished(0, 0, 100))  # same arrival, generated first: comes first
    assert priority_inversions(log, "inverted-slo") == 1


def test_count_pairs_over_twice_matches_brute_force():
    rng = np.random.default_rng(5)
    for n in (0, 1, 2, 7, 64, 65, 300):
        v = rng.integers(0, 40, n)
        brute = sum(1 for i in range(n) for j in range(i + 1, n) if v[i] > 2 * v[j])
        assert count_pairs_over_twice(v) == brute


class _Inst:
    def __init__(self, steps: int) -> None:
        self.stats = type("S", (), {"step_count": steps})()


def test_hol_blocking_counts_instances_far_above_the_mean():
    insts = [_Inst(10), _Inst(10), _Inst(10), _Inst(0)]
    assert hol_blocking_events(insts, [300, 0, 10, 0]) == 1  # avgs 30, 0, 1, 0; mean 7.75
    assert hol_blocking_events(insts, [0, 0, 0, 0]) == 0
    assert hol_blocking_events(insts[:1], [300]) == 0  # one instance: never


def test_per_slo_metrics_and_stdout_block():
    log = RequestLog()
    log.add(_finished(0, 0, 1000, slo="gold"))
    log.add(_finished(1, 0, 3000, slo="gold"))
    log.add(_finished(2, 0, 2000))
    unfinished = Request(3, 0, [1], [2, 3], slo_class="batch")
    unfinished.first_token_time = 500
    unfinished.handled_by = 0
    log.add(unfinished)
    m = slo_metrics(log, log.rows_for(None))
    assert list(m) == ["batch", "default", "gold"]
    assert m["gold"]["ttft_mean_ms"] == 2.0 and m["gold"]["e2e_count"] == 2
    assert m["batch"]["ttft_count"] == 1 and m["batch"]["e2e_count"] == 0
    text = stdout_report({"slo_metrics": m}, [])
    assert "=== Per-SLO Metrics ===\n  batch:\n" in text
    assert "  batch:\n    TTFT (µs): mean=500.00 p99=500.00 (n=1)\n" in text
    assert "    E2E (µs):  mean=0.00 p99=0.00 (n=0)\n" in text
    assert "  gold:\n    TTFT (µs): mean=2000.00 p99=2980.00 (n=2)\n" in text
    one = RequestLog()
    one.add(_finished(0, 0, 1000, slo="gold"))
    assert slo_metrics(one, one.rows_for(None)) == {}


def test_summary_carries_anomaly_keys_at_the_end_and_slo_metrics_only_in_files():
    reqs = [make_request(i, i * 1000, 32, 4) for i in range(6)]
    for r in reqs:
        r.slo_class = "gold" if r.index % 2 else ""
    s = build_summary(build(2, priority_policy="slo-based").run(reqs))
    keys = list(s)
    assert keys[-3:] == ["priority_inversions", "hol_blocking_events", "slo_metrics"]
    assert set(s["slo_metrics"]) == {"default", "gold"}
    report = stdout_report(s, [])
    assert '"slo_metrics"' not in report
    assert "=== Per-SLO Metrics ===" in report


# --- command line -------------------------------------------------------------------------------


def _cli(*args: str):
    return CliRunner().invoke(cli, ["run", "--model", MODEL, "--num-requests", "10", *args])


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (
            ["--routing-policy", "fastest"],
            [
                "--routing-policy",
                "always-busiest, least-loaded, prefix-affinity, round-robin, vllm-dp, weighted",
            ],
        ),
        (
            ["--admission-policy", "x"],
            ["--admission-policy", "always-admit, reject-all, token-bucket"],
        ),
        (["--priority-policy", "x"], ["--priority-policy", "constant, inverted-slo, slo-based"]),
        (["--scheduler", "x"], ["--scheduler", "fcfs, priority-fcfs, reverse-priority, sjf"]),
        (
            ["--routing-policy", "weighted", "--routing-scorers", "speed:1"],
            ["--routing-scorers", "kv-utilization, load-balance, prefix-affinity, queue-depth"],
        ),
        (["--snapshot-refresh-interval", "-5"], ["--snapshot-refresh-interval must be >= 0"]),
        (
            ["--admission-policy", "token-bucket", "--token-bucket-capacity", "0"],
            ["--token-bucket-capacity"],
        ),
        (["--policy-config", "/no/such/bundle.yaml"], ["--policy-config", "cannot read"]),
    ],
)
def test_cli_bad_policy_input_exits_2_listing_valid_names(args, needles):
    result = _cli(*args)
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("Error: ")
    for needle in needles:
        assert needle in line


def test_cli_prints_per_instance_blocks_and_anomaly_counters():
    result = _cli("--num-instances", "3", "--routing-policy", "always-busiest", "--rate", "200")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("=== Simulation Metrics ===") == 4
    assert '"instance_id": "instance_2"' in result.stdout
    assert (
        "=== Anomaly Counters ===\nPriority Inversions: 0\nHOL Blocking Events: 1\n"
        in result.stdout
    )


def test_cli_warns_when_scorers_are_given_to_a_non_weighted_policy():
    result = _cli("--routing-scorers", "queue-depth:1", "--log", "warn")
    assert result.exit_code == 0
    assert "--routing-scorers has no effect" in result.stderr


def test_a_simulator_runs_once():
    """Cluster spec 3: run() may be called once. Instances and policies keep their state
    (a token bucket's level, round-robin's counter), so a second run would not start
    from t = 0; it is refused with a message saying what to do instead."""
    sim = build(2)
    sim.run([Request(0, 0, list(range(32)), list(range(4)))])
    with pytest.raises(RuntimeError, match="runs once"):
        sim.run([Request(0, 0, list(range(32)), list(range(4)))])


def test_warns_when_nothing_completed_before_the_horizon(sim_log):
    """Cluster spec 4.2's warning: the horizon ends the run before any request finishes."""
    sim = build(2, horizon=500)
    out = sim.run([Request(i, 0, list(range(64)), list(range(50))) for i in range(4)])
    assert not any(inst.stats.completed for inst in out.instances)
    assert "no requests completed — horizon may be too short" in sim_log.text
    sim_log.clear()
    build(2).run([Request(0, 0, list(range(32)), list(range(4)))])
    assert "no requests completed" not in sim_log.text
