"""Review 25 of user input: bad input ends with one message naming the field and what is
allowed (exit 2), never a traceback, a silent default or silently dropped data.

1. workload-spec integers past 64 bits (``num_requests: 10**30`` crashed in islice);
2. ``--hardware-config`` keys that name no figure (dropped: the figure read as 0);
3. a gaussian ``mean`` outside ``[min, max]`` (every draw clamped to one bound);
4. ``--model-config-folder`` counts: fractional ones refused; ``vocab_size`` null and a
   dense model without ``intermediate_size`` warned (the reference's defaults, said aloud);
5. a CSV trace whose header misspells a known format's column (read as the reference
   CSV: "expected at least 5 columns", never naming the column);
6. ``blis calibrate`` stage rate or duration 0 (replaced by all_stages'), and ``--set``
   with an unknown option ("expected RUN_OPTION=VALUE" though the syntax was right).

Each test fails on the code as it was before the review.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from inference_sim.calibrate.runs import RunsError, read_runs_csv
from inference_sim.catalog import CatalogError, architecture_from_hf_config
from inference_sim.catalog.architecture import bundled_architectures, read_model_config_folder
from inference_sim.catalog.hardware import read_hardware_config
from inference_sim.cli.main import cli
from inference_sim.config.errors import ConfigError
from inference_sim.report.cliutil import parse_assignments
from inference_sim.workload import WorkloadError, detect_format
from inference_sim.workload.spec import load_workload_spec, parse_workload_spec
from test_fuzz_support import HARDWARE_SEED
from test_roofline_config import LLAMA_CFG

MODEL = "meta-llama/llama-3.1-8b-instruct"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference-data"
INT64_MAX = 2**63 - 1


def _blis(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def _one_error(res: Any, *needles: str) -> str:
    """Exit 2, one ``Error:`` line containing every needle, no traceback."""
    assert res.exit_code == 2, (res.exit_code, res.output, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _client(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "a",
        "rate_fraction": 1,
        "arrival": {"process": "poisson"},
        "input_distribution": {"type": "constant", "params": {"value": 100}},
        "output_distribution": {"type": "constant", "params": {"value": 10}},
    }
    doc.update(over)
    return doc


def _spec(**top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": "2",
        "seed": 7,
        "aggregate_rate": 20,
        "num_requests": 5,
        "clients": [_client()],
    }
    doc.update(top)
    return doc


def _write_spec(tmp_path: Path, doc: dict[str, Any], name: str = "s.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return str(path)


# --- 1. spec integers past 64 bits -------------------------------------------------------


def test_num_requests_past_int64_is_one_error_in_run_and_describe(tmp_path: Path) -> None:
    path = _write_spec(tmp_path, _spec(num_requests=10**30))
    needles = ("num_requests must be in [0, 9223372036854775807]", "s.yaml")
    _one_error(_blis("run", "--model", MODEL, "--workload-spec", path, "--horizon", "2s"), *needles)
    _one_error(_blis("workload", "describe", path), *needles)
    # the largest one allowed loads
    assert load_workload_spec(_write_spec(tmp_path, _spec(num_requests=INT64_MAX))).num_requests


BIG = int("9" * 400)  # beyond a float too (YAML reads it as an int)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"num_requests": BIG}, "num_requests must be in [0, 9223372036854775807]"),
        ({"aggregate_rate": BIG}, "aggregate_rate must be a finite number"),
        ({"stages": [{"rate": BIG, "duration": 1}]}, "stages[0].rate must be a finite positive"),
        ({"stages": [{"rate": 1, "duration": BIG}]}, "stages[0].duration must be a finite"),
        ({"clients": [_client(rate_fraction=BIG)]}, "clients[0].rate_fraction must be a finite"),
        (
            {"clients": [_client(arrival={"process": "gamma", "cv": BIG})]},
            "clients[0].arrival.cv must be a finite number",
        ),
        (
            {"clients": [_client(network={"rtt_ms": BIG})]},
            "clients[0].network.rtt_ms must be a finite number",
        ),
        (
            {"clients": [_client(lifecycle={"windows": [{"start_us": 0, "end_us": 10**30}]})]},
            "clients[0].lifecycle.windows[0].end_us must be <= 9223372036854775807",
        ),
        (
            {
                "clients": [
                    _client(reasoning={"multi_turn": {"max_rounds": 2, "think_time_us": 10**30}})
                ]
            },
            "think_time_us must be in [0, 9223372036854775807]",
        ),
        (
            {"clients": [_client(adapter="x", adapter_rank=10**30)]},
            "clients[0].adapter_rank must be in [1, 9223372036854775807]",
        ),
        (
            {
                "clients": [
                    _client(input_distribution={"type": "exponential", "params": {"mean": BIG}})
                ]
            },
            "clients[0].input_distribution.params.mean must be a finite number",
        ),
        (
            {"clients": [_client(output_distribution={"type": "empirical", "params": {BIG: 1}})]},
            "clients[0].output_distribution.params: key of more than 40 digits must be <=",
        ),
        (
            {"clients": [_client(output_distribution={"type": "empirical", "params": {10: BIG}})]},
            "weight must be a finite number",
        ),
    ],
)
def test_spec_numbers_past_64_bits_or_a_float_name_the_field(
    tmp_path: Path, change: dict[str, Any], needle: str
) -> None:
    """Each used to end in OverflowError / ValueError (exit 1, a traceback's last line)."""
    path = _write_spec(tmp_path, _spec(**change))
    _one_error(_blis("workload", "describe", path), needle)
    with pytest.raises(WorkloadError, match=r"s\.yaml"):
        load_workload_spec(path)


def test_an_integer_too_long_for_python_is_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    text = yaml.safe_dump(_spec()).replace("num_requests: 5", "num_requests: " + "9" * 5000)
    path.write_text(text, encoding="utf-8")
    _one_error(_blis("workload", "describe", str(path)), "d.yaml: invalid YAML")
    _one_error(_blis("run", "--model", MODEL, "--workload-spec", str(path)), "invalid YAML")


# --- 2. --hardware-config keys -------------------------------------------------------------

_H100 = {k: v for k, v in HARDWARE_SEED["H100"].items() if k != "MemoryGiB"}


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("TOverheadMicrosX", "TOverheadMicros"),
        ("perLayerOverheadX", "perLayerOverhead"),
        ("allReduceLatencyX", "allReduceLatency"),
        ("memory_gb", "memoryGB"),
        ("foo", None),
    ],
)
def test_hardware_config_warns_of_unknown_keys_with_a_suggestion(
    tmp_path: Path, key: str, suggestion: str | None, sim_log: pytest.LogCaptureFixture
) -> None:
    entry = dict(_H100)
    if key.endswith("X"):
        entry[key] = entry.pop(key[:-1])  # the typo replaces the real key
    else:
        entry[key] = 80
    path = tmp_path / "hw.json"
    path.write_text(json.dumps({"MyGPU": entry}), encoding="utf-8")
    read_hardware_config(path)
    text = sim_log.text
    assert f'MyGPU: unknown key "{key}"' in text and "ignored; known: TFlopsPeak" in text
    assert (f'(did you mean "{suggestion}"?)' in text) == (suggestion is not None)
    res = _blis(
        "run", "--model", MODEL, "--hardware-config", str(path), "--hardware", "MyGPU",
        "--latency-model", "roofline", "--num-requests", "2", "--total-kv-blocks", "1000",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert f'unknown key "{key}"' in res.stderr


def test_hardware_config_notes_and_case_insensitive_keys_still_load(tmp_path: Path) -> None:
    entry = {k.upper(): v for k, v in _H100.items()}
    entry.update({"comment": "from the datasheet", "_source": "nvidia.com", "MemoryGiB": 80})
    path = tmp_path / "hw.json"
    path.write_text(json.dumps({"MyGPU": entry}), encoding="utf-8")
    gpu = read_hardware_config(path)["MyGPU"]
    assert (gpu.step_overhead_us, gpu.per_layer_overhead_us, gpu.memory_gib) == (500, 20, 80)


@pytest.mark.skipif(not (SHARED / "hardware_config.json").is_file(), reason="no ../shared")
def test_reference_hardware_config_still_loads() -> None:
    gpus = read_hardware_config(SHARED / "hardware_config.json")
    assert gpus and all(g.step_overhead_us > 0 for g in gpus.values())


# --- 3. gaussian mean outside [min, max] -----------------------------------------------------


def test_gaussian_mean_outside_min_max_is_refused(tmp_path: Path) -> None:
    gauss = {"type": "gaussian", "params": {"mean": 5000, "std_dev": 10, "min": 2, "max": 300}}
    path = _write_spec(tmp_path, _spec(clients=[_client(input_distribution=gauss)]))
    needle = "clients[0].input_distribution.params.mean must lie in [min, max] = [2, 300], got 5000"
    _one_error(_blis("workload", "describe", path), needle)
    _one_error(_blis("run", "--model", MODEL, "--workload-spec", path), needle)
    low = {"type": "gaussian", "params": {"mean": -50, "std_dev": 10, "min": 1, "max": 100}}
    with pytest.raises(WorkloadError, match=r"output_distribution\.params\.mean must lie"):
        parse_workload_spec(_spec(clients=[_client(output_distribution=low)]))
    # at a bound is fine (a clamped half of the draws is what was asked for)
    edge = {"type": "gaussian", "params": {"mean": 300, "std_dev": 10, "min": 2, "max": 300}}
    parse_workload_spec(_spec(clients=[_client(input_distribution=edge)]))


def _bundled_spec_files() -> list[Path]:
    files = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))
    files += sorted((SHARED / "examples").glob("*.yaml")) if SHARED.is_dir() else []
    return files


