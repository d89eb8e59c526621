"""Roofline mode through resolve(), simulate() and the ``blis`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from inference_sim import simulate
from inference_sim.catalog import load_catalog, models_table
from inference_sim.catalog.architecture import bundled_architecture
from inference_sim.catalog.capacity import derive_kv_blocks
from inference_sim.cli.main import cli
from inference_sim.config import ConfigError, resolve
from inference_sim.latency.roofline import RooflineLatencyModel

LLAMA = "meta-llama/llama-3.1-8b-instruct"
SMALL = {"num_requests": 8, "rate": 4.0, "prompt_tokens": 128, "output_tokens": 16}


def test_roofline_with_a_trained_entry_takes_its_blocks_but_not_its_alpha():
    plan = resolve({"model": LLAMA, "roofline": True})
    trained = load_catalog().find_coefficients(LLAMA, "H100", 2, "vllm/vllm-openai:v0.8.4")
    assert trained is not None and any(trained.alpha)
    assert plan.latency_model == "roofline"
    assert (plan.options["hardware"], plan.options["tp"]) == ("H100", 2)
    assert plan.alpha == (0.0, 0.0, 0.0)  # fitted with its own beta: never stacked
    assert any("trained entry's alpha for H100/TP2" in n and "not used" in n for n in plan.notes)
    assert plan.engine.num_gpu_blocks == trained.total_kv_blocks // 2 == 66069
    assert any("132139 (counted over all 2 TP ranks) / TP 2" in n for n in plan.notes)
    assert any("default TP=2" in n for n in plan.notes)
    model = plan.make_latency_model()
    assert isinstance(model, RooflineLatencyModel)
    assert model.step_time_from([(0, 512)], 0, 0) == 8033  # engine.md §6.3, TP2
    config = plan.resolved_config()
    assert config["latency_model"] == "roofline"
    assert config["roofline"] is True


def test_both_spellings_select_roofline():
    a = resolve({"model": LLAMA, "latency_model": "roofline"})
    b = resolve({"model": LLAMA, "roofline": "true"})
    assert a.resolved_config() == b.resolved_config()
    with pytest.raises(ConfigError, match="--roofline conflicts with --latency-model blackbox"):
        resolve({"model": LLAMA, "roofline": True, "latency_model": "blackbox"})


def test_untrained_gpu_derives_blocks_from_memory():
    plan = resolve({"model": LLAMA, "latency_model": "roofline", "hardware": "L40S", "tp": 1})
    cap = derive_kv_blocks(bundled_architecture(LLAMA), load_catalog().gpu("L40S"), 1)
    assert plan.engine.num_gpu_blocks == cap.blocks > 0
    assert plan.alpha == (0.0, 0.0, 0.0)
    assert any("derived from GPU memory" in n for n in plan.notes)
    half = resolve(
        {
            "model": LLAMA,
            "roofline": True,
            "hardware": "L40S",
            "tp": 1,
            "gpu_memory_utilization": 0.6,
        }
    )
    assert half.engine.num_gpu_blocks < plan.engine.num_gpu_blocks
    explicit = resolve({"model": LLAMA, "roofline": True, "hardware": "L40S", "tp": 1,
                        "num_gpu_blocks": 500, "alpha_coeffs": "10,1,5"})  # fmt: skip
    assert explicit.engine.num_gpu_blocks == 500
    assert explicit.alpha == (10.0, 1.0, 5.0)


def test_auto_falls_back_to_calibrated_without_coefficients():
    # issue 8: the calibrated model (shipped coefficients) replaced roofline as the fallback
    trained = resolve({"model": LLAMA})
    assert trained.latency_model == "blackbox"
    untrained = resolve({"model": LLAMA, "hardware": "B200", "tp": 1})
    assert untrained.latency_model == "calibrated"
    arch_only = resolve({"model": "meta-llama/llama-2-7b-hf", "hardware": "H100", "tp": 1})
    assert arch_only.latency_model == "calibrated"
    assert arch_only.engine.num_gpu_blocks == 7354
    with pytest.raises(
        ConfigError, match="no trained coefficients; its calibrated model needs --hardware"
    ):
        resolve({"model": "meta-llama/llama-2-7b-hf"})
    with pytest.raises(ConfigError, match="no trained coefficients"):
        resolve({"model": LLAMA, "hardware": "B200", "tp": 1, "latency_model": "blackbox"})


def test_errors_name_what_is_missing():
    unknown = r'--hardware: unknown GPU "X9"; known: A100-40GB, A100-SXM.*MI300X'
    with pytest.raises(ConfigError, match=unknown):
        resolve({"model": LLAMA, "roofline": True, "hardware": "X9", "tp": 1})
    with pytest.raises(ConfigError, match=r"no bundled architecture.*--model-config-folder"):
        resolve({"model": "acme/unknown-7b", "roofline": True, "hardware": "H100", "tp": 1})
    with pytest.raises(ConfigError, match="needs --hardware"):
        resolve({"model": "acme/unknown-7b", "roofline": True})
    with pytest.raises(  # no default deployment: which TP its weights allow
        ConfigError, match=r"needs --tp \(GPUs per instance\).*fit at --tp 1 on A100-SXM"
    ):
        resolve({"model": "qwen/qwen3-14b", "hardware": "A100-80"})
    with pytest.raises(ConfigError, match="does not fit on L4 at TP=1"):
        resolve({"model": "meta-llama/llama-3.3-70b-instruct", "roofline": True, "hardware": "L4",
                 "tp": 1})  # fmt: skip
    with pytest.raises(ConfigError, match=r"--gpu-memory-utilization must be in \(0, 1\]"):
        resolve({"model": LLAMA, "roofline": True, "gpu_memory_utilization": 0})
    with pytest.raises(ConfigError, match="--latency-model: unknown model 'fast'"):
        resolve({"model": LLAMA, "latency_model": "fast"})


def test_model_config_folder_and_hardware_config(tmp_path: Path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
                    "num_key_value_heads": 8, "intermediate_size": 14336,
                    "torch_dtype": "bfloat16", "vocab_size": 128256}),
        encoding="utf-8",
    )  # fmt: skip
    hw = tmp_path / "hw.json"
    hw.write_text(
        json.dumps({"H100": {"TFlopsPeak": 989.5, "BwPeakTBs": 3.35, "BwEffConstant": 0.72,
                             "TOverheadMicros": 500, "perLayerOverhead": 20, "mfuPrefill": 0.65,
                             "mfuDecode": 0.12, "allReduceLatency": 20},
                    "Tiny": {"TFlopsPeak": 10, "BwPeakTBs": 0.1, "BwEffConstant": 1,
                             "mfuPrefill": 0.5, "mfuDecode": 0.5, "memoryGiB": 100}}),
        encoding="utf-8",
    )  # fmt: skip
    # The reference's implicit roofline (no coefficients, both paths) is calibrated here
    # (issue 8); --roofline gives the reference's numbers.
    implicit = resolve({"model": "acme/my-model", "model_config_folder": str(folder),
                        "hardware_config": str(hw), "hardware": "H100", "tp": 1})  # fmt: skip
    assert implicit.latency_model == "calibrated"
    plan = resolve({"model": "acme/my-model", "model_config_folder": str(folder), "roofline": True,
                    "hardware_config": str(hw), "hardware": "H100", "tp": 1})  # fmt: skip
    assert plan.latency_model == "roofline"
    model = plan.make_latency_model()
    assert isinstance(model, RooflineLatencyModel)
    assert model.step_time_from([(0, 512)], 32, 32 * 1024) == 19940
    tiny = resolve({"model": LLAMA, "roofline": True, "hardware_config": str(hw),
                    "hardware": "Tiny", "tp": 1})  # fmt: skip
    assert tiny.gpu_spec is not None and tiny.gpu_spec.peak_tflops == 10
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"hidden_size": "big"}', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"--model-config-folder: .*config\.json: "):
        resolve({"model": LLAMA, "roofline": True, "model_config_folder": str(bad)})
    with pytest.raises(ConfigError, match=r"--hardware-config: .*not found"):
        resolve({"model": LLAMA, "roofline": True, "hardware_config": str(tmp_path / "no.json")})


def test_simulate_end_to_end_dense_and_moe():
    dense = simulate(model=LLAMA, roofline=True, hardware="H200", tp=1, **SMALL)
    assert dense.summary["completed_requests"] == 8
    assert dense.summary["config"]["latency_model"] == "roofline"
    moe = simulate(model="qwen/qwen3-30b-a3b", roofline=True, hardware="H100", tp=1, **SMALL)
    assert moe.summary["completed_requests"] == 8
    assert moe.summary["config"]["latency_model"] == "roofline"
    assert (
        moe.summary["total_kv_blocks"]
        == derive_kv_blocks(
            bundled_architecture("qwen/qwen3-30b-a3b"), load_catalog().gpu("H100"), 1
        ).blocks
    )
    # Faster GPU, shorter run.
    slow = simulate(model=LLAMA, roofline=True, hardware="L4", tp=1, **SMALL)
    assert slow.summary["e2e_mean_ms"] > dense.summary["e2e_mean_ms"]


def test_exact_and_fast_steppers_agree_under_roofline():
    opts = {"model": LLAMA, "roofline": True, "hardware": "L4", "tp": 1, "num_requests": 60,
            "rate": 30.0}  # fmt: skip
    fast = simulate(**opts)
    exact = simulate(**opts, exact_steps=True)
    for key in ("e2e_mean_ms", "ttft_mean_ms", "itl_mean_ms", "preemption_count"):
        assert fast.summary[key] == exact.summary[key], key


def test_models_table_lists_modes_and_derived_capacity():
    rows = models_table(load_catalog())
    by_key = {(r["model"], r["gpu"], r["tp"]): r for r in rows}
    row = by_key[(LLAMA, "H100", 1)]
    assert row["latency_modes"] == "blackbox,roofline,calibrated"
    assert (
        row["derived_kv_blocks"]
        == derive_kv_blocks(bundled_architecture(LLAMA), load_catalog().gpu("H100"), 1).blocks
    )
    llama2 = by_key[("meta-llama/llama-2-7b-hf", "H100", 1)]
    assert llama2["latency_modes"] == "roofline,calibrated"
    assert llama2["total_kv_blocks"] == llama2["derived_kv_blocks"] == 7354
    assert llama2["vllm_version"] == ""
    seventy = by_key[("meta-llama/llama-3.1-70b-instruct", "H100", 2)]  # smallest TP that fits
    assert seventy["derived_kv_blocks"] > 0


def test_blis_models_and_run_commands():
    runner = CliRunner()
    listing = runner.invoke(cli, ["models"])
    assert listing.exit_code == 0
    assert "DERIVED_KV_BLOCKS" in listing.stdout
    assert any(line.startswith("qwen/qwen3-30b-a3b") and "roofline" in line
               for line in listing.stdout.splitlines())  # fmt: skip
    result = runner.invoke(
        cli,
        ["run", "--model", LLAMA, "--roofline", "--hardware", "MI300X", "--tp", "1",
         "--num-requests", "4", "--log", "info"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "KV cache derived from GPU memory" in result.stderr
    bad = runner.invoke(
        cli, ["run", "--model", LLAMA, "--roofline", "--hardware", "Z1", "--tp", "1"]
    )
    assert bad.exit_code == 2
    assert 'unknown GPU "Z1"' in bad.stderr
    assert "Traceback" not in bad.stderr


def test_trained_alpha_is_not_stacked_on_the_roofline_step():
    """Issue 19 defect 2: A100-SXM finds the A100-80 v0.8.4 entry (alpha2 = 19.5 ms)."""
    qwen = "qwen/qwen2.5-7b-instruct"
    trained = load_catalog().find_coefficients(qwen, "A100-SXM", 1, "vllm/vllm-openai:v0.8.4")
    assert trained is not None and trained.alpha[2] > 19_000
    opts = {"model": qwen, "roofline": True, "hardware": "A100-SXM", "tp": 1,
            "total_kv_blocks": 20000, "num_requests": 1, "output_tokens": 64,
            "output_tokens_stdev": 0}  # fmt: skip
    itl = simulate(**opts).summary["itl_mean_ms"]
    # A physical decode step of a 7.6B-parameter BF16 model on an A100: ~15 GB of weights
    # over ~2 TB/s at the roofline's efficiency, 8-12 ms, not 29.5 ms.
    assert 8.0 < itl < 12.0
    # An explicit alpha is the user's choice and is added as given.
    stacked = simulate(**opts, alpha_coeffs="0,0,19547.4").summary["itl_mean_ms"]
    assert stacked == pytest.approx(itl + 19.547, abs=0.01)


def test_a_derived_cache_too_small_for_max_model_len_is_refused_as_vllm_does():
    """vLLM's check_enough_kv_cache_memory: no start when one max-length request cannot fit."""
    base = {"model": "meta-llama/llama-3.1-70b-instruct", "hardware": "H200", "tp": 1,
            "latency_model": "calibrated", "gpu_memory_utilization": 0.95}  # fmt: skip
    with pytest.raises(ConfigError, match=r"holds 736 tokens \(46 blocks\), less than one "
                       r"request of --max-model-len 4096"):  # fmt: skip
        resolve({**base, "max_model_len": 4096})
    assert resolve({**base, "max_model_len": 512}).engine.num_gpu_blocks == 46
    # a count the user gives is simulated as given (the reference's behaviour)
    given = resolve({**base, "max_model_len": 4096, "total_kv_blocks": 46})
    assert given.engine.num_gpu_blocks == 46


