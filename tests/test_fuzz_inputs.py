"""Fuzz every user input of ``blis run`` (issue 11): workload specs, policy bundles, trace
rows in the four formats, model config.json, hardware files, defaults files, run-config
files and flag values; output paths of every kind (devices, FIFOs, links, folders, names
too long, inputs) and SIGINT/SIGTERM at each phase of a run (issue 21). Each case either
runs (exit 0) or exits 2 with one ``Error:`` line; never a traceback, an internal failure
(exit 1) or a hang (see test_fuzz_support).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from inference_sim.cli.main import cli
from inference_sim.config.options import OPTIONS
from test_fuzz_support import (
    HARDWARE_SEED,
    MODEL,
    REFERENCE,
    REPO,
    SMALL_RUN,
    fuzz_settings,
    invoke,
    mutated,
    mutated_text,
    scalars,
    values,
)
from test_robustness_limits import FILE_FLAGS as LIMITED_FILE_FLAGS

#: A small roofline run on H100 TP 1; append the --model-config-folder value.
ROOFLINE_RUN = [
    *SMALL_RUN,
    "--latency-model",
    "roofline",
    "--hardware",
    "H100",
    "--tp",
    "1",
    "--model-config-folder",
]

# --- seed documents -------------------------------------------------------------------

SPEC_SEEDS: list[dict[str, Any]] = [
    {
        "version": "2",
        "seed": 7,
        "aggregate_rate": 50.0,
        "num_requests": 20,
        "clients": [
            {
                "id": "chat",
                "tenant_id": "t1",
                "slo_class": "critical",
                "rate_fraction": 0.7,
                "arrival": {"process": "gamma", "cv": 2.0},
                "input_distribution": {
                    "type": "gaussian",
                    "params": {"mean": 64, "std_dev": 20, "min": 8, "max": 256},
                },
                "output_distribution": {"type": "exponential", "params": {"mean": 16}},
                "prefix_group": "sys",
                "prefix_length": 32,
                "lifecycle": {"windows": [{"start_us": 0, "end_us": 5_000_000}]},
            },
            {
                "id": "batch",
                "slo_class": "batch",
                "rate_fraction": 0.3,
                "arrival": {"process": "poisson"},
                "input_distribution": {"type": "empirical", "params": {"32": 1, "64": 2}},
                "output_distribution": {"type": "constant", "params": {"value": 8}},
                "reasoning": {
                    "reason_ratio_distribution": {"type": "constant", "params": {"value": 30}},
                    "multi_turn": {
                        "max_rounds": 3,
                        "think_time_us": 1000,
                        "context_growth": "accumulate",
                    },
                },
            },
        ],
    },
    {
        "version": "1",
        "seed": 3,
        "inference_perf": {
            "stages": [{"rate": 20.0, "duration": 1}, {"rate": 40.0, "duration": 1}],
            "shared_prefix": {
                "num_unique_system_prompts": 2,
                "num_users_per_system_prompt": 2,
                "system_prompt_len": 32,
                "question_len": 16,
                "output_len": 8,
            },
        },
    },
    {
        "aggregate_rate": 100.0,
        "stages": [{"rate": 10, "duration": 0.5}, {"rate": 30, "end": 1.0}],
        "clients": [
            {
                "id": "mm",
                "rate_fraction": 1,
                "arrival": {"process": "weibull", "cv": 1.5},
                "input_distribution": {
                    "type": "pareto_lognormal",
                    "params": {
                        "alpha": 1.5,
                        "xm": 20,
                        "mu": 4.0,
                        "sigma": 1.0,
                        "mix_weight": 0.3,
                        "max": 400,
                    },
                },
                "output_distribution": {"type": "constant", "params": {"value": 4}},
                "multimodal": {
                    "text_distribution": {"type": "constant", "params": {"value": 16}},
                    "image_distribution": {"type": "constant", "params": {"value": 32}},
                    "image_count_distribution": {"type": "constant", "params": {"value": 1}},
                },
            }
        ],
    },
]


def _reference_yaml(name: str) -> Any:
    path = REFERENCE / "examples" / name
    return yaml.safe_load(path.read_text()) if path.exists() else None


for _name in ("multiturn-chat-demo.yaml", "prefix-affinity-demo.yaml"):
    _doc = _reference_yaml(_name)
    if isinstance(_doc, dict):
        SPEC_SEEDS.append(_doc)

BUNDLE_SEEDS: list[Any] = [
    yaml.safe_load((REPO / "examples" / "policy-bundle.yaml").read_text()),
    {
        "admission": {"policy": "always-admit"},
        "routing": {"policy": "round-robin"},
        "priority": {"policy": "constant"},
        "scheduler": "fcfs",
    },
    {"routing": {"policy": "weighted", "scorers": [{"name": "queue-depth", "weight": 1}]}},
]

MODEL_CONFIG_SEEDS: list[dict[str, Any]] = [
    {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "torch_dtype": "bfloat16",
        "tie_word_embeddings": False,
    },
    {
        "architectures": ["Qwen3MoeForCausalLM"],
        "head_dim": 128,
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "moe_intermediate_size": 768,
        "num_attention_heads": 32,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "num_hidden_layers": 48,
        "num_key_value_heads": 4,
        "torch_dtype": "bfloat16",
        "vocab_size": 151936,
        "mlp_only_layers": [],
        "decoder_sparse_step": 1,
    },
]

DEFAULTS_SEED = {
    "version": "x",
    "defaults": {
        MODEL: {
            "GPU": "H100",
            "tensor_parallelism": 1,
            "vllm_version": "v1",
            "hf_repo": "meta-llama/Llama-3.1-8B-Instruct",
        }
    },
    "workloads": {
        "chatbot": {
            "prefix_tokens": 0,
            "prompt_tokens": 256,
            "prompt_tokens_stdev": 100,
            "prompt_tokens_min": 2,
            "prompt_tokens_max": 800,
            "output_tokens": 256,
            "output_tokens_stdev": 100,
            "output_tokens_min": 1,
            "output_tokens_max": 1024,
        }
    },
    "models": [
        {
            "id": MODEL,
            "GPU": "H100",
            "tensor_parallelism": 1,
            "vllm_version": "v1",
            "alpha_coeffs": [100.0, 1.0, 10.0],
            "beta_coeffs": [1000.0, 1.0, 1.0],
            "total_kv_blocks": 5000,
            "best_loss": 1.0,
        }
    ],
}


_BASE: Path | None = None


@pytest.fixture(autouse=True, scope="module")
def _fuzz_base() -> Iterator[None]:
    """One folder for every example's files, removed when the module ends: hypothesis
    runs hundreds of examples per test and cannot take pytest's tmp_path per example."""
    global _BASE
    _BASE = Path(tempfile.mkdtemp(prefix="blis-fuzz-"))
    try:
        yield
    finally:
        shutil.rmtree(_BASE, ignore_errors=True)
        _BASE = None


