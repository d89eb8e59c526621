"""The calibrated latency model: each step-time term on hand-computed values, the client-side
overheads (async scheduling), coefficient files, and how ``--latency-model`` resolves it."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from inference_sim import simulate
from inference_sim.catalog.architecture import ModelArchitecture, MoESpec, WeightQuantization
from inference_sim.catalog.schema import GpuSpec
from inference_sim.cli.main import cli
from inference_sim.config.errors import ConfigError
from inference_sim.config.resolve import resolve
from inference_sim.core.request import Request
from inference_sim.instance import make_instance
from inference_sim.instance.config import EngineConfig
from inference_sim.latency import StepBatch, create_latency_model, latency_model_names
from inference_sim.latency.blackbox import LatencyConfigError
from inference_sim.latency.calibrated import (
    DENSE_LAYER_KERNELS,
    CalibratedCoefficients,
    CalibratedLatencyModel,
    StepShape,
    cuda_graph_tokens,
    default_coefficients,
    gpu_correction,
    load_coefficients,
    moe_extra_kernels,
)

# A toy dense model with round numbers: 2 layers, hidden 1000, 10 heads of 100, 5 KV heads,
# FFN 2000, vocab 1000, 2 bytes per parameter.
DENSE = ModelArchitecture(
    name="toy/dense",
    layers=2,
    hidden=1000,
    heads=10,
    kv_heads=5,
    ffn=2000,
    vocab=1000,
    dtype_bytes=2,
)
# Per layer: attention 1000*(1000 + 2*500) + 1000*1000 = 3e6; MLP 3*1000*2000 = 6e6.
# Linear params 2 * 9e6 = 1.8e7; LM head 1e6; KV per token 2*2*5*100*2 = 4000 bytes.
GPU = GpuSpec(
    name="TOY",
    peak_tflops=100.0,
    peak_bandwidth_tbs=1.0,
    bandwidth_efficiency=1.0,
    step_overhead_us=0.0,
    per_layer_overhead_us=0.0,
    mfu_prefill=1.0,
    mfu_decode=1.0,
    allreduce_latency_us=0.0,
    memory_gb=80.0,
)
UNIT = CalibratedCoefficients(
    weight_read=1.0,
    compute=1.0,
    kv_read=1.0,
    attention=1.0,
    moe=1.0,
    allreduce_us=0.0,
    step_us=0.0,
    layer_us=0.0,
    request_us=0.0,
    queue_us=0.0,
    queue_per_token_us=0.0,
    output_token_us=0.0,
    async_scheduling=False,
    smooth_p=1.0,
)


def model(arch=DENSE, tp=1, gpu=GPU, **coeffs) -> CalibratedLatencyModel:
    return CalibratedLatencyModel(arch, gpu, tp, UNIT.with_values(coeffs) if coeffs else UNIT)


def test_shape_of_a_dense_model():
    sh = StepShape(DENSE, GPU, 1)
    assert sh.dense_bytes == (1.8e7 + 1e6) * 2  # linear layers + LM head, 2 bytes each
    assert sh.flops_per_token == 2 * 1.8e7
    assert sh.flops_per_request == 2 * 1e6  # logits of one position
    assert sh.kv_tok == 4000
    assert sh.attn_flops_coef == 2 * 10 * (100 + 100) * 2  # 2 x heads x (qk + v) x layers
    assert sh.expert_bytes == 0 and sh.touched_experts(50) == 0
    tp2 = StepShape(DENSE, GPU, 2)
    assert tp2.dense_bytes == sh.dense_bytes / 2
    assert tp2.kv_tok == 1600  # 5 KV heads // TP 2 = 2 per rank
    # all-reduce payload: hidden x 2 bytes x 2 (tp-1)/tp per token
    assert tp2.ar_bytes_per_token == 1000 * 2 * 1.0


def test_each_term_of_a_decode_step():
    m = model()
    # 4 decoders with contexts summing to 1000: T = 4 tokens, R = 4 requests.
    t = m.terms([], 4, 1000)
    weights = 3.8e7 / 1e12 * 1e6  # bytes / (1 TB/s), in µs
    compute = (2 * 1.8e7 * 4 + 2e6 * 4) / 100e12 * 1e6
    assert t["weights_us"] == pytest.approx(weights)
    assert t["gemm_compute_us"] == pytest.approx(compute)
    assert t["linear_us"] == pytest.approx(weights + compute)  # smooth_p = 1: the sum
    assert t["kv_us"] == pytest.approx(4000 * (1000 + 4) / 1e12 * 1e6)
    assert t["attention_us"] == 0.0 and t["allreduce_us"] == 0.0
    total = weights + compute + t["kv_us"]
    assert t["total_us"] == pytest.approx(total)
    assert m.step_time_from([], 4, 1000) == round(total)


def test_smooth_max_between_memory_and_compute():
    m = model(smooth_p=2.0)
    t = m.terms([], 4, 1000)
    assert t["linear_us"] == pytest.approx(math.hypot(t["weights_us"], t["gemm_compute_us"]))
    big = model(smooth_p=50.0).terms([], 4, 1000)
    assert big["linear_us"] == pytest.approx(
        max(big["weights_us"], big["gemm_compute_us"]), rel=1e-3
    )


def test_prefill_attention_kv_and_overheads():
    m = model(attention=2.0, kv_read=1.5, step_us=100.0, layer_us=10.0, request_us=3.0, compute=1.0)
    # One prefill chunk of n = 100 new tokens after S = 50 cached ones, plus 2 decoders.
    t = m.terms([(50, 100)], 2, 300)
    attn_flops = 8000 * 100 * (50 + 101 / 2)  # coef x n x (S + (n + 1) / 2)
    assert t["attention_us"] == pytest.approx(2.0 * attn_flops / 100e12 * 1e6)
    kv_tokens = 300 + 2 + 50 + 100
    assert t["kv_us"] == pytest.approx(1.5 * 4000 * kv_tokens / 1e12 * 1e6)
    assert t["gemm_compute_us"] == pytest.approx((2 * 1.8e7 * 102 + 2e6 * 3) / 100e12 * 1e6)
    assert t["step_us"] == 100.0 and t["layers_us"] == 20.0 and t["requests_us"] == 9.0
    parts = ("linear_us", "kv_us", "attention_us", "step_us", "layers_us", "requests_us")
    assert t["total_us"] == pytest.approx(sum(t[k] for k in parts))


def test_tensor_parallel_allreduce():
    m = model(tp=2, allreduce_us=7.0)
    t = m.terms([], 10, 0)
    # 2 all-reduces per layer: latency 7 µs (NVLink-class default factor 1) + payload
    # 10 tokens x 2000 bytes over 300 GB/s (an unknown GPU's link)
    per = 7.0 + 10 * 2000 / 300e9 * 1e6
    assert t["allreduce_us"] == pytest.approx(2 * 2 * per)
    assert model(tp=1, allreduce_us=7.0).terms([], 10, 0)["allreduce_us"] == 0.0


def test_per_tp_worker_cost():
    """worker_us is paid once per TP worker per step at TP > 1, never at TP 1."""
    t4 = model(tp=4, worker_us=200.0).terms([], 10, 0)
    assert t4["workers_us"] == 800.0
    base4 = model(tp=4).terms([], 10, 0)
    assert t4["total_us"] == pytest.approx(base4["total_us"] + 800.0)
    t2 = model(tp=2, worker_us=200.0)
    assert t2.terms([], 10, 0)["total_us"] == pytest.approx(
        model(tp=2).terms([], 10, 0)["total_us"] + 400.0
    )
    t1 = model(tp=1, worker_us=200.0).terms([], 10, 0)
    assert t1["workers_us"] == 0.0
    assert t1["total_us"] == model(tp=1).terms([], 10, 0)["total_us"]
    # the cached decode path and the general path agree
    m = model(tp=4, worker_us=200.0)
    assert m.step_time(_decode_batch(3, 600)) == m.step_time_from([], 3, 600)


def _decode_batch(count: int, ctx: int) -> StepBatch:
    b = StepBatch()
    b.decode_tokens = count
    b.decode_context_sum = ctx
    return b


def test_overlap_joins_the_layer_cost_and_the_gpu_work():
    """overlap 1 adds the per-layer cost (the shipped form); a large exponent takes the
    larger of it and the GPU work, so a long step hides it; step_us stays additive."""
    kw = {"step_us": 100.0, "layer_us": 500.0}  # 2 layers: 1000 µs of per-layer cost
    summed = model(**kw)
    assert summed.coefficients.overlap == 1.0
    small = summed.terms([], 4, 1000)  # GPU work ~ 0.4 ms: below the layer cost
    gpu = small["linear_us"] + small["kv_us"]
    assert small["total_us"] == pytest.approx(100.0 + 1000.0 + gpu)
    ov = model(overlap=60.0, **kw)
    assert ov.terms([], 4, 1000)["total_us"] == pytest.approx(100.0 + 1000.0, rel=1e-3)
    long = ov.terms([(0, 4000)], 0, 0)  # a long prefill: GPU work well above 1 ms
    gpu_long = long["linear_us"] + long["kv_us"] + long["attention_us"]
    assert gpu_long > 2000.0
    assert long["total_us"] == pytest.approx(100.0 + gpu_long + long["requests_us"], rel=1e-3)
    mid = model(overlap=2.0, **kw).terms([], 4, 1000)["total_us"]
    assert mid == pytest.approx(100.0 + math.hypot(1000.0, gpu))
    # decode steps take the general path (no additive cache) and agree with it
    assert ov.step_time(_decode_batch(4, 1000)) == ov.step_time_from([], 4, 1000)
    with pytest.raises(LatencyConfigError, match="overlap must be >= 1"):
        CalibratedCoefficients(overlap=0.5)


def test_moe_expert_traffic():
    moe_arch = ModelArchitecture(
        name="toy/moe",
        layers=2,
        hidden=1000,
        heads=10,
        kv_heads=5,
        ffn=2000,
        vocab=1000,
        dtype_bytes=2,
        moe=MoESpec(experts=8, top_k=2, expert_ffn=500, shared_ffn=0, moe_layers=2),
        quantization=WeightQuantization(bytes_per_param=1.0, scope="experts"),
    )
    sh = StepShape(moe_arch, GPU, 1)
    assert sh.expert_bytes == 3 * 1000 * 500 * 1.0 * 2  # one expert, all MoE layers, 1 byte
    assert sh.touched_experts(1) == pytest.approx(2.0)
    # 3 tokens run as a CUDA graph of 4: the padding slot is routed like a real token
    assert sh.touched_experts(3) == pytest.approx(8 * (1 - 0.75**4))
    assert sh.touched_experts(600) == pytest.approx(8 * (1 - 0.75**600))  # eager: no pad
    assert sh.touched_experts(1000) == pytest.approx(8.0)
    m = CalibratedLatencyModel(moe_arch, GPU, 1, UNIT.with_values({"moe": 2.0}))
    t = m.terms([], 3, 0)
    dense = sh.dense_bytes / 1e12 * 1e6
    experts = 2.0 * sh.expert_bytes * sh.touched_experts(3) / 1e12 * 1e6
    assert t["weights_us"] == pytest.approx(dense + experts)
    # FLOPs count the top-k experts per token (router and attention included).
    active = 2 * 3e6 + 2 * (1000 * 8) + 2 * 2 * 3 * 1000 * 500
    assert sh.flops_per_token == 2 * active


def test_moe_factor_prices_quantized_experts_only():
    """``moe`` was fitted on FP8 fused-MoE kernels (Llama-4-Scout); 16-bit experts (Mixtral)
    stream like dense weights, so the factor must not touch them."""
    spec = MoESpec(experts=8, top_k=2, expert_ffn=500, shared_ffn=0, moe_layers=2)
    shape = {"layers": 2, "hidden": 1000, "heads": 10, "kv_heads": 5, "ffn": 2000,
             "vocab": 1000, "dtype_bytes": 2, "moe": spec}  # fmt: skip
    bf16 = ModelArchitecture(name="toy/moe-bf16", **shape)
    fp8 = ModelArchitecture(
        name="toy/moe-fp8",
        quantization=WeightQuantization(bytes_per_param=1.0, scope="experts"),
        **shape,
    )
    assert not StepShape(bf16, GPU, 1).quantized_experts
    assert StepShape(fp8, GPU, 1).quantized_experts
    for arch, factor in ((bf16, 1.0), (fp8, 3.0)):
        base = CalibratedLatencyModel(arch, GPU, 1, UNIT).terms([], 16, 0)["weights_us"]
        hi = CalibratedLatencyModel(arch, GPU, 1, UNIT.with_values({"moe": 3.0}))
        sh = hi.shape
        experts = sh.expert_bytes * sh.touched_experts(16) / 1e12 * 1e6
        assert hi.terms([], 16, 0)["weights_us"] == pytest.approx(base + (factor - 1) * experts)


def test_moe_layers_run_more_small_kernels():
    """An MoE layer's extra kernels (routing, token sort, combine; activation quantization
    for FP8 experts; a shared expert's GEMMs, activation and add) cost ``layer_us`` per
    dense layer's worth of kernels, a per-step cost that does not grow with the batch."""
    spec = MoESpec(experts=8, top_k=2, expert_ffn=500, shared_ffn=0, moe_layers=2)
    shape = {"layers": 3, "hidden": 1000, "heads": 10, "kv_heads": 5, "ffn": 2000,
             "vocab": 1000, "dtype_bytes": 2}  # fmt: skip
    fp8 = WeightQuantization(bytes_per_param=1.0, scope="mlp")
    int4 = WeightQuantization(bytes_per_param=0.5, scope="experts")
    shared = MoESpec(experts=8, top_k=1, expert_ffn=500, shared_ffn=500, moe_layers=2)
    cases = {
        "dense": (ModelArchitecture(name="toy/dense3", **shape), 0),
        "bf16 experts": (ModelArchitecture(name="toy/moe", moe=spec, **shape), 4),
        "fp8 experts": (
            ModelArchitecture(name="toy/moe-fp8-dynamic", moe=spec, quantization=fp8, **shape),
            4 + 2,
        ),
        "int4 weight-only": (
            ModelArchitecture(name="toy/moe-awq", moe=spec, quantization=int4, **shape),
            4,
        ),
        "bf16 + shared": (ModelArchitecture(name="toy/moe-sh", moe=shared, **shape), 4 + 4),
        "fp8 + shared": (
            ModelArchitecture(name="toy/moe-sh-fp8", moe=shared, quantization=fp8, **shape),
            4 + 2 + 4 + 2,
        ),
    }
    fp8_gpu = replace(GPU, name="H100")  # FP8 tensor cores: activations quantized
    for label, (arch, extra) in cases.items():
        assert moe_extra_kernels(arch, "fp8" in arch.name) == extra, label
        units = 3 + (2 * extra / DENSE_LAYER_KERNELS if arch.moe else 0)
        m = CalibratedLatencyModel(arch, fp8_gpu, 1, UNIT.with_values({"layer_us": 10.0}))
        assert m.shape.layer_units == pytest.approx(units), label
        assert m.terms([], 4, 0)["layers_us"] == pytest.approx(10.0 * units), label
        if "fp8" in label:  # weight-only (Marlin) kernels elsewhere: no activation quant
            other = CalibratedLatencyModel(arch, GPU, 1, UNIT)
            weight_only = 3 + 2 * moe_extra_kernels(arch, False) / DENSE_LAYER_KERNELS
            assert other.shape.layer_units == pytest.approx(weight_only), label
            assert weight_only < units, label
        # A fixed cost: the same at every batch size.
        plain = CalibratedLatencyModel(arch, fp8_gpu, 1, UNIT)
        for batch in (1, 16, 64):
            added = m.terms([], batch, 0)["total_us"] - plain.terms([], batch, 0)["total_us"]
            assert added == pytest.approx(10.0 * units), (label, batch)
    # Scaled by the GPU's small-kernel factor like the dense layers' cost.
    arch = cases["fp8 + shared"][0]
    slow = CalibratedLatencyModel(
        arch, fp8_gpu, 1, UNIT.with_values({"layer_us": 10.0}),
        correction=replace(gpu_correction("TOY"), layer=1.5),
    )  # fmt: skip
    assert slow.terms([], 4, 0)["layers_us"] == pytest.approx(1.5 * 10.0 * (3 + 2 * 1.2))


