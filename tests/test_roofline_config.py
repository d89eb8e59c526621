"""Architectures (bundled and from HF config.json) and GPU data for the roofline model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference_sim.catalog import CatalogError, load_catalog
from inference_sim.catalog.architecture import (
    architecture_from_hf_config,
    bundled_architecture,
    bundled_architectures,
    parse_architectures,
    read_model_config_folder,
)
from inference_sim.catalog.hardware import read_hardware_config, with_hardware_config

REFERENCE_CONFIGS = (
    Path(__file__).resolve().parents[2] / "shared" / "reference-data" / "model_configs"
)

LLAMA_CFG = {
    "num_hidden_layers": 32,
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "vocab_size": 128256,
    "torch_dtype": "bfloat16",
}


def write_config(tmp_path: Path, doc: dict) -> Path:
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(doc), encoding="utf-8")
    return folder


# ------------------------------------------------------------------ HF config.json


def test_dense_config_matches_bundled(tmp_path):
    a = read_model_config_folder(write_config(tmp_path, LLAMA_CFG), name="x")
    b = bundled_architecture("meta-llama/llama-3.1-8b-instruct")
    assert b is not None
    for f in ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "dtype_bytes", "moe"):
        assert getattr(a, f) == getattr(b, f), f
    assert a.name == "x"
    assert a.uses_reference_formulas


def test_reference_field_rules(tmp_path):
    doc = {
        "num_hidden_layers": 2.0,  # a whole number (2.9 is refused: test_input_review25)
        "hidden_size": 64,
        "num_attention_heads": 4,
        "multi_query_group_num": 2,  # third KV-heads key
        "ffn_hidden_size": 128,  # second FFN key
        "vocab_size": 1000,
        "dtype": "float16",
        "text_config": {"hidden_size": 128},  # merged over the top level
    }
    a = architecture_from_hf_config(doc, "cfg")
    assert (a.layers, a.hidden, a.kv_heads, a.ffn, a.dtype_bytes) == (2, 128, 2, 128, 2)
    doc = {
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "vocab_size": 1000,
        "torch_dtype": "float32",
    }
    a = architecture_from_hf_config(doc, "cfg")
    assert a.kv_heads == 4  # default H
    assert a.dense_ffn == 256  # 0 -> 4d (with a warning: test_input_review25)
    # vLLM's --dtype auto serves a float32 checkpoint in 16 bits (the reference says 4)
    assert a.dtype_bytes == 2


def test_float32_checkpoint_is_served_in_16_bits():
    """vLLM's --dtype auto casts a float32 checkpoint to 16 bits: same weights and KV."""
    from inference_sim.catalog.capacity import derive_kv_blocks

    base = {
        "num_hidden_layers": 32,
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "intermediate_size": 11008,
        "vocab_size": 32000,
    }
    f32 = architecture_from_hf_config({**base, "torch_dtype": "float32"}, "cfg")
    bf16 = architecture_from_hf_config({**base, "torch_dtype": "bfloat16"}, "cfg")
    assert f32.weight_bytes() == bf16.weight_bytes()
    assert f32.kv_bytes_per_token(1) == bf16.kv_bytes_per_token(1)
    gpu = load_catalog().gpu("H100")
    assert derive_kv_blocks(f32, gpu, 1).blocks == derive_kv_blocks(bf16, gpu, 1).blocks > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_hidden_layers": None}, r"config\.json: num_hidden_layers: required and must be > 0"),
        ({"hidden_size": "4096"}, r"config\.json: hidden_size: expected a number, got str"),
        ({"num_attention_heads": 0}, r"num_attention_heads: required and must be > 0, got 0"),
        ({"num_key_value_heads": True}, r"num_key_value_heads: expected a number, got bool"),
        ({"torch_dtype": "float64"}, r"torch_dtype: unknown dtype 'float64'"),
        ({"torch_dtype": None}, r"torch_dtype: missing"),
        ({"num_local_experts": 8}, r"num_experts_per_tok: required for a MoE model"),
    ],
)
def test_config_errors_name_file_and_field(tmp_path, change, message):
    doc = {**LLAMA_CFG, **change}
    doc = {k: v for k, v in doc.items() if v is not None}
    folder = write_config(tmp_path, doc)
    with pytest.raises(CatalogError, match=message) as info:
        read_model_config_folder(folder)
    assert "\n" not in str(info.value)
    assert str(folder / "config.json") in str(info.value)


