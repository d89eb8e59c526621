"""Review 24: KV-cache capacity follows the deployment that runs.

1. a results file replayed on another deployment derives its own KV blocks (and block
   size and step-time model), unless the user gave them;
2. a given block count larger than the GPU can hold after the weights is warned about;
3. ``--gpu-memory-utilization`` above 0.99 is warned about (vLLM refuses to start);
4. a P/D run whose instances are all in pools of their own need not fit the run's own
   deployment, and logs each pool's KV capacity;
5. a TP that cannot split the heads is reported before any capacity figure;
6. a ``--hardware-config`` entry with a bundled GPU's published memory keeps its usable
   memory (ECC GDDR cards expose less);
7. an MLA model on a Hopper GPU runs with 64-token blocks, as vLLM's FlashMLA forces.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from inference_sim.catalog import load_catalog
from inference_sim.catalog.hardware import with_hardware_config
from inference_sim.cli.main import cli
from inference_sim.config.errors import ConfigError
from inference_sim.config.resolve import load_run_config, resolve
from inference_sim.planning.plan import with_plan_arrival
from inference_sim.sweep.spec import read_config_file

QWEN = "qwen/qwen3-14b"
LLAMA8 = "meta-llama/llama-3.1-8b-instruct"
DEEPSEEK = "deepseek-ai/deepseek-v2-lite"
GIB = 2**30


@contextmanager
def warnings_logged() -> Iterator[list[str]]:
    """The package's warnings given inside (a handler of its own: the CLI turns off
    propagation to the root logger, which pytest's caplog listens on)."""
    got: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                got.append(record.getMessage())

    log = logging.getLogger("inference_sim")
    handler = _Keep(logging.WARNING)
    log.addHandler(handler)
    try:
        yield got
    finally:
        log.removeHandler(handler)


def _run(*args: Any) -> Any:
    res = CliRunner().invoke(cli, ["run", *(str(a) for a in args)])
    assert res.exit_code == 0, res.stderr
    return res


