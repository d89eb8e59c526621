"""Deployments vLLM would refuse: a KV cache shorter than the model's context at vLLM's
default ``max_model_len``, and a TP that does not divide the feed-forward widths."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from inference_sim.catalog import load_catalog
from inference_sim.catalog.architecture import (
    MoESpec,
    architecture_from_hf_config,
    bundled_architecture,
    parse_architectures,
    read_model_config_folder,
)
from inference_sim.catalog.errors import CatalogError
from inference_sim.catalog.listing import models_table, suggested_deployment
from inference_sim.cli.main import cli
from inference_sim.config.resolve import ConfigError, resolve

LLAMA = "meta-llama/llama-3.1-8b-instruct"
LLAMA70 = "meta-llama/llama-3.1-70b-instruct"
SCOUT = "meta-llama/llama-4-scout-17b-16e-instruct"
REFUSE = "would refuse to start"
REFERENCE_CONFIGS = (
    Path(__file__).resolve().parents[2] / "shared" / "reference-data" / "model_configs"
)


def _run(*args: str):
    return CliRunner().invoke(cli, ["run", *args, "--num-requests", "2"])


def _refusals(sim_log) -> list[str]:
    """The warnings given (a record reaches ``sim_log`` twice when the package logger
    also propagates to the root, where pytest listens too: counted once)."""
    once = {id(r): r for r in sim_log.records if REFUSE in r.getMessage()}
    return [r.getMessage() for r in once.values()]


def _stderr_refusals(res) -> list[str]:
    """An in-process ``blis run`` logs to the runner's stderr (its own handler)."""
    return [line for line in res.stderr.splitlines() if REFUSE in line]


# --- the model's context length --------------------------------------------------------------


def test_bundled_entries_carry_max_position_embeddings():
    assert bundled_architecture(LLAMA).max_position_embeddings == 131072
    assert bundled_architecture(SCOUT).max_position_embeddings == 10485760
    # a same_as entry keeps its base's
    assert bundled_architecture("meta-llama/llama-3.3-70b-instruct").max_position_embeddings == (
        131072
    )
    assert bundled_architecture("redhatai/qwen2.5-7b-instruct-fp8-dynamic").max_position_embeddings
    assert bundled_architecture("qwen/qwen3-14b").max_position_embeddings == 40960


@pytest.mark.skipif(not REFERENCE_CONFIGS.is_dir(), reason="reference configs not present")
def test_bundled_lengths_agree_with_the_reference_configs():
    checked = 0
    for folder in sorted(REFERENCE_CONFIGS.iterdir()):
        parsed = read_model_config_folder(folder)
        for model_id, arch in _bundled_from(folder.name).items():
            assert arch.max_position_embeddings == parsed.max_position_embeddings, model_id
            checked += 1
    assert checked >= 14


def _bundled_from(folder: str) -> dict:
    from inference_sim.catalog.architecture import bundled_architectures

    return {
        k: a
        for k, a in bundled_architectures().items()
        if a.source.startswith(f"reference-data model_configs/{folder}")
    }


def test_config_json_length_is_read_from_text_config_too(tmp_path):
    base = {
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "vocab_size": 100,
        "torch_dtype": "bfloat16",
    }
    assert architecture_from_hf_config(base, "c").max_position_embeddings == 0  # unknown
    top = architecture_from_hf_config({**base, "max_position_embeddings": 4096}, "c")
    assert top.max_position_embeddings == 4096
    nested = {"text_config": {**base, "max_position_embeddings": 8192}}
    assert architecture_from_hf_config(nested, "c").max_position_embeddings == 8192


def test_bundled_length_must_not_be_negative():
    entry = {"source": "s", "layers": 1, "hidden": 8, "heads": 1, "kv_heads": 1, "vocab": 1,
             "dtype_bytes": 2}  # fmt: skip
    doc = {"format": "inference-sim-architectures/1", "models": {"a": entry}}
    assert parse_architectures(doc, "t")["a"].max_position_embeddings == 0
    entry["max_position_embeddings"] = -1
    with pytest.raises(CatalogError, match="max_position_embeddings: must be >= 0"):
        parse_architectures(doc, "t")


# --- the warning ----------------------------------------------------------------------------


def test_derived_cache_shorter_than_the_context_warns_once():
    res = _run("--model", LLAMA, "--hardware", "L4", "--tp", "1", "--json")
    assert res.exit_code == 0, res.stderr
    got = _stderr_refusals(res)
    assert len(got) == 1
    assert "default max_model_len (131072, the model's max_position_embeddings)" in got[0]
    assert "holds only 29328 tokens (1833 blocks of 16)" in got[0]
    assert "--max-model-len 29328 or less" in got[0]
    assert json.loads(res.stdout)["total_kv_blocks"] == 1833  # runs anyway, no limit


@pytest.mark.parametrize(
    "args",
    [
        ("--model", LLAMA),  # the README's default run
        ("--model", "qwen/qwen3-14b", "--latency-model", "roofline", "--hardware", "H200",
         "--tp", "1"),
        ("--model", "qwen/qwen3-14b", "--latency-model", "calibrated", "--hardware", "H100",
         "--tp", "1"),
        ("--model", LLAMA, "--hardware", "L4", "--tp", "1", "--max-model-len", "29328"),
    ],
)  # fmt: skip
def test_no_warning_when_the_cache_holds_the_context_or_a_length_is_given(args):
    res = _run(*args)
    assert res.exit_code == 0, res.stderr
    assert _stderr_refusals(res) == []