def _tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="blis-fuzz-", dir=_BASE))


def _dump(doc: Any) -> str:
    try:
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:
        return repr(doc)


# --- workload specs -------------------------------------------------------------------


@fuzz_settings(60)
@given(data=st.data())
def test_fuzz_workload_spec_structure(data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(SPEC_SEEDS))
    doc = data.draw(mutated(seed))
    path = _tmp() / "spec.yaml"
    path.write_text(_dump(doc), encoding="utf-8")
    invoke([*SMALL_RUN, "--workload-spec", path])


@fuzz_settings(40)
@given(data=st.data())
def test_fuzz_workload_spec_text(data: st.DataObject) -> None:
    text = _dump(data.draw(st.sampled_from(SPEC_SEEDS)))
    path = _tmp() / "spec.yaml"
    path.write_text(data.draw(mutated_text(text)), encoding="utf-8")
    invoke([*SMALL_RUN, "--workload-spec", path])
    invoke(["workload", "describe", path])


# --- policy bundles ---------------------------------------------------------------------


@fuzz_settings(50)
@given(data=st.data())
def test_fuzz_policy_bundle(data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(BUNDLE_SEEDS))
    if data.draw(st.booleans()):
        text = _dump(data.draw(mutated(seed)))
    else:
        text = data.draw(mutated_text(_dump(seed)))
    path = _tmp() / "bundle.yaml"
    path.write_text(text, encoding="utf-8")
    invoke([*SMALL_RUN, "--num-instances", "2", "--policy-config", path])


# --- traces -------------------------------------------------------------------------------

cells = st.one_of(
    st.sampled_from(["0", "1", "0.5", "-1", "nan", "inf", "1e30", "", "x", "[1,2,3]", "[]"]),
    st.text(max_size=8),
    st.integers(-5, 10**12).map(str),
    st.lists(st.integers(-2, 2**40), max_size=5).map(json.dumps),
)


def _poke(row: list[str], column: int, value: str) -> None:
    """Replace a cell, or add one past the end."""
    if column < len(row):
        row[column] = value
    else:
        row.append(value)