def test_cuda_graph_padding_sizes():
    sizes = {t: cuda_graph_tokens(t) for t in (0, 1, 2, 3, 4, 5, 9, 16, 17, 250, 256, 257, 512)}
    assert sizes == {0: 0, 1: 1, 2: 2, 3: 4, 4: 4, 5: 8, 9: 16, 16: 16, 17: 24, 250: 256,
                     256: 256, 257: 272, 512: 512}  # fmt: skip
    assert cuda_graph_tokens(513) == 513 and cuda_graph_tokens(2048) == 2048


def test_step_time_reads_batches_like_the_engines():
    m = CalibratedLatencyModel(DENSE, GPU, 1, UNIT.with_values({"step_us": 50.0}))
    b = StepBatch()
    fresh = Request(0, 0, list(range(100)), list(range(4)))
    fresh.num_computed_tokens = 20  # 20 cached tokens, 80 to compute
    b.add(fresh, 80, True)
    b.decode_tokens = 3
    b.decode_context_sum = 600
    assert m.step_time(b) == m.step_time_from([(20, 80)], 3, 600)
    only_decode = StepBatch()
    only_decode.decode_tokens = 3
    only_decode.decode_context_sum = 600
    # the cached decode-only path agrees with the general one
    assert m.step_time(only_decode) == m.step_time_from([], 3, 600)
    assert m.step_time(only_decode) == m.step_time(only_decode)


