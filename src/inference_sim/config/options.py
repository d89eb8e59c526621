"""Every option of ``blis run`` in one table, shared by the CLI and ``simulate()``.

Canonical names are the reference's flag names with underscores; the vLLM-style
spellings are aliases. The CLI builds its flags from this table and ``simulate()``
accepts the same names as keywords, so the two can never drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inference_sim.engine.events import NEVER

FloatList = list[float]


@dataclass(frozen=True, slots=True)
class OptionSpec:
    name: str  # canonical, underscores
    kind: type | str  # int, float, str, bool or "floats" (comma-separated list)
    default: Any
    help: str
    group: str
    aliases: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def alias_flags(self) -> tuple[str, ...]:
        return tuple("--" + a.replace("_", "-") for a in self.aliases)


_PRESET_HELP = "distribution, traces, or a preset: chatbot, contentgen, summarization, multidoc"

OPTIONS: tuple[OptionSpec, ...] = (
    # --- model, hardware, latency -----------------------------------------------------
    OptionSpec(
        "model",
        str,
        "",
        "Model id, e.g. meta-llama/llama-3.1-8b-instruct (case-insensitive). See `blis models`.",
        "model",
    ),
    OptionSpec(
        "hardware",
        str,
        "",
        "GPU name (default: the model's catalog default), e.g. H100, A100-80.",
        "model",
    ),
    OptionSpec(
        "tp",
        int,
        0,
        "Tensor-parallel degree (default: the model's catalog default).",
        "model",
        ("tensor_parallel_size",),
    ),
    OptionSpec(
        "vllm_version",
        str,
        "",
        "vLLM version the coefficients were trained on (default: catalog default).",
        "model",
    ),
    OptionSpec(
        "latency_model",
        str,
        "auto",
        "Step-time model: blackbox (trained alpha/beta) or auto.",
        "model",
    ),
    OptionSpec(
        "alpha_coeffs",
        "floats",
        [0.0, 0.0, 0.0],
        "alpha0,alpha1,alpha2: queueing delay (µs, µs/prompt token) and per-output-token overhead (µs).",
        "model",
    ),
    OptionSpec(
        "beta_coeffs",
        "floats",
        [0.0, 0.0, 0.0],
        "beta0,beta1,beta2: step time = beta0 + beta1*prefill tokens + beta2*decode tokens (µs).",
        "model",
    ),
    OptionSpec(
        "defaults_filepath",
        str,
        "",
        "Extra catalog in the reference's defaults.yaml format, merged over the bundled one.",
        "model",
    ),
    # --- engine -------------------------------------------------------------------------
    OptionSpec(
        "total_kv_blocks",
        int,
        1_000_000,
        "GPU KV-cache blocks per instance (default: the trained entry's count).",
        "engine",
        ("num_gpu_blocks",),
    ),
    OptionSpec("block_size_in_tokens", int, 16, "Tokens per KV block.", "engine", ("block_size",)),
    OptionSpec(
        "max_num_running_reqs", int, 256, "Most requests in a batch.", "engine", ("max_num_seqs",)
    ),
    OptionSpec(
        "max_num_scheduled_tokens",
        int,
        2048,
        "Token budget of one step.",
        "engine",
        ("max_num_batched_tokens",),
    ),
    OptionSpec(
        "long_prefill_token_threshold",
        int,
        0,
        "Cap on one prefill chunk (0: only the token budget limits it).",
        "engine",
    ),
    OptionSpec(
        "max_model_len",
        int,
        0,
        "Reject requests whose prompt + output exceeds this (0: no limit).",
        "engine",
    ),
    OptionSpec(
        "enable_prefix_caching",
        bool,
        True,
        "Reuse KV blocks of identical prompt prefixes.",
        "engine",
    ),
    # --- workload -----------------------------------------------------------------------
    OptionSpec("workload", str, "distribution", f"Workload source: {_PRESET_HELP}.", "workload"),
    OptionSpec(
        "workload_traces_filepath",
        str,
        "",
        "CSV trace for --workload traces (arrival_s,id,model,input_tokens,output_tokens).",
        "workload",
    ),
    OptionSpec(
        "rate",
        float,
        1.0,
        "Requests per second (distribution and presets; evenly spaced).",
        "workload",
    ),
    OptionSpec("num_requests", int, 100, "Number of requests to generate.", "workload"),
    OptionSpec(
        "prefix_tokens", int, 0, "Random prefix shared by every prompt (distribution).", "workload"
    ),
    OptionSpec("prompt_tokens", int, 512, "Mean prompt length (distribution).", "workload"),
    OptionSpec("prompt_tokens_stdev", int, 256, "Prompt length standard deviation.", "workload"),
    OptionSpec("prompt_tokens_min", int, 2, "Shortest prompt.", "workload"),
    OptionSpec("prompt_tokens_max", int, 7000, "Longest prompt.", "workload"),
    OptionSpec("output_tokens", int, 512, "Mean output length (distribution).", "workload"),
    OptionSpec("output_tokens_stdev", int, 256, "Output length standard deviation.", "workload"),
    OptionSpec("output_tokens_min", int, 2, "Shortest output.", "workload"),
    OptionSpec("output_tokens_max", int, 7000, "Longest output.", "workload"),
    # --- cluster ------------------------------------------------------------------------
    OptionSpec("num_instances", int, 1, "Engine replicas behind the router.", "cluster"),
    OptionSpec(
        "admission_policy",
        str,
        "always-admit",
        "always-admit, token-bucket or reject-all.",
        "cluster",
    ),
    OptionSpec("admission_latency", int, 0, "Admission decision latency (µs).", "cluster"),
    OptionSpec("routing_policy", str, "round-robin", "round-robin or least-loaded.", "cluster"),
    OptionSpec("routing_latency", int, 0, "Routing decision latency (µs).", "cluster"),
    OptionSpec(
        "token_bucket_capacity", float, 10000.0, "Token-bucket size (prompt tokens).", "cluster"
    ),
    OptionSpec(
        "token_bucket_refill_rate",
        float,
        1000.0,
        "Token-bucket refill (prompt tokens per second).",
        "cluster",
    ),
    # --- run control --------------------------------------------------------------------
    OptionSpec("seed", int, 42, "Run seed; every random stream derives from it.", "run"),
    OptionSpec(
        "horizon", int, NEVER, "Stop simulated time here (µs); later events never run.", "run"
    ),
    OptionSpec(
        "results_path", str, "", "Write the summary plus per-request records as JSON here.", "run"
    ),
    OptionSpec(
        "check_invariants",
        bool,
        False,
        "Check KV-block conservation after every step (slow).",
        "run",
    ),
)

BY_NAME: dict[str, OptionSpec] = {spec.name: spec for spec in OPTIONS}
ALIASES: dict[str, str] = {a: spec.name for spec in OPTIONS for a in spec.aliases}


def canonical_name(key: str) -> str | None:
    """The canonical option name for a keyword or flag spelling, or None if unknown."""
    key = key.lstrip("-").replace("-", "_")
    if key in BY_NAME:
        return key
    return ALIASES.get(key)
