"""Unit tests of every built-in policy and scorer on hand-made snapshots (cluster spec 7-11)."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_sim.core.request import Request
from inference_sim.policies import (
    ADMISSION,
    PRIORITY,
    REGISTRIES,
    ROUTING,
    SCHEDULERS,
    SCORERS,
    AlwaysAdmit,
    AlwaysBusiest,
    ConstantPriority,
    InvertedSLOPriority,
    KVUtilizationScorer,
    LeastLoaded,
    LoadBalanceScorer,
    PolicyError,
    PrefixAffinity,
    PrefixAffinityScorer,
    PriorityFCFS,
    QueueDepthScorer,
    RejectAll,
    ReversePriority,
    RoundRobin,
    RouterState,
    RoutingDecision,
    RoutingSnapshot,
    ShortestJobFirst,
    SLOBasedPriority,
    TokenBucket,
    VllmDataParallel,
    Weighted,
    make_wait_queue_hook,
    parse_scorers,
)
from inference_sim.policies.base import target_index
from inference_sim.policies.prefix import (
    PrefixCacheIndex,
    block_hashes,
    hash_tokens,
    router_block_hashes,
)
from inference_sim.policies.scheduler import FCFS
from simhelpers import make_request


def snap(i: int, queue: int = 0, batch: int = 0, pending: int = 0, kv: float = 0.0, free: int = 0):
    return RoutingSnapshot(f"instance_{i}", i, queue, batch, kv, free, 0.0, pending)


def state(*snaps: RoutingSnapshot, clock: int = 0) -> RouterState:
    return RouterState(list(snaps), clock)


def req(n_in: int = 32, arrival: int = 0, index: int = 0) -> Request:
    return make_request(index, arrival, n_in, 4)


# --- registries ----------------------------------------------------------------------------


def test_registries_hold_the_reference_names():
    assert ADMISSION.names() == ["always-admit", "reject-all", "token-bucket"]
    assert ROUTING.names() == [
        "always-busiest",
        "least-loaded",
        "prefix-affinity",
        "round-robin",
        "vllm-dp",  # ours: vLLM's data-parallel balancer
        "weighted",
    ]
    assert SCORERS.names() == [
        "adapter-affinity",
        "kv-utilization",
        "load-balance",
        "prefix-affinity",
        "queue-depth",
        "waiting-queue",  # ours: llm-d's queue-scorer
    ]
    assert PRIORITY.names() == ["constant", "inverted-slo", "slo-based"]
    assert SCHEDULERS.names() == ["fcfs", "priority-fcfs", "reverse-priority", "sjf"]
    assert set(REGISTRIES) == {"admission", "routing", "scorers", "priority", "scheduler"}


@pytest.mark.parametrize(
    ("registry", "default"),
    [
        (ADMISSION, AlwaysAdmit),
        (ROUTING, RoundRobin),
        (PRIORITY, ConstantPriority),
        (SCHEDULERS, FCFS),
    ],
)
def test_empty_name_is_the_default(registry, default):
    assert isinstance(registry.create(""), default)


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_unknown_name_lists_the_valid_ones_sorted(kind):
    registry = REGISTRIES[kind]
    with pytest.raises(PolicyError) as err:
        registry.lookup("no-such-thing")
    msg = str(err.value)
    assert "'no-such-thing'" in msg
    assert ", ".join(registry.names()) in msg
    assert "module.path:ClassName" in msg


def test_names_are_case_sensitive():
    with pytest.raises(PolicyError):
        ROUTING.lookup("Round-Robin")


# --- admission (7) ------------------------------------------------------------------------


def test_always_admit_and_reject_all():
    assert AlwaysAdmit().admit(req(), state(snap(0))) == (True, "")
    assert RejectAll().admit(req(), state(snap(0))) == (False, "reject-all")


def test_token_bucket_worked_example():
    # C=600, r=100/s; 300, 200, 250 tokens at 0, 0.1 s, 0.2 s -> admit, admit, reject
    tb = TokenBucket(600, 100)
    assert tb.admit(req(300), state(snap(0), clock=0)) == (True, "")
    assert tb.tokens == 300
    assert tb.admit(req(200), state(snap(0), clock=100_000)).admitted
    assert tb.tokens == pytest.approx(110)
    assert tb.admit(req(250), state(snap(0), clock=200_000)) == (False, "insufficient tokens")
    assert tb.tokens == pytest.approx(120)


def test_token_bucket_never_exceeds_capacity_and_rejects_oversized():
    tb = TokenBucket(100, 1e6)
    assert not tb.admit(req(101), state(snap(0), clock=10**9)).admitted
    assert tb.tokens == 100


@pytest.mark.parametrize(
    ("cap", "rate"), [(0, 1), (1, 0), (-1, 1), (float("inf"), 1), (1, float("nan"))]
)
def test_token_bucket_rejects_bad_parameters(cap, rate):
    with pytest.raises(PolicyError, match="finite number > 0"):
        TokenBucket(cap, rate)


def test_token_bucket_built_from_context_names():
    tb = ADMISSION.create("token-bucket", token_bucket_capacity=5.0, token_bucket_refill_rate=2.0)
    assert (tb.capacity, tb.refill_rate) == (5.0, 2.0)


# --- routing (8) ----------------------------------------------------------------------------


def test_round_robin_cycles_and_names_its_counter():
    rr = RoundRobin()
    s = state(snap(0), snap(1), snap(2))
    decisions = [rr.route(req(), s) for _ in range(5)]
    assert [d.target for d in decisions] == [0, 1, 2, 0, 1]
    assert decisions[0].reason == "round-robin[0]"
    assert decisions[4].reason == "round-robin[4]"


def test_least_loaded_uses_effective_load_and_lowest_index_on_ties():
    s = state(snap(0, queue=2, batch=1), snap(1, batch=1, pending=1), snap(2, pending=2))
    d = LeastLoaded().route(req(), s)
    assert d.target == 1
    assert d.reason == "least-loaded (load=2)"
    assert LeastLoaded().route(req(), state(snap(0, queue=1), snap(1, batch=1))).target == 0


def test_vllm_dp_scores_waiting_four_times_running_and_counts_its_own_picks():
    """vLLM's DPLBAsyncMPClient: lowest 4 x waiting + running, lowest rank on ties, one
    waiting request added to each pick until the coordinator's next publication."""
    policy = VllmDataParallel()
    busy = state(snap(0, queue=1), snap(1, batch=3))  # scores 4 and 3
    picks = [policy.route(req(), busy).target for _ in range(4)]
    # (1, 3) -> 7 vs 4: rank 0; then 8 vs 7: rank 1; then 8 vs 11: rank 0
    assert picks == [1, 0, 1, 0]
    assert policy.route(req(), busy).reason == "vllm-dp (score=11)"  # 12 vs 11: rank 1
    # Within the period the counts are not re-read: 12 vs 15 picks rank 0, although the
    # live queues (rank 0 busy, rank 1 idle) would pick rank 1.
    live = state(snap(0, batch=9), snap(1), clock=99_999)
    assert policy.route(req(), live).target == 0
    # At the first decision of the next 100 ms period they are: rank 1.
    assert policy.route(req(), state(snap(0, batch=9), snap(1), clock=100_000)).target == 1
    # Idle engines: the picks alone spread a burst.
    fresh = VllmDataParallel()
    assert [fresh.route(req(), state(snap(0), snap(1), snap(2))).target for _ in range(4)] == [
        0, 1, 2, 0
    ]  # fmt: skip
    # Another set of instances (autoscaling) is re-read at once, whatever the clock.
    swapped = state(RoutingSnapshot("instance_7", 0, batch_size=4), snap(1), snap(2))
    assert fresh.route(req(), swapped).target == 1  # fresh counts 4, 0, 0
    # Routed-but-not-queued requests count as waiting (vLLM balances after tokenising).
    assert VllmDataParallel().route(req(), state(snap(0, pending=1), snap(1, batch=3))).target == 1
    with pytest.raises(PolicyError, match="refresh period must be > 0"):
        VllmDataParallel(0)


