"""Issue 21, items 5-13: bounded input, cost that follows the work, no silent fallbacks.

Each test reproduces one item through ``blis`` in process (``invoke`` checks the outcome
contract: exit 0, or exit 2 with one ``Error:`` line, no traceback, no hang) and checks
the message or the result. Files are created under ``tmp_path`` only; the endless input
that ``/dev/zero`` would give is a FIFO under ``tmp_path`` fed by a thread.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from inference_sim.catalog.architecture import bundled_architecture
from inference_sim.core import inputs as _inputs
from inference_sim.metrics.timeseries import MAX_TABLE_ROWS, TimeseriesSampler
from inference_sim.workload.distribution import (
    DistributionParams,
    LengthDistribution,
    iter_distribution,
)
from inference_sim.workload.generate import iter_spec_requests
from inference_sim.workload.spec import MAX_CLIENTS, parse_workload_spec
from test_fuzz_support import HARDWARE_SEED, MODEL, invoke

LIMIT = f"{_inputs.MAX_CONFIG_BYTES:,} bytes"
CLIENT = {
    "id": "c",
    "rate_fraction": 1.0,
    "arrival": {"process": "poisson"},
    "input_distribution": {"type": "constant", "params": {"value": 32}},
    "output_distribution": {"type": "constant", "params": {"value": 4}},
}
LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "torch_dtype": "bfloat16",
}
ROOFLINE = ["--latency-model", "roofline", "--hardware", "H100", "--tp", "1"]


def error(*args: Any) -> str:
    """The one ``Error:`` line of ``blis ARGS``, which must exit 2."""
    result = invoke([str(a) for a in args], seconds=60)
    assert result.exit_code == 2, (args, result.exit_code, result.stderr)
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("Error: ")]
    return line


def run_json(tmp_path: Path, *args: Any) -> dict[str, Any]:
    """``blis run ARGS --results-path``: the results document (exit 0 required)."""
    out = tmp_path / "results.json"
    result = invoke(["run", "--model", MODEL, "--results-path", str(out), *map(str, args)])
    assert result.exit_code == 0, result.stderr
    return json.loads(out.read_text())


def spec_file(tmp_path: Path, doc: Any, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def sparse(tmp_path: Path, name: str, size: int) -> Path:
    """A file of ``size`` zero bytes that takes no disk space."""
    path = tmp_path / name
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


# --- item 5: every file input has a size limit; YAML cannot expand without bound ------

FILE_FLAGS = [
    "--workload-spec",
    "--policy-config",
    "--hardware-config",
    "--latency-coeffs",
    "--defaults-filepath",
    "--model-config-folder",
]


@pytest.mark.parametrize("flag", FILE_FLAGS)
def test_every_file_input_stops_at_its_size_limit(tmp_path, flag):
    big = sparse(tmp_path, "big.json", _inputs.MAX_CONFIG_BYTES + 1)
    extra = ["--latency-model", "calibrated"] if flag == "--latency-coeffs" else []
    line = error("run", "--model", MODEL, "--num-requests", "5", *extra, flag, big)
    assert LIMIT in line and str(big) in line, line


def test_a_file_at_the_limit_is_read(tmp_path):
    text = "a: 1\n" + " " * (_inputs.MAX_CONFIG_BYTES - 5)
    path = tmp_path / "ok.yaml"
    path.write_text(text)
    assert _inputs.load_yaml(_inputs.read_text(path)) == {"a": 1}


def test_run_config_and_results_files_have_their_limits(tmp_path, monkeypatch):
    # --config reads a results file's end only (test_api_results.py); a file read whole
    # has the config files' limit.
    resolve_module = importlib.import_module("inference_sim.config.resolve")
    monkeypatch.setattr(resolve_module, "MAX_CONFIG_BYTES", 1000)
    big = sparse(tmp_path, "run.yaml", 1001)
    assert "larger than 1,000 bytes" in error("run", "--model", MODEL, "--config", big)
    monkeypatch.setattr("inference_sim.results.MAX_RESULTS_BYTES", 1000)
    assert "larger than 1,000 bytes" in error("report", big, "-o", tmp_path / "r.html")


class EndlessFifo:
    """A FIFO that gives zeros to every reader, as /dev/zero does, until stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stop = threading.Event()
        os.mkfifo(path)
        self.thread = threading.Thread(target=self._feed, daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        chunk = b"\0" * (1 << 20)
        while not self.stop.is_set():
            try:
                with open(self.path, "wb") as fh:  # blocks until a reader opens it
                    while not self.stop.is_set():
                        fh.write(chunk)
            except OSError:  # the reader closed it (EPIPE): wait for the next one
                pass

    def close(self) -> None:
        self.stop.set()
        # Open and close the read end until the writer, unblocked from open() or write(),
        # has seen the stop flag.
        for _ in range(100):
            if not self.thread.is_alive():
                break
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            self.thread.join(timeout=0.05)
            os.close(fd)
            self.thread.join(timeout=0.05)


@pytest.mark.parametrize("command", ["run", "describe"])
def test_an_endless_input_ends_with_one_error(tmp_path, command):
    fifo = EndlessFifo(tmp_path / "zero.yaml")
    try:
        if command == "run":
            args = ["run", "--model", MODEL, "--num-requests", "5", "--workload-spec", fifo.path]
        else:
            args = ["workload", "describe", "--format", "spec", fifo.path]
        line = error(*args)
        assert "larger than" in line or "longer than" in line, line
    finally:
        fifo.close()
    assert not fifo.thread.is_alive()


def _laughs(levels: int = 8, width: int = 10) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "flag", ["--workload-spec", "--policy-config", "--defaults-filepath", "--config"]
)
def test_yaml_aliases_cannot_expand_without_bound(tmp_path, flag):
    bomb = spec_file(tmp_path, _laughs(), "bomb.yaml")
    line = error("run", "--model", MODEL, "--num-requests", "5", flag, bomb)
    assert f"more than {_inputs.MAX_YAML_NODES:,} values once its aliases are expanded" in line