def test_trained_block_count_is_checked_too(sim_log):
    plan = resolve({"model": SCOUT})  # catalog default: H100/TP4, trained 29 231 blocks
    assert plan.latency_model == "blackbox" and plan.engine.num_gpu_blocks == 29231
    got = _refusals(sim_log)
    assert len(got) == 1
    assert "(10485760, the model's max_position_embeddings)" in got[0]
    assert f"{SCOUT} on H100 at TP=4: its KV cache holds only 467696 tokens" in got[0]


def test_given_block_count_is_checked_but_not_the_coefficients_default(sim_log):
    resolve({"model": LLAMA, "hardware": "H100", "tp": 1, "total_kv_blocks": 1000})
    assert len(_refusals(sim_log)) == 1 and "holds only 16000 tokens" in sim_log.text
    sim_log.clear()
    # given coefficients fall back on the --total-kv-blocks default: no deployment's cache
    resolve({"model": LLAMA, "alpha_coeffs": "1,1,1", "beta_coeffs": "1,1,1"})
    assert _refusals(sim_log) == []


def test_unknown_length_gives_no_warning(tmp_path):
    doc = {
        "num_hidden_layers": 32,
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 128256,
        "torch_dtype": "bfloat16",
    }
    (tmp_path / "config.json").write_text(json.dumps(doc), encoding="utf-8")
    res = _run("--model", "my/llama", "--model-config-folder", str(tmp_path), "--hardware", "L4",
               "--tp", "1")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert _stderr_refusals(res) == []
    (tmp_path / "config.json").write_text(
        json.dumps({**doc, "max_position_embeddings": 131072}), encoding="utf-8"
    )
    res = _run("--model", "my/llama", "--model-config-folder", str(tmp_path), "--hardware", "L4",
               "--tp", "1")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert len(_stderr_refusals(res)) == 1


# --- blis models ----------------------------------------------------------------------------


def test_models_suggests_a_deployment_vllm_starts_at_its_defaults():
    catalog = load_catalog()
    rows = {(r["model"], r["tp"]): r for r in models_table(catalog) if r["gpu"] == "H100"}
    small, full = rows[(LLAMA70, 2)], rows[(LLAMA70, 4)]
    assert small["derived_kv_blocks"] * 16 < 131072 <= full["derived_kv_blocks"] * 16
    assert suggested_deployment(catalog, bundled_architecture(LLAMA70)) == ("H100", 4)
    # a model whose smallest fit holds its context keeps one row, that one
    assert [tp for m, tp in rows if m == "qwen/qwen3-14b"] == [1]
    assert suggested_deployment(catalog, bundled_architecture("qwen/qwen3-14b")) == ("H100", 1)
    with pytest.raises(ConfigError, match=r"suggests --hardware H100 --tp 4 "):
        resolve({"model": LLAMA70, "latency_model": "roofline"})


def test_models_never_lists_a_tp_vllm_refuses():
    for r in models_table(load_catalog()):
        arch = bundled_architecture(r["model"])
        assert arch is None or not arch.tp_problem(r["tp"]), r


# --- TP and the feed-forward widths ---------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "tp", "why"),
    [
        ("qwen/qwen2.5-1.5b-instruct", 6, "the feed-forward size 8960"),
        ("qwen/qwen2.5-1.5b-instruct", 12, "the feed-forward size 8960"),
        ("qwen/qwen2.5-7b-instruct", 28, "the feed-forward size 18944"),
        ("qwen/qwen3-14b", 40, "the feed-forward size 17408"),
        ("01-ai/yi-34b", 56, "the feed-forward size 20480"),
        (SCOUT, 40, "the experts' feed-forward size 8192"),
        ("meta-llama/llama-4-maverick-17b-128e-instruct-fp8", 40, "feed-forward size"),
    ],
)
def test_tp_must_divide_the_feed_forward_widths(model, tp, why):
    assert why in bundled_architecture(model).tp_problem(tp)


def test_cli_refuses_such_a_tp_with_the_valid_list():
    res = _run("--model", "qwen/qwen2.5-1.5b-instruct", "--hardware", "H100", "--tp", "6")
    assert res.exit_code == 2
    assert (
        "--tp 6: qwen/qwen2.5-1.5b-instruct: the feed-forward size 8960 is not divisible by "
        "TP=6 (vLLM refuses it); valid TP: 1, 2, 4\n"
    ) in res.stderr
    res = _run("--model", "qwen/qwen2.5-1.5b-instruct", "--hardware", "H100", "--tp", "8")
    assert res.exit_code == 2 and "valid TP: 1, 2, 4\n" in res.stderr


def test_only_existing_feed_forward_layers_count():
    base = bundled_architecture(LLAMA)
    # every layer MoE: the dense width (config.json's intermediate_size) is not used
    sparse = replace(base, ffn=6, moe=MoESpec(8, 2, 64, 0, base.layers))
    assert sparse.tp_problem(4) == ""
    shared = replace(sparse, moe=MoESpec(8, 2, 64, 12, base.layers))
    assert "the shared experts' feed-forward size 12" in shared.tp_problem(8)
    experts = replace(sparse, moe=MoESpec(8, 2, 12, 0, base.layers))
    assert "the experts' feed-forward size 12" in experts.tp_problem(8)
    assert experts.tp_problem(4) == ""