def test_async_scheduling_flag_and_client_overheads():
    c = UNIT.with_values({"queue_us": 1000.0, "queue_per_token_us": 2.0, "output_token_us": 7.4})
    m = CalibratedLatencyModel(DENSE, GPU, 1, c)
    r = Request(0, 5_000, list(range(100)), [1, 2])
    assert m.queueing_time(r) == 1000 + 200  # client overhead only
    assert m.output_token_time() == 7
    assert not m.async_scheduling
    lagged = CalibratedLatencyModel(DENSE, GPU, 1, replace_async(c, True))
    # The lag is the instance's (tests/test_vllm_step_trace.py): the queueing time stays
    # the client overhead, whatever steps ran before.
    assert lagged.async_scheduling
    b = StepBatch()
    first = Request(1, 0, list(range(16)), [1, 2])
    first.first_scheduled_time = 4000
    b.add(first, 16, True)
    assert lagged.step_time(b) > 0
    assert lagged.queueing_time(r) == 1200
    cfg = EngineConfig(num_gpu_blocks=10)
    assert make_instance(0, cfg, lagged).async_scheduling
    assert not make_instance(0, cfg, m).async_scheduling


def replace_async(c: CalibratedCoefficients, on: bool) -> CalibratedCoefficients:
    from dataclasses import replace

    return replace(c, async_scheduling=on)