@pytest.mark.parametrize("path", _bundled_spec_files(), ids=lambda p: p.name)
def test_bundled_workload_specs_still_load(path: Path) -> None:
    if detect_format(path) != "spec":
        pytest.skip("not a workload spec")
    try:
        load_workload_spec(path)
    except WorkloadError as exc:
        assert "policy bundle" in str(exc), exc  # a bundle, named as one


# --- 4. --model-config-folder counts -------------------------------------------------------

_DENSE = LLAMA_CFG  # a dense model's config.json (Llama-3.1-8B)


def _config_folder(tmp_path: Path, change: dict[str, Any]) -> Path:
    """A folder with ``_DENSE``'s config.json, ``change`` applied ("drop" removes a key)."""
    doc = dict(_DENSE)
    for key, value in change.items():
        if value == "drop":
            del doc[key]
        else:
            doc[key] = value
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(doc), encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"num_attention_heads": 32.5}, "num_attention_heads: expected a whole number"),
        ({"num_key_value_heads": 7.9}, "num_key_value_heads: expected a whole number"),
    ],
)
def test_model_config_counts_are_whole(tmp_path: Path, change: dict[str, Any], needle: str) -> None:
    folder = _config_folder(tmp_path, change)
    with pytest.raises(CatalogError, match=r"config\.json: ") as info:
        read_model_config_folder(folder)
    assert needle in str(info.value)
    res = _blis(
        "run", "--model", MODEL, "--model-config-folder", str(folder), "--hardware", "H100",
        "--latency-model", "roofline", "--num-requests", "2",
    )  # fmt: skip
    _one_error(res, needle, "config.json")


