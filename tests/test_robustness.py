"""Pathological configurations end with a documented outcome, never a hang (issue 11;
docs/troubleshooting.md lists the outcomes), and unknown keys get a did-you-mean hint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from inference_sim.workload.samplers import MAX_REQUEST_TOKENS
from simhelpers import fresh_tokens, make_request, simulate_requests
from test_fuzz_support import MODEL, fuzz_settings, invoke

SPEC = {
    "aggregate_rate": 20.0,
    "num_requests": 20,
    "clients": [
        {
            "id": "c",
            "rate_fraction": 1.0,
            "arrival": {"process": "poisson"},
            "input_distribution": {"type": "constant", "params": {"value": 64}},
            "output_distribution": {"type": "constant", "params": {"value": 8}},
        }
    ],
}


def run(tmp_path: Path, *args: Any, expect: int = 0) -> tuple[dict[str, Any], str]:
    """``blis run`` in process (time-limited); the results document and stderr."""
    out = tmp_path / "results.json"
    result = invoke(["run", "--model", MODEL, "--results-path", out, *args])
    assert result.exit_code == expect, result.stderr
    doc = json.loads(out.read_text()) if expect == 0 else {}
    return doc, result.stderr


def error(tmp_path: Path, *args: Any) -> str:
    """The one-line error of a run rejected as bad input (exit 2)."""
    result = invoke(["run", "--model", MODEL, *args])
    assert result.exit_code == 2, result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("Error: ")]
    return line


def write_spec(tmp_path: Path, doc: dict[str, Any], name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# --- the KV cache ---------------------------------------------------------------------


def test_prompts_longer_than_the_cache_are_dropped_as_unservable(tmp_path):
    # 10 blocks of 16 tokens hold 160 tokens; every prompt is longer.
    doc, _ = run(tmp_path, "--total-kv-blocks", 10, "--num-requests", 20)
    assert doc["dropped_unservable"] == 20
    assert doc["completed_requests"] == 0
    assert doc["still_queued"] == doc["still_running"] == 0


def test_a_cache_too_small_for_the_load_preempts_and_finishes(tmp_path):
    # Each request fits alone, not all at once: preemptions, then everything ends.
    args = ["--total-kv-blocks", 120, "--num-requests", 40, "--rate", 200]
    args += ["--prompt-tokens", 600, "--output-tokens", 200, "--output-tokens-max", 400]
    doc, _ = run(tmp_path, *args)
    assert doc["preemption_count"] > 0
    assert doc["completed_requests"] + doc["dropped_unservable"] == 40
    assert doc["still_queued"] == doc["still_running"] == 0


def test_a_request_that_outgrows_the_cache_alone_is_dropped_midway(tmp_path):
    # The prompt fits (57 of 60 blocks) but prompt + output does not.
    args = ["--total-kv-blocks", 60, "--num-requests", 5, "--prompt-tokens", 900]
    args += ["--prompt-tokens-stdev", 0, "--output-tokens", 600, "--output-tokens-stdev", 0]
    doc, _ = run(tmp_path, *args)
    assert doc["dropped_unservable"] == 5
    assert doc["completed_requests"] == 0


@fuzz_settings(25)
@given(
    blocks=st.integers(1, 40),
    prompts=st.lists(st.integers(1, 300), min_size=1, max_size=12),
    output=st.integers(0, 120),
    batch=st.sampled_from([16, 64, 2048]),
    seqs=st.integers(1, 8),
)
def test_no_livelock_whatever_the_cache_size(blocks, prompts, output, batch, seqs):
    """The engine always makes progress (the head of the running batch is never preempted,
    and a request that cannot grow alone is dropped): every request ends, finished or
    dropped, in a bounded number of steps."""
    shared = fresh_tokens(32)
    reqs = [
        make_request(i, i * 50, shared + fresh_tokens(p), output) for i, p in enumerate(prompts)
    ]
    out = simulate_requests(
        reqs,
        num_gpu_blocks=blocks,
        max_num_batched_tokens=batch,
        max_num_seqs=seqs,
        check_invariants=True,
    )
    inst = out.instances[0]
    assert inst.stats.completed + inst.stats.dropped_unservable == len(reqs)
    total_tokens = sum(p + 32 + output for p in prompts)
    assert inst.stats.step_count <= total_tokens * (len(reqs) + 1)


# --- rates ----------------------------------------------------------------------------


def test_zero_rate_is_bad_input(tmp_path):
    assert "--rate must be a finite number > 0, got 0.0" in error(tmp_path, "--rate", 0)
    spec = write_spec(tmp_path, {**SPEC, "aggregate_rate": 0})
    assert "aggregate_rate must be positive" in error(tmp_path, "--workload-spec", spec)
    staged = {**SPEC, "stages": [{"rate": 0, "duration": 1}]}
    spec = write_spec(tmp_path, staged, "staged.yaml")
    assert "stages[0].rate must be a finite positive number" in error(
        tmp_path, "--workload-spec", spec
    )


def test_enormous_rates_run(tmp_path):
    # Every request arrives at t = 0 (gaps truncate to 0 µs): a burst, served in order.
    doc, _ = run(tmp_path, "--rate", "1e12", "--num-requests", 50)
    assert doc["completed_requests"] == 50
    spec = write_spec(tmp_path, {**SPEC, "aggregate_rate": 1e12})  # gaps of at least 1 µs
    doc, _ = run(tmp_path, "--workload-spec", spec)
    assert doc["completed_requests"] == 20


# --- lengths --------------------------------------------------------------------------


def test_prompts_longer_than_max_model_len_are_rejected(tmp_path):
    doc, _ = run(tmp_path, "--max-model-len", 600, "--num-requests", 30)
    assert doc["rejected_too_long"] > 0
    assert doc["rejected_too_long"] + doc["completed_requests"] == 30


def test_absurd_lengths_are_bad_input_not_out_of_memory(tmp_path):
    line = error(tmp_path, "--prompt-tokens-max", 10**12)
    assert f"--prompt-tokens-max must be <= {MAX_REQUEST_TOKENS}" in line
    client = dict(SPEC["clients"][0])
    client["input_distribution"] = {"type": "constant", "params": {"value": 10**11}}
    spec = write_spec(tmp_path, {**SPEC, "clients": [client]})
    assert "input_distribution.params.value must be <=" in error(tmp_path, "--workload-spec", spec)
    azure = tmp_path / "azure.csv"
    azure.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0,6227020800,8\n")
    line = error(tmp_path, "--workload", "traces", "--workload-traces-filepath", azure)
    assert "line 2: ContextTokens must be <=" in line
    csv_trace = tmp_path / "trace.csv"
    csv_trace.write_text('a,b,c,d,e\n0,r,,"[2147483648]","[1]"\n')
    line = error(tmp_path, "--workload", "traces", "--workload-traces-filepath", csv_trace)
    assert "row 2 column input_tokens: token ids must be <= 2147483647" in line


def test_absurd_sizes_are_bad_input(tmp_path):
    assert "more than 134,217,728 KV blocks" in error(tmp_path, "--total-kv-blocks", 10**12)
    assert "--horizon must be in [0, 9223372036854775807]" in error(tmp_path, "--horizon", 10**23)
    assert "must not contain a NUL" in error(tmp_path, "--hardware-config", "a\x00b")


# --- admission, horizon, unbounded workloads -------------------------------------------


def test_reject_all_rejects_everything_and_says_so(tmp_path):
    doc, stderr = run(tmp_path, "--admission-policy", "reject-all", "--num-requests", 30)
    assert doc["rejected_requests"] == 30
    assert doc["completed_requests"] == doc["injected_requests"] == 0
    assert "no requests completed" in stderr


def test_horizon_zero_runs_nothing(tmp_path):
    doc, _ = run(tmp_path, "--horizon", 0, "--num-requests", 30)
    assert doc["completed_requests"] == 0
    assert doc["vllm_estimated_duration_s"] == 0


def test_zero_requests_is_bad_input(tmp_path):
    # issue 20: an empty run hid a typo; with a workload spec 0 still means "no cap"
    assert "--num-requests must be > 0" in error(tmp_path, "--num-requests", 0)


def test_a_spec_that_never_ends_is_bad_input(tmp_path):
    unbounded = {k: v for k, v in SPEC.items() if k != "num_requests"}
    spec = write_spec(tmp_path, unbounded)
    expected = "--workload-spec requires either num_requests"
    assert expected in error(tmp_path, "--workload-spec", spec)
    assert expected in error(tmp_path, "--workload-spec", spec, "--num-requests", 0)
    # Any bound makes it a run: a horizon, a request cap.
    doc, _ = run(tmp_path, "--workload-spec", spec, "--horizon", 1_000_000)
    assert doc["injected_requests"] > 0


# --- did you mean ---------------------------------------------------------------------


def test_unknown_spec_field_suggests_the_closest(tmp_path):
    client = dict(SPEC["clients"][0])
    client["rate_fractoin"] = client.pop("rate_fraction")
    spec = write_spec(tmp_path, {**SPEC, "clients": [client]})
    line = error(tmp_path, "--workload-spec", spec)
    assert 'clients[0]: unknown field "rate_fractoin" (did you mean "rate_fraction"?)' in line
    spec = write_spec(tmp_path, {**SPEC, "num_request": 5}, "top.yaml")
    assert '(did you mean "num_requests"?)' in error(tmp_path, "--workload-spec", spec)


def test_unknown_distribution_parameter_and_type_suggest(tmp_path):
    client = dict(SPEC["clients"][0])
    client["input_distribution"] = {"type": "gausian", "params": {"mean": 1}}
    spec = write_spec(tmp_path, {**SPEC, "clients": [client]})
    assert '(did you mean "gaussian"?)' in error(tmp_path, "--workload-spec", spec)
    client["input_distribution"] = {"type": "constant", "params": {"valeu": 3}}
    spec = write_spec(tmp_path, {**SPEC, "clients": [client]}, "p.yaml")
    assert '(did you mean "value"?)' in error(tmp_path, "--workload-spec", spec)


def test_unknown_bundle_key_suggests(tmp_path):
    bundle = tmp_path / "bundle.yaml"
    bundle.write_text("routng:\n  policy: weighted\n")
    line = error(tmp_path, "--policy-config", bundle)
    assert "line 1" in line and '(did you mean "routing"?)' in line
    bundle.write_text("admission:\n  polcy: reject-all\n")
    assert '(did you mean "policy"?)' in error(tmp_path, "--policy-config", bundle)


def test_unknown_policy_name_suggests(tmp_path):
    assert '(did you mean "round-robin"?)' in error(tmp_path, "--routing-policy", "round-robbin")


def test_unknown_defaults_key_suggests(tmp_path):
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text(
        yaml.safe_dump(
            {
                "workloads": {
                    "mine": {
                        "prompt_tokens": 10,
                        "prompt_tokens_stdev": 1,
                        "prompt_tokens_min": 1,
                        "prompt_tokens_max": 20,
                        "output_tokens": 10,
                        "output_tokens_stdev": 1,
                        "output_tokens_min": 1,
                        "output_token_max": 20,
                    }
                }
            }
        )
    )
    line = error(tmp_path, "--defaults-filepath", defaults)
    assert '"output_token_max" (did you mean "output_tokens_max"?)' in line


def test_unknown_run_config_option_suggests(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("num_instance: 2\n")
    assert '(did you mean "num_instances"?)' in error(tmp_path, "--config", config)


def test_unknown_trace_v2_header_field_suggests(tmp_path):
    (tmp_path / "t.yaml").write_text("trace_version: 2\ntime_units: microseconds\n")
    (tmp_path / "t.csv").write_text(
        "request_id,client_id,tenant_id,slo_class,session_id,round_index,prefix_group,"
        "streaming,input_tokens,output_tokens,text_tokens,image_tokens,audio_tokens,"
        "video_tokens,reason_ratio,arrival_time_us,send_time_us,first_chunk_time_us,"
        "last_chunk_time_us,num_chunks,status,error_message\n"
    )
    line = error(tmp_path, "--workload", "traces", "--workload-traces-filepath", tmp_path / "t.csv")
    assert '(did you mean "time_unit"?)' in line


@pytest.mark.parametrize(
    ("word", "choices", "hint"),
    [
        ("rate_fractoin", ["rate_fraction", "id"], ' (did you mean "rate_fraction"?)'),
        ("OUTPUT_TOKENS", ["output_tokens"], ' (did you mean "output_tokens"?)'),
        ("zzzz", ["rate", "seed"], ""),
        ("", ["a"], ""),
    ],
)
def test_did_you_mean(word, choices, hint):
    from inference_sim.core.suggest import did_you_mean

    assert did_you_mean(word, choices) == hint