def test_coefficients_validation_and_files(tmp_path: Path):
    with pytest.raises(LatencyConfigError, match="step_us must be >= 0"):
        CalibratedCoefficients(step_us=-1)
    with pytest.raises(LatencyConfigError, match="weight_read must be > 0"):
        CalibratedCoefficients(weight_read=0)
    with pytest.raises(LatencyConfigError, match="unknown coefficient"):
        CalibratedCoefficients.from_mapping({"stepp_us": 1})
    with pytest.raises(LatencyConfigError, match="layer_us must be a number"):
        CalibratedCoefficients.from_mapping({"layer_us": "x"})
    c = CalibratedCoefficients(step_us=123.0, meta={"fitted": "today"})
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"format": "inference-sim-calibrated/1", **c.to_dict()}))
    assert load_coefficients(path) == c
    nested = tmp_path / "n.yaml"
    nested.write_text("coefficients:\n  step_us: 321\n  layer_us: 4\nsource: mine\n")
    got = load_coefficients(nested)
    assert got.step_us == 321 and got.layer_us == 4 and got.source == "mine"
    with pytest.raises(LatencyConfigError, match="cannot read"):
        load_coefficients(tmp_path / "missing.json")
    shipped = default_coefficients()
    assert shipped.meta.get("fitted") and "vLLM" in shipped.source