def test_config_file_errors(tmp_path):
    with pytest.raises(CatalogError, match="not found"):
        read_model_config_folder(tmp_path / "nowhere")
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "config.json").write_text("{nope", encoding="utf-8")
    with pytest.raises(CatalogError, match="invalid JSON at line 1"):
        read_model_config_folder(folder)
    (folder / "config.json").write_text("[1]", encoding="utf-8")
    with pytest.raises(CatalogError, match="expected a JSON object"):
        read_model_config_folder(folder / "config.json")


def test_moe_layer_patterns():
    base = {**LLAMA_CFG, "num_hidden_layers": 8, "num_experts_per_tok": 2}
    # Mixtral: every layer.
    a = architecture_from_hf_config({**base, "num_local_experts": 8}, "c")
    assert a.moe is not None and (a.moe.moe_layers, a.moe.expert_ffn, a.moe.shared_ffn) == (
        8,
        14336,
        0,
    )
    # Llama-4: every second layer, one shared expert, dense layers use intermediate_size_mlp.
    a = architecture_from_hf_config(
        {
            **base,
            "model_type": "llama4_text",
            "num_local_experts": 128,
            "interleave_moe_layer_step": 2,
            "intermediate_size": 8192,
            "intermediate_size_mlp": 16384,
        },
        "c",
    )
    assert a.moe is not None
    assert (a.moe.moe_layers, a.moe.expert_ffn, a.moe.shared_ffn, a.ffn) == (4, 8192, 8192, 16384)
    # DeepSeek: first dense layers, shared experts.
    a = architecture_from_hf_config(
        {
            **base,
            "n_routed_experts": 64,
            "moe_intermediate_size": 1408,
            "n_shared_experts": 2,
            "first_k_dense_replace": 1,
            "moe_layer_freq": 1,
        },
        "c",
    )
    assert a.moe is not None and (a.moe.moe_layers, a.moe.shared_ffn) == (7, 2816)
    assert a.dense_layers == 1
    # Qwen-MoE: mlp_only_layers and a sparse step.
    a = architecture_from_hf_config(
        {**base, "num_experts": 60, "moe_intermediate_size": 1408, "decoder_sparse_step": 1,
         "mlp_only_layers": [0, 7], "shared_expert_intermediate_size": 5632},
        "c",
    )  # fmt: skip
    assert a.moe is not None and (a.moe.moe_layers, a.moe.shared_ffn) == (6, 5632)


def test_quantization_and_vision_for_memory_only():
    doc = {
        **LLAMA_CFG,
        "quantization_config": {
            "quant_method": "compressed-tensors",
            "config_groups": {"g": {"weights": {"num_bits": 4, "group_size": 128}}},
            "ignore": ["lm_head"],
        },
        "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 2},
    }
    a = architecture_from_hf_config(doc, "c")
    assert a.quantization is not None
    assert (a.quantization.bytes_per_param, a.quantization.scope) == (0.515625, "linear")
    assert a.extra_params == 2 * (4 * 1024 * 1024 + 2 * 1024 * 4096)
    assert a.dtype_bytes == 2  # the roofline keeps the reference's torch_dtype bytes
    full = architecture_from_hf_config(LLAMA_CFG, "c")
    assert a.weight_bytes() < full.weight_bytes()