_FFN_4D = "intermediate_size missing or 0: the feed-forward size is 4 x hidden = 16384"


@pytest.mark.parametrize(
    ("change", "needle", "ffn", "vocab"),
    [
        ({"vocab_size": None}, "vocab_size missing or 0: no embedding", 14336, 0),
        ({"vocab_size": "drop"}, "vocab_size missing or 0: no embedding", 14336, 0),
        ({"intermediate_size": "drop"}, _FFN_4D, 16384, 128256),
        ({"intermediate_size": None}, _FFN_4D, 16384, 128256),
    ],
)  # fmt: skip
def test_model_config_defaults_are_the_references_and_said_aloud(
    tmp_path: Path,
    change: dict[str, Any],
    needle: str,
    ffn: int,
    vocab: int,
    sim_log: pytest.LogCaptureFixture,
) -> None:
    """The reference reads a missing FFN size as 4 x hidden and never reads vocab_size;
    both stand, but a warning says so (they were silent)."""
    folder = _config_folder(tmp_path, change)
    arch = read_model_config_folder(folder)
    assert (arch.dense_ffn, arch.vocab) == (ffn, vocab)
    assert needle in sim_log.text


def test_integral_floats_and_moe_without_intermediate_size_still_load() -> None:
    arch = architecture_from_hf_config({**_DENSE, "num_attention_heads": 32.0}, "cfg")
    assert arch.heads == 32 and isinstance(arch.heads, int)
    moe = {k: v for k, v in _DENSE.items() if k != "intermediate_size"}
    moe.update(num_local_experts=8, num_experts_per_tok=2, moe_intermediate_size=1024)
    assert architecture_from_hf_config(moe, "cfg").is_moe