def _results(folder: Path, name: str, *args: Any) -> Path:
    path = folder / name
    _run(*args, "--num-requests", 3, "--results-path", path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Results files: derived counts (calibrated fallback, trained entry), a given count."""
    folder = tmp_path_factory.mktemp("review24_kv")
    given = [
        "--model", QWEN, "--hardware", "H100", "--tp", 1, "--total-kv-blocks", 5000,
    ]  # fmt: skip
    return {
        "derived": _results(folder, "r1.json", "--model", QWEN, "--hardware", "H100", "--tp", 1),
        "trained": _results(folder, "r2.json", "--model", LLAMA8),
        "given": _results(folder, "r3.json", *given),
        "mla": _results(folder, "r4.json", "--model", DEEPSEEK, "--hardware", "H100", "--tp", 1),
    }


def _fresh(**options: Any) -> int:
    """The block count a run with these options alone derives."""
    return int(resolve({"num_requests": 3, **options}).engine.num_gpu_blocks)


# --- 1. a results file replayed on another deployment -------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"model": "meta-llama/llama-2-7b-hf"},
        {"hardware": "L40S"},
        {"tp": 2},
        {"block_size_in_tokens": 64},
        {"kv_cache_dtype": "fp8"},
        {"gpu_memory_utilization": 0.5},
    ],
)
def test_a_replay_on_another_deployment_derives_its_own_kv_blocks(files, change):
    recorded = json.loads(files["derived"].read_text())["config"]["total_kv_blocks"]
    plan = resolve({"config": str(files["derived"]), **change})
    want = _fresh(**{"model": QWEN, "hardware": "H100", "tp": 1, **change})
    assert plan.engine.num_gpu_blocks == want != recorded


def test_an_unchanged_replay_is_byte_identical_and_keeps_its_reason(files, tmp_path):
    """The recorded count (and the calibrated model auto chose) are derived again, the
    same; the reason is auto's own again, not "requested (--latency-model calibrated)"."""
    for name in ("derived", "trained", "mla"):
        again = tmp_path / f"{name}.json"
        _run("--config", files[name], "--results-path", again)
        first, second = (json.loads(p.read_text()) for p in (files[name], again))
        for doc in (first, second):
            doc["config"].pop("results_path")
        assert first == second


def test_trained_coefficients_are_not_carried_to_another_gpu(files):
    plan = resolve({"config": str(files["trained"]), "hardware": "L40S"})
    assert plan.latency_model == "calibrated"  # no trained L40S entry: auto's fallback
    assert not any(plan.alpha) and plan.engine.num_gpu_blocks == _fresh(
        model=LLAMA8, hardware="L40S", tp=2
    )


def test_a_given_count_is_kept_with_a_warning_when_the_deployment_changes(files):
    with warnings_logged() as got:
        plan = resolve({"config": str(files["given"]), "hardware": "L40S"})
    assert plan.engine.num_gpu_blocks == 5000
    kept = [w for w in got if "--total-kv-blocks 5000 was given" in w]
    assert len(kept) == 1 and "--hardware L40S (recorded: H100)" in kept[0]
    with warnings_logged() as got:  # the same deployment: nothing to say
        resolve({"config": str(files["given"]), "seed": 7})
    assert not any("was given" in w for w in got)


def test_plan_and_sweep_bases_from_a_results_file_derive_per_candidate(files):
    assert "total_kv_blocks" not in with_plan_arrival({"config": str(files["derived"])})
    assert "total_kv_blocks" not in read_config_file(str(files["derived"]), "sweep base")
    assert load_run_config(files["given"])["total_kv_blocks"] == 5000


# --- 2. a given count the GPU cannot hold ---------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"model": QWEN, "hardware": "H100", "tp": 1},  # calibrated: derived capacity
        {"model": LLAMA8, "hardware": "H100", "tp": 2},  # blackbox: a trained entry
    ],
)
def test_a_given_count_beyond_gpu_memory_is_warned_about(options):
    with warnings_logged() as got:
        resolve({**options, "total_kv_blocks": 10**6, "num_requests": 3})
    over = [w for w in got if "--num-gpu-blocks-override" in w]
    assert len(over) == 1
    assert "--total-kv-blocks 1000000" in over[0] and "MiB per block" in over[0]
    assert "at most" in over[0] and "weights" in over[0]
    with warnings_logged() as got:
        resolve({**options, "total_kv_blocks": 1000, "num_requests": 3})
    assert not any("--num-gpu-blocks-override" in w for w in got)


# --- 3. --gpu-memory-utilization above 0.99 -------------------------------------------------


def test_a_utilization_above_099_is_warned_about_and_above_1_refused():
    base = {"model": QWEN, "hardware": "H100", "tp": 1, "num_requests": 3}
    with warnings_logged() as got:
        resolve({**base, "gpu_memory_utilization": 1.0})
    assert any("vLLM refuses to start" in w and "CUDA context" in w for w in got)
    with warnings_logged() as got:
        resolve({**base, "gpu_memory_utilization": 0.98})
    assert not any("refuses to start" in w for w in got)
    with pytest.raises(ConfigError, match="--gpu-memory-utilization must be in"):
        resolve({**base, "gpu_memory_utilization": 1.01})


# --- 4. P/D runs whose instances are all in pools of their own ------------------------------

PD_ON_L4 = {
    "model": QWEN, "hardware": "L4", "tp": 1, "num_instances": 2, "prefill_instances": 1,
    "decode_instances": 1, "prefill_tp": 4, "decode_tp": 4, "num_requests": 3,
}  # fmt: skip


