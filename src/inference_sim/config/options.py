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
    kind: type | str  # int, float, str, bool, "floats" or "texts" (comma-separated lists)
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
        "GPU name (default: the model's catalog default), e.g. H100, A100-80, 'NVIDIA A100-SXM4-80GB' (docs/catalog.md).",
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
        "Step-time model: auto (trained alpha/beta where the catalog has them, else calibrated), blackbox (trained alpha/beta), roofline (analytical, from the model's architecture and the GPU's specs) or calibrated (roofline terms x fitted corrections + overheads; docs/calibration.md), or a plug-in as module.path:ClassName or file.py:ClassName (docs/python-api.md).",
        "model",
    ),
    OptionSpec(
        "latency_coeffs",
        str,
        "",
        "Coefficients file (JSON/YAML, as written by `blis calibrate`) for --latency-model calibrated; default: the shipped set. Implies calibrated under auto.",
        "model",
    ),
    OptionSpec(
        "sampling",
        str,
        "auto",
        "Sampler the server runs, for --latency-model calibrated: auto (the model's generation_config.json defaults), plain (no top-p/top-k filter, no penalties), filtered (top-p/top-k: a per-request cost that grows with the vocabulary) or penalized (filtered plus repetition/presence/frequency penalties: a per-step and per-context-token cost).",
        "model",
    ),
    OptionSpec(
        "roofline",
        bool,
        False,
        "Shorthand for --latency-model roofline.",
        "model",
    ),
    OptionSpec(
        "model_config_folder",
        str,
        "",
        "Folder with a HuggingFace config.json: the model architecture for roofline (instead of the bundled one).",
        "model",
    ),
    OptionSpec(
        "hardware_config",
        str,
        "",
        "GPU figures in the reference's hardware_config.json format, added to or replacing the bundled GPUs.",
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
        "Extra catalog in the reference's defaults.yaml format, merged over the bundled one. Read only when given: a ./defaults.yaml the reference would read is not (a run warns when one is there).",
        "model",
    ),
    # --- engine -------------------------------------------------------------------------
    OptionSpec(
        "total_kv_blocks",
        int,
        1_000_000,
        "GPU KV-cache blocks per instance (default: the trained entry's count; in roofline mode without one, derived from GPU memory).",
        "engine",
        ("num_gpu_blocks",),
    ),
    OptionSpec("block_size_in_tokens", int, 16, "Tokens per KV block.", "engine", ("block_size",)),
    OptionSpec(
        "quantization",
        str,
        "",
        "Online weight quantization, as vLLM's --quantization: fp8 (a 16-bit checkpoint's linear weights quantized to FP8 at load: W8A8 on GPUs with FP8 tensor cores). Empty: the checkpoint's own. Priced by the calibrated and roofline models (docs/engine.md#online-fp8-weights---quantization-fp8).",
        "engine",
    ),
    OptionSpec(
        "kv_cache_dtype",
        str,
        "auto",
        "KV-cache element type, as vLLM's --kv-cache-dtype: auto (the model's dtype), bfloat16, float16, or fp8 / fp8_e4m3 / fp8_e5m2 (1 byte: twice the blocks, half the KV traffic). (docs/engine.md#kv-cache-dtype---kv-cache-dtype).",
        "engine",
    ),
    OptionSpec(
        "gpu_memory_utilization",
        float,
        0.9,
        "Fraction of GPU memory for weights and KV cache when the KV block count is derived from memory (roofline without a trained entry).",
        "engine",
    ),
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
    # On by default, as vLLM v1 (SchedulerConfig.enable_chunked_prefill).
    OptionSpec(
        "enable_chunked_prefill",
        bool,
        True,
        "Split a prompt over several steps when the token budget left is short (vLLM v1's default). --no-enable-chunked-prefill: a waiting request is admitted only when all its new tokens fit the budget left, else admission stops; without --max-model-len the length limit becomes --max-num-batched-tokens, and a larger --max-model-len is refused, as vLLM does (docs/engine.md).",
        "engine",
    ),
    OptionSpec(
        "kv_cpu_blocks",
        int,
        0,
        "CPU KV-cache blocks per instance (0: GPU only). Content leaving the GPU is kept there and loaded back on a prefix hit instead of being recomputed; see docs/kv-offload.md.",
        "engine",
    ),
    OptionSpec(
        "kv_offload_threshold",
        float,
        0.9,
        "GPU occupancy (blocks holding KV data / total) above which cached free blocks are offloaded to the CPU tier, least recently used first.",
        "engine",
    ),
    OptionSpec(
        "kv_transfer_bandwidth",
        float,
        100.0,
        "CPU->GPU KV load bandwidth in tokens per µs: one block takes base latency + ceil(block size / bandwidth) µs.",
        "engine",
    ),
    OptionSpec(
        "kv_transfer_base_latency",
        int,
        0,
        "Fixed cost (µs) of loading one block back from the CPU tier.",
        "engine",
    ),
    OptionSpec(
        "cpu_offload_gib",
        float,
        0.0,
        "CPU KV tier size in GiB per instance (all TP ranks), converted to --kv-cpu-blocks with the model's bytes per block.",
        "engine",
    ),
    # --- speculative decoding (docs/speculative-decoding.md) ------------------------------
    OptionSpec(
        "speculative_method",
        str,
        "",
        "Speculative decoding: ngram, eagle, eagle3, mtp or draft-model (default: off).",
        "engine",
    ),
    OptionSpec(
        "num_speculative_tokens",
        int,
        0,
        "Draft tokens proposed per decode step (k > 0; required with --speculative-method).",
        "engine",
    ),
    OptionSpec(
        "spec_acceptance_rate",
        "floats",
        [],
        "Acceptance rate of a draft token given the earlier ones were: one value, or one per position A1,A2,... (default: the method's published figure).",
        "engine",
    ),
    OptionSpec(
        "spec_acceptance_concentration",
        float,
        0.0,
        "Per-request acceptance: each request draws its own rate per position from a Beta distribution whose mean is --spec-acceptance-rate and whose concentration (alpha + beta) is this value; lower spreads requests further apart (prompts easy or hard to draft for). 0: every request has the mean rate.",
        "engine",
    ),
    OptionSpec(
        "speculative_model",
        str,
        "",
        "Draft model for --speculative-method draft-model (a catalog name; its architecture prices its steps).",
        "engine",
    ),
    OptionSpec(
        "spec_ngram_cpu_us",
        int,
        0,
        "CPU time (µs) of the n-gram proposer per step (default 0: not measured).",
        "engine",
    ),
    OptionSpec(
        "kv_transfer_link",
        str,
        "",
        "Host link for KV loads: pcie-gen4 (25 GB/s) or pcie-gen5 (50 GB/s) per GPU, converted to --kv-transfer-bandwidth with the model's bytes per token.",
        "engine",
    ),
    # --- multi-LoRA serving (docs/lora.md) ------------------------------------------------
    OptionSpec(
        "max_loras",
        int,
        0,
        "Distinct LoRA adapters in one batch (= GPU adapter slots); a waiting request that would exceed it is skipped this step. 0: LoRA off unless adapters are named (then 1, as vLLM).",
        "engine",
    ),
    OptionSpec(
        "max_cpu_loras",
        int,
        0,
        "LoRA adapters kept in host memory, least recently used evicted (0: --max-loras, as vLLM).",
        "engine",
    ),
    OptionSpec(
        "max_lora_rank",
        int,
        16,
        "Highest adapter rank served (vLLM's default 16); sizes the GPU adapter slots taken from the KV cache.",
        "engine",
    ),
    OptionSpec(
        "lora_adapters",
        "texts",
        [],
        "Known adapters as NAME:RANK[:BASE_MODEL],... (or a lora: block in --config); requests name them with adapter: NAME.",
        "engine",
    ),
    OptionSpec(
        "lora_cpu_gpu_bandwidth",
        float,
        25.0,
        "Host-to-GPU adapter load bandwidth, GB/s (PCIe 4.0 x16 achieved).",
        "engine",
    ),
    OptionSpec(
        "lora_cpu_gpu_latency",
        int,
        100,
        "Fixed cost (µs) of loading one adapter from host memory into a GPU slot.",
        "engine",
    ),
    OptionSpec(
        "lora_disk_bandwidth",
        float,
        2.0,
        "Disk-to-host adapter load bandwidth, GB/s (NVMe SSD).",
        "engine",
    ),
    OptionSpec(
        "lora_disk_latency",
        int,
        10000,
        "Fixed cost (µs) of reading one adapter from disk (open, parse, pin).",
        "engine",
    ),
    OptionSpec(
        "lora_step_overhead",
        float,
        0.0,
        "Extra step time (µs) per distinct adapter in the batch, on top of reading its weights at the GPU's memory bandwidth.",
        "engine",
    ),
    # --- workload -----------------------------------------------------------------------
    OptionSpec("workload", str, "distribution", f"Workload source: {_PRESET_HELP}.", "workload"),
    OptionSpec(
        "workload_traces_filepath",
        str,
        "",
        "Trace for --workload traces: the reference's CSV (arrival_s,id,model,input_tokens,output_tokens), a trace v2 pair, an Azure CSV or a Mooncake JSONL (see --trace-format).",
        "workload",
    ),
    OptionSpec(
        "workload_spec",
        str,
        "",
        "Workload-spec YAML (v2 schema, v1 upgraded): clients, arrival processes, length distributions, prefix groups, sessions, stages, inference-perf and ServeGen blocks. Takes precedence over --workload.",
        "workload",
    ),
    OptionSpec(
        "trace_format",
        str,
        "auto",
        "Format of --workload-traces-filepath: auto (from the content), csv, v2, azure, mooncake or lengths (CSV/JSONL of token counts: arrived_at|timestamp, num_prefill_tokens|prompt_len, num_decode_tokens|output_len, optional session_id, prefix_group+prefix_len; docs/workloads.md).",
        "workload",
    ),
    OptionSpec(
        "trace_block_size",
        int,
        512,
        "Prompt tokens per hash id in a Mooncake trace.",
        "workload",
    ),
    OptionSpec(
        "trace_speedup",
        float,
        1.0,
        "Replay a trace's recorded arrival times this many times faster: every arrival (µs from the trace's time origin) is divided by it, so 2 halves every gap and doubles the rate, 0.5 replays at half speed (the speedup ratio of Dynamo's Mooncake tooling). --horizon bounds the scaled times. Trace replays with arrival times only.",
        "workload",
    ),
    OptionSpec(
        "export_trace",
        str,
        "",
        "Write the workload as trace v2 (F.csv rows + F.yaml header) as the run consumes it, for exact replay.",
        "workload",
    ),
    OptionSpec(
        "rate",
        float,
        1.0,
        "Requests per second of distribution and preset workloads (spaced as --arrival says) and of a length trace without times. Ignored with --workload-spec, as the reference does (use --aggregate-rate).",
        "workload",
    ),
    OptionSpec(
        "aggregate_rate",
        float,
        0.0,
        "Scale a --workload-spec to this many requests per second: it replaces the spec's aggregate_rate, so every client's rate changes by the same factor (default 0: the spec's own). Refused with a staged spec, which sets its own rates.",
        "workload",
    ),
    OptionSpec(
        "arrival",
        str,
        "constant",
        "Arrival process of distribution and preset workloads: constant (evenly spaced, the reference's meaning, kept as blis run's default so old scripts keep their numbers; understates queueing), poisson or gamma (vLLM bench's processes; see --burstiness). blis plan defaults to poisson.",
        "workload",
    ),
    OptionSpec(
        "burstiness",
        float,
        1.0,
        "Shape of --arrival gamma (vLLM bench's --burstiness): 1 is Poisson, below 1 burstier, above 1 more regular. Given alone, it selects --arrival gamma.",
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
        "always-admit, token-bucket, reject-all, or a plug-in module.path:ClassName.",
        "cluster",
    ),
    OptionSpec("admission_latency", int, 0, "Admission decision latency (µs).", "cluster"),
    OptionSpec(
        "routing_policy",
        str,
        "round-robin",
        "round-robin, least-loaded, prefix-affinity, weighted, vllm-dp (vLLM's load-aware data-parallel balancer), always-busiest, or a plug-in module.path:ClassName.",
        "cluster",
    ),
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
    OptionSpec(
        "routing_scorers",
        str,
        "",
        "Scorers of --routing-policy weighted as name:weight,... (queue-depth, kv-utilization, load-balance, prefix-affinity, adapter-affinity, or plug-ins); weights are normalised. Empty: prefix-affinity:3,queue-depth:2,kv-utilization:2.",
        "cluster",
    ),
    OptionSpec(
        "snapshot_refresh_interval",
        int,
        0,
        "Refresh the router's view of KV utilisation and cache hit rate at most this often (µs); 0: always current.",
        "cluster",
    ),
    OptionSpec(
        "priority_policy",
        str,
        "constant",
        "constant, slo-based, inverted-slo, or a plug-in module.path:ClassName.",
        "cluster",
    ),
    OptionSpec(
        "scheduler",
        str,
        "fcfs",
        "Wait-queue order: fcfs, priority-fcfs, sjf, reverse-priority, or a plug-in module.path:ClassName.",
        "cluster",
    ),
    OptionSpec(
        "policy_config",
        str,
        "",
        "Policy bundle YAML (admission, routing, priority, scheduler); flags given explicitly win.",
        "cluster",
    ),
    # --- prefill/decode disaggregation (docs/disaggregation.md) -----------------------
    OptionSpec(
        "prefill_instances",
        int,
        0,
        "Prefill-only instances of --num-instances (P/D disaggregation; 0 with --decode-instances 0: off).",
        "pd",
    ),
    OptionSpec(
        "decode_instances",
        int,
        0,
        "Decode-only instances of --num-instances; the rest do both.",
        "pd",
    ),
    OptionSpec(
        "pd_decider",
        str,
        "always",
        "When to disaggregate: never, always, or prefix-threshold.",
        "pd",
    ),
    OptionSpec(
        "pd_prefix_threshold",
        int,
        0,
        "prefix-threshold: disaggregate when the prompt tokens not cached on the decode instance reach (at least) this.",
        "pd",
    ),
    OptionSpec(
        "pd_transfer_bandwidth",
        float,
        50.0,
        "KV transfer link bandwidth per prefill instance, GB/s (50: one 400 Gb/s InfiniBand NDR / RoCE NIC).",
        "pd",
    ),
    OptionSpec(
        "pd_transfer_base_latency",
        float,
        0.05,
        "Fixed cost of one KV transfer, ms (RDMA setup and notification).",
        "pd",
    ),
    OptionSpec(
        "prefill_routing_policy",
        str,
        "",
        "Routing policy of the prefill pool (default: --routing-policy).",
        "pd",
    ),
    OptionSpec(
        "decode_routing_policy",
        str,
        "",
        "Routing policy of the decode pool (default: --routing-policy).",
        "pd",
    ),
    OptionSpec(
        "prefill_routing_scorers",
        str,
        "",
        "Scorers of the prefill pool (default: --routing-scorers).",
        "pd",
    ),
    OptionSpec(
        "decode_routing_scorers",
        str,
        "",
        "Scorers of the decode pool (default: --routing-scorers).",
        "pd",
    ),
    OptionSpec("prefill_hardware", str, "", "GPU of the prefill pool (default: --hardware).", "pd"),
    OptionSpec("prefill_tp", int, 0, "TP of the prefill pool (default: --tp).", "pd"),
    OptionSpec("decode_hardware", str, "", "GPU of the decode pool (default: --hardware).", "pd"),
    OptionSpec("decode_tp", int, 0, "TP of the decode pool (default: --tp).", "pd"),
    OptionSpec(
        "prefill_latency_model",
        str,
        "",
        "Step-time model of the prefill pool (default: --latency-model).",
        "pd",
    ),
    OptionSpec(
        "decode_latency_model",
        str,
        "",
        "Step-time model of the decode pool (default: --latency-model).",
        "pd",
    ),
    OptionSpec(
        "prefill_max_num_running_reqs",
        int,
        0,
        "Most requests in a prefill instance's batch (default: --max-num-running-reqs).",
        "pd",
        ("prefill_max_num_seqs",),
    ),
    OptionSpec(
        "decode_max_num_running_reqs",
        int,
        0,
        "Most requests in a decode instance's batch (default: --max-num-running-reqs).",
        "pd",
        ("decode_max_num_seqs",),
    ),
    OptionSpec(
        "prefill_max_num_scheduled_tokens",
        int,
        0,
        "Token budget of a prefill instance's step (default: --max-num-scheduled-tokens).",
        "pd",
        ("prefill_max_num_batched_tokens",),
    ),
    OptionSpec(
        "decode_max_num_scheduled_tokens",
        int,
        0,
        "Token budget of a decode instance's step (default: --max-num-scheduled-tokens).",
        "pd",
        ("decode_max_num_batched_tokens",),
    ),
    OptionSpec(
        "prefill_autoscale_max",
        int,
        0,
        "Autoscale the prefill pool up to this many instances (0: fixed).",
        "pd",
    ),
    OptionSpec(
        "prefill_autoscale_min",
        int,
        0,
        "Fewest prefill instances when autoscaled (default 1).",
        "pd",
    ),
    OptionSpec(
        "prefill_autoscale_target", float, 0.0, "Target of the prefill pool's metric.", "pd"
    ),
    OptionSpec(
        "prefill_autoscale_metric",
        str,
        "",
        "Metric of the prefill pool (default: --autoscale-metric).",
        "pd",
    ),
    OptionSpec(
        "decode_autoscale_max",
        int,
        0,
        "Autoscale the decode pool up to this many instances (0: fixed).",
        "pd",
    ),
    OptionSpec(
        "decode_autoscale_min", int, 0, "Fewest decode instances when autoscaled (default 1).", "pd"
    ),
    OptionSpec("decode_autoscale_target", float, 0.0, "Target of the decode pool's metric.", "pd"),
    OptionSpec(
        "decode_autoscale_metric",
        str,
        "",
        "Metric of the decode pool (default: --autoscale-metric).",
        "pd",
    ),
    OptionSpec(
        "dual_autoscale_max",
        int,
        0,
        "Autoscale the dual-role instances (--num-instances minus the pools) up to this many (0: fixed).",
        "pd",
    ),
    OptionSpec(
        "dual_autoscale_min",
        int,
        0,
        "Fewest dual-role instances when autoscaled (default 1).",
        "pd",
    ),
    OptionSpec("dual_autoscale_target", float, 0.0, "Target of the dual-role pool's metric.", "pd"),
    OptionSpec(
        "dual_autoscale_metric",
        str,
        "",
        "Metric of the dual-role pool (default: --autoscale-metric).",
        "pd",
    ),
    # --- autoscaling (docs/autoscaling.md) -------------------------------------------
    OptionSpec(
        "autoscale_min", int, 0, "Fewest replicas the autoscaler keeps (default 1).", "autoscale"
    ),
    OptionSpec(
        "autoscale_max",
        int,
        0,
        "Most replicas; > 0 turns autoscaling on (--num-instances: replicas at start).",
        "autoscale",
    ),
    OptionSpec(
        "autoscale_metric",
        str,
        "in-flight",
        "kv-utilization, queue-depth, in-flight (per ready replica) or ttft-p90 (ms, last interval).",
        "autoscale",
    ),
    OptionSpec("autoscale_target", float, 0.0, "Target value of --autoscale-metric.", "autoscale"),
    OptionSpec(
        "autoscale_interval",
        float,
        15.0,
        "Seconds between decisions (15: the HPA sync period).",
        "autoscale",
    ),
    OptionSpec(
        "autoscale_up_window",
        float,
        0.0,
        "Scale-up stabilisation window, s (0: HPA default).",
        "autoscale",
    ),
    OptionSpec(
        "autoscale_down_window",
        float,
        300.0,
        "Scale-down stabilisation window, s (300: HPA default).",
        "autoscale",
    ),
    OptionSpec(
        "replica_startup_s",
        float,
        -1.0,
        "Seconds a new replica loads before it is routable (-1: 20 s engine start + the checkpoint's weights / --replica-load-bandwidth).",
        "autoscale",
    ),
    OptionSpec(
        "replica_load_bandwidth",
        float,
        2.0,
        "GB/s at which a replica reads its weights (default start-up).",
        "autoscale",
    ),
    OptionSpec(
        "replica_startup_cv",
        float,
        0.0,
        "Spread of the load time: each load draws a lognormal with the start-up as mean and this coefficient of variation (0: every load takes exactly the start-up).",
        "autoscale",
    ),
    OptionSpec(
        "autoscale_gpu_hour_price",
        float,
        -1.0,
        "Price of one GPU-hour for the cost figure (-1: the GPU's default).",
        "autoscale",
    ),
    # --- run control --------------------------------------------------------------------
    OptionSpec("seed", int, 42, "Run seed; every random stream derives from it.", "run"),
    OptionSpec(
        "horizon",
        int,
        NEVER,
        "Stop simulated time here: µs, or with a unit (500ms, 10s, 2m, 1h); later events never run (default: no limit).",
        "run",
    ),
    OptionSpec(
        "results_path",
        str,
        "",
        "Write the summary plus per-request records as JSON here (-: to stdout, instead of the metrics blocks).",
        "run",
    ),
    OptionSpec(
        "check_invariants",
        bool,
        False,
        "Check invariants during the run (request and KV-block conservation, causality, clock monotonicity, work conservation); the first violation stops the run (exit 1).",
        "run",
    ),
    OptionSpec(
        "exact_steps",
        bool,
        False,
        "Step engines one at a time (reference mode: same results, slower).",
        "run",
    ),
    OptionSpec(
        "timeseries_interval",
        int,
        0,
        "Sample queue depth, batch, KV use, cache hits and throughput every this many µs of simulated time (0: automatic, 200-400 samples a run).",
        "run",
    ),
    # --- decision tracing and evaluation (docs/analysis.md) ------------------------------
    OptionSpec(
        "trace_level",
        str,
        "none",
        "none, or decisions: record every admission and routing decision (time, request, chosen instance, the snapshots it saw, scores).",
        "run",
    ),
    OptionSpec(
        "trace_output",
        str,
        "",
        "Write the decision trace here: JSON lines, or Parquet when the path ends in .parquet (needs pyarrow). Needs --trace-level decisions.",
        "run",
    ),
    OptionSpec(
        "counterfactual_k",
        int,
        0,
        "Keep the top K alternatives of every routing decision and its regret (best score minus the chosen one's; load-blind policies score minus the effective load). Needs --trace-level decisions.",
        "run",
    ),
    OptionSpec(
        "summarize_trace",
        bool,
        False,
        "Print the trace summary (decisions, targets, mean and max regret). Needs --trace-level decisions.",
        "run",
    ),
    OptionSpec(
        "fitness_weights",
        str,
        "",
        "Score the run: key:weight,... over throughput, tokens_per_sec, p99_ttft, p50_ttft, mean_ttft, p99_e2e, p50_e2e, mean_e2e (normalised, higher is better; weights not normalised).",
        "run",
    ),
    OptionSpec(
        "slo",
        "texts",
        [],
        "Latency objective, as for `blis plan`: ttft_p99_ms=500, tpot_p99_ms=50, e2e_p99_ms=8000 (repeatable). Adds goodput_requests_per_sec (completed requests/s whose own TTFT, TPOT, E2E meet every bound), slo_attainment and slo_met to the summary.",
        "run",
    ),
)

BY_NAME: dict[str, OptionSpec] = {spec.name: spec for spec in OPTIONS}
#: Options whose value may be a ``file.py:Class`` plug-in (or, for scorers, a list of
#: them): the file is found relative to the config file that names it.
PLUGIN_OPTIONS = (
    "latency_model",
    "prefill_latency_model",
    "decode_latency_model",
    "admission_policy",
    "routing_policy",
    "prefill_routing_policy",
    "decode_routing_policy",
    "routing_scorers",
    "prefill_routing_scorers",
    "decode_routing_scorers",
    "priority_policy",
    "scheduler",
)

ALIASES: dict[str, str] = {a: spec.name for spec in OPTIONS for a in spec.aliases}


def canonical_name(key: str) -> str | None:
    """The canonical option name for a keyword or flag spelling, or None if unknown."""
    key = key.lstrip("-").replace("-", "_")
    if key in BY_NAME:
        return key
    return ALIASES.get(key)