@pytest.mark.skipif(not REFERENCE_CONFIGS.is_dir(), reason="reference configs not present")
@pytest.mark.parametrize(
    ("folder", "model_id"),
    [
        ("llama-2-7b-hf", "meta-llama/llama-2-7b-hf"),
        ("llama-3.1-8b-instruct", "meta-llama/llama-3.1-8b-instruct"),
        ("llama-3.1-70b-instruct", "meta-llama/llama-3.1-70b-instruct"),
        ("codellama-34b-instruct-hf", "codellama/codellama-34b-instruct-hf"),
        ("yi-34b", "01-ai/yi-34b"),
        ("mistral-nemo-instruct-2407", "mistralai/mistral-nemo-instruct-2407"),
        ("qwen2.5-1.5b-instruct", "qwen/qwen2.5-1.5b-instruct"),
        ("qwen2.5-3b-instruct", "qwen/qwen2.5-3b-instruct"),
        ("qwen2.5-7b-instruct", "qwen/qwen2.5-7b-instruct"),
        ("qwen3-14b", "qwen/qwen3-14b"),
        ("qwen3-30b-a3b", "qwen/qwen3-30b-a3b"),
        ("mixtral-8x7b-v0.1", "mistralai/mixtral-8x7b-v0.1"),
        ("deepseek-v2-lite", "deepseek-ai/deepseek-v2-lite"),
        (
            "llama-4-scout-17b-16e-instruct-fp8-dynamic",
            "redhatai/llama-4-scout-17b-16e-instruct-fp8-dynamic",
        ),
    ],
)
def test_bundled_data_agrees_with_the_reference_configs(folder, model_id):
    parsed = read_model_config_folder(REFERENCE_CONFIGS / folder)
    bundled = bundled_architecture(model_id)
    assert bundled is not None
    for f in ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "dtype_bytes", "head_dim"):
        assert getattr(parsed, f) == getattr(bundled, f), f
    assert parsed.moe == bundled.moe
    assert parsed.mla == bundled.mla
    assert parsed.quantization == bundled.quantization


# ------------------------------------------------------------------ bundled table


def test_every_catalog_model_has_an_architecture():
    catalog = load_catalog()
    missing = [m for m in catalog.model_ids() if bundled_architecture(m) is None]
    assert missing == []


def test_bundled_parameter_counts_match_published_sizes():
    expected = {  # published totals, in billions
        "meta-llama/llama-3.1-8b-instruct": 8.03,
        "meta-llama/llama-3.1-70b-instruct": 70.6,
        "mistralai/mixtral-8x7b-v0.1": 46.7,
        "qwen/qwen3-30b-a3b": 30.5,
        "deepseek-ai/deepseek-v2-lite": 15.7,
        "openai/gpt-oss-120b": 116.8,
        "openai/gpt-oss-20b": 20.9,
        "meta-llama/llama-4-scout-17b-16e-instruct": 109.0,
        "meta-llama/llama-4-maverick-17b-128e-instruct-fp8": 400.0,
        "microsoft/phi-4": 14.7,
        "ibm-granite/granite-3.1-8b-instruct": 8.2,
    }
    for model_id, billions in expected.items():
        a = bundled_architecture(model_id)
        assert a is not None
        assert a.param_count() / 1e9 == pytest.approx(billions, rel=0.01), model_id


def test_bundled_entries_all_cite_a_source():
    for model_id, a in bundled_architectures().items():
        assert a.source, model_id
        assert a.name == model_id


def test_same_as_and_validation():
    doc = {
        "format": "inference-sim-architectures/1",
        "models": {
            "b": {"same_as": "a", "source": "s", "quantization": {"bytes_per_param": 1}},
            "a": {"source": "s", "layers": 2, "hidden": 8, "heads": 2, "kv_heads": 1,
                  "ffn": 16, "vocab": 10, "dtype_bytes": 2},
        },
    }  # fmt: skip
    out = parse_architectures(doc, "f")
    assert out["b"].layers == 2 and out["b"].quantization is not None
    doc["models"]["c"] = {"same_as": "nope", "source": "s"}
    with pytest.raises(CatalogError, match="unknown model 'nope'"):
        parse_architectures(doc, "f")
    del doc["models"]["c"]
    doc["models"]["a"]["layerz"] = 1
    with pytest.raises(CatalogError, match="unknown key layerz"):
        parse_architectures(doc, "f")


# ------------------------------------------------------------------ GPUs


def test_bundled_gpus_have_specs_memory_and_sources():
    catalog = load_catalog()
    published = {  # dense BF16 TFLOP/s, TB/s, GB
        "H100": (989.5, 3.35, 80),
        "A100-SXM": (312, 2.039, 80),
        "A100-40GB": (312, 1.555, 40),
        "H100-PCIe": (756.5, 2.0, 80),
        "H200": (989.5, 4.8, 141),
        "B200": (2250, 8.0, 180),
        "L40S": (362.05, 0.864, 48),
        "A10G": (70, 0.6, 24),
        "L4": (121, 0.3, 24),
        "MI300X": (1307.4, 5.3, 192),
    }
    assert sorted(published) == catalog.gpu_names()
    for name, (tflops, tbs, gb) in published.items():
        g = catalog.gpu(name)
        assert (g.peak_tflops, g.peak_bandwidth_tbs, g.memory_gb) == (tflops, tbs, gb)
        assert 0.9 * gb < g.memory_gib <= gb
        assert g.source
    assert catalog.gpu("A100-80") is catalog.gpu("A100-SXM")