def test_always_busiest_picks_max_load_lowest_index_on_ties():
    s = state(snap(0, queue=1), snap(1, batch=3), snap(2, pending=3))
    d = AlwaysBusiest().route(req(), s)
    assert (d.target, d.reason) == (1, "always-busiest (load=3)")
    assert AlwaysBusiest().route(req(), state(snap(0), snap(1))).target == 0


def test_pending_requests_count_in_effective_load():
    assert snap(0, queue=1, batch=2, pending=4).effective_load == 7


def test_prefix_affinity_policy_remembers_full_block_key():
    pa = PrefixAffinity(block_size=4)
    tokens = list(range(100, 108))  # two full blocks
    a = Request(0, 0, [*tokens, 1, 2], [1])  # same complete blocks, different tail
    b = Request(1, 0, [*tokens, 3], [1])
    c = Request(2, 0, list(range(200, 208)), [1])
    s = state(snap(0, queue=5), snap(1), snap(2, queue=1))
    d = pa.route(a, s)
    assert (d.target, d.reason) == (1, "prefix-affinity (cache-miss, fallback to least-loaded)")
    s2 = state(snap(0), snap(1, queue=9), snap(2))
    d = pa.route(b, s2)
    assert (d.target, d.reason) == (1, "prefix-affinity (cache-hit)")
    assert pa.route(c, s2).target == 0  # new key: least-loaded