def test_registry_and_describe():
    assert "calibrated" in latency_model_names()
    m = create_latency_model("calibrated", architecture=DENSE, gpu=GPU, tp=1)
    d = m.describe()
    assert d["latency_model"] == "calibrated" and d["tp"] == 1
    assert d["coefficients"]["weight_read"] == default_coefficients().weight_read


LLAMA = "meta-llama/llama-3.1-8b-instruct"


def test_resolve_calibrated_and_auto(tmp_path: Path):
    plan = resolve(
        {
            "model": "meta-llama/llama-2-7b-hf",
            "hardware": "H100",
            "tp": 1,
            "latency_model": "calibrated",
        }
    )
    assert plan.latency_model == "calibrated"
    assert isinstance(plan.make_latency_model(), CalibratedLatencyModel)
    assert plan.engine.num_gpu_blocks == 7354  # derived from memory, as roofline
    assert (
        plan.resolved_config()["calibrated_coefficients"]["step_us"]
        == default_coefficients().step_us
    )
    # auto: trained entry -> blackbox; none -> calibrated (the shipped set)
    assert resolve({"model": LLAMA}).latency_model == "blackbox"
    assert resolve({"model": LLAMA, "hardware": "B200", "tp": 1}).latency_model == "calibrated"
    assert (
        resolve({"model": "meta-llama/llama-2-7b-hf", "hardware": "H100", "tp": 1}).latency_model
        == "calibrated"
    )
    # --latency-coeffs selects calibrated under auto, even with a trained entry
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"step_us": 777}))
    p = resolve({"model": LLAMA, "latency_coeffs": str(f)})
    assert p.latency_model == "calibrated" and p.latency_coeffs.step_us == 777
    with pytest.raises(ConfigError, match="--latency-coeffs is for --latency-model calibrated"):
        resolve({"model": LLAMA, "latency_coeffs": str(f), "latency_model": "blackbox"})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nope": 1}))
    with pytest.raises(ConfigError, match=r"--latency-coeffs: .*unknown coefficient"):
        resolve({"model": LLAMA, "latency_coeffs": str(bad)})
    with pytest.raises(ConfigError, match="calibrated needs --hardware"):
        resolve({"model": "acme/unknown", "latency_model": "calibrated"})