#: openai/gpt-oss-20b's config.json (shapes; the rope and router fields are not read).
_GPT_OSS_20B = {
    "architectures": ["GptOssForCausalLM"],
    "model_type": "gpt_oss",
    "hidden_size": 2880,
    "intermediate_size": 2880,
    "num_hidden_layers": 24,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "num_local_experts": 32,
    "num_experts_per_tok": 4,
    "experts_per_token": 4,
    "vocab_size": 201088,
    "sliding_window": 128,
    "max_position_embeddings": 131072,
    "layer_types": ["sliding_attention", "full_attention"] * 12,
    "rope_theta": 150000,
    "rms_norm_eps": 1e-05,
    "swiglu_limit": 7.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "quantization_config": {
        "quant_method": "mxfp4",
        "modules_to_not_convert": [
            "model.layers.*.self_attn",
            "model.layers.*.mlp.router",
            "model.embed_tokens",
            "lm_head",
        ],
    },
}


def test_gpt_oss_config_still_loads(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(_GPT_OSS_20B), encoding="utf-8")
    arch = read_model_config_folder(tmp_path)
    assert arch.is_moe and arch.vocab == 201088 and arch.local_attention is not None


def test_bundled_architectures_still_load() -> None:
    archs = bundled_architectures()
    assert archs and all(a.vocab > 0 for a in archs.values())


def _shared_configs() -> list[Path]:
    if not (SHARED / "model_configs").is_dir():
        return []
    return sorted((SHARED / "model_configs").glob("*/config.json"))


@pytest.mark.skipif(not _shared_configs(), reason="../shared/reference-data not present")
@pytest.mark.parametrize("path", _shared_configs(), ids=lambda p: p.parent.name)
def test_reference_model_configs_still_load(path: Path) -> None:
    """Dense, MoE (Mixtral, Qwen3-MoE), MLA (DeepSeek-V2, GLM), Llama-4 (text_config)."""
    arch = read_model_config_folder(path.parent)
    assert arch.vocab > 0 and arch.layers > 0
    assert arch.is_moe or arch.ffn > 0


# --- 5. a CSV header near a known format -----------------------------------------------------


def _trace(tmp_path: Path, text: str, name: str = "t.csv") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _replay(path: str) -> Any:
    return _blis(
        "run", "--model", MODEL, "--workload", "traces", "--workload-traces-filepath", path,
    )  # fmt: skip


def test_misnamed_azure_column_is_named(tmp_path: Path) -> None:
    path = _trace(
        tmp_path,
        "TIMESTAMP,CtxTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n",
    )
    needle = "missing column ContextTokens (header has: TIMESTAMP, CtxTokens, GeneratedTokens)"
    _one_error(_replay(path), "azure trace", needle)
    _one_error(_blis("workload", "describe", path), "azure trace", needle)
    # the header alone (no rows) too
    only = _trace(tmp_path, "TIMESTAMP,ContextTokens,GenTokens\n", "h.csv")
    _one_error(_replay(only), "missing column GeneratedTokens")


def test_misnamed_length_column_is_named(tmp_path: Path) -> None:
    path = _trace(tmp_path, "timestamp,prompt_len,outlen\n0.5,100,20\n1.0,80,10\n")
    _one_error(_replay(path), "length trace", "no output-length column", "outlen")


def test_header_matching_no_format_lists_the_formats(tmp_path: Path) -> None:
    from inference_sim.workload.formats import unmatched_header_hint

    path = _trace(tmp_path, "time,ctx,gen\n1,2,3\n4,5,6\n")
    _one_error(
        _replay(path), "row 2: expected at least 5 columns",
        "its header (time, ctx, gen) matches no known trace format",
        "azure (TIMESTAMP, ContextTokens, GeneratedTokens)", "lengths (", "v2 (", "mooncake",
    )  # fmt: skip
    assert detect_format(path) == "csv"  # still the reference's (its names are free)
    assert unmatched_header_hint(path).startswith("its header (time, ctx, gen)")
    # a short row under a reference-shaped header: the reader's error alone
    five = _trace(tmp_path, "a,b,c,d,e\n1,2,3\n", "five.csv")
    assert unmatched_header_hint(five) == ""
    res = _replay(five)
    assert "expected at least 5 columns" in _one_error(res) and "Known formats" not in res.stderr


