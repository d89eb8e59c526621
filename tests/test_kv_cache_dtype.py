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
    trained = _plan(LLAMA, latency_model="calibrated").options["total_kv_blocks"]
    scaled = _plan(LLAMA, latency_model="calibrated", kv_cache_dtype="fp8_e4m3")
    assert scaled.options["total_kv_blocks"] == 2 * trained
    assert any(f"{2 * trained} blocks of 1-byte KV fit the same memory" in n for n in scaled.notes)
    given = _plan(LLAMA, latency_model="calibrated", kv_cache_dtype="fp8", total_kv_blocks=500)
    assert given.options["total_kv_blocks"] == 500  # given counts are taken as they are
    same = _plan(LLAMA, latency_model="calibrated", kv_cache_dtype="bfloat16")
    assert same.options["total_kv_blocks"] == trained


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
