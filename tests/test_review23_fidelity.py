"""Review 23 (fidelity): FP8 scope, quantization read from config.json, TP across nodes,
local attention, the model family of Meta's old repository names.

Each test fails on the code before the fix it names.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from inference_sim.catalog import load_catalog
from inference_sim.catalog.architecture import (
    LocalAttention,
    ModelArchitecture,
    architecture_from_hf_config,
    bundled_architecture,
    parse_architectures,
    read_model_config_folder,
)
from inference_sim.catalog.errors import CatalogError
from inference_sim.core.batch import StepBatch
from inference_sim.latency import nodes
from inference_sim.latency.calibrated import CalibratedLatencyModel
from inference_sim.latency.fidelity import assess, model_family
from inference_sim.latency.roofline import RooflineLatencyModel

CONFIGS = Path(__file__).resolve().parents[2] / "shared" / "reference-data" / "model_configs"
GLM_FP8 = CONFIGS / "glm-5.2-fp8"
SCOUT_CFG = CONFIGS / "llama-4-scout-17b-16e-instruct-fp8-dynamic"
H100 = load_catalog().gpu("H100")
SCOUT = "redhatai/llama-4-scout-17b-16e-instruct-fp8-dynamic"
MAVERICK = "meta-llama/llama-4-maverick-17b-128e-instruct-fp8"
LLAMA70 = "meta-llama/llama-3.1-70b-instruct"


def _arch(model: str) -> ModelArchitecture:
    arch = bundled_architecture(model)
    assert arch is not None
    return arch


#: Llama-3.1-8B-Instruct's published config.json shape (the fields the reader uses), so
#: the tests run without ../shared.
LLAMA8 = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}
needs_shared = pytest.mark.skipif(
    not CONFIGS.is_dir(), reason="../shared/reference-data/model_configs not present"
)


def _llama8_config(quantization: dict[str, Any] | None) -> dict[str, Any]:
    doc = json.loads(json.dumps(LLAMA8))
    if quantization is not None:
        doc["quantization_config"] = quantization
    return dict(doc)


# --------------------------------------------------------------- 1. FP8 scope


@pytest.mark.parametrize(("model", "tp"), [(SCOUT, 2), (MAVERICK, 8)])
def test_fp8_checkpoints_run_only_their_quantized_layers_at_the_fp8_rate(
    model: str, tp: int
) -> None:
    """Scout FP8 keeps attention in BF16, Maverick FP8 everything but the routed experts;
    vLLM runs those (and the router and LM head) as BF16 GEMMs. Before the fix every GEMM
    FLOP was priced at twice the BF16 peak."""
    m = CalibratedLatencyModel(_arch(model), H100, tp)
    sh = m.shape
    assert sh.gemm_peak == 2 * sh.peak
    assert 0 < sh.quantized_flops_per_token < sh.flops_per_token
    n = 8192
    flops_s = sh.raw([(0, n)], 0, 0)[2]
    q = sh.quantized_flops_per_token
    want = q * n / sh.gemm_peak + ((sh.flops_per_token - q) * n + sh.flops_per_request) / sh.peak
    assert flops_s == pytest.approx(want, rel=1e-12)
    all_fp8 = (sh.flops_per_token * n + sh.flops_per_request) / sh.gemm_peak
    assert flops_s > all_fp8 * 1.05


def test_maverick_prefill_prices_its_bf16_layers_at_the_bf16_rate() -> None:
    """The reviewer's figure: 80 % of Maverick's GEMM FLOPs are BF16; an 8192-token
    prefill at TP 8 on H100 was 86.8 ms with every GEMM at the FP8 rate."""
    m = CalibratedLatencyModel(_arch(MAVERICK), H100, 8)
    assert m.shape.quantized_flops_per_token / m.shape.flops_per_token == pytest.approx(
        0.2, abs=0.01
    )
    assert m.step_time_from([(0, 8192)], 0, 0) > 100_000


def test_unquantized_and_fully_quantized_models_keep_their_gemm_pricing() -> None:
    bf16 = CalibratedLatencyModel(_arch(LLAMA70), H100, 4).shape
    assert bf16.quantized_flops_per_token == 0.0 and bf16.gemm_peak == bf16.peak
    fp8 = CalibratedLatencyModel(_arch("redhatai/qwen2.5-7b-instruct-fp8-dynamic"), H100, 1)
    assert fp8.shape.quantized_flops_per_token == fp8.shape.flops_per_token  # all linear
    a100 = CalibratedLatencyModel(_arch(SCOUT), load_catalog().gpu("A100-SXM"), 2).shape
    assert a100.quantized_flops_per_token == 0.0  # no FP8 cores: weight-only, 16-bit


# --------------------------------------------------------------- 2. config decides


@needs_shared
def test_the_same_fp8_config_is_priced_the_same_whatever_the_model_name() -> None:
    """GLM's fp8 config (quant_method fp8, dynamic activations) was W8A8 as
    ``zai-org/glm-5.2-fp8`` and BF16-rate as ``zai-org/glm-5.2``."""
    times = []
    for name in ("zai-org/glm-5.2", "zai-org/glm-5.2-fp8"):
        arch = read_model_config_folder(GLM_FP8, name)
        assert arch.quantization is not None and arch.quantization.activations == "fp8"
        m = CalibratedLatencyModel(arch, H100, 8)
        assert m.shape.gemm_peak == 2 * m.shape.peak
        times.append((m.step_time_from([(0, 8192)], 0, 0), m.step_time_from([], 64, 128000)))
    assert times[0] == times[1]
    fid = assess("zai-org/glm-5.2", read_model_config_folder(GLM_FP8, "zai-org/glm-5.2"), "H100", 8)
    assert any(c.startswith("FP8 weights") for c in fid["caveats"])
    assert not any("weight-only" in c for c in fid["caveats"])


@pytest.mark.parametrize(
    ("quant", "activations", "bytes_per_param"),
    [
        ({"quant_method": "modelopt", "quant_algo": "FP8"}, "fp8", 1.0),
        ({"quant_method": "modelopt", "quantization": {"quant_algo": "NVFP4"}}, "none", 0.5625),
        (
            {
                "quant_method": "quark",
                "global_quant_config": {
                    "weight": {"dtype": "fp8_e4m3"},
                    "input_tensors": {"dtype": "fp8_e4m3"},
                },
            },
            "fp8",
            1.0,
        ),
        (
            {
                "quant_method": "compressed-tensors",
                "config_groups": {
                    "g": {
                        "weights": {"num_bits": 8, "type": "float"},
                        "input_activations": {"num_bits": 8, "type": "float"},
                    }
                },
            },
            "fp8",
            1.0,
        ),
        (
            {
                "quant_method": "compressed-tensors",
                "config_groups": {
                    "g": {
                        "weights": {"num_bits": 8, "type": "int"},
                        "input_activations": {"num_bits": 8, "type": "int"},
                    }
                },
            },
            "int8",
            1.0,
        ),
        (
            {
                "quant_method": "compressed-tensors",
                "config_groups": {"g": {"weights": {"num_bits": 8, "type": "int"}}},
            },
            "none",
            1.0,
        ),
        ({"quant_method": "fbgemm_fp8"}, "fp8", 1.0),
    ],
)
def test_activations_and_weight_width_come_from_the_quantization_config(
    quant: dict[str, Any], activations: str, bytes_per_param: float
) -> None:
    # A name that says nothing (or the opposite): the config decides.
    arch = architecture_from_hf_config(_llama8_config(quant), "cfg", "acme/llama-8b-fp8-w8a8")
    q = arch.quantization
    assert q is not None
    assert (q.activations, q.bytes_per_param) == (activations, pytest.approx(bytes_per_param))
    m = CalibratedLatencyModel(arch, H100, 1)
    assert m.shape.gemm_peak == m.shape.peak * (2 if activations != "none" else 1)
    assert m.shape.gemm_dtype == ("" if activations == "none" else activations)


def test_modelopt_fp8_weights_stream_one_byte() -> None:
    """ModelOpt FP8 was read as no quantization: 16-bit weights, BF16 GEMMs (Llama-3.1-8B
    decode at batch 1 on H100 6.28 ms instead of about 3.9)."""
    bf16 = architecture_from_hf_config(_llama8_config(None), "cfg", "nvidia/llama-3.1-8b-fp8")
    fp8 = architecture_from_hf_config(
        _llama8_config({"quant_method": "modelopt", "quant_algo": "FP8"}),
        "cfg",
        "nvidia/llama-3.1-8b-fp8",
    )
    assert fp8.weight_bytes() < 0.6 * bf16.weight_bytes()
    fast = CalibratedLatencyModel(fp8, H100, 1).step_time_from([], 1, 1000)
    assert fast < 0.7 * CalibratedLatencyModel(bf16, H100, 1).step_time_from([], 1, 1000)


def test_an_unknown_quant_method_is_named_in_one_warning(
    sim_log: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog = sim_log
    from inference_sim.catalog import architecture as mod

    monkeypatch.setattr(mod, "_WARNED_QUANT_METHODS", set())
    doc = _llama8_config({"quant_method": "hqq", "nbits": 4})
    with caplog.at_level(logging.WARNING, logger="inference_sim"):
        assert architecture_from_hf_config(doc, "cfg").quantization is None
        architecture_from_hf_config(doc, "cfg")
    # one record (the handler may see it twice: on the package logger and, when it
    # propagates, on the root)
    hits = list({id(r): r for r in caplog.records if "'hqq'" in r.getMessage()}.values())
    assert len(hits) == 1 and "16 bits" in hits[0].getMessage()


def test_bundled_entries_say_what_their_gemms_compute_in() -> None:
    assert _arch("redhatai/qwen2.5-7b-instruct-quantized.w8a8").quantization.activations == "int8"  # type: ignore[union-attr]
    assert _arch("redhatai/qwen2.5-7b-instruct-fp8-dynamic").quantization.activations == "fp8"  # type: ignore[union-attr]
    w4 = _arch("redhatai/qwen2.5-7b-instruct-quantized.w4a16").quantization
    assert w4 is not None and w4.activations == "none"
    doc = {
        "format": "inference-sim-architectures/1",
        "models": {
            "x/m": {
                "source": "test",
                "layers": 2,
                "hidden": 64,
                "heads": 4,
                "kv_heads": 4,
                "vocab": 100,
                "dtype_bytes": 2,
                "quantization": {"bytes_per_param": 1, "activations": "fp16"},
            }
        },
    }
    with pytest.raises(CatalogError, match="activations: expected one of none, fp8, int8"):
        parse_architectures(doc, "t")


# --------------------------------------------------------------- 3. TP across nodes


def test_tp_above_a_node_pays_the_network_all_reduce(
    sim_log: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TP 16 on H100 was priced as one NVLink node: a decode step of 32 faster than TP 8."""
    caplog = sim_log
    monkeypatch.setattr(nodes, "_warned", set())
    arch = _arch(LLAMA70)
    with caplog.at_level(logging.WARNING, logger="inference_sim"):
        tp8 = CalibratedLatencyModel(arch, H100, 8)
        tp16 = CalibratedLatencyModel(arch, H100, 16)
        roof8, roof16 = RooflineLatencyModel(arch, H100, 8), RooflineLatencyModel(arch, H100, 16)
    assert not tp8.shape.spans_nodes and tp16.shape.spans_nodes
    assert tp16.step_time_from([], 32, 32000) > tp8.step_time_from([], 32, 32000)
    # the roofline keeps the reference's one-node formulas (DECISIONS) and says so
    assert roof16.step_time_from([], 32, 32000) < roof8.step_time_from([], 32, 32000)
    assert any("prices its all-reduce as within one node" in r.getMessage() for r in caplog.records)
    comm = tp16.terms([], 1, 1000)["allreduce_us"]
    assert comm >= 2 * arch.layers * nodes.INTER_NODE_ALLREDUCE_US
    assert any("TP 16 spans 2 nodes" in r.getMessage() for r in caplog.records)
    fid = assess(LLAMA70, arch, "H100", 16)
    assert fid["lower_bound"] and any("spans 2 nodes" in c for c in fid["caveats"])
    assert not any("spans" in c for c in assess(LLAMA70, arch, "H100", 8)["caveats"])