def test_yaml_aliases_within_the_bound_still_work(tmp_path):
    doc = "c: &c {a: 1}\nlist: [*c, *c, *c]\n"
    assert _inputs.load_yaml(doc) == {"c": {"a": 1}, "list": [{"a": 1}] * 3}
    with pytest.raises(yaml.YAMLError, match="refers to itself"):
        _inputs.load_yaml("&a [*a]")


# --- item 6: cost follows the work simulated; documented upper bounds -----------------


def test_inference_perf_users_are_bounded(tmp_path):
    doc = {
        "version": "1",
        "num_requests": 100,
        "inference_perf": {
            "stages": [{"rate": 10, "duration": 10}],
            "shared_prefix": {
                "num_unique_system_prompts": 1000,
                "num_users_per_system_prompt": 1000,
                "system_prompt_len": 100,
                "question_len": 50,
                "output_len": 10,
            },
        },
    }
    line = error("run", "--model", MODEL, "--workload-spec", spec_file(tmp_path, doc))
    assert "1,000,000" in line and f"more than {MAX_CLIENTS:,} clients" in line


def test_client_count_is_bounded(tmp_path):
    # Written with an alias: the file is small, the client list is not.
    refs = ", ".join(["*c"] * MAX_CLIENTS)
    text = (
        "version: '2'\naggregate_rate: 10\nnum_requests: 5\n"
        f"clients: [&c {json.dumps(CLIENT)}, {refs}]\n"
    )
    line = error("run", "--model", MODEL, "--workload-spec", spec_file(tmp_path, text))
    assert f"{MAX_CLIENTS + 1:,} clients, more than {MAX_CLIENTS:,}" in line


