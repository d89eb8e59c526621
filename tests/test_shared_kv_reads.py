"""KV blocks that several running requests hold (prefix-cache hits on blocks in use) are
read from HBM once per step by the calibrated model: the pool counts the extra
references, the engine hands them to the latency model, the KV term drops them."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference_sim import simulate
from inference_sim.cluster.simulator import ClusterSimulator
from inference_sim.core.batch import StepBatch
from inference_sim.instance import make_instance
from inference_sim.instance.config import EngineConfig
from inference_sim.kv.block_pool import BlockPool
from inference_sim.latency.blackbox import BlackboxLatencyModel
from inference_sim.latency.calibrated import CalibratedLatencyModel
from simhelpers import fresh_tokens, make_request
from test_calibrated import DENSE, model


def test_pool_counts_references_beyond_the_first():
    pool = BlockPool(8, 16)
    a = pool.take_new(3)
    assert pool.shared_refs == 0
    pool.touch(a[:2])  # a second request hits two of them
    assert pool.shared_refs == 2
    pool.touch(a[:1])  # a third hits the first
    assert pool.shared_refs == 3
    pool.release(list(reversed(a)))  # the first request finishes
    assert pool.shared_refs == 1  # block a[0] is still held twice
    pool.check_invariants()
    pool.release(a[:1])
    pool.release(a[:2])
    assert pool.shared_refs == 0 and pool.num_used == 0
    pool.check_invariants()


def test_shared_context_is_read_once():
    m = model()
    full = m.terms([], 4, 1000)
    half = m.terms([], 4, 1000, shared=600)
    assert half["kv_us"] == pytest.approx(4000 * (1004 - 600) / 1e12 * 1e6)
    assert full["total_us"] - half["total_us"] == pytest.approx(4000 * 600 / 1e12 * 1e6)
    # Never below the step's own new tokens (a new token is never in a shared block).
    assert m.terms([], 4, 1000, shared=10**6)["kv_us"] == pytest.approx(4000 * 4 / 1e12 * 1e6)
    # Prefill chunks' earlier context counts too.
    p = m.terms([(320, 100)], 2, 300, shared=320)
    assert p["kv_us"] == pytest.approx(4000 * (300 + 2 + 100) / 1e12 * 1e6)


def test_penalty_bookkeeping_counts_every_request_context():
    """Penalties rebuild each request's token ids on the CPU: sharing saves nothing there."""
    m = model(penalty_token_us=0.5, penalty_us=0.0)
    pen = CalibratedLatencyModel(DENSE, m.gpu, 1, m.coefficients, sampling="penalized")
    a = pen.terms([], 4, 1000)
    b = pen.terms([], 4, 1000, shared=600)
    assert a["penalty_us"] == b["penalty_us"] == pytest.approx(0.5 * 1004)
    assert a["kv_us"] > b["kv_us"]


@pytest.mark.parametrize("sampling", ["plain", "penalized"])
def test_step_time_reads_the_batch_shared_context(sampling):
    """The decode fast path (cached base + slope) and the full path agree with
    step_time_from for the same shared context."""
    m0 = model(penalty_token_us=0.25, penalty_us=40.0, step_us=50.0)
    m = CalibratedLatencyModel(DENSE, m0.gpu, 1, m0.coefficients, sampling=sampling)
    batch = StepBatch()
    batch.decode_tokens = 6
    batch.decode_context_sum = 6000
    batch.shared_context = 2400
    assert m.step_time(batch) == m.step_time_from([], 6, 6000, 2400)
    assert m.step_time(batch) < m.step_time_from([], 6, 6000)


class _Recorder:
    """A latency plug-in that prices like a blackbox model and records what it was given."""

    name = "recorder"

    def __init__(self) -> None:
        self.inner = BlackboxLatencyModel((0.0, 0.0, 0.0), (1000.0, 1.0, 1.0))
        self.seen: list[tuple[int, int, int]] = []

    def step_time(self, batch: StepBatch) -> int:
        self.seen.append((batch.decode_tokens, batch.prefill_tokens, batch.shared_context))
        return self.inner.step_time(batch)

    def queueing_time(self, req) -> int:
        return 0

    def output_token_time(self) -> int:
        return 0

    def describe(self) -> dict[str, object]:
        return {"latency_model": self.name}


@pytest.mark.parametrize("exact_steps", [True, False])
def test_engine_reports_the_prefix_two_running_requests_share(exact_steps):
    """Request 1 arrives while request 0 decodes and hits its four full prompt blocks:
    every step that holds both reports 4 x 16 shared tokens; alone, none."""
    prefix = fresh_tokens(64)
    first = make_request(0, 0, prefix + fresh_tokens(1), 200)
    second = make_request(1, 50_000, prefix + fresh_tokens(1), 20)
    cfg = EngineConfig(num_gpu_blocks=100, block_size=16, exact_steps=exact_steps)
    rec = _Recorder()
    inst = make_instance(0, cfg, rec)
    ClusterSimulator([inst], check_invariants=True).run([first, second])
    both = [s for d, _p, s in rec.seen if d == 2]
    assert both and set(both) == {64}
    alone = [s for d, p, s in rec.seen if d == 1 and not p]  # before and after the second
    assert len(alone) > 150 and set(alone) == {0}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.sampled_from([0, 16, 40, 256]),
    prompt=st.integers(8, 300),
    output=st.integers(2, 120),
    rate=st.sampled_from([5.0, 40.0, 400.0]),
    blocks=st.sampled_from([0, 60, 400]),
    seed=st.integers(0, 3),
)
def test_both_steppers_price_shared_blocks_alike(prefix, prompt, output, rate, blocks, seed):
    """The fast stepper hands the latency model the same shared context as the plain one
    (bulk decode steps included): identical results with the calibrated model, KV
    pressure and preemptions included."""
    kw = {"model": "meta-llama/llama-3.1-8b-instruct", "hardware": "H100", "tp": 1,
          "latency_model": "calibrated", "num_requests": 40, "rate": rate,
          "prompt_tokens": prompt, "output_tokens": output, "prefix_tokens": prefix,
          "seed": seed, "check_invariants": True}  # fmt: skip
    if blocks:
        kw["total_kv_blocks"] = blocks
    fast = simulate(**kw).summary
    exact = simulate(exact_steps=True, **kw).summary
    for key in ("ttft_mean_ms", "e2e_mean_ms", "itl_mean_ms", "completed_requests",
                "preemption_count", "dropped_unservable"):  # fmt: skip
        assert fast[key] == exact[key], key