def test_the_network_caps_the_bus_bandwidth_only_when_slower_than_the_node() -> None:
    arch = _arch(LLAMA70)
    l4 = load_catalog().gpu("L4")
    sh = CalibratedLatencyModel(arch, l4, 16).shape
    assert sh.link_bw == pytest.approx(nodes.node_network_gbs("L4") * 1e9)
    h = CalibratedLatencyModel(arch, H100, 16).shape
    assert h.link_bw == CalibratedLatencyModel(arch, H100, 8).shape.link_bw


# --------------------------------------------------------------- 4. local attention


def _gpt_oss_like(layer_types: list[str] | None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "num_hidden_layers": 4,
        "hidden_size": 2880,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "intermediate_size": 2880,
        "vocab_size": 201088,
        "torch_dtype": "bfloat16",
        "sliding_window": 128,
        "max_position_embeddings": 131072,
        **extra,
    }
    if layer_types is not None:
        doc["layer_types"] = layer_types
    return doc


def test_local_attention_is_read_from_the_config() -> None:
    alt = ["sliding_attention", "full_attention"] * 2
    assert architecture_from_hf_config(_gpt_oss_like(alt), "c").local_attention == LocalAttention(
        "sliding", 128, 2
    )
    assert architecture_from_hf_config(_gpt_oss_like(None), "c").local_attention == (
        LocalAttention("sliding", 128, 4)  # Mistral-7B-v0.1 style: every layer
    )
    qwen = _gpt_oss_like(None, use_sliding_window=False)
    assert architecture_from_hf_config(qwen, "c").local_attention is None