def test_memory_follows_the_requests_taken_not_the_clients():
    """2,000 clients, 20 requests: about 0.45 MB a client before, a few KB now."""
    client = dict(CLIENT)
    client["arrival"] = {"process": "gamma", "cv": 2.0}
    client["input_distribution"] = {
        "type": "gaussian",
        "params": {"mean": 64, "std_dev": 20, "min": 8, "max": 256},
    }
    clients = [dict(client, id=f"c{i}") for i in range(2000)]
    spec = parse_workload_spec({"aggregate_rate": 50, "num_requests": 20, "clients": clients})
    tracemalloc.start()
    try:
        reqs = list(iter_spec_requests(spec, max_requests=20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(reqs) == 20
    assert peak < 200 * 2**20, f"peak {peak / 2**20:.0f} MiB for 20 requests"


def test_a_lifecycle_window_far_in_the_future_costs_no_more(tmp_path):
    start = 4 * 10**18
    client = dict(CLIENT, lifecycle={"windows": [{"start_us": start, "end_us": start + 10**7}]})
    doc = {"aggregate_rate": 1000, "num_requests": 20, "clients": [client]}
    out = run_json(tmp_path, "--workload-spec", spec_file(tmp_path, doc))
    assert out["completed_requests"] == 20
    spec = parse_workload_spec(doc)
    arrivals = [r.arrival_time for r in iter_spec_requests(spec, max_requests=20)]
    assert all(start <= t < start + 10**7 for t in arrivals)


def test_windows_at_zero_draw_the_same_arrivals_as_no_window():
    base = {"aggregate_rate": 100, "num_requests": 50, "clients": [CLIENT]}
    windowed = dict(CLIENT, lifecycle={"windows": [{"start_us": 0, "end_us": 10**12}]})
    plain = [r.arrival_time for r in iter_spec_requests(parse_workload_spec(base), max_requests=50)]
    spec = parse_workload_spec(dict(base, clients=[windowed]))
    assert [r.arrival_time for r in iter_spec_requests(spec, max_requests=50)] == plain
    assert len(plain) == 50


def test_distribution_lengths_are_drawn_lazily_and_unchanged():
    params = DistributionParams(
        8, LengthDistribution(300, 200, 2, 1000), LengthDistribution(100, 50, 1, 400)
    )
    count = 150_000  # more than two length blocks
    reqs = list(
        iter_distribution(
            params, rate=5, num_requests=count, horizon=2**62, rng=np.random.default_rng(3)
        )
    )
    # The same numbers as one bulk draw: prefix ids, then all (prompt, output) normals.
    rng = np.random.default_rng(3)
    rng.integers(0, 128000, size=8)
    normals = rng.standard_normal(size=(count, 2))

    def lengths(col: np.ndarray, d: LengthDistribution) -> np.ndarray:
        v = np.clip(col * d.stdev + d.mean, d.min, d.max)
        return (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int64)

    want_in = lengths(normals[:, 0], params.prompt) + 8
    want_out = lengths(normals[:, 1], params.output)
    assert [len(r.input_tokens) for r in reqs] == want_in.tolist()
    assert [len(r.output_tokens) for r in reqs] == want_out.tolist()

    tracemalloc.start()
    try:
        it = iter_distribution(
            params, rate=5, num_requests=20_000_000, horizon=2**62, rng=np.random.default_rng(3)
        )
        first = [next(it) for _ in range(10)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 150 * 2**20, f"{peak / 2**20:.0f} MiB before the first requests"
    assert [len(r.output_tokens) for r in first] == want_out[:10].tolist()


@pytest.mark.parametrize(
    ("flag", "value", "bound"),
    [("--num-instances", "100000", "10,000"), ("--block-size", "100000000", "4,096")],
)
def test_sizes_no_deployment_reaches_are_refused(flag, value, bound):
    line = error("run", "--model", MODEL, "--num-requests", "10", flag, value)
    assert f"must be <= {bound}, got {value}" in line


def test_the_time_series_shrinks_with_the_instance_count():
    class Stub:
        def __init__(self, i: int) -> None:
            self.name = f"instance_{i}"
            self.waiting: list[int] = []
            self.running: list[int] = []
            self.kv = type("KV", (), {"num_used": 0})()
            self.stats = type(
                "S",
                (),
                dict.fromkeys(
                    (
                        "completed",
                        "total_output_tokens",
                        "cached_prompt_tokens",
                        "prefix_lookup_tokens",
                        "preemption_count",
                    ),
                    0,
                ),
            )()
            self.config = type("C", (), {"num_gpu_blocks": 10})()

    sampler = TimeseriesSampler([Stub(i) for i in range(5000)])
    t = 0
    for _ in range(500):
        t = sampler(t)
    rows = len(sampler.times) * 5001
    assert rows <= MAX_TABLE_ROWS + 5001
    assert len(sampler.times) >= 8


# --- item 7: blis plan tolerances ----------------------------------------------------


@pytest.mark.parametrize("tol", ["0", "-1", "nan", "inf"])
def test_plan_refuses_a_tolerance_that_cannot_end(tol):
    line = error("plan", "--model", MODEL, "--rate", "5", "--rate-tolerance", tol)
    assert "--rate-tolerance must be a finite number > 0" in line


def test_plan_ends_when_the_bracket_stops_moving():
    result = invoke(
        [
            "plan",
            "--model",
            MODEL,
            "--rate",
            "5",
            "--max-instances",
            "1",
            "--slo",
            "ttft_p99_ms=200",
            "--rate-tolerance",
            "1e-300",
            "--num-requests",
            "10",
            "--jobs",
            "1",
            "--json",
            "-q",
        ],
        seconds=120,
    )
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["candidates"][0]["instances"] == 1


def test_the_rate_search_stops_on_a_fixed_bracket():
    from inference_sim.planning.plan import CandidatePlan, Probe, _Search, _update_rate

    s = _Search(CandidatePlan(deployment=None), phase="rate")  # type: ignore[arg-type]
    s.cand.instances = 1
    lo, hi = 10.0, float(np.nextafter(10.0, 11.0))
    s.cand.probes = [Probe(1, lo, True, [], {}), Probe(1, hi, False, ["x"], {})]
    _update_rate(s, 1e-300)
    assert s.phase == "rate"  # the first narrowing
    _update_rate(s, 1e-300)  # the same probes again: the bracket did not move
    assert s.phase == "done"


# --- item 8: TP must split the heads as vLLM requires ---------------------------------


@pytest.mark.parametrize("tp", ["3", "64", "1000"])
def test_a_tp_that_does_not_divide_the_heads_is_refused(tp):
    line = error("run", "--model", MODEL, "--num-requests", "5", "--tp", tp)
    assert f"--tp {tp}" in line and "valid TP: 1, 2, 4, 8, 16, 32" in line


def test_kv_heads_replicate_beyond_their_number(tmp_path):
    arch = bundled_architecture(MODEL)
    assert arch is not None and arch.kv_heads == 8
    assert arch.kv_bytes_per_token(16) == arch.kv_bytes_per_token(8)  # one head per GPU
    assert arch.kv_bytes_per_token(4) == 2 * arch.kv_bytes_per_token(8)
    out = run_json(tmp_path, "--num-requests", "5", "--tp", "16")
    assert out["completed_requests"] == 5


# --- item 9: --vllm-version short forms -----------------------------------------------


def test_short_vllm_versions_mean_the_catalog_one(tmp_path):
    long = run_json(
        tmp_path, "--num-requests", "20", "--tp", "1", "--vllm-version", "vllm/vllm-openai:v0.8.4"
    )
    for short in ("v0.8.4", "0.8.4"):
        out = run_json(tmp_path, "--num-requests", "20", "--tp", "1", "--vllm-version", short)
        assert out["e2e_mean_ms"] == long["e2e_mean_ms"]
        assert out["config"]["vllm_version"] == "vllm/vllm-openai:v0.8.4"


def test_an_unknown_vllm_version_is_refused_with_the_known_ones():
    line = error("run", "--model", MODEL, "--num-requests", "5", "--vllm-version", "v0.9.9")
    assert "'v0.9.9'" in line and "vllm/vllm-openai:v0.8.4" in line


# --- item 10: impossible model and hardware figures -----------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"num_key_value_heads": 0}, "num_key_value_heads: must be > 0"),
        ({"intermediate_size": 0}, "intermediate_size: must be > 0"),
        ({"num_key_value_heads": 5}, "must divide num_attention_heads (32), got 5"),
        ({"hidden_size": 1e300}, "hidden_size: must be <= 2,147,483,647"),
    ],
)
def test_config_json_fields_are_not_silently_replaced(tmp_path, change, expected):
    (tmp_path / "config.json").write_text(json.dumps(dict(LLAMA_CONFIG, **change)))
    line = error(
        "run", "--model", MODEL, "--num-requests", "5", *ROOFLINE, "--model-config-folder", tmp_path
    )
    assert expected in line, line


@pytest.mark.parametrize(
    ("key", "value"), [("mfuPrefill", 5), ("BwEffConstant", 1.5), ("TFlopsPeak", 1e9)]
)
def test_hardware_figures_beyond_physics_are_refused(tmp_path, key, value):
    doc = json.loads(json.dumps(HARDWARE_SEED))
    doc["H100"][key] = value
    path = tmp_path / "hw.json"
    path.write_text(json.dumps(doc))
    line = error(
        "run", "--model", MODEL, "--num-requests", "5", *ROOFLINE, "--hardware-config", path
    )
    assert f"H100.{key}: must be <=" in line and "physically possible" in line


# --- item 11: trace flags and trace files ----------------------------------------------

CSV_HEADER = "arrival_time,request_id,model,prefill_tokens,decode_tokens\n"
CSV_ROWS = '0.0,r1,,"[1,2,3]","[4,5]"\n0.1,r2,,"[1,2,3]","[4,5]"\n0.2,r3,,"[7,8]","[9]"\n'


def test_a_trace_path_alone_is_ignored_with_a_warning_as_the_reference(tmp_path):
    """The reference's default workload is distribution and it ignores the path
    (workload.md 1): so does blis run, saying so (review 23; it used to replay it)."""
    trace = tmp_path / "t.csv"
    trace.write_text(CSV_HEADER + CSV_ROWS)
    out = run_json(tmp_path, "--workload-traces-filepath", trace, "--num-requests", 4)
    assert out["injected_requests"] == 4 and out["config"]["workload"] == "distribution"
    replay = run_json(tmp_path, "--workload", "traces", "--workload-traces-filepath", trace)
    assert replay["injected_requests"] == 3


def test_a_trace_path_with_another_workload_is_ignored_with_a_warning(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text(CSV_HEADER + CSV_ROWS)
    args = ["--workload-traces-filepath", trace, "--workload", "chatbot", "--num-requests", 4]
    result = invoke(["run", "--model", MODEL, *map(str, args)])
    assert result.exit_code == 0, result.stderr
    assert "no effect with --workload chatbot; give --workload traces" in result.stderr


def test_a_headerless_csv_trace_is_refused(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text(CSV_ROWS)
    line = error(
        "run", "--model", MODEL, "--workload", "traces", "--workload-traces-filepath", trace
    )
    assert "expected a header row" in line and "row 1" in line


@pytest.mark.parametrize("name", ["t.jsonl", "t.txt"])
def test_a_json_lines_trace_whose_first_line_is_not_an_object_is_refused(tmp_path, name):
    trace = tmp_path / name
    trace.write_text(
        '[1,2,3]\n{"timestamp": 0, "input_length": 4, "output_length": 1, "hash_ids": [1]}\n'
    )
    line = error(
        "run", "--model", MODEL, "--workload", "traces", "--workload-traces-filepath", trace
    )
    assert "line 1: expected a JSON object" in line


# --- item 12: raw exceptions become one-line errors -----------------------------------


def test_block_size_1e20_is_an_error_everywhere(tmp_path):
    assert "within ±9223372036854775807" in error("run", "--model", MODEL, "--block-size", "1e20")
    cfg = tmp_path / "run.yaml"
    cfg.write_text("block_size: 1e20\n")
    assert "within ±9223372036854775807" in error("run", "--model", MODEL, "--config", cfg)


def test_a_hash_id_beyond_64_bits_is_an_error(tmp_path):
    trace = tmp_path / "m.jsonl"
    row = {"timestamp": 0, "input_length": 600, "output_length": 8, "hash_ids": [2**100, 2]}
    trace.write_text(json.dumps(row) + "\n")
    line = error(
        "run", "--model", MODEL, "--workload", "traces", "--workload-traces-filepath", trace
    )
    assert "hash_ids must be 64-bit integers" in line


@pytest.mark.parametrize(
    "flags",
    [
        ["--kv-transfer-base-latency", "9223372036854775807"],
        ["--kv-transfer-bandwidth", "1e-300"],
    ],
)
def test_kv_transfer_times_beyond_an_hour_are_errors(flags):
    line = error("run", "--model", MODEL, "--num-requests", "5", "--kv-cpu-blocks", "100", *flags)
    assert "loading one KV block back would take more than an hour" in line


def test_a_deeply_nested_spec_is_an_error_in_run_and_describe(tmp_path):
    spec = spec_file(tmp_path, "clients: " + "[" * 5000 + "]" * 5000 + "\n")
    for args in (
        ["run", "--model", MODEL, "--workload-spec", spec],
        ["workload", "describe", spec],
    ):
        line = error(*args)
        assert f"nested deeper than {_inputs.MAX_YAML_DEPTH} levels" in line


def test_deeply_nested_json_is_an_error(tmp_path):
    path = tmp_path / "hw.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    line = error("run", "--model", MODEL, *ROOFLINE, "--hardware-config", path)
    assert "nested too deeply" in line


def test_tune_refuses_a_zero_latency_reference():
    pytest.importorskip("optuna")
    line = error("tune", "--model", MODEL, "--latency-ref-ms", "0", "--trials", "1")
    assert "--latency-ref-ms must be a finite number > 0, got 0.0" in line


# --- item 13: numbers, seeds, results files -------------------------------------------


def test_exponent_notation_is_a_number_in_specs_bundles_configs_and_flags(tmp_path):
    spec = spec_file(
        tmp_path,
        "aggregate_rate: 1e2\nnum_requests: 2e1\nseed: 1e1\nclients:\n"
        "  - id: a\n    rate_fraction: 1\n    arrival: {process: poisson}\n"
        "    input_distribution: {type: constant, params: {value: 1e2}}\n"
        "    output_distribution: {type: constant, params: {value: 1e1}}\n",
    )
    out = run_json(tmp_path, "--workload-spec", spec)
    assert out["injected_requests"] == 20 and out["total_input_tokens"] == 2000
    bundle = spec_file(
        tmp_path,
        "admission: {policy: token-bucket, token_bucket_capacity: 1e6, "
        "token_bucket_refill_rate: 1e5}\n",
        "bundle.yaml",
    )
    assert (
        run_json(tmp_path, "--policy-config", bundle, "--num-requests", "5")["completed_requests"]
        == 5
    )
    cfg = spec_file(tmp_path, "num_requests: 1e1\nrate: 2e1\n", "run.yaml")
    assert run_json(tmp_path, "--config", cfg)["injected_requests"] == 10
    assert run_json(tmp_path, "--num-requests", "1.2e1")["injected_requests"] == 12
    assert "is not a valid integer" in error("run", "--model", MODEL, "--num-requests", "1.5")


def test_simulate_accepts_numpy_integers():
    from inference_sim import simulate

    plain = simulate(model=MODEL, num_requests=8, seed=5, num_instances=2)
    numpy = simulate(
        model=MODEL, num_requests=np.int64(8), seed=np.uint64(5), num_instances=np.int32(2)
    )
    assert numpy.summary["e2e_mean_ms"] == plain.summary["e2e_mean_ms"]


# -1 is the reference's int64 seed, read as 2^64 - 1 (review 23): below int64 is refused.
@pytest.mark.parametrize("seed", [str(-(2**63) - 1), str(2**64)])
def test_seeds_that_would_wrap_are_refused(tmp_path, seed):
    assert "--seed must be" in error("run", "--model", MODEL, "--seed", seed)
    spec = spec_file(
        tmp_path, {"seed": int(seed), "aggregate_rate": 5, "num_requests": 5, "clients": [CLIENT]}
    )
    assert "seed must be in [0, 18446744073709551615]" in error(
        "run", "--model", MODEL, "--workload-spec", spec
    )


def test_the_largest_seed_runs(tmp_path):
    assert (
        run_json(tmp_path, "--num-requests", "3", "--seed", str(2**64 - 1))["completed_requests"]
        == 3
    )


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"a": 1}, "missing completed_requests"),
        (
            {"completed_requests": 1, "injected_requests": 1, "vllm_estimated_duration_s": "x"},
            "vllm_estimated_duration_s must be a number",
        ),
        (
            {
                "completed_requests": 1,
                "injected_requests": 1,
                "vllm_estimated_duration_s": 1,
                "requests": 5,
            },
            "requests must be a list of objects",
        ),
    ],
)
def test_report_checks_the_results_schema(tmp_path, doc, expected):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    line = error("report", path, "-o", tmp_path / "r.html")
    assert "not a results file" in line and expected in line
    assert not (tmp_path / "r.html").exists()