def test_prefix_affinity_policy_short_prompt_keyed_by_whole_input():
    pa = PrefixAffinity(block_size=16)
    s = state(snap(0), snap(1))
    assert pa.route(Request(0, 0, [1, 2, 3], [1]), state(snap(0, queue=1), snap(1))).target == 1
    assert pa.route(Request(1, 0, [1, 2, 3], [1]), s).target == 1
    assert pa.route(Request(2, 0, [1, 2, 4], [1]), s).target == 0


def test_prefix_affinity_policy_ignores_a_remembered_instance_that_no_longer_exists():
    pa = PrefixAffinity(block_size=2)
    r = Request(0, 0, [1, 2], [1])
    pa.owner[router_block_hashes(r, 2)[-1]] = 5
    assert pa.route(r, state(snap(0, queue=1), snap(1))).target == 1


# --- scorers and weighted (8.3) --------------------------------------------------------------


def test_queue_depth_scorer_min_max():
    s = state(snap(0), snap(1, queue=2), snap(2, batch=2, pending=2))
    assert QueueDepthScorer().score(req(), s) == [1.0, 0.5, 0.0]
    assert QueueDepthScorer().score(req(), state(snap(0, queue=3), snap(1, batch=3))) == [1.0, 1.0]


def test_waiting_queue_scorer_reads_only_the_waiting_queues():
    """llm-d's queue-scorer: running and in-flight requests do not count, so with no
    queue anywhere every instance scores 1 (queue-depth would spread the load)."""
    from inference_sim.policies.scorers import WaitingQueueScorer

    s = state(snap(0), snap(1, queue=2), snap(2, batch=9, pending=4, queue=4))
    assert WaitingQueueScorer().score(req(), s) == [1.0, 0.5, 0.0]
    busy = state(snap(0, batch=8), snap(1, batch=1))
    assert WaitingQueueScorer().score(req(), busy) == [1.0, 1.0]
    assert QueueDepthScorer().score(req(), busy) == [0.0, 1.0]


def test_kv_utilization_and_load_balance_scorers():
    s = state(snap(0, kv=0.25), snap(1, kv=1.0, queue=3))
    assert KVUtilizationScorer().score(req(), s) == [0.75, 0.0]
    assert LoadBalanceScorer().score(req(), s) == [1.0, 0.25]


def test_weighted_spec_example():
    # queue-depth:2, load-balance:1 -> w = 2/3, 1/3; loads 0, 2, 4
    w = Weighted([("queue-depth", 2.0), ("load-balance", 1.0)])
    s = state(snap(0), snap(1, queue=2), snap(2, queue=4))
    d = w.route(req(), s)
    assert d.target == 0
    assert d.scores == pytest.approx([1.0, 0.4444444, 0.0666667], abs=1e-6)
    assert d.reason == "weighted-scoring (score=1.000)"


def test_weighted_weights_near_the_float_maximum_still_normalise():
    """1e308 + 1e308 is inf: the weights were each normalised to 0 (all traffic to
    instance 0); scaled by the largest first they are 1/2 and 1/2."""
    huge = Weighted([("queue-depth", 1e308), ("load-balance", 1e308)])
    assert [wt for _, wt in huge.scorers] == [0.5, 0.5]
    s = state(snap(0, queue=3), snap(1), snap(2, queue=1))
    assert huge.route(req(), s).target == 1


def test_weighted_default_profile():
    w = Weighted(None, block_size=16, num_instances=2)
    assert w.names == ["prefix-affinity", "queue-depth", "kv-utilization"]
    assert [wt for _, wt in w.scorers] == pytest.approx([3 / 7, 2 / 7, 2 / 7])


def test_weighted_ties_go_to_lowest_index():
    d = Weighted([("load-balance", 1.0)]).route(req(), state(snap(0, queue=1), snap(1), snap(2)))
    assert d.target == 1


class _Wild:
    def score(self, request, state):
        return {"instance_0": -3.0, "instance_1": 7.0}  # instance_2 missing -> 0


class _Negative:
    def score(self, request, state):
        return [-1.0, 0.5, 0.2]


