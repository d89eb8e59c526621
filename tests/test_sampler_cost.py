"""The sampler term of the calibrated model and the generation defaults it reads.

A model whose ``generation_config.json`` sets ``top_p`` or ``top_k`` is served with a
filtered sampler (vLLM applies those defaults to requests that set none); the calibrated
model then charges ``sampler_us`` per scheduled request per 100 000 vocabulary entries.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from inference_sim.calibrate.harness import step_jacobian
from inference_sim.catalog import (
    CatalogError,
    GenerationDefaults,
    bundled_architecture,
    read_model_config_folder,
)
from inference_sim.catalog.architecture import parse_architectures
from inference_sim.config.errors import ConfigError
from inference_sim.config.resolve import resolve
from inference_sim.latency import StepBatch
from inference_sim.latency.calibrated import (
    FITTED_FIELDS,
    RECORD_WIDTH,
    CalibratedLatencyModel,
    filtered_sampling,
)
from test_calibrated import DENSE, GPU, UNIT

FILTERED = replace(DENSE, vocab=200_000, generation=GenerationDefaults(top_p=0.9))


def test_which_generation_defaults_filter():
    assert not GenerationDefaults().filters  # nothing set: plain random sampling
    assert GenerationDefaults(top_p=0.95).filters
    assert GenerationDefaults(top_k=20).filters
    assert not GenerationDefaults(temperature=0.0, top_p=0.9).filters  # greedy: argmax
    g = GenerationDefaults.from_mapping({"do_sample": False, "top_p": 0.9}, "gen")
    assert g.temperature == 0.0 and not g.filters
    g = GenerationDefaults.from_mapping({"top_k": 20, "top_p": 0.8, "max_length": 4096}, "gen")
    assert (g.top_k, g.top_p) == (20, 0.8) and g.filters  # unrelated keys are ignored
    with pytest.raises(CatalogError, match=r"gen\.top_p: must be <= 1"):
        GenerationDefaults.from_mapping({"top_p": 1.5}, "gen")
    with pytest.raises(CatalogError, match=r"gen\.top_k: expected a number"):
        GenerationDefaults.from_mapping({"top_k": "20"}, "gen")
    with pytest.raises(CatalogError, match=r"gen\.temperature: must be >= 0"):
        GenerationDefaults.from_mapping({"temperature": -1}, "gen")


def test_bundled_generation_defaults_and_same_as():
    qwen = bundled_architecture("Qwen/Qwen2.5-7B-Instruct")
    assert qwen is not None and qwen.generation is not None
    assert qwen.generation.top_k == 20 and qwen.generation.filters
    # quantized copies share the original's generation_config.json
    fp8 = bundled_architecture("redhatai/qwen2.5-7b-instruct-fp8-dynamic")
    assert fp8 is not None and fp8.generation == qwen.generation
    yi = bundled_architecture("01-ai/yi-34b")
    assert yi is not None and yi.generation is None  # its file sets no sampling
    assert "generation" in qwen.describe() and "generation" not in yi.describe()
    doc = {
        "format": "inference-sim-architectures/1",
        "models": {
            "a/base": {"source": "t", "layers": 1, "hidden": 8, "heads": 1, "kv_heads": 1,
                       "vocab": 10, "dtype_bytes": 2, "generation": {"top_p": 0.9}},
            "a/greedy": {"same_as": "a/base", "source": "t", "generation": {"temperature": 0}},
        },
    }  # fmt: skip
    archs = parse_architectures(doc, "test")
    assert archs["a/base"].generation.filters and not archs["a/greedy"].generation.filters
    doc["models"]["a/base"]["generation"] = {"top_p": "high"}
    with pytest.raises(CatalogError, match=r"models\.a/base\.generation\.top_p"):
        parse_architectures(doc, "test")


def _config_folder(tmp_path: Path, generation: object | None) -> Path:
    folder = tmp_path / "model"
    folder.mkdir(parents=True)
    config = {
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 1000,
        "torch_dtype": "bfloat16",
    }
    (folder / "config.json").write_text(json.dumps(config))
    if generation is not None:
        text = generation if isinstance(generation, str) else json.dumps(generation)
        (folder / "generation_config.json").write_text(text)
    return folder


def test_config_folder_reads_generation_config(tmp_path: Path):
    folder = _config_folder(tmp_path, {"do_sample": True, "top_k": 20, "bos_token_id": 1})
    arch = read_model_config_folder(folder)
    assert arch.generation == GenerationDefaults(top_k=20)
    assert read_model_config_folder(folder / "config.json").generation == arch.generation
    bare = _config_folder(tmp_path / "b", None)
    assert read_model_config_folder(bare).generation is None
    broken = _config_folder(tmp_path / "c", "{not json")
    with pytest.raises(CatalogError, match=r"generation_config\.json: invalid JSON"):
        read_model_config_folder(broken)


def test_sampler_term_per_request_and_vocabulary():
    m = CalibratedLatencyModel(FILTERED, GPU, 1, UNIT.with_values({"sampler_us": 7.0}))
    assert m.shape.filtered_sampling and m.shape.sampler_units == 2.0
    t = m.terms([(0, 50)], 3, 600)  # 4 scheduled requests
    assert t["sampler_us"] == pytest.approx(7.0 * 2.0 * 4)
    parts = ("linear_us", "kv_us", "attention_us", "step_us", "layers_us", "requests_us")
    assert t["total_us"] == pytest.approx(sum(t[k] for k in parts) + t["sampler_us"])
    plain = CalibratedLatencyModel(
        FILTERED, GPU, 1, UNIT.with_values({"sampler_us": 7.0}), sampling="plain"
    )
    assert plain.terms([(0, 50)], 3, 600)["sampler_us"] == 0.0
    assert plain.step_time_from([(0, 50)], 3, 600) == m.step_time_from([(0, 50)], 3, 600) - 56
    forced = CalibratedLatencyModel(DENSE, GPU, 1, UNIT, sampling="filtered")
    assert forced.shape.sampler_units == DENSE.vocab / 1e5
    assert filtered_sampling(FILTERED) and not filtered_sampling(DENSE)
    with pytest.raises(
        Exception, match="--sampling must be one of auto, plain, filtered, penalized"
    ):
        filtered_sampling(DENSE, "topp")


def test_step_jacobian_has_the_sampler_column():
    """Each step's d(µs)/d(sampler_us) is requests x vocab / 1e5; moving the coefficient by
    one moves every recorded step by exactly that much."""
    coeffs = UNIT.with_values({"sampler_us": 5.0})
    rec_model = CalibratedLatencyModel(FILTERED, GPU, 1, coeffs, record=True)
    shape = rec_model.shape
    rows = []
    for prefill, count, ctx in (([(0, 30)], 0, 0), ([], 6, 900), ([(16, 20)], 2, 100)):
        raw = shape.raw(prefill, count, ctx)
        rows.append((0.0, rec_model.step_time_from(prefill, count, ctx), *raw))
    rec = np.array(rows, dtype=float).reshape(-1, RECORD_WIDTH)
    jac = step_jacobian(rec_model, rec)
    col = jac[:, list(FITTED_FIELDS).index("sampler_us")]
    assert col.tolist() == pytest.approx([2.0 * 1, 2.0 * 6, 2.0 * 3])
    bumped = CalibratedLatencyModel(FILTERED, GPU, 1, coeffs.with_values({"sampler_us": 6.0}))
    for (prefill, count, ctx), d in zip(
        (([(0, 30)], 0, 0), ([], 6, 900), ([(16, 20)], 2, 100)), col, strict=True
    ):
        before = rec_model.terms(prefill, count, ctx)["total_us"]
        assert bumped.terms(prefill, count, ctx)["total_us"] - before == pytest.approx(d)


def test_sampler_step_term_is_fixed_per_step():
    """``sampler_step_us`` is charged once per step with filtered sampling, whatever the
    batch, and never to an empty step or a plain sampler; its Jacobian column is 1."""
    coeffs = UNIT.with_values({"sampler_us": 0.0, "sampler_step_us": 40.0})
    m = CalibratedLatencyModel(FILTERED, GPU, 1, coeffs, record=True)
    plain = CalibratedLatencyModel(FILTERED, GPU, 1, coeffs, sampling="plain")
    cases = (([(0, 30)], 0, 0), ([], 1, 200), ([], 40, 9000), ([(16, 20)], 12, 3000))
    for prefill, count, ctx in cases:
        t = m.terms(prefill, count, ctx)
        assert t["sampler_us"] == 40.0
        assert t["total_us"] - plain.terms(prefill, count, ctx)["total_us"] == pytest.approx(40)
    assert m.step_time_from([], 0, 0) == plain.step_time_from([], 0, 0)  # nothing scheduled
    rows = []
    for prefill, count, ctx in cases:
        raw = m.shape.raw(prefill, count, ctx)
        rows.append((0.0, m.step_time_from(prefill, count, ctx), *raw))
    rec = np.array(rows, dtype=float).reshape(-1, RECORD_WIDTH)
    name = list(FITTED_FIELDS).index("sampler_step_us")
    assert step_jacobian(m, rec)[:, name].tolist() == [1.0] * len(cases)
    plain_rec = CalibratedLatencyModel(FILTERED, GPU, 1, coeffs, sampling="plain")
    assert step_jacobian(plain_rec, rec)[:, name].tolist() == [0.0] * len(cases)


def test_resolve_sampling_option(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    base = {"model": "qwen/qwen2.5-7b-instruct", "hardware": "H100", "tp": 1}
    plan = resolve({**base, "latency_model": "calibrated"})
    assert plan.make_latency_model().shape.filtered_sampling
    plan = resolve({**base, "latency_model": "calibrated", "sampling": "plain"})
    assert not plan.make_latency_model().shape.filtered_sampling
    assert plan.resolved_config()["sampling"] == "plain"
    assert plan.resolved_config()["filtered_sampling"] is False
    assert plan.resolved_config()["penalized_sampling"] is False
    cfg = resolve({**base, "latency_model": "calibrated"}).resolved_config()
    assert cfg["filtered_sampling"] is True and cfg["penalized_sampling"] is True
    with pytest.raises(
        ConfigError, match="--sampling must be one of auto, plain, filtered, penalized"
    ):
        resolve({**base, "latency_model": "calibrated", "sampling": "nucleus"})
    logger = logging.getLogger("inference_sim")
    logger.addHandler(caplog.handler)  # the package logger may not propagate (blis run)
    try:
        with caplog.at_level(logging.WARNING, logger="inference_sim"):
            resolve({**base, "latency_model": "roofline", "sampling": "filtered"})
    finally:
        logger.removeHandler(caplog.handler)
    assert "--sampling has no effect: it only changes the calibrated model" in caplog.text
    # A config folder without generation_config.json keeps the bundled entry's defaults.
    folder = _config_folder(tmp_path, None)
    plan = resolve({**base, "latency_model": "calibrated", "model_config_folder": str(folder)})
    assert plan.architecture is not None and plan.architecture.generation is not None
    assert plan.make_latency_model().shape.filtered_sampling
    folder2 = _config_folder(tmp_path / "g", {"temperature": 0.0})
    plan = resolve({**base, "latency_model": "calibrated", "model_config_folder": str(folder2)})
    assert not plan.make_latency_model().shape.filtered_sampling  # its own file: greedy


PENALIZED = replace(
    DENSE, generation=GenerationDefaults(top_k=20, top_p=0.8, repetition_penalty=1.05)
)


def test_penalty_defaults():
    assert GenerationDefaults(repetition_penalty=1.05).penalizes
    assert GenerationDefaults(presence_penalty=-0.5).penalizes  # negative is allowed
    assert GenerationDefaults(frequency_penalty=0.2).penalizes
    assert not GenerationDefaults(top_p=0.9).penalizes
    g = GenerationDefaults.from_mapping({"presence_penalty": 1.5}, "gen")
    assert g.penalizes and not g.filters
    qwen = bundled_architecture("qwen/qwen2.5-7b-instruct")
    assert qwen is not None and qwen.generation.penalizes
    llama = bundled_architecture("meta-llama/llama-3.1-8b-instruct")
    assert llama is not None and not llama.generation.penalizes
    qwen3 = bundled_architecture("qwen/qwen3-14b")
    assert qwen3 is not None and not qwen3.generation.penalizes


def test_penalty_term_per_step_and_context_token():
    """pen = penalty_us + penalty_token_us x (every scheduled request's context + new tokens),
    on top of the filtered sampler; the decode fast path (batch totals) agrees."""
    coeffs = UNIT.with_values({"penalty_us": 150.0, "penalty_token_us": 0.5})
    m = CalibratedLatencyModel(PENALIZED, GPU, 1, coeffs)
    assert m.shape.penalized_sampling and m.shape.filtered_sampling
    t = m.terms([(40, 60)], 3, 600)  # context tokens: 600 + 3 decoders + 40 + 60
    assert t["penalty_us"] == pytest.approx(150.0 + 0.5 * 703)
    parts = ("linear_us", "kv_us", "attention_us", "step_us", "layers_us", "requests_us")
    assert t["total_us"] == pytest.approx(
        sum(t[k] for k in parts) + t["sampler_us"] + t["penalty_us"]
    )
    assert m.terms([], 0, 0)["penalty_us"] == 0.0  # an empty step samples nothing
    off = CalibratedLatencyModel(PENALIZED, GPU, 1, coeffs, sampling="filtered")
    assert not off.shape.penalized_sampling
    assert off.terms([(40, 60)], 3, 600)["penalty_us"] == 0.0
    forced = CalibratedLatencyModel(DENSE, GPU, 1, coeffs, sampling="penalized")
    assert forced.shape.penalized_sampling and forced.shape.filtered_sampling
    plain = CalibratedLatencyModel(PENALIZED, GPU, 1, coeffs, sampling="plain")
    assert not plain.shape.penalized_sampling and not plain.shape.filtered_sampling
    # decode-only steps go through the cached per-count base plus a per-token slope
    for count, ctx in ((1, 7), (4, 1000), (16, 12345)):
        exact = m.terms([], count, ctx)["total_us"]
        assert m.step_time_from([], count, ctx) == round(exact)
        batch_us = m.step_time(_decode_batch(count, ctx))
        assert batch_us == round(exact)


def _decode_batch(count: int, ctx: int) -> StepBatch:
    """A StepBatch of ``count`` unlisted decoders whose contexts sum to ``ctx``."""
    batch = StepBatch()
    batch.decode_tokens = count
    batch.decode_context_sum = ctx
    return batch


def test_step_jacobian_has_the_penalty_columns():
    coeffs = UNIT.with_values({"penalty_us": 150.0, "penalty_token_us": 0.5})
    m = CalibratedLatencyModel(PENALIZED, GPU, 1, coeffs, record=True)
    cases = (([(0, 30)], 0, 0), ([], 6, 900), ([(16, 20)], 2, 100))
    rows = [(0.0, m.step_time_from(*c), *m.shape.raw(*c)) for c in cases]
    jac = step_jacobian(m, np.array(rows, dtype=float).reshape(-1, RECORD_WIDTH))
    names = list(FITTED_FIELDS)
    assert jac[:, names.index("penalty_us")].tolist() == [1.0, 1.0, 1.0]
    assert jac[:, names.index("penalty_token_us")].tolist() == pytest.approx([30, 906, 138])
    for field, bump in (("penalty_us", 10.0), ("penalty_token_us", 0.25)):
        moved = CalibratedLatencyModel(
            PENALIZED, GPU, 1, coeffs.with_values({field: getattr(coeffs, field) + bump})
        )
        for c, d in zip(cases, jac[:, names.index(field)], strict=True):
            delta = moved.terms(*c)["total_us"] - m.terms(*c)["total_us"]
            assert delta == pytest.approx(bump * d)


def test_step_jacobian_has_the_worker_column():
    """d(step)/d(worker_us) is TP at TP > 1 and matches a finite difference."""
    coeffs = UNIT.with_values({"worker_us": 100.0})
    for tp, want in ((1, 0.0), (2, 2.0), (4, 4.0)):
        m = CalibratedLatencyModel(PENALIZED, GPU, tp, coeffs, record=True)
        cases = (([(0, 30)], 0, 0), ([], 6, 900))
        rows = [(0.0, m.step_time_from(*c), *m.shape.raw(*c)) for c in cases]
        jac = step_jacobian(m, np.array(rows, dtype=float).reshape(-1, RECORD_WIDTH))
        col = jac[:, list(FITTED_FIELDS).index("worker_us")]
        assert col.tolist() == [want, want]
        moved = CalibratedLatencyModel(PENALIZED, GPU, tp, coeffs.with_values({"worker_us": 150.0}))
        for c, d in zip(cases, col, strict=True):
            delta = moved.terms(*c)["total_us"] - m.terms(*c)["total_us"]
            assert delta == pytest.approx(50.0 * d)


def test_step_jacobian_layer_column_counts_moe_kernels():
    """d(step)/d(layer_us) is the layer units (MoE layers' extra kernels included) times the
    GPU's small-kernel factor, and matches a finite difference."""
    from inference_sim.catalog.architecture import MoESpec, WeightQuantization

    moe = replace(
        DENSE,
        name="toy/moe-fp8-dynamic",
        moe=MoESpec(experts=8, top_k=1, expert_ffn=500, shared_ffn=500, moe_layers=2),
        quantization=WeightQuantization(bytes_per_param=1.0, scope="mlp"),
    )
    coeffs = UNIT.with_values({"layer_us": 20.0})
    gpu = replace(GPU, name="H100")  # FP8 tensor cores: the activation-quant kernels too
    m = CalibratedLatencyModel(moe, gpu, 1, coeffs, record=True)
    assert m.shape.layer_units == pytest.approx(2 + 2 * 1.2)
    cases = (([(0, 30)], 0, 0), ([], 6, 900))
    rows = [(0.0, m.step_time_from(*c), *m.shape.raw(*c)) for c in cases]
    jac = step_jacobian(m, np.array(rows, dtype=float).reshape(-1, RECORD_WIDTH))
    col = jac[:, list(FITTED_FIELDS).index("layer_us")]
    assert col.tolist() == pytest.approx([4.4, 4.4])
    moved = CalibratedLatencyModel(moe, gpu, 1, coeffs.with_values({"layer_us": 25.0}))
    for c, d in zip(cases, col, strict=True):
        delta = moved.terms(*c)["total_us"] - m.terms(*c)["total_us"]
        assert delta == pytest.approx(5.0 * d)