def test_cpu_offload_beyond_any_host_memory_is_an_error():
    line = error("run", "--model", MODEL, "--num-requests", "5", "--cpu-offload-gib", "1e300")
    assert "--cpu-offload-gib must be <= 1,048,576" in line


def test_an_absurd_mean_length_is_an_error_not_a_days_long_run(tmp_path):
    client = dict(CLIENT, output_distribution={"type": "exponential", "params": {"mean": 1e300}})
    spec = spec_file(tmp_path, {"aggregate_rate": 10, "num_requests": 5, "clients": [client]})
    line = error("run", "--model", MODEL, "--workload-spec", spec)
    assert "output_distribution.params.mean must be <= 16777216 tokens" in line


def test_a_pipe_needs_its_format_named(tmp_path):
    """Detection reads the start, then the reader reopens: a pipe would have lost it."""
    fifo = tmp_path / "trace.csv"
    os.mkfifo(fifo)
    line = error("run", "--model", MODEL, "--workload", "traces",
                 "--workload-traces-filepath", fifo)  # fmt: skip
    assert "a pipe or device can be read only once" in line and "--trace-format" in line
    # Named, it is read once (a writer thread feeds the pipe).
    text = CSV_HEADER + CSV_ROWS

    def feed() -> None:
        with open(fifo, "w") as fh:
            fh.write(text)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    out = run_json(tmp_path, "--workload", "traces", "--trace-format", "csv",
                   "--workload-traces-filepath", fifo)  # fmt: skip
    writer.join(timeout=10)
    assert out["injected_requests"] == 3