def test_weighted_clamps_scores_and_accepts_mappings():
    d = Weighted([(_Wild(), 1.0), (_Negative(), 1.0)]).route(
        req(), state(snap(0), snap(1), snap(2))
    )
    assert d.scores == pytest.approx([0.0, 0.75, 0.1])
    assert d.target == 1
    assert all(0.0 <= v <= 1.0 for v in d.scores)
    with pytest.raises(PolicyError, match="returned NaN for instance 0"):  # not a score
        Weighted([(_NaNScores(), 1.0)]).route(req(), state(snap(0), snap(1), snap(2)))


class _NaNScores:
    def score(self, request, state):
        return [float("nan"), 0.5, 0.2]


def test_prefix_affinity_scorer_longest_leading_match_and_observer():
    sc = PrefixAffinityScorer(block_size=4, num_instances=3)
    a = Request(0, 0, list(range(12)), [1])  # 3 blocks
    s = state(snap(0), snap(1), snap(2))
    assert sc.score(a, s) == [0.0, 0.0, 0.0]
    sc.observe(a, 2)
    b = Request(1, 0, [*range(8), 99, 98, 97, 96, 5, 5], [1])  # shares the first 2 of 3 blocks
    assert sc.score(b, s) == pytest.approx([0.0, 0.0, 2 / 3])
    short = Request(2, 0, [1, 2, 3], [1])
    assert sc.score(short, s) == [0.0, 0.0, 0.0]


def test_weighted_prefix_affinity_routes_shared_prefix_to_the_same_instance():
    w = Weighted([("prefix-affinity", 3.0), ("queue-depth", 1.0)], block_size=4, num_instances=3)
    prefix = list(range(40))
    first = w.route(Request(0, 0, [*prefix, 1], [1]), state(snap(0, queue=1), snap(1), snap(2)))
    assert first.target == 1
    # instance 1 is now busier, but the prefix match (10 of 10 blocks) outweighs it
    again = w.route(Request(1, 0, [*prefix, 2, 3], [1]), state(snap(0), snap(1, queue=2), snap(2)))
    assert again.target == 1


def test_prefix_index_lru_eviction_and_pure_reads():
    idx = PrefixCacheIndex(1, capacity=3)
    idx.record([1, 2, 3], 0)
    assert idx.match_length([1, 2, 3], 0) == 3
    idx.record([1], 0)  # refresh 1: 2 is now the oldest
    idx.record([4], 0)
    assert idx.match_length([1], 0) == 1
    assert idx.match_length([2], 0) == 0
    assert idx.match_length([3, 4], 0) == 2
    assert idx.match_length([1], 5) == 0  # unknown instance


def test_spec_hash_vectors():
    assert hash_tokens([1, 2, 3]) == (
        "7ee74ca6db4b367eec57934b47ce1e5b6df3bec871194875b45bb7de23168c0b"
    )
    assert block_hashes([1, 2, 3, 4, 5], 2) == [
        "5e78b5162f9dd69f2b1b1b3f02203d4319466dd77e1d7ff744337ea38059a492",
        "97558f976d3ef1a5e76a3ac1c5c0e6ecd9ce26824609e0b3403ce5eacac40614",
    ]
    assert block_hashes([1], 2) == []


def test_router_hashes_chain_like_the_spec_hashes():
    a = Request(0, 0, [1, 2, 3, 4, 5], [1])
    b = Request(1, 0, [1, 2, 3, 4, 6, 7], [1])
    c = Request(2, 0, [9, 2, 3, 4], [1])
    ha, hb, hc = (router_block_hashes(r, 2) for r in (a, b, c))
    assert len(ha) == 2 and ha == hb[:2]
    assert hc[1] != ha[1]  # the chain carries the first block's difference


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("queue-depth", "invalid scorer config 'queue-depth' (expected name:weight)"),
        ("queue-depth:1,", "invalid scorer config ''"),
        (
            "nope:1",
            "unknown routing scorer 'nope'; valid: adapter-affinity, kv-utilization, load-balance",
        ),
        ("queue-depth:1,queue-depth:2", "duplicate scorer 'queue-depth'"),
        ("queue-depth:abc", "invalid weight for scorer 'queue-depth'"),
        ("queue-depth:0", "weight must be a finite positive number, got 0.0"),
        ("queue-depth:-1", "weight must be a finite positive number"),
        ("queue-depth:inf", "weight must be a finite positive number"),
    ],
)
def test_parse_scorers_errors(text, needle):
    with pytest.raises(PolicyError) as err:
        parse_scorers(text)
    assert needle in str(err.value)