def test_pools_of_their_own_need_not_fit_the_main_deployment():
    plan = resolve(PD_ON_L4)
    assert plan.pools["decode"].engine.num_gpu_blocks == _fresh(model=QWEN, hardware="L4", tp=4)
    assert any("no instance runs the main deployment L4/TP1" in n for n in plan.notes)
    for pool in ("prefill", "decode"):
        assert any(n.startswith(f"P/D {pool} pool (L4/TP4):") for n in plan.notes)
    # A dual-role instance runs the main deployment: it must fit.
    with pytest.raises(ConfigError, match="does not fit on L4 at TP=1"):
        resolve({**PD_ON_L4, "num_instances": 3})


def test_each_pool_logs_its_kv_capacity():
    plan = resolve({**PD_ON_L4, "hardware": "H100", "prefill_tp": 2, "num_instances": 3})
    notes = [n for n in plan.notes if n.startswith("P/D ")]
    assert [n.split(" (")[0] for n in notes] == [
        "P/D prefill pool",
        "P/D decode pool",
        "P/D dual pool",
    ]
    assert "derived from GPU memory" in notes[0] and "H100/TP2" in notes[0]


# --- 5. the TP check comes first ------------------------------------------------------------


def test_a_tp_that_cannot_split_the_heads_is_the_error_not_the_capacity():
    with pytest.raises(ConfigError, match="not divisible by TP=3") as err:
        resolve({"model": "meta-llama/llama-3.1-70b-instruct", "hardware": "L4", "tp": 3})
    assert "does not fit" not in str(err.value)


# --- 6. --hardware-config with a bundled GPU's published memory ------------------------------


def _hardware(tmp_path: Path, **memory: float) -> float:
    entry = {
        "TFlopsPeak": 362.05, "BwPeakTBs": 0.864, "BwEffConstant": 0.72, "mfuPrefill": 0.65,
        "mfuDecode": 0.12, **memory,
    }  # fmt: skip
    path = tmp_path / "hw.json"
    path.write_text(json.dumps({"L40S": entry}))
    return with_hardware_config(load_catalog(), path).gpu("L40S").usable_memory_bytes / GIB


def test_a_hardware_config_with_the_published_size_keeps_the_usable_memory(tmp_path):
    bundled = load_catalog().gpu("L40S").usable_memory_bytes / GIB
    assert _hardware(tmp_path, memoryGB=48) == pytest.approx(bundled) == pytest.approx(44.5)
    assert _hardware(tmp_path, memoryGB=40) == pytest.approx(40 * 0.99)  # another card
    assert _hardware(tmp_path, memoryGB=48, memoryGiB=46) == pytest.approx(46)


# --- 7. MLA models on Hopper: 64-token blocks ------------------------------------------------


def test_an_mla_model_on_hopper_gets_vllms_64_token_blocks(files):
    h100 = resolve({"model": DEEPSEEK, "hardware": "H100", "tp": 1, "num_requests": 3})
    assert h100.engine.block_size == 64
    assert any("FlashMLA" in n for n in h100.notes)
    a100 = resolve({"model": DEEPSEEK, "hardware": "A100-SXM", "tp": 1, "num_requests": 3})
    assert a100.engine.block_size == 16  # no FlashMLA before Hopper
    # The same memory: a quarter of the blocks, each four times larger.
    sixteen = _fresh(model=DEEPSEEK, hardware="H100", tp=1, block_size_in_tokens=16)
    assert abs(h100.engine.num_gpu_blocks - sixteen / 4) <= 1
    with warnings_logged() as got:  # a given size is simulated as given
        given = resolve(
            {"model": DEEPSEEK, "hardware": "H100", "tp": 1, "block_size_in_tokens": 16}
        )
    assert given.engine.block_size == 16
    assert any("64-token blocks" in w for w in got)
    # A replay on an older GPU derives its block size again.
    replay = resolve({"config": str(files["mla"]), "hardware": "A100-SXM"})
    assert replay.engine.block_size == 16