def test_given_blocks_for_weights_that_cannot_load_warn(sim_log):
    opts = {"model": "meta-llama/llama-3.3-70b-instruct", "hardware": "L4", "tp": 1,
            "latency_model": "calibrated", "total_kv_blocks": 1000}  # fmt: skip
    plan = resolve(opts)
    assert plan.engine.num_gpu_blocks == 1000
    (line,) = {r.getMessage() for r in sim_log.records if "does not fit on L4" in r.getMessage()}
    assert "vLLM could not load it; the run uses --total-kv-blocks 1000 as given" in line
    sim_log.clear()
    resolve({**opts, "hardware": "H100", "tp": 4})
    assert not [r for r in sim_log.records if "does not fit" in r.getMessage()]


@pytest.mark.parametrize(("size", "blocks"), [(16, 29205), (32, 14602), (8, 58410)])
def test_a_trained_block_count_follows_the_block_size(size, blocks):
    """The trained count is memory in 16-token blocks: other sizes hold the same tokens."""
    plan = resolve({"model": LLAMA, "hardware": "H100", "tp": 1, "block_size_in_tokens": size})
    assert plan.engine.num_gpu_blocks == blocks


def test_a_fallback_for_a_model_without_a_default_version_says_to_give_one():
    """The model's trained entries exist for H100/TP2, but entries match on the vLLM
    version and the catalog has no default one for it: the reason says so, rather than
    'no trained entry for H100/TP2 (trained: H100/TP2, ...)'."""
    plan = resolve({"model": "mistralai/mixtral-8x7b-instruct-v0.1", "hardware": "H100", "tp": 2})
    assert "without a vLLM version" in plan.latency_reason
    assert "--vllm-version" in plan.latency_reason
    # the trained entries it lists carry their versions, the part that did not match
    assert "H100/TP2/" in plan.latency_reason