def test_parse_scorers_trims_and_keeps_order():
    assert parse_scorers(" load-balance : 1 , queue-depth:2.5") == [
        ("load-balance", 1.0),
        ("queue-depth", 2.5),
    ]


# --- priority and schedulers (11) -------------------------------------------------------------


def test_priority_policies():
    r = req(arrival=1_000)
    assert ConstantPriority().priority(r, 5_000) == 0.0
    assert SLOBasedPriority().priority(r, 5_000) == pytest.approx(0.004)
    assert InvertedSLOPriority().priority(r, 5_000) == pytest.approx(-0.004)


def _queue() -> deque[Request]:
    rs = [
        make_request(0, 300, 50, 2),
        make_request(1, 100, 10, 2),
        make_request(2, 100, 30, 2),
        make_request(3, 200, 10, 2),
    ]
    rs[0].priority, rs[1].priority, rs[2].priority, rs[3].priority = 1.0, 0.0, 0.0, 2.0
    return deque(rs)


@pytest.mark.parametrize(
    ("scheduler", "order"),
    [
        (PriorityFCFS(), [3, 0, 1, 2]),
        (ReversePriority(), [1, 2, 0, 3]),
        (ShortestJobFirst(), [1, 3, 2, 0]),
        (FCFS(), [0, 1, 2, 3]),
    ],
)
def test_scheduler_orders(scheduler, order):
    q = _queue()
    scheduler.order(q, 1_000)
    assert [r.index for r in q] == order


def test_wait_queue_hook_recomputes_priorities_before_ordering():
    assert make_wait_queue_hook(ConstantPriority(), FCFS()) is None
    hook = make_wait_queue_hook(InvertedSLOPriority(), PriorityFCFS())
    q = _queue()
    hook(q, 1_000)
    assert [r.index for r in q] == [0, 3, 1, 2]  # newest first, ties by arrival then index
    assert q[0].priority == pytest.approx(-0.0007)
    # constant priority resets any hint, so priority-fcfs falls back to arrival order
    hook = make_wait_queue_hook(ConstantPriority(), PriorityFCFS())
    q = _queue()
    hook(q, 1_000)
    assert [r.index for r in q] == [1, 2, 3, 0]
    assert all(r.priority == 0.0 for r in q)


def test_inverted_slo_with_reverse_priority_cancels_out():
    a = make_wait_queue_hook(InvertedSLOPriority(), ReversePriority())
    b = make_wait_queue_hook(SLOBasedPriority(), PriorityFCFS())
    qa, qb = _queue(), _queue()
    a(qa, 1_000)
    b(qb, 1_000)
    assert [r.index for r in qa] == [r.index for r in qb]


# --- decisions ---------------------------------------------------------------------------------


def test_target_index_accepts_indices_and_ids():
    assert target_index(2, 3, "p") == 2
    assert target_index("instance_1", 3, "p") == 1
    for bad in (3, -1, "instance_3", "node_1", True, 1.0, None):
        with pytest.raises(PolicyError):
            target_index(bad, 3, "p")


def test_router_state_builds_snapshots_lazily_once():
    calls = []

    def build():
        calls.append(1)
        return [snap(0), snap(1)]

    st = RouterState(None, 7, build=build, num_instances=2)
    assert len(st) == 2 and not calls
    assert st.snapshots is st.snapshots
    assert calls == [1]
    assert RoutingDecision(1).scores is None


def test_weighted_checks_weights_of_scorer_objects_too():
    with pytest.raises(PolicyError, match="finite positive"):
        Weighted([(QueueDepthScorer(), 0.0)])
    with pytest.raises(PolicyError, match="duplicate scorer 'queue-depth'"):
        Weighted([("queue-depth", 1.0), ("queue-depth", 1.0)])


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 3),
    st.lists(st.tuples(st.integers(0, 4), st.lists(st.integers(0, 9), max_size=6)), max_size=40),
)
def test_prefix_index_match_lengths_equal_per_instance_walks(capacity, program):
    """The one-walk bit-mask match gives each instance's own walk over its LRU set."""
    idx = PrefixCacheIndex(2, capacity=capacity)
    for instance, hashes in program:
        idx.record(hashes, instance)
        probe = [*hashes[::-1], 0, 1, 2]
        expected = [idx.match_length(probe, i) for i in range(6)]
        assert idx.match_lengths(probe, 6) == expected
        assert idx.match_lengths(hashes, 6) == [idx.match_length(hashes, i) for i in range(6)]