def test_hardware_config_adds_and_overrides(tmp_path):
    path = tmp_path / "hw.json"
    path.write_text(
        json.dumps(
            {
                "MyGPU": {
                    "tflopspeak": 100, "BWPEAKTBS": 1.0, "BwEffConstant": 0.5, "mfuPrefill": 0.5,
                    "mfuDecode": 0.1, "TOverheadMicros": 10, "memoryGB": 48, "comment": "ignored",
                },
                "A100-80": {
                    "TFlopsPeak": 300, "BwPeakTBs": 2.0, "BwEffConstant": 0.7, "mfuPrefill": 0.6,
                    "mfuDecode": 0.1,
                },
            }
        ),
        encoding="utf-8",
    )  # fmt: skip
    gpus = read_hardware_config(path)
    assert gpus["MyGPU"].peak_tflops == 100
    assert gpus["MyGPU"].per_layer_overhead_us == 0  # missing reads as 0
    assert gpus["MyGPU"].usable_memory_bytes == pytest.approx(48 * 0.99 * 2**30)
    merged = with_hardware_config(load_catalog(), path)
    assert "MyGPU" in merged.gpu_names()
    a100 = merged.gpu("A100-SXM")
    assert a100.peak_tflops == 300
    assert a100.memory_gib == load_catalog().gpu("A100-SXM").memory_gib  # kept
    assert merged.gpu("A100-80") is a100
    assert load_catalog().gpu("A100-SXM").peak_tflops == 312  # bundled untouched


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"BwPeakTBs": 1, "BwEffConstant": 1, "mfuPrefill": 1, "mfuDecode": 1},
         "TFlopsPeak: required"),
        ({"TFlopsPeak": "fast"}, r"X\.TFlopsPeak: expected a number"),
        ({"TFlopsPeak": 1, "BwPeakTBs": 1, "BwEffConstant": 1, "mfuPrefill": 1, "mfuDecode": 0},
         "mfuDecode: required and must be > 0"),
    ],
)  # fmt: skip
def test_hardware_config_errors(tmp_path, entry, message):
    path = tmp_path / "hw.json"
    path.write_text(json.dumps({"X": entry}), encoding="utf-8")
    with pytest.raises(CatalogError, match=message):
        read_hardware_config(path)


def test_reference_hardware_config_reads_as_bundled(tmp_path):
    path = tmp_path / "hardware_config.json"
    path.write_text(
        '{"H100": {"TFlopsPeak": 989.5, "BwPeakTBs": 3.35, "BwEffConstant": 0.72,'
        ' "TOverheadMicros": 500.0, "perLayerOverhead": 20.0, "mfuPrefill": 0.65,'
        ' "mfuDecode": 0.12, "allReduceLatency": 20.0}}',
        encoding="utf-8",
    )
    ours = load_catalog().gpu("H100")
    theirs = with_hardware_config(load_catalog(), path).gpu("H100")
    for f in ("peak_tflops", "peak_bandwidth_tbs", "bandwidth_efficiency", "step_overhead_us",
              "per_layer_overhead_us", "mfu_prefill", "mfu_decode", "allreduce_latency_us",
              "memory_gib"):  # fmt: skip
        assert getattr(ours, f) == getattr(theirs, f), f


def test_hardware_config_refuses_a_figure_or_gpu_given_twice(tmp_path):
    """JSON keeps the last of two equal keys, and the figure keys are case-insensitive:
    a second spelling of one figure, or a GPU listed twice, would silently win."""
    full = (
        '"TFlopsPeak": 989, "BwPeakTBs": 3.35, "BwEffConstant": 0.7,'
        ' "mfuPrefill": 0.6, "mfuDecode": 0.1'
    )
    path = tmp_path / "hw.json"
    path.write_text('{"G": {' + full + ', "TflopsPeak": 5}}', encoding="utf-8")
    with pytest.raises(CatalogError, match="TFlopsPeak and TflopsPeak name the same figure"):
        read_hardware_config(path)
    path.write_text('{"G": {' + full + '}, "G": {"TFlopsPeak": 5}}', encoding="utf-8")
    with pytest.raises(CatalogError, match="key 'G' given twice"):
        read_hardware_config(path)
