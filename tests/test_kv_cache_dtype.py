"""``--kv-cache-dtype``: FP8 KV holds twice the blocks and halves the KV traffic."""

from __future__ import annotations

from dataclasses import replace

import pytest

from inference_sim.catalog import load_catalog
from inference_sim.catalog.architecture import bundled_architecture
from inference_sim.config.errors import ConfigError
from inference_sim.config.resolve import resolve
from inference_sim.latency.calibrated import CalibratedLatencyModel

LLAMA = "meta-llama/llama-3.1-8b-instruct"
QWEN3 = "qwen/qwen3-14b"  # no trained entry on H100/TP 1: blocks derived from memory


def _plan(model: str, **extra: object):
    return resolve({"model": model, "hardware": "H100", "tp": 1, **extra})


def test_fp8_kv_halves_the_bytes_per_token() -> None:
    arch = bundled_architecture(LLAMA)
    assert arch is not None
    fp8 = replace(arch, kv_dtype_bytes=1.0)
    assert fp8.kv_bytes_per_token(1) == arch.kv_bytes_per_token(1) / 2
    assert fp8.kv_bytes_per_token(1, kv_dtype_bytes=2.0) == arch.kv_bytes_per_token(1)


def test_derived_capacity_doubles_and_trained_counts_scale() -> None:
    auto = _plan(QWEN3, latency_model="roofline").options["total_kv_blocks"]
    fp8 = _plan(QWEN3, latency_model="roofline", kv_cache_dtype="fp8").options
    assert fp8["total_kv_blocks"] in (2 * auto, 2 * auto + 1)
    trained = _plan(LLAMA, latency_model="roofline").options["total_kv_blocks"]
    scaled = _plan(LLAMA, latency_model="roofline", kv_cache_dtype="fp8_e4m3")
    assert scaled.options["total_kv_blocks"] == 2 * trained
    assert any(f"{2 * trained} blocks of 1-byte KV fit the same memory" in n for n in scaled.notes)
    given = _plan(LLAMA, latency_model="roofline", kv_cache_dtype="fp8", total_kv_blocks=500)
    assert given.options["total_kv_blocks"] == 500  # given counts are taken as they are
    same = _plan(LLAMA, latency_model="roofline", kv_cache_dtype="bfloat16")
    assert same.options["total_kv_blocks"] == trained
    # the calibrated model derives its count from memory (vLLM v0.15.1), so FP8 doubles it
    cal = _plan(LLAMA, latency_model="calibrated").options["total_kv_blocks"]
    cal8 = _plan(LLAMA, latency_model="calibrated", kv_cache_dtype="fp8").options
    assert cal != trained and cal8["total_kv_blocks"] in (2 * cal, 2 * cal + 1)


def test_calibrated_step_reads_half_the_kv() -> None:
    plan = _plan(LLAMA, latency_model="calibrated", kv_cache_dtype="fp8")
    assert plan.architecture is not None and plan.architecture.kv_dtype_bytes == 1.0
    gpu = load_catalog().gpu("H100")
    arch = bundled_architecture(LLAMA)
    assert arch is not None
    bf16 = CalibratedLatencyModel(arch, gpu, 1).terms([], 32, 32 * 2000)
    fp8 = CalibratedLatencyModel(plan.architecture, gpu, 1).terms([], 32, 32 * 2000)
    assert fp8["kv_us"] == pytest.approx(bf16["kv_us"] / 2)
    assert fp8["weights_us"] == bf16["weights_us"]
    assert fp8["total_us"] < bf16["total_us"]


def test_unknown_kv_cache_dtype_is_refused() -> None:
    with pytest.raises(ConfigError, match="--kv-cache-dtype must be one of auto, bfloat16"):
        _plan(LLAMA, kv_cache_dtype="int4")


# --- online FP8 weights: --quantization fp8 -----------------------------------------------