def test_simulate_and_cli_end_to_end(tmp_path: Path):
    small = {
        "num_requests": 12,
        "rate": 4,
        "prompt_tokens": 200,
        "output_tokens": 20,
        "prompt_tokens_stdev": 0,
        "output_tokens_stdev": 0,
    }
    res = simulate(model="qwen/qwen3-30b-a3b", hardware="H100", tp=1, **small)
    assert res.summary["config"]["latency_model"] == "calibrated"
    assert res.summary["completed_requests"] == 12
    out = CliRunner().invoke(
        cli,
        [
            "run",
            "--model",
            LLAMA,
            "--hardware",
            "A100-80",
            "--tp",
            "2",
            "--latency-model",
            "calibrated",
            "--num-requests",
            "5",
            "--rate",
            "2",
            "--results-path",
            str(tmp_path / "r.json"),
        ],
    )
    assert out.exit_code == 0, out.output
    doc = json.loads((tmp_path / "r.json").read_text())
    cfg = doc["config"] if "config" in doc else doc["summary"]["config"]
    assert cfg["latency_model"] == "calibrated"


def test_fast_and_exact_steppers_agree_with_the_stateful_model():
    """The async-scheduling lag keeps state (the step in flight); both steppers price
    the same steps in the same order, so they must give identical results."""
    kw = {"model": LLAMA, "hardware": "H100", "tp": 1, "latency_model": "calibrated",
          "num_requests": 60, "rate": 12, "prompt_tokens": 300, "output_tokens": 40,
          "prefix_tokens": 64}  # fmt: skip
    fast = simulate(**kw)
    exact = simulate(exact_steps=True, **kw)
    for key in ("ttft_mean_ms", "e2e_mean_ms", "itl_mean_ms", "completed_requests"):
        assert fast.summary[key] == exact.summary[key], key


def test_a_coefficients_file_must_hold_a_mapping(tmp_path) -> None:
    from inference_sim.latency.calibrated import load_coefficients

    for name, text in (("empty.json", ""), ("null.json", "null"), ("list.json", "[]")):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(LatencyConfigError, match="expected a mapping of coefficient names"):
            load_coefficients(path)


def test_a_partial_coefficients_file_keeps_the_shipped_values(tmp_path, sim_log) -> None:
    """A hand-written file overriding one coefficient: the others are the shipped set's
    (not the built-in priors), and the log names them."""
    from inference_sim.latency.calibrated import default_coefficients, load_coefficients

    path = tmp_path / "mine.json"
    path.write_text('{"step_us": 150}')
    mine = load_coefficients(path)
    shipped = default_coefficients()
    assert mine.step_us == 150.0
    assert mine.compute == shipped.compute and mine.sampler_step_us == shipped.sampler_step_us
    assert "gives no weight_read, compute" in sim_log.text
