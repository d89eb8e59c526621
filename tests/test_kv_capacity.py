"""KV capacity from GPU memory, checked against the block counts vLLM 0.15.1 logged."""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

import pytest

from inference_sim.catalog import load_catalog
from inference_sim.catalog.architecture import bundled_architecture
from inference_sim.catalog.capacity import (
    RESERVE_BASE_GIB,
    RESERVE_MULTIMODAL_GIB,
    RESERVE_PER_TOKEN_KIB,
    derive_kv_blocks,
    kv_block_bytes,
    reserve_bytes,
)

GIB = 2**30
TRAINING_RUNS = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "calibration"
    / "vllm-0.15.1"
    / "training_runs.csv"
)

# (model, TP, max_num_batched_tokens, GPU blocks vLLM logged) -- H100, utilization 0.9,
# block size 16 (the training runs of docs/roofline.md).
LOGGED = [
    ("redhatai/llama-4-scout-17b-16e-instruct-fp8-dynamic", 2, 2048, 8253),
    ("meta-llama/llama-3.1-70b-instruct", 4, 8192, 30251),
    ("meta-llama/llama-3.1-70b-instruct", 4, 2048, 30425),
    ("mistralai/mistral-nemo-instruct-2407", 2, 1024, 48009),
    ("mistralai/mistral-nemo-instruct-2407", 1, 2048, 19251),
    ("qwen/qwen2.5-7b-instruct", 1, 2048, 65352),
    ("qwen/qwen2.5-7b-instruct", 1, 1024, 65368),
    ("01-ai/yi-34b", 2, 2048, 20793),
    ("meta-llama/llama-2-7b-hf", 1, 2048, 7463),
]


def arch(model: str):
    a = bundled_architecture(model)
    assert a is not None
    return a


def test_hand_computed_llama2():
    a = arch("meta-llama/llama-2-7b-hf")
    h100 = load_catalog().gpu("H100")
    cap = derive_kv_blocks(a, h100, 1)
    per_block = 2 * 32 * 32 * 128 * 16 * 2  # 8 MiB
    assert kv_block_bytes(a, 1, 16) == per_block == cap.block_bytes
    weights = a.param_count() * 2
    # Published 6,738,415,616 less the 266,240 norm weights the estimate leaves out.
    assert a.param_count() == 6_738_415_616 - 65 * 4096
    reserve = RESERVE_BASE_GIB * GIB + 2048 * RESERVE_PER_TOKEN_KIB * 1024
    budget = 79.19 * GIB * 0.9
    assert cap.blocks == math.floor((budget - weights - reserve) / per_block)
    assert cap.blocks == 7354
    assert "7354 blocks" in cap.explain()


def test_tp_splits_weights_and_kv_heads():
    a = arch("meta-llama/llama-3.1-70b-instruct")
    h100 = load_catalog().gpu("H100")
    assert kv_block_bytes(a, 4, 16) == kv_block_bytes(a, 1, 16) / 4
    assert kv_block_bytes(a, 16, 16) == kv_block_bytes(a, 8, 16)  # at least one KV head
    assert not derive_kv_blocks(a, h100, 1).fits
    assert derive_kv_blocks(a, h100, 4).weight_bytes == a.weight_bytes() / 4


def test_quantized_weights_and_multimodal_reserve():
    fp8 = arch("redhatai/llama-3.1-nemotron-70b-instruct-hf-fp8-dynamic")
    bf16 = arch("nvidia/llama-3.1-nemotron-70b-instruct-hf")
    assert fp8.weight_bytes() < 0.55 * bf16.weight_bytes()
    scout = arch("meta-llama/llama-4-scout-17b-16e-instruct")
    assert scout.extra_params > 0
    assert reserve_bytes(scout, 2048) - reserve_bytes(bf16, 2048) == RESERVE_MULTIMODAL_GIB * GIB


def test_mla_cache_is_one_latent_per_token_and_layer():
    a = arch("deepseek-ai/deepseek-v2-lite")
    assert kv_block_bytes(a, 1, 16) == kv_block_bytes(a, 8, 16) == 27 * 576 * 16 * 2


def test_utilization_and_budget_move_the_count():
    a = arch("qwen/qwen2.5-7b-instruct")
    h100 = load_catalog().gpu("H100")
    low = derive_kv_blocks(a, h100, 1, gpu_memory_utilization=0.5).blocks
    high = derive_kv_blocks(a, h100, 1, gpu_memory_utilization=0.95).blocks
    assert low < high
    big = derive_kv_blocks(a, h100, 1, max_num_batched_tokens=16384).blocks
    assert big < derive_kv_blocks(a, h100, 1).blocks


def test_bad_inputs():
    a = arch("qwen/qwen2.5-7b-instruct")
    h100 = load_catalog().gpu("H100")
    with pytest.raises(ValueError, match="gpu-memory-utilization"):
        derive_kv_blocks(a, h100, 1, gpu_memory_utilization=1.5)
    with pytest.raises(ValueError, match="no memory size"):
        derive_kv_blocks(a, replace(h100, memory_gb=0.0, memory_gib=0.0), 1)
    with pytest.raises(ValueError, match="--tp"):
        derive_kv_blocks(a, h100, 0)


@pytest.mark.parametrize(("model", "tp", "mnbt", "logged"), LOGGED)
def test_within_ten_percent_of_vllm(model, tp, mnbt, logged):
    cap = derive_kv_blocks(arch(model), load_catalog().gpu("H100"), tp, max_num_batched_tokens=mnbt)
    assert abs(cap.blocks - logged) / logged < 0.10
    assert abs(cap.blocks - logged) / logged < 0.02  # what docs/roofline.md reports


@pytest.mark.skipif(not TRAINING_RUNS.is_file(), reason="calibration data not present")
def test_table_matches_the_training_runs_file():
    seen = set()
    with TRAINING_RUNS.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            seen.add(
                (
                    row["model"].lower(),
                    int(row["tp"]),
                    int(row["max_num_batched_tokens"]),
                    int(row["total_kv_blocks_from_vllm_log"]),
                )
            )
            assert row["hardware"] == "H100"
            assert row["gpu_memory_utilization"] in ("", "0.9")
    assert seen == set(LOGGED)