def test_online_fp8_weights_stream_one_byte_and_double_the_gemm_peak_on_fp8_gpus() -> None:
    plan = _plan(LLAMA, latency_model="calibrated", quantization="fp8")
    arch = plan.architecture
    assert arch is not None and arch.quantization is not None and arch.quantization.w8a8
    base = bundled_architecture(LLAMA)
    assert base is not None and arch.weight_bytes() < 0.6 * base.weight_bytes()
    for gpu_name, doubled in (("H100", True), ("A100-SXM", False)):  # A100: no FP8 cores
        gpu = load_catalog().gpu(gpu_name)
        fp8 = CalibratedLatencyModel(arch, gpu, 1)
        bf16 = CalibratedLatencyModel(base, gpu, 1)
        assert fp8.shape.gemm_peak == bf16.shape.gemm_peak * (2 if doubled else 1)
        assert fp8.terms([], 8, 8000)["weights_us"] < 0.6 * bf16.terms([], 8, 8000)["weights_us"]
    # The trained block count (16-bit weights) gives way to one derived from memory.
    assert any("count is derived from GPU memory" in n for n in plan.notes)
    # ... and the memory the smaller weights free holds more blocks than 16-bit weights.
    from inference_sim.catalog.capacity import derive_kv_blocks

    bf16_blocks = derive_kv_blocks(base, load_catalog().gpu("H100"), 1).blocks
    assert plan.options["total_kv_blocks"] > bf16_blocks


@pytest.mark.parametrize(
    ("model", "gpu_name", "doubled"),
    [
        ("redhatai/qwen2.5-7b-instruct-quantized.w8a8", "A100-SXM", True),  # INT8 cores
        ("redhatai/qwen2.5-7b-instruct-quantized.w8a8", "H100", True),
        ("redhatai/qwen2.5-7b-instruct-fp8-dynamic", "A100-SXM", False),  # no FP8 cores
        ("redhatai/qwen2.5-7b-instruct-fp8-dynamic", "H100", True),
        ("redhatai/qwen2.5-7b-instruct-quantized.w4a16", "H100", False),  # weight-only
    ],
)
def test_int8_and_fp8_w8a8_checkpoints_double_the_gemm_peak_where_the_cores_exist(
    model: str, gpu_name: str, doubled: bool
) -> None:
    gpu = load_catalog().gpu(gpu_name)
    arch, base = bundled_architecture(model), bundled_architecture("qwen/qwen2.5-7b-instruct")
    assert arch is not None and base is not None
    quantized = CalibratedLatencyModel(arch, gpu, 1).shape.gemm_peak
    assert quantized == CalibratedLatencyModel(base, gpu, 1).shape.gemm_peak * (1 + doubled)


def test_online_fp8_selects_the_calibrated_model_and_refuses_what_it_cannot_price() -> None:
    auto = _plan(LLAMA, quantization="fp8")
    assert auto.options["latency_model"] == "calibrated"
    assert auto.latency_reason == "auto: --quantization fp8 given"
    with pytest.raises(ConfigError, match="--quantization fp8 with --latency-model blackbox"):
        _plan(LLAMA, quantization="fp8", latency_model="blackbox")
    with pytest.raises(ConfigError, match=r"only fp8 .* is modelled, got 'awq'"):
        _plan(LLAMA, quantization="awq", latency_model="calibrated")
    with pytest.raises(ConfigError, match="is already quantized"):
        _plan("redhatai/qwen2.5-7b-instruct-quantized.w4a16", quantization="fp8",
              latency_model="calibrated")  # fmt: skip
    # vLLM refuses a method other than the checkpoint's own, FP8 ones included.
    with pytest.raises(ConfigError, match="is already quantized"):
        _plan("redhatai/qwen2.5-7b-instruct-fp8-dynamic", quantization="fp8",
              latency_model="calibrated")  # fmt: skip
    with pytest.raises(ConfigError, match="with --alpha-coeffs/--beta-coeffs"):
        _plan(LLAMA, quantization="fp8", alpha_coeffs=[1, 2, 3], beta_coeffs=[1000, 2, 3])


def test_roofline_reads_the_kv_and_weight_bytes_too() -> None:
    common = {"latency_model": "roofline", "total_kv_blocks": 20_000}
    base = _plan(LLAMA, **common).make_latency_model()
    kv8 = _plan(LLAMA, kv_cache_dtype="fp8", **common).make_latency_model()
    w8 = _plan(LLAMA, quantization="fp8", **common).make_latency_model()
    steps = [m.step_time_from([], 64, 64 * 3000) for m in (base, kv8, w8)]
    assert steps[1] < steps[0] and steps[2] < steps[0]
