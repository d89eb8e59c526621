"""Roofline step times: engine.md §6.3's worked example (dense, TP1 and TP2) and our MoE one."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from inference_sim.catalog import load_catalog
from inference_sim.catalog.architecture import ModelArchitecture, bundled_architecture
from inference_sim.core.request import Request
from inference_sim.latency import StepBatch, create_latency_model, latency_model_names
from inference_sim.latency.blackbox import LatencyConfigError
from inference_sim.latency.roofline import (
    RooflineLatencyModel,
    _decode_totals,
    _ReferenceCosts,
    round_half_away,
)

LLAMA = "meta-llama/llama-3.1-8b-instruct"
MIXTRAL = "mistralai/mixtral-8x7b-instruct-v0.1"


def arch(model: str = LLAMA) -> ModelArchitecture:
    a = bundled_architecture(model)
    assert a is not None
    return a


def h100():
    return load_catalog().gpu("H100")


def model(tp: int = 1, name: str = LLAMA, **kw) -> RooflineLatencyModel:
    return RooflineLatencyModel(arch(name), h100(), tp, **kw)


def req(index: int, prompt: int, output: int, computed: int) -> Request:
    r = Request(index, 0, list(range(prompt)), list(range(output)))
    r.num_computed_tokens = computed
    return r


def batch(prefill: list[tuple[int, int, int]], decode: list[int], *, totals: bool) -> StepBatch:
    """prefill: (prompt, S, n); decode: contexts S (prompt = S, so S >= prefill target)."""
    b = StepBatch()
    i = 0
    for prompt, s, n in prefill:
        b.add(req(i, prompt, 8, s), n, True)
        i += 1
    for s in decode:
        b.add(req(i, s, 8, s), 1, False)
        i += 1
    if totals:
        b.decode_context_sum = sum(decode)
    return b


# ------------------------------------------------------------ engine.md §6.3 example


def test_worked_example_quantities():
    c = _ReferenceCosts(arch(), 1)
    assert c.W == 13_958_643_712
    gemm, vec, dyn = c.request(0, 512)
    assert gemm == 7_215_410_839_552
    assert vec == 803_995_648
    assert dyn == 67_108_864 + 0 + 134_217_728
    gemm, vec, dyn = c.request(1024, 1)
    assert gemm == 14_495_514_624
    assert vec == 5_505_024
    assert dyn == 131_072 + 134_217_728 + 262_144
    m = model()
    assert m.bw == pytest.approx(2.412e12)
    p = m.prefill_cost([(0, 512)])
    assert p.compute_s == pytest.approx(0.0112265508, rel=1e-9)
    assert p.memory_s == pytest.approx(0.0058706345, rel=1e-8)
    d = m.decode_cost(32, 32 * 1024)
    assert d.compute_s == pytest.approx(0.0039083, rel=1e-4)
    assert d.memory_s == pytest.approx(0.0075730, rel=1e-4)


@pytest.mark.parametrize(
    ("tp", "prefill", "decode", "expected"),
    [
        (1, [(0, 512)], 0, 12367),
        (1, [], 32, 8713),
        (1, [(0, 512)], 32, 19940),
        (1, [], 0, 1140),
        (1, [(1024, 512)], 0, 12821),
        (2, [(0, 512)], 32, 11820),
        (2, [], 0, 2420),
        (2, [(0, 512)], 0, 8033),
        (2, [], 32, 6207),
        (2, [(1024, 512)], 0, 8261),
    ],
)
def test_worked_example_step_times(tp, prefill, decode, expected):
    m = model(tp)
    assert m.step_time_from(prefill, decode, decode * 1024) == expected
    # The same through a StepBatch, with and without the engine-supplied totals.
    pre = [(s + n, s, n) for s, n in prefill]
    for totals in (True, False):
        assert m.step_time(batch(pre, [1024] * decode, totals=totals)) == expected


def test_empty_batch_costs_the_fixed_overheads():
    assert model(1).step_time(StepBatch()) == round_half_away(32 * 20 + 500)
    assert model(2).step_time(StepBatch()) == round_half_away(32 * 20 + 32 * 2 * 20 + 500)


def test_decode_only_batch_without_listed_requests():
    # The fast stepper lists no idle decoders: only the totals are set.
    b = StepBatch()
    b.decode_tokens = 32
    b.decode_context_sum = 32 * 1024
    assert model(1).step_time(b) == 8713


def test_decode_totals_prefer_the_engine_sums():
    b = batch([], [100, 200], totals=True)
    assert _decode_totals(b) == (2, 300)
    b = batch([], [100, 200], totals=False)
    assert _decode_totals(b) == (2, 300)
    b = batch([(64, 0, 32)], [], totals=False)
    assert _decode_totals(b) == (0, 0)


def test_decode_closed_form_equals_the_per_request_sum():
    c = _ReferenceCosts(arch(), 2)
    contexts = [1, 17, 512, 1024, 4095, 30_000]
    g = v = m = 0.0
    for s in contexts:
        gemm, vec, dyn = c.request(s, 1)
        g += gemm / 2
        v += vec / 2
        m += dyn / 2
    assert c.decode(len(contexts), sum(contexts)) == (g, v, m, c.W / 2)


def test_prefill_is_priced_per_request_and_weights_once():
    m = model(1)
    one = m.prefill_cost([(0, 256)])
    two = m.prefill_cost([(0, 256), (0, 256)])
    assert two.gemm_flops == 2 * one.gemm_flops
    assert two.weight_bytes == one.weight_bytes
    # Chunked prefill at an offset reads the earlier KV and attends over it.
    later = m.prefill_cost([(1024, 256)])
    assert later.gemm_flops > one.gemm_flops
    assert later.dynamic_bytes > one.dynamic_bytes


def test_round_half_away_from_zero():
    assert round_half_away(0.5) == 1
    assert round_half_away(1.5) == 2
    assert round_half_away(2.5) == 3
    assert round_half_away(2.4999999) == 2
    assert round_half_away(0.49999999999999994) == 0
    assert round_half_away(-1.5) == -2


# ------------------------------------------------------------ MoE (docs/roofline.md)


def test_mixtral_worked_example():
    """docs/roofline.md "Worked example: Mixtral-8x7B on H100, TP2"."""
    m = model(2, MIXTRAL)
    assert m.describe()["formulas"] == "moe-mla"
    d1 = m.decode_cost(1, 1024)
    assert d1.gemm_flops == 12_885_950_464
    assert d1.vector_flops == 2_752_512
    assert d1.dynamic_bytes == 67_305_472
    assert d1.weight_bytes == 12_617_515_008  # attention + router + 2 of 8 experts, / 2
    assert m.step_time_from([], 1, 1024) == 7679
    p = m.prefill_cost([(0, 512)])
    assert p.gemm_flops == 6_494_460_313_600
    assert p.vector_flops == 401_997_824
    assert p.dynamic_bytes == 100_663_296
    assert p.weight_bytes == 46_440_382_464  # 512 tokens x top-2 touch all 8 experts
    assert m.step_time_from([(0, 512)], 0, 0) == 21716
    assert m.step_time_from([], 32, 32 * 1024) == 22567
    assert m.step_time_from([], 0, 0) == 2420


def test_moe_flops_use_active_experts_and_bytes_touched_experts():
    mix = arch(MIXTRAL)
    m = RooflineLatencyModel(mix, h100(), 1)
    dense_all = replace(mix, moe=None, ffn=mix.moe.expert_ffn * mix.moe.experts)
    dense_one = replace(mix, moe=None)
    ma = RooflineLatencyModel(dense_all, h100(), 1)
    mo = RooflineLatencyModel(dense_one, h100(), 1)
    # FLOPs: 2 active experts = a dense MLP twice as wide as one expert.
    f = m.prefill_cost([(0, 128)]).gemm_flops
    f_one = mo.prefill_cost([(0, 128)]).gemm_flops
    mlp_one = 2 * 128 * 3 * 4096 * 14336 * 32
    router = 2 * 128 * 4096 * 8 * 32
    assert f == f_one + mlp_one + router
    # Bytes: one token touches 2 experts, many tokens touch all 8.
    w1 = m.decode_cost(1, 10).weight_bytes
    w2 = m.decode_cost(2, 20).weight_bytes
    w4 = m.decode_cost(4, 40).weight_bytes
    w_all = ma.decode_cost(1, 10).weight_bytes
    expert = 3 * 4096 * 14336 * 32 * 2
    assert w2 - w1 == 2 * expert
    assert w4 - w1 == 6 * expert
    assert w4 == pytest.approx(w_all + 32 * 4096 * 8 * 2)  # all experts (+ router)
    assert m.decode_cost(100, 1000).weight_bytes == w4


def test_mla_kv_is_replicated_not_split():
    ds = arch("deepseek-ai/deepseek-v2-lite")
    assert ds.kv_bytes_per_token(1) == ds.kv_bytes_per_token(4) == 27 * (512 + 64) * 2
    m1 = RooflineLatencyModel(ds, h100(), 1)
    m4 = RooflineLatencyModel(ds, h100(), 4)
    kv1 = m1.decode_cost(1, 4096).dynamic_bytes
    kv4 = m4.decode_cost(1, 4096).dynamic_bytes
    assert kv4 > kv1 / 4  # the latent is on every rank


# ------------------------------------------------------------ protocol and validation


def test_alpha_gives_queueing_and_output_token_time():
    m = model(1, alpha=(100.5, 2.5, 50.9))
    assert m.queueing_time(req(0, 10, 1, 0)) == int(100.5 + 25.0)
    assert m.output_token_time() == 50
    assert m.describe() == {
        "latency_model": "roofline",
        "alpha_coeffs": [100.5, 2.5, 50.9],
        "architecture": LLAMA,
        "gpu": "H100",
        "tp": 1,
        "formulas": "reference",
    }


def test_beta_is_ignored_with_a_warning(caplog):
    logger = logging.getLogger("inference_sim")  # CLI tests may have stopped propagation
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="inference_sim"):
            m = model(1, beta=(1000.0, 1.0, 1.0))
    finally:
        logger.removeHandler(caplog.handler)
    assert "ignored" in caplog.text
    assert m.step_time_from([(0, 512)], 0, 0) == 12367


def test_registry_builds_roofline():
    assert "roofline" in latency_model_names()
    m = create_latency_model("roofline", architecture=arch(), gpu=h100(), tp=2)
    assert m.step_time(StepBatch()) == 2420


@pytest.mark.parametrize("tp", [0, -1, 1.5, True])
def test_bad_tp(tp):
    with pytest.raises(LatencyConfigError, match="--tp"):
        RooflineLatencyModel(arch(), h100(), tp)


def test_bad_gpu_and_model_figures():
    with pytest.raises(LatencyConfigError, match="prefill MFU"):
        RooflineLatencyModel(arch(), replace(h100(), mfu_prefill=0.0), 1)
    with pytest.raises(LatencyConfigError, match="peak TFLOP/s"):
        RooflineLatencyModel(arch(), replace(h100(), peak_tflops=float("nan")), 1)
    with pytest.raises(LatencyConfigError, match="bytes per parameter"):
        RooflineLatencyModel(replace(arch(), dtype_bytes=0), h100(), 1)
    with pytest.raises(LatencyConfigError, match="alpha"):
        RooflineLatencyModel(arch(), h100(), 1, alpha=(1.0, 2.0))