def test_calibrated_sizes_the_kv_cache_as_vllm_0151_not_from_a_trained_entry() -> None:
    """The calibrated model is vLLM v0.15.1's: its KV blocks are derived from GPU memory
    (the v0.15.1 runs' logged counts, e.g. Qwen2.5-7B H100/TP1 65 352, within 1.5 %),
    not taken from a trained entry of another version (v0.8.4: 67 659), and
    --gpu-memory-utilization therefore sizes them. Blackbox and roofline keep the
    trained count (the reference's rule)."""
    from inference_sim.config import resolve

    base = {"model": "qwen/qwen2.5-7b-instruct", "hardware": "H100", "tp": 1}
    cal = resolve({**base, "latency_model": "calibrated"})
    assert abs(cal.engine.num_gpu_blocks - 65_352) / 65_352 < 0.015
    half = resolve({**base, "latency_model": "calibrated", "gpu_memory_utilization": 0.5})
    assert half.engine.num_gpu_blocks < cal.engine.num_gpu_blocks * 0.5
    assert resolve({**base, "latency_model": "roofline"}).engine.num_gpu_blocks == 67_659
    assert resolve(base).engine.num_gpu_blocks == 67_659  # auto: the trained entry
    given = resolve({**base, "latency_model": "calibrated", "total_kv_blocks": 1000})
    assert given.engine.num_gpu_blocks == 1000


def test_calibrated_keeps_a_trained_count_for_sliding_window_models() -> None:
    """gpt-oss: half its layers use a sliding window, whose blocks vLLM's hybrid KV cache
    counts in a way the memory derivation does not model (74 % low, roofline.md); its
    trained count, measured by vLLM, stays."""
    opts = {"model": "openai/gpt-oss-20b", "hardware": "H100", "tp": 1}
    trained = resolve({**opts, "latency_model": "roofline"}).engine.num_gpu_blocks
    assert trained == 302_690  # the catalog's entry (vLLM's own count)
    assert resolve({**opts, "latency_model": "calibrated"}).engine.num_gpu_blocks == trained


# --- review 24, second round: what a replay keeps ------------------------------------------


def test_a_replay_keeps_a_latency_model_asked_for_by_name(tmp_path):
    """A run that asked for calibrated by name replays as asked, also on another model
    whose trained entry ``auto`` would pick (it ran blackbox, silently)."""
    first = _results(
        tmp_path,
        "q1.json",
        *("--model", "qwen/qwen2.5-1.5b-instruct", "--latency-model", "calibrated"),
        *("--hardware", "H100", "--tp", 1),
    )
    assert json.loads(first.read_text())["config"]["latency_model_requested"] is True
    again = tmp_path / "q2.json"
    _run("--config", first, "--results-path", again)
    assert json.loads(again.read_text())["latency_model_reason"].startswith("requested")
    other = tmp_path / "q3.json"
    _run("--config", first, "--model", "qwen/qwen2.5-7b-instruct", "--results-path", other)
    assert json.loads(other.read_text())["latency_model"] == "calibrated"


def test_a_replay_on_another_model_takes_that_models_catalog_defaults(files, tmp_path):
    """The GPU, TP and vLLM version a run took from its model's catalog defaults are the
    new model's own on a replay with another --model (Llama's v0.8.4 made gpt-oss-20b
    miss its trained entry and fall back to the calibrated model)."""
    out = tmp_path / "b.json"
    _run("--config", files["trained"], "--model", "openai/gpt-oss-20b", "--results-path", out)
    doc = json.loads(out.read_text())
    fresh = resolve({"model": "openai/gpt-oss-20b", "num_requests": 3})
    assert doc["latency_model"] == fresh.latency_model == "blackbox"
    assert (
        doc["config"]["vllm_version"] == fresh.options["vllm_version"] != "vllm/vllm-openai:v0.8.4"
    )
    assert (doc["config"]["hardware"], doc["config"]["tp"]) == (
        fresh.options["hardware"],
        fresh.options["tp"],
    )