def test_reference_csvs_are_still_the_reference_format(tmp_path: Path) -> None:
    rows = '0.0,r0,,"[1,2,3]","[4]"\n0.5,r1,,"[5,6]","[7,8]"\n'
    # header names are free in the reference's CSV, even ones another format uses
    for header in (
        "arrival_time,request_id,model,prefill_tokens,decode_tokens",
        "TIMESTAMP,id,model,ContextTokens,GeneratedTokens_x",
        "a,b,c,d,e",
    ):
        path = _trace(tmp_path, header + "\n" + rows)
        assert detect_format(path) == "csv", header
    assert detect_format(_trace(tmp_path, "a,b,c,d,e\n")) == "csv"  # a header alone: warned
    assert detect_format(_trace(tmp_path, rows)) == "csv"  # no header: its reader says so


# --- 6. calibrate stage 0 and --set unknown option -----------------------------------------

_CAL_HEADER = (
    "experiment,model,hardware,tp,max_num_batched_tokens,max_num_seqs,max_model_len,"
    "total_kv_blocks_from_vllm_log,system_prompt_len,question_len,output_len,all_stages,"
    "stage_index,stage_rate_rps,stage_duration_s,ttft_mean_ms,e2e_mean_ms,itl_mean_ms,"
    "output_len_mean,prompt_len_mean\n"
)
_RUN = "a,Meta-Llama/Llama-2-7b-hf,H100,1,2048,128,4096,7463,100,447,248,600s@8;600s@20"


@pytest.mark.parametrize(
    ("rate", "duration", "needle"),
    [
        ("0", "600", "stage_rate_rps must be > 0"),
        ("8", "0", "stage_duration_s must be > 0"),
        ("-1", "600", "stage_rate_rps must be > 0"),
    ],
)
def test_calibrate_stage_zero_is_an_error_not_all_stages(
    tmp_path: Path, rate: str, duration: str, needle: str
) -> None:
    path = tmp_path / "runs.csv"
    path.write_text(
        _CAL_HEADER
        + f"{_RUN},0,{rate},{duration},27.1,2057.6,9.71,210,575.45\n"
        + f"{_RUN},1,20,600,51.9,4158.1,19.8,208,575.45\n",
        encoding="utf-8",
    )
    with pytest.raises(RunsError, match="runs.csv row 2: " + needle):
        read_runs_csv(path)


def test_calibrate_blank_stage_cells_take_all_stages(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    path.write_text(
        _CAL_HEADER
        + f"{_RUN},0,,,27.1,2057.6,9.71,210,575.45\n"
        + f"{_RUN},1,20,,51.9,4158.1,19.8,208,575.45\n",
        encoding="utf-8",
    )
    (run,) = read_runs_csv(path)
    assert [(s.rate, s.duration_s) for s in run.stages] == [(8, 600), (20, 600)]


def test_set_unknown_option_says_so_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"unknown run option 'foo'; see `blis run --help`"):
        parse_assignments(["foo=1"])
    with pytest.raises(ConfigError, match=r"'num_request' \(did you mean \"num_requests\"\?\)"):
        parse_assignments(["num_request=1"])
    with pytest.raises(ConfigError, match="expected RUN_OPTION=VALUE"):
        parse_assignments(["num_requests"])  # no '=': the syntax
    assert parse_assignments(["--num-requests=5"]) == {"num_requests": 5}
    res = _blis("plan", "--model", MODEL, "--rate", "1", "--set", "foo=1")
    _one_error(res, "--set 'foo=1': unknown run option 'foo'")


def test_set_values_are_checked_with_the_options_message() -> None:
    """``--set num_requests=abc`` said "invalid literal for int()" (planning/plan.py)."""
    args = ["plan", "--model", MODEL, "--hardware", "H100", "--tp", "1", "--workload"]
    args += ["chatbot", "--rate", "10", "--slo", "ttft_p99_ms=500", "--set", "num_requests=abc"]
    line = _one_error(_blis(*args), "--set 'num_requests=abc'", "--num-requests must be an integer")
    assert "invalid literal" not in line