def test_a_yaml_key_written_twice_is_refused_with_its_lines(tmp_path):
    """PyYAML keeps the last of two equal keys silently; every YAML input refuses it."""
    with pytest.raises(yaml.YAMLError, match=r"key 'rate' given twice \(first on line 2\)"):
        _inputs.load_yaml("model: m\nrate: 5\nrate: 50\n")
    assert _inputs.load_yaml("base: &b {rate: 5}\nrun:\n  <<: *b\n  rate: 50\n")["run"] == {
        "rate": 50
    }  # a merge key may be overridden on purpose
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {MODEL}\nnum_requests: 5\nnum_requests: 50\n")
    result = invoke(["run", "--config", config])
    assert result.exit_code == 2
    assert "key 'num_requests' given twice (first on line 2)" in result.output


def test_a_zero_falls_through_to_a_later_key_that_gives_the_value():
    """``num_key_value_heads: 0`` with ``num_kv_heads: 8`` reads 8, the first non-zero
    key (the reference's rule); a 0 that no later key replaces is still refused."""
    from inference_sim.catalog.architecture import architecture_from_hf_config
    from inference_sim.catalog.errors import CatalogError

    both = dict(LLAMA_CONFIG, num_key_value_heads=0, num_kv_heads=8)
    assert architecture_from_hf_config(both, "m").kv_heads == 8
    with pytest.raises(CatalogError, match="num_key_value_heads: must be > 0"):
        architecture_from_hf_config(dict(LLAMA_CONFIG, num_key_value_heads=0), "m")