def test_a_fallback_with_a_version_names_it_and_the_trained_versions():
    plan = resolve(
        {"model": "openai/gpt-oss-20b", "hardware": "H100", "tp": 2, "vllm_version": "v0.8.4"}
    )
    assert "at vLLM version vllm/vllm-openai:v0.8.4" in plan.latency_reason
    assert "H100/TP2/vllm/vllm-openai:v0.10.1.1" in plan.latency_reason


def test_the_unstartable_utilization_warning_only_where_it_sizes_the_cache():
    base = {"model": LLAMA8, "hardware": "H100", "tp": 1, "gpu_memory_utilization": 0.995}
    with warnings_logged() as got:
        resolve(base)  # the trained entry's count: the flag has no effect
    assert not any("refuses to start" in w for w in got) and any("no effect" in w for w in got)


def test_models_lists_the_block_count_a_run_uses_for_mla_on_hopper():
    from inference_sim.catalog.listing import models_table

    row = next(
        r for r in models_table(load_catalog()) if r["model"] == DEEPSEEK and r["gpu"] == "H100"
    )
    assert row["derived_kv_blocks"] == _fresh(model=DEEPSEEK, hardware="H100", tp=row["tp"])


@pytest.mark.parametrize(
    ("main", "pools", "size"),
    [
        ("H100", {"prefill_hardware": "A100-80", "decode_hardware": "A100-80"}, 16),
        ("A100-80", {"decode_hardware": "H100"}, 64),
    ],
)
def test_a_pd_clusters_mla_block_size_follows_the_gpus_its_instances_run_on(main, pools, size):
    """One block size for the cluster: 64 for an MLA model when any instance runs on
    Hopper (FlashMLA), whether the run's GPU or a pool's; 16 when no instance runs on
    Hopper, even if the run's own (unused) GPU is one. No warning about a size nobody
    gave."""
    opts = {
        "model": DEEPSEEK, "hardware": main, "tp": 1, "latency_model": "roofline",
        "num_instances": 2, "prefill_instances": 1, "decode_instances": 1,
        "num_requests": 3, **pools,
    }  # fmt: skip
    with warnings_logged() as got:
        plan = resolve(opts)
    assert {p.options["block_size_in_tokens"] for p in plan.pools.values()} == {size}
    assert not any("--block-size-in-tokens" in w for w in got)


def test_a_replay_with_a_cpu_tier_sized_in_gib_or_by_link_follows_the_new_deployment(tmp_path):
    """--cpu-offload-gib and --kv-transfer-link record the block count and speed they
    derive; a replay on another deployment derives them again (it refused the replay:
    'both size the CPU KV tier'), and a command-line block count or bandwidth replaces
    the file's other spelling."""
    first = _results(
        tmp_path,
        "g1.json",
        *("--model", LLAMA8, "--cpu-offload-gib", 0.05, "--kv-transfer-link", "pcie-gen4"),
    )
    for change in (["--tp", 1], ["--model", "microsoft/phi-4"], ["--kv-cpu-blocks", 50]):
        out = tmp_path / "g2.json"
        _run("--config", first, *change, "--results-path", out)
        fresh = json.loads(out.read_text())["config"]
        if change[0] == "--kv-cpu-blocks":
            assert fresh["kv_cpu_blocks"] == 50
    _run("--config", first, "--kv-transfer-bandwidth", 2, "--results-path", tmp_path / "g3.json")


def test_a_replay_keeps_blackbox_asked_for_by_name(tmp_path):
    first = _results(tmp_path, "bb.json", "--model", LLAMA8, "--latency-model", "blackbox")
    assert json.loads(first.read_text())["config"]["latency_model_requested"] is True
    res = CliRunner().invoke(
        cli, ["run", "--config", str(first), "--hardware", "L40S", "--tp", "1"]
    )
    assert res.exit_code != 0 and "no trained coefficients" in res.stderr
