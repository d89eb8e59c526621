"""Monotonicity and regime properties of the roofline model, over every bundled model and GPU."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from inference_sim.catalog import load_catalog
from inference_sim.catalog.architecture import bundled_architectures
from inference_sim.latency.roofline import RooflineLatencyModel

ARCHS = sorted(bundled_architectures())
GPUS = load_catalog().gpu_names()
TPS = (1, 2, 4, 8)
PROPS = settings(max_examples=300, deadline=None)

models = st.sampled_from(ARCHS)
gpus = st.sampled_from(GPUS)
tps = st.sampled_from(TPS)
contexts = st.integers(min_value=0, max_value=64_000)
chunks = st.integers(min_value=1, max_value=8192)


def roofline(model: str, gpu: str, tp: int) -> RooflineLatencyModel:
    return RooflineLatencyModel(bundled_architectures()[model], load_catalog().gpu(gpu), tp)


@PROPS
@given(models, gpus, tps, contexts, chunks, st.integers(1, 4096), st.integers(1, 4096))
def test_prefill_step_never_decreases_with_tokens_or_context(m, g, tp, s, n, more_s, more_n):
    r = roofline(m, g, tp)
    base = r.step_time_from([(s, n)], 0, 0)
    assert r.step_time_from([(s, n + more_n)], 0, 0) >= base
    assert r.step_time_from([(s + more_s, n)], 0, 0) >= base
    assert r.step_time_from([(s, n), (s, more_n)], 0, 0) >= base


@PROPS
@given(models, gpus, tps, st.integers(1, 512), contexts, st.integers(0, 64), st.integers(0, 10**6))
def test_decode_step_never_decreases_with_requests_or_context(m, g, tp, d, s, more_d, more_s):
    r = roofline(m, g, tp)
    total = d * max(s, 1)
    base = r.step_time_from([], d, total)
    assert r.step_time_from([], d, total + more_s) >= base
    assert r.step_time_from([], d + more_d, total + more_d * max(s, 1)) >= base
    # A step with both phases costs at least each phase alone.
    both = r.step_time_from([(0, 128)], d, total)
    assert both >= base
    assert both >= r.step_time_from([(0, 128)], 0, 0)


@PROPS
@given(models, gpus, contexts, chunks, st.integers(1, 256))
def test_more_tp_never_increases_per_gpu_work(m, g, s, n, d):
    previous = None
    for tp in TPS:
        r = roofline(m, g, tp)
        p = r.prefill_cost([(s, n)])
        q = r.decode_cost(d, d * s)
        now = (
            p.gemm_flops + p.vector_flops,
            q.gemm_flops + q.vector_flops,
            p.weight_bytes + p.dynamic_bytes,
            q.weight_bytes + q.dynamic_bytes,
        )
        if previous is not None:
            assert all(a <= b for a, b in zip(now, previous, strict=True)), (tp, now, previous)
        previous = now


@PROPS
@given(models, gpus, tps, st.integers(1, 8), st.integers(1, 8192))
def test_small_batch_decode_is_bandwidth_bound(m, g, tp, d, s):
    q = roofline(m, g, tp).decode_cost(d, d * s)
    assert q.memory_s > q.compute_s


@PROPS
@given(models, gpus, tps, st.lists(st.tuples(contexts, chunks), max_size=4), st.integers(0, 64))
def test_step_time_is_at_least_the_empty_step(m, g, tp, prefill, d):
    r = roofline(m, g, tp)
    assert r.step_time_from(prefill, d, d * 1000) >= r.step_time_from([], 0, 0)