def _csv_text(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


@st.composite
def reference_csv(draw: st.DrawFn) -> str:
    rows = [["arrival_time", "request_id", "model", "prefill_tokens", "decode_tokens"]]
    for i in range(draw(st.integers(0, 6))):
        rows.append([f"{i * 0.01}", f"r{i}", "", json.dumps(list(range(1, 20))), "[5,6,7]"])
    for _ in range(draw(st.integers(1, 3))):
        if len(rows) > 1 and draw(st.booleans()):
            r = draw(st.integers(1, len(rows) - 1))
            _poke(rows[r], draw(st.integers(0, 6)), draw(cells))
        else:
            rows.append(draw(st.lists(cells, max_size=7)))
    return _csv_text(rows)


@st.composite
def azure_csv(draw: st.DrawFn) -> str:
    rows = [["TIMESTAMP", "ContextTokens", "GeneratedTokens"]]
    for i in range(draw(st.integers(0, 6))):
        rows.append([f"2023-11-16 18:17:0{i}.1234567", "40", "8"])
    for _ in range(draw(st.integers(1, 3))):
        if len(rows) > 1 and draw(st.booleans()):
            r = draw(st.integers(0, len(rows) - 1))
            _poke(rows[r], draw(st.integers(0, 3)), draw(cells))
        else:
            rows.append(draw(st.lists(cells, max_size=4)))
    return _csv_text(rows)


@st.composite
def mooncake_jsonl(draw: st.DrawFn) -> str:
    rows: list[Any] = []
    for i in range(draw(st.integers(0, 6))):
        rows.append({"timestamp": i * 10, "input_length": 40, "output_length": 8, "hash_ids": [i]})
    for _ in range(draw(st.integers(1, 3))):
        if rows and draw(st.booleans()):
            r = draw(st.integers(0, len(rows) - 1))
            rows[r] = draw(mutated(rows[r], 2))
        else:
            rows.append(draw(values))
    lines = []
    for row in rows:
        try:
            lines.append(json.dumps(row, allow_nan=True))
        except (TypeError, ValueError):
            lines.append(repr(row))
    if draw(st.booleans()):
        lines.append(draw(st.text(max_size=20)))
    return "\n".join(lines) + "\n"


V2_HEADER = (
    "request_id,client_id,tenant_id,slo_class,session_id,round_index,prefix_group,streaming,"
    "input_tokens,output_tokens,text_tokens,image_tokens,audio_tokens,video_tokens,"
    "reason_ratio,arrival_time_us,send_time_us,first_chunk_time_us,last_chunk_time_us,"
    "num_chunks,status,error_message,model,prefix_length,context_tokens"
)


@st.composite
def trace_v2_csv(draw: st.DrawFn) -> str:
    rows = [V2_HEADER.split(",")]
    for i in range(draw(st.integers(0, 5))):
        rows.append(
            [
                str(i),
                "c",
                "t",
                "standard",
                "s1" if i % 2 else "",
                str(i // 2),
                "g" if i % 3 == 0 else "",
                "false",
                "64",
                "8",
                "64",
                "0",
                "0",
                "0",
                "0",
                str(i * 1000),
                str(i * 1000),
                "0",
                "0",
                "0",
                "ok",
                "",
                MODEL,
                "16" if i % 3 == 0 else "0",
                "0",
            ]
        )
    for _ in range(draw(st.integers(1, 3))):
        if len(rows) > 1 and draw(st.booleans()):
            r = draw(st.integers(0, len(rows) - 1))
            _poke(rows[r], draw(st.integers(0, 25)), draw(cells))
        else:
            rows.append(draw(st.lists(cells, max_size=26)))
    return _csv_text(rows)


@fuzz_settings(60)
@given(data=st.data())
def test_fuzz_trace_rows(data: st.DataObject) -> None:
    fmt, gen, suffix = data.draw(
        st.sampled_from(
            [
                ("csv", reference_csv(), ".csv"),
                ("azure", azure_csv(), ".csv"),
                ("mooncake", mooncake_jsonl(), ".jsonl"),
                ("v2", trace_v2_csv(), ".csv"),
            ]
        )
    )
    folder = _tmp()
    path = folder / f"trace{suffix}"
    path.write_text(data.draw(gen), encoding="utf-8")
    if fmt == "v2" and data.draw(st.booleans()):
        header = {"trace_version": 2, "time_unit": "microseconds", "mode": "generated"}
        if data.draw(st.booleans()):
            header = data.draw(mutated(header, 2))
        (folder / "trace.yaml").write_text(_dump(header), encoding="utf-8")
    chosen = data.draw(st.sampled_from([fmt, "auto"]))
    args = [*SMALL_RUN, "--workload", "traces", "--workload-traces-filepath", path]
    invoke([*args, "--trace-format", chosen, "--trace-block-size", "16"])
    invoke(["workload", "describe", path, "--format", chosen, "--block-size", "16"])


# --- model config.json, hardware files, defaults files ------------------------------------


@fuzz_settings(50)
@given(data=st.data())
def test_fuzz_model_config_folder(data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(MODEL_CONFIG_SEEDS))
    folder = _tmp()
    if data.draw(st.integers(0, 4)):
        text = json.dumps(data.draw(mutated(seed)), allow_nan=True)
    else:
        text = data.draw(mutated_text(json.dumps(seed, indent=1)))
    (folder / "config.json").write_text(text, encoding="utf-8")
    invoke([*ROOFLINE_RUN, folder])


@fuzz_settings(40)
@given(data=st.data())
def test_fuzz_hardware_config(data: st.DataObject) -> None:
    path = _tmp() / "hardware.json"
    if data.draw(st.integers(0, 4)):
        text = json.dumps(data.draw(mutated(HARDWARE_SEED)), allow_nan=True)
    else:
        text = data.draw(mutated_text(json.dumps(HARDWARE_SEED, indent=1)))
    path.write_text(text, encoding="utf-8")
    invoke([*SMALL_RUN, "--hardware", "H100", "--tp", "1", "--hardware-config", path])


@fuzz_settings(40)
@given(data=st.data())
def test_fuzz_defaults_file(data: st.DataObject) -> None:
    path = _tmp() / "defaults.yaml"
    if data.draw(st.integers(0, 3)):
        text = _dump(data.draw(mutated(DEFAULTS_SEED)))
    else:
        text = data.draw(mutated_text(_dump(DEFAULTS_SEED)))
    path.write_text(text, encoding="utf-8")
    invoke([*SMALL_RUN, "--defaults-filepath", path])
    invoke(["models", "--defaults-filepath", path])


# --- flags and run-config files -----------------------------------------------------------

WILD_VALUES = st.one_of(
    st.sampled_from(["0", "1", "-1", "2", "16", "0.5", "1e9", "nan", "inf", "-inf", "", "x"]),
    st.sampled_from(["1,2,3", "1,2", "a,b,c", "true", "false", "round-robin", "weighted"]),
    st.integers(-(2**65), 2**65).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=10).filter(lambda s: ":" not in s),  # no plug-in imports
)
# Values a user would plausibly give, so that combinations get past validation and run.
PLAUSIBLE_STRINGS: dict[str, list[str]] = {
    "routing_policy": ["round-robin", "least-loaded", "prefix-affinity", "weighted"],
    "admission_policy": ["always-admit", "token-bucket", "reject-all"],
    "priority_policy": ["constant", "slo-based", "inverted-slo"],
    "scheduler": ["fcfs", "priority-fcfs", "sjf", "reverse-priority"],
    "workload": ["distribution", "chatbot", "contentgen", "traces"],
    "latency_model": ["auto", "blackbox", "roofline", "calibrated"],
    "hardware": ["H100", "A100-80", "h100"],
    "trace_level": ["none", "decisions"],
    "routing_scorers": ["queue-depth:1,kv-utilization:2", "prefix-affinity:3", "load-balance:0"],
    "fitness_weights": ["throughput:1,p99_ttft:2", "mean_e2e:1"],
    "kv_transfer_link": ["pcie-gen4", "pcie-gen5"],
    "trace_format": ["auto", "csv", "v2", "azure", "mooncake"],
    "tp": ["1", "2", "4"],
}
PLAUSIBLE_INTS: dict[str, tuple[int, int]] = {
    "total_kv_blocks": (1, 3000),
    "block_size_in_tokens": (1, 64),
    "max_num_scheduled_tokens": (1, 4096),
    "max_num_running_reqs": (1, 64),
    "max_model_len": (0, 3000),
    "kv_cpu_blocks": (0, 3000),
    "num_instances": (1, 8),
    "seed": (0, 2**40),
}


@st.composite
def flag_value(draw: st.DrawFn, spec: Any) -> str:
    if draw(st.integers(0, 9)) < 3:
        return draw(WILD_VALUES)
    if spec.name in PLAUSIBLE_STRINGS:
        return draw(st.sampled_from(PLAUSIBLE_STRINGS[spec.name]))
    if spec.kind is int:
        lo, hi = PLAUSIBLE_INTS.get(spec.name, (0, 200))
        return str(draw(st.integers(lo, hi)))
    if spec.kind is float:
        return repr(
            draw(
                st.floats(0.0, 1.0)
                if "util" in spec.name or "threshold" in spec.name
                else st.floats(0.01, 2000.0)
            )
        )
    if spec.kind == "floats":
        return ",".join(str(draw(st.integers(0, 5000))) for _ in range(3))
    if spec.kind is bool:
        return draw(st.sampled_from(["true", "false"]))
    return draw(WILD_VALUES)


# Options whose fuzzed values would read or write files elsewhere, import modules, or
# legitimately take long (a huge request count is a long run, not a bug).
_NOT_FUZZED = {
    "results_path",
    "trace_output",
    "export_trace",
    "num_requests",
    "horizon",
    "model",
}
FUZZED_OPTIONS = [spec for spec in OPTIONS if spec.name not in _NOT_FUZZED]

# Engine replicas cost real memory and time each (a thousand instances is a long run).
_SMALL_COUNT = {"num_instances"}


def _flag_args(spec: Any, value: str) -> list[str]:
    if spec.kind is bool:
        return [spec.flag if value.startswith(("1", "t", "y")) else "--no-" + spec.flag[2:]]
    return [f"{spec.flag}={value}"]


@st.composite
def flag_picks(draw: st.DrawFn) -> list[tuple[Any, str]]:
    specs = draw(
        st.lists(
            st.sampled_from(FUZZED_OPTIONS), min_size=1, max_size=5, unique_by=lambda s: s.name
        )
    )
    return [(spec, draw(flag_value(spec))) for spec in specs]


@fuzz_settings(150)
@given(picks=flag_picks(), requests=st.integers(0, 20))
def test_fuzz_cli_flags(picks: list[tuple[Any, str]], requests: int) -> None:
    args = ["run", "--model", MODEL, "--num-requests", str(requests), "--log", "error"]
    for spec, value in picks:
        if spec.name in ("workload_traces_filepath", "workload_spec", "policy_config"):
            value = value.replace("/", "")  # a relative name under the working directory
        if spec.name in _SMALL_COUNT and value.lstrip("-").isdigit() and int(value) > 16:
            value = "16"
        args += _flag_args(spec, value)
    # Long prompts with many requests are a legitimately long run: cap them unless fuzzed.
    picked = {spec.name for spec, _v in picks}
    for name, cap in (("prompt_tokens_max", "4000"), ("output_tokens_max", "600")):
        if name not in picked:
            args += [f"--{name.replace('_', '-')}", cap]
    invoke(args, seconds=30)


@fuzz_settings(40)
@given(
    doc=st.dictionaries(
        st.sampled_from(
            [
                "rate",
                "max_num_seqs",
                "total_kv_blocks",
                "routing_policy",
                "seed",
                "block_size",
                "rates",
                "num_request",
                "model",
                "tp",
                "horizon",
            ]
        ),
        scalars,
        max_size=4,
    )
)
def test_fuzz_run_config_file(doc: dict[str, Any]) -> None:
    path = _tmp() / "run.yaml"
    path.write_text(_dump(doc), encoding="utf-8")
    invoke(["run", "--model", MODEL, "--config", path, "--num-requests", "8", "--log", "error"])


# --- the real command, in a subprocess with a timeout ---------------------------------------


def _blis(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "inference_sim", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@fuzz_settings(4)
@given(data=st.data())
def test_fuzz_subprocess(data: st.DataObject) -> None:
    """A few cases through the installed entry point: exit 0 or 2, one line, no traceback."""
    folder = _tmp()
    spec = folder / "spec.yaml"
    spec.write_text(_dump(data.draw(mutated(SPEC_SEEDS[0]))), encoding="utf-8")
    bundle = folder / "bundle.yaml"
    bundle.write_text(data.draw(mutated_text(_dump(BUNDLE_SEEDS[0]))), encoding="utf-8")
    trace = folder / "trace.csv"
    trace.write_text(data.draw(reference_csv()), encoding="utf-8")
    for args in (
        ["run", "--model", MODEL, "--workload-spec", str(spec), "--num-requests", "10"],
        ["run", "--model", MODEL, "--policy-config", str(bundle), "--num-requests", "10"],
        ["run", "--model", MODEL, "--workload", "traces", "--workload-traces-filepath", str(trace)],
    ):
        proc = _blis(args, folder)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.returncode in (0, 2), (args, proc.returncode, proc.stderr)
        if proc.returncode == 2:
            errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error: ")]
            assert len(errors) == 1, proc.stderr


# --- output paths: special files, links, folders, names (issue 21, items 1-3) ---------------

OUTPUT_KINDS = [
    "new",
    "regular",
    "symlink",
    "dangling-symlink",
    "fifo",
    "device",
    "folder",
    "under-a-file",
    "missing-folder",
    "too-long",
    "the-input-spec",
    "the-other-output",
]
OUTPUT_FLAGS = ["--results-path", "--trace-output", "--export-trace", "report", "plot"]


def _make_output(kind: str, folder: Path, spec: Path, other: Path) -> Path:
    """An output path of ``kind`` under ``folder`` (special files made there, never real)."""
    p = folder / "out.json"
    if kind == "regular":
        p.write_text("old")
    elif kind == "symlink":
        (folder / "target.json").write_text("old")
        p.symlink_to("target.json")
    elif kind == "dangling-symlink":
        p.symlink_to("made.json")
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "device":
        try:
            os.mknod(p, 0o20666, os.makedev(1, 3))  # /dev/null's numbers, under tmp
        except OSError:
            os.mkfifo(p)  # not root: a FIFO is the special file we can make
    elif kind == "folder":
        p.mkdir()
    elif kind == "under-a-file":
        (folder / "file").write_text("x")
        p = folder / "file" / "out.json"
    elif kind == "missing-folder":
        p = folder / "missing" / "out.json"
    elif kind == "too-long":
        p = folder / ("x" * 300)
    elif kind == "the-input-spec":
        p = spec
    elif kind == "the-other-output":
        p = other
    return p


def _mode(path: Path) -> int:
    """``st_mode`` of ``path`` (links followed), 0 when it cannot be stat'ed."""
    try:
        return os.stat(path).st_mode
    except OSError:
        return 0


def _reader(path: Path) -> threading.Thread | None:
    """Drain a FIFO in the background (its writer blocks until someone reads)."""
    if not stat.S_ISFIFO(_mode(path)):
        return None

    def read() -> None:
        with open(path, "rb") as fh:
            fh.read()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t


@fuzz_settings(40)
@given(kind=st.sampled_from(OUTPUT_KINDS), flag=st.sampled_from(OUTPUT_FLAGS))
def test_fuzz_output_paths(kind: str, flag: str) -> None:
    """Whatever the output path is: exit 0 or one-line exit 2, special files stay special,
    the input is untouched, and no temporary file is left anywhere."""
    with tempfile.TemporaryDirectory(prefix="blis-fuzz-") as tmp:
        folder = Path(tmp)
        spec = folder / "spec.yaml"
        spec.write_text(_dump(SPEC_SEEDS[0]), encoding="utf-8")
        other = folder / "other.json"
        if flag in ("report", "plot"):
            base = folder / "base.json"
            invoke([*SMALL_RUN, "--results-path", base])
            other = base  # report/plot: "the other output" is their input
        path = _make_output(kind, folder, spec, other)
        special = _mode(path) and not (stat.S_ISREG(_mode(path)) or stat.S_ISDIR(_mode(path)))
        spec_before = spec.read_bytes()
        reader = _reader(path)
        if flag == "report":
            args: list[Any] = ["report", other, "-o", path]
        elif flag == "plot":
            args = ["plot", other, "-o", path]
        else:
            args = [*SMALL_RUN, "--workload-spec", spec, flag, path]
            if flag == "--trace-output":
                args += ["--trace-level", "decisions", "--results-path", other]
            elif flag == "--export-trace":
                args += ["--results-path", other]
        result = invoke(args, seconds=60)
        if reader is not None and result.exit_code != 0:
            with contextlib.suppress(OSError):  # unblock the reader: open and close once
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        if reader is not None:
            reader.join(10)
        bad = {"under-a-file", "too-long"}
        bad |= set() if flag == "plot" else {"folder", "missing-folder"}  # plot -o: a folder
        bad |= set() if flag in ("report", "plot") else {"the-input-spec"}  # not their input
        if kind in bad:
            assert result.exit_code == 2, (kind, flag, result.stderr)
        if special:
            mode = _mode(path)
            assert not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)), "a special file was replaced"
        if flag not in ("report", "plot"):
            assert spec.read_bytes() == spec_before, "an input was overwritten"
        left = [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")]
        assert not left, f"temporary files left: {left}"


# --- signals at each phase of blis run (issue 21, item 4) -------------------------------------

SIGNAL_PHASES = [
    ("inference_sim.config.resolve", "resolve", False),
    ("inference_sim.runner", "build_requests", True),
    ("inference_sim.runner", "build_simulator", True),
    ("inference_sim.runner", "collect_results", True),
    ("inference_sim.analysis.run.RunAnalysis", "write_trace", True),
    ("inference_sim.results.Results", "report", True),
    ("inference_sim.results.Results", "write_json", True),
]


def _owner(path: str) -> Any:
    import importlib

    try:
        return importlib.import_module(path)
    except ImportError:
        mod, cls = path.rsplit(".", 1)
        return getattr(importlib.import_module(mod), cls)


def _check_kept_results(doc: dict[str, Any], attr: str) -> None:
    """Kept results are whole: all 12 requests, or fewer and marked interrupted (the run
    looks at a stop request every 10,000 events, so a run this small usually ends
    first). A signal once the simulation has ended never marks the results."""
    if doc.get("interrupted"):
        assert attr in ("build_requests", "build_simulator")
        assert doc["interrupted"] is True and 0 <= doc["completed_requests"] < 12
    else:
        assert doc["completed_requests"] == 12, doc["completed_requests"]
        assert doc["injected_requests"] == 12 and doc["still_queued"] == 0


@fuzz_settings(25)
@given(
    phase=st.sampled_from(SIGNAL_PHASES),
    sigs=st.lists(st.sampled_from([signal.SIGINT, signal.SIGTERM]), min_size=1, max_size=2),
)
def test_fuzz_signals_at_each_phase(phase: tuple[str, str, bool], sigs: list[int]) -> None:
    """One signal after the run started: complete results, exit 128+signal; two, or one at
    start-up: no results; always one line or none, no traceback, no temporary file."""
    owner_path, attr, started = phase
    owner = _owner(owner_path)
    real = getattr(owner, attr)

    def hooked(*a: Any, **k: Any) -> Any:
        for sig in sigs:
            os.kill(os.getpid(), sig)
        return real(*a, **k)

    class Stray(BaseException):
        pass

    def stray(signum: int, frame: Any) -> None:
        raise Stray(signum)

    prev_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    prev_term = signal.signal(signal.SIGTERM, stray)
    setattr(owner, attr, hooked)
    try:
        with tempfile.TemporaryDirectory(prefix="blis-fuzz-") as tmp:
            out = Path(tmp) / "r.json"
            args = [*SMALL_RUN, "--results-path", str(out), "--export-trace", str(Path(tmp) / "w")]
            args += ["--trace-level", "decisions", "--trace-output", str(Path(tmp) / "d.jsonl")]
            result = CliRunner().invoke(cli, args)
            assert not isinstance(result.exception, Stray), "SIGTERM not handled"
            assert "Traceback" not in result.stderr
            assert result.exit_code == 128 + sigs[0], (phase, sigs, result.stderr)
            if started and len(sigs) == 1:
                _check_kept_results(json.loads(out.read_text()), attr)
            else:
                errors = [ln for ln in result.stderr.splitlines() if ln.startswith("Error: ")]
                assert len(errors) == 1, result.stderr
                if attr == "report":  # the file is written before the stdout summary
                    assert f"results written to {out}" in errors[0]
                    _check_kept_results(json.loads(out.read_text()), attr)
                else:
                    assert "no results written" in errors[0]
                    assert not out.exists()
            assert not [p.name for p in Path(tmp).iterdir() if p.name.startswith(".")]
    finally:
        setattr(owner, attr, real)
        signal.signal(signal.SIGINT, prev_int)
        signal.signal(signal.SIGTERM, prev_term)


# --- size and cost bombs, numeric overflow (issue 21) ---------------------------------

# Every file flag of `blis run` (the ones read whole; traces stream and have row limits).
FILE_FLAGS = [*LIMITED_FILE_FLAGS, "--config"]


@st.composite
def bomb_text(draw: st.DrawFn) -> str | int:
    """A small document that is huge or deep once read; an int is a sparse file size."""
    kind = draw(st.sampled_from(["aliases", "deep-yaml", "deep-json", "sparse"]))
    if kind == "aliases":
        levels, width = draw(st.integers(1, 9)), draw(st.integers(2, 12))
        lines = ["a0: &a0 [x, x, x, x]"]
        for i in range(1, levels + 1):
            lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
        return "\n".join(lines) + "\n"
    depth = draw(st.integers(50, 20_000))
    if kind == "deep-yaml":
        return "clients: " + "[" * depth + "]" * depth + "\n"
    if kind == "deep-json":
        return '{"a": ' * depth + "1" + "}" * depth
    return draw(st.sampled_from([16 * 2**20 + 1, 17 * 2**20]))


@fuzz_settings(30)
@given(flag=st.sampled_from(FILE_FLAGS), bomb=bomb_text())
def test_fuzz_size_bombs(flag: str, bomb: str | int) -> None:
    """Small files that would expand, nest or read without end: one error, quickly."""
    path = _tmp() / ("config.json" if flag == "--model-config-folder" else "input.yaml")
    if isinstance(bomb, int):
        with open(path, "wb") as fh:
            fh.truncate(bomb)  # sparse: no disk space used
    else:
        path.write_text(bomb, encoding="utf-8")
    extra = ["--latency-model", "calibrated"] if flag == "--latency-coeffs" else []
    invoke([*SMALL_RUN, *extra, flag, path], seconds=30)
    if flag == "--workload-spec":
        invoke(["workload", "describe", path], seconds=30)


@st.composite
def costly_spec(draw: st.DrawFn) -> str:
    """A few lines of YAML asking for many clients, users or a far-away window."""
    client = {
        "id": "c",
        "rate_fraction": 1,
        "arrival": {"process": draw(st.sampled_from(["poisson", "gamma", "constant"]))},
        "input_distribution": {"type": "constant", "params": {"value": 64}},
        "output_distribution": {"type": "constant", "params": {"value": 8}},
    }
    if client["arrival"]["process"] == "gamma":
        client["arrival"]["cv"] = 2.0
    if draw(st.booleans()):
        start = draw(st.sampled_from([0, 10**9, 10**15, 2**62, 4 * 10**18]))
        client["lifecycle"] = {"windows": [{"start_us": start, "end_us": start + 10**7}]}
    rate = draw(st.sampled_from([1, 50, 10**4, 10**7]))
    head = f"aggregate_rate: {rate}\nnum_requests: {draw(st.integers(1, 40))}\n"
    if draw(st.booleans()):
        users = draw(st.sampled_from([1, 10, 100, 1000, 10**5]))
        groups = draw(st.sampled_from([1, 10, 100, 1000]))
        return head + (
            "version: '1'\ninference_perf:\n"
            f"  stages: [{{rate: {rate}, duration: 10}}]\n"
            f"  shared_prefix: {{num_unique_system_prompts: {groups}, "
            f"num_users_per_system_prompt: {users}, system_prompt_len: 32, "
            "question_len: 16, output_len: 4}\n"
        )
    count = draw(st.sampled_from([1, 100, 2000, 10_000, 10_001, 50_000]))
    refs = ", ".join(["*c"] * (count - 1))
    tail = f", {refs}" if refs else ""
    return head + f"clients: [&c {json.dumps(client)}{tail}]\n"


@fuzz_settings(25)
@given(text=costly_spec())
def test_fuzz_cost_bombs_in_specs(text: str) -> None:
    """Cost follows the requests asked for (at most 40), not the clients or the clock."""
    path = _tmp() / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    invoke([*SMALL_RUN, "--workload-spec", path], seconds=30)


@fuzz_settings(25)
@given(
    instances=st.sampled_from(["1", "16", "10001", "100000", "1000000000"]),
    block=st.sampled_from(["16", "4096", "4097", "100000000", "1e20"]),
    requests=st.sampled_from(["5", "20000000"]),
)
def test_fuzz_cost_bombs_in_flags(instances: str, block: str, requests: str) -> None:
    """Sizes no deployment reaches are refused; a huge request count is lazy (horizon)."""
    invoke(
        [
            "run",
            "--model",
            MODEL,
            "--num-instances",
            instances,
            "--block-size",
            block,
            "--num-requests",
            requests,
            "--horizon",
            "200000",
            "--total-kv-blocks",
            "64",
            "--log",
            "error",
        ],
        seconds=30,
    )


OVERFLOW = st.sampled_from(
    [
        1e20,
        1e300,
        -1e300,
        1e-300,
        5e-324,
        2**63 - 1,
        2**63,
        2**64,
        2**100,
        -(2**100),
        "1e3",
        "1e20",
        "1e400",
        "9223372036854775807",
    ]
)


@fuzz_settings(40)
@given(data=st.data())
def test_fuzz_numeric_overflow(data: st.DataObject) -> None:
    """Numbers beyond int64, float or physics: exit 0 or one error, never OverflowError."""
    where = data.draw(st.sampled_from(["flag", "model", "hardware", "mooncake", "spec"]))
    value = data.draw(OVERFLOW)
    folder = _tmp()
    if where == "flag":
        numeric = [s for s in FUZZED_OPTIONS if s.kind in (int, float)]
        spec = data.draw(st.sampled_from(numeric))
        if spec.name in _SMALL_COUNT:
            return  # a legal instance count is a legitimately long run
        invoke([*SMALL_RUN, f"{spec.flag}={value}", "--kv-cpu-blocks", "50"], seconds=30)
    elif where == "model":
        doc = dict(MODEL_CONFIG_SEEDS[0])
        doc[data.draw(st.sampled_from(sorted(k for k, v in doc.items() if isinstance(v, int))))] = (
            value
        )
        (folder / "config.json").write_text(json.dumps(doc), encoding="utf-8")
        invoke([*ROOFLINE_RUN, folder])
    elif where == "hardware":
        doc = json.loads(json.dumps(HARDWARE_SEED))
        doc["H100"][data.draw(st.sampled_from(sorted(doc["H100"])))] = value
        path = folder / "hw.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        invoke([*SMALL_RUN, "--hardware", "H100", "--tp", "1", "--hardware-config", path])
    elif where == "mooncake":
        row: dict[str, Any] = {
            "timestamp": 0,
            "input_length": 600,
            "output_length": 8,
            "hash_ids": [1, 2],
        }
        key = data.draw(st.sampled_from(["timestamp", "input_length", "output_length", "hash"]))
        if key == "hash":
            row["hash_ids"] = [value, 2]
        else:
            row[key] = value
        path = folder / "trace.jsonl"
        path.write_text(json.dumps(row) + "\n", encoding="utf-8")
        invoke([*SMALL_RUN, "--workload", "traces", "--workload-traces-filepath", path])
        invoke(["workload", "describe", path])
    else:
        doc = json.loads(json.dumps(SPEC_SEEDS[0]))
        field = data.draw(st.sampled_from(["seed", "aggregate_rate", "num_requests", "horizon"]))
        doc[field] = value
        path = folder / "spec.yaml"
        path.write_text(_dump(doc), encoding="utf-8")
        invoke([*SMALL_RUN, "--workload-spec", path])