@needs_shared
def test_llama4_chunked_attention_is_read_from_its_config() -> None:
    scout = read_model_config_folder(SCOUT_CFG)  # no_rope_layers empty: every 4th global
    assert scout.local_attention == LocalAttention("chunked", 8192, 36)


@pytest.mark.parametrize("kind", ["sliding", "chunked"])
def test_attended_positions_match_a_direct_sum(kind: str) -> None:
    la = LocalAttention(kind, 128, 1)
    for s, n in ((0, 1), (0, 100), (50, 200), (127, 2), (128, 1), (300, 700), (1000, 1)):
        assert la.attended(s, n) == sum(la.span(p) for p in range(s + 1, s + n + 1)), (s, n)


def test_sliding_window_layers_read_and_attend_only_their_window() -> None:
    """gpt-oss: half its layers read 128 tokens; the decode step at 16k was 38 % too slow
    and long prefills' attention about twice too high."""
    base = replace(_arch("openai/gpt-oss-120b"), local_attention=None)  # every layer full
    local = replace(base, local_attention=LocalAttention("sliding", 128, base.layers // 2))
    assert _arch("openai/gpt-oss-120b").local_attention == local.local_attention  # bundled
    full_m, win_m = CalibratedLatencyModel(base, H100, 1), CalibratedLatencyModel(local, H100, 1)
    sh = win_m.shape
    d, ctx = 64, 16000
    kv = sh.raw([], d, d * ctx)[3]
    half = sh.kv_tok / 2
    assert kv == pytest.approx((half * (d * ctx + d) + half * d * 128) / sh.bw)
    assert win_m.step_time_from([], d, d * ctx) < 0.8 * full_m.step_time_from([], d, d * ctx)
    att_full = full_m.shape.raw([(16000, 2048)], 0, 0)[4]
    att_win = sh.raw([(16000, 2048)], 0, 0)[4]
    assert att_win == pytest.approx(att_full / 2 + att_full / 2 * 128 / (16000 + 2049 / 2))
    # The fast decode path (batch totals) prices what the listed path does.
    batch = StepBatch()
    batch.decode_tokens, batch.decode_context_sum = d, d * ctx
    assert win_m.step_time(batch) == win_m.step_time_from([], d, d * ctx)


# --------------------------------------------------------------- 6. model family


def test_meta_prefixed_repository_names_fall_in_their_llama_family() -> None:
    assert model_family("meta-llama/Meta-Llama-3-8B-Instruct") == "llama-3"
    assert model_family("RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8") == "llama-3"
    fid = assess("meta-llama/Meta-Llama-3-8B-Instruct", _arch(LLAMA70), "H100", 4)
    assert fid["model_seen"] == "family"


def test_a_vision_tower_s_ignored_attention_leaves_the_language_model_quantized() -> None:
    """llm-compressor lists every ignored module: Qwen2.5-VL's vision attention
    (visual.blocks.N.attn) made the language model's attention count as 16-bit."""

    def fp8(ignore: list[str]) -> Any:
        quant = {
            "quant_method": "compressed-tensors",
            "config_groups": {
                "g": {
                    "weights": {"num_bits": 8, "type": "float"},
                    "input_activations": {"num_bits": 8, "type": "float"},
                    "targets": ["Linear"],
                }
            },
            "ignore": ignore,
        }
        return architecture_from_hf_config(_llama8_config(quant), "cfg").quantization

    vision = ["lm_head", "visual.blocks.0.attn.qkv", "vision_model.layers.0.self_attn.q_proj"]
    assert fp8(vision).scope == fp8(["lm_head"]).scope == "linear"
    assert fp8(["lm_head", "model.layers.0.self_attn.q_proj"]).scope == "mlp"


def test_log_line_is_revised_when_the_prompts_change_the_record() -> None:
    """The start-up fidelity line cannot know the prompts; long prompts make the record a
    lower bound, and an info line after the run says so as the results file does."""
    from click.testing import CliRunner

    from inference_sim.cli.main import cli

    base = [
        "run", "--model", "qwen/qwen2.5-7b-instruct", "--hardware", "H100", "--tp", "1",
        "--latency-model", "calibrated", "--output-tokens", "50", "--num-requests", "10",
        "--json", "--log", "info",
    ]  # fmt: skip
    long_prompts = ["--prompt-tokens", "6000", "--prompt-tokens-stdev", "10"]
    res = CliRunner().invoke(cli, [*base, *long_prompts, "--prompt-tokens-max", "7000"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["fidelity"]["lower_bound"] is True
    revised = [ln for ln in res.stderr.splitlines() if "revised with" in ln]
    assert len(revised) == 1 and "at least E2E" in revised[0], res.stderr
    res = CliRunner().invoke(cli, base)  # short prompts: the start-up line stands
    assert res.exit_code == 0 and "fidelity:" in res.stderr and "revised" not in res.stderr
