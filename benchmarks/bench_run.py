"""Speed and memory of the simulator on fixed scenarios.

Usage:
    python benchmarks/bench_run.py                      # scenarios a10k a100k b c (a few minutes)
    python benchmarks/bench_run.py --only a1m           # one scenario
    python benchmarks/bench_run.py --exact-steps        # the plain stepper, for comparison

Scenarios (see docs/performance.md):
  a<N>  one instance, chatbot preset near saturation (75 req/s), N requests
  b     16 instances, weighted routing, 512-token shared prefix, 10k requests (b100k: 100k)
  c     as b with the roofline latency model (c100k: 100k)
  cal   as b with the calibrated latency model on H100 TP 1 (shared-prefix KV read once)
  pd    as b, disaggregated: 4 prefill + 12 decode instances (pd100k: 100k requests)
  s     one instance, summarization preset near saturation, 10k requests
  l     multi-LoRA: 4 instances, 8 adapters with Zipf-like popularity (lora-spec.yaml),
        --max-loras 4, adapter-affinity routing, 10k requests (docs/lora.md)
  spec  as a10k at 20 req/s with EAGLE speculative decoding (k = 3, roofline)

Each scenario runs in a fresh subprocess, so the peak RSS printed is that run's.
Wall-clock figures are printed here only; simulation results never contain them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import inference_sim.runner as runner
from inference_sim.config.resolve import resolve
opts = json.loads(sys.argv[1])
sims = []
build = runner.build_simulator
def capture(*a, **k):  # keep the simulator to read its engines' step counts
    sim = build(*a, **k)
    sims.append(sim)
    return sim
runner.build_simulator = capture
plan = resolve(opts)
t0, c0 = time.perf_counter(), time.process_time()
res = runner.run_plan(plan)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
s = res.summary
steps = sum(i.stats.step_count for sim in sims for i in sim.instances)
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_mb": peak_kb / 1024, "steps": steps,
                  "completed": s["completed_requests"], "sim_s": s["vllm_estimated_duration_s"],
                  "ttft_p99_ms": s["ttft_p99_ms"]}))
"""

_CHAT = {"model": "meta-llama/llama-3.1-8b-instruct", "workload": "chatbot", "rate": 75.0}
_SHARED_PREFIX = {
    "model": "meta-llama/llama-3.1-8b-instruct",
    "num_instances": 16,
    "routing_policy": "weighted",
    "prefix_tokens": 512,
    "prompt_tokens": 256,
    "prompt_tokens_stdev": 100,
    "prompt_tokens_min": 2,
    "prompt_tokens_max": 800,
    "output_tokens": 256,
    "output_tokens_stdev": 100,
    "output_tokens_min": 1,
    "output_tokens_max": 1024,
    "rate": 800.0,
    "num_requests": 10_000,
}

SCENARIOS: dict[str, dict[str, object]] = {
    "a10k": {**_CHAT, "num_requests": 10_000},
    "a100k": {**_CHAT, "num_requests": 100_000},
    "a1m": {**_CHAT, "num_requests": 1_000_000},
    "b": dict(_SHARED_PREFIX),
    "b100k": {**_SHARED_PREFIX, "num_requests": 100_000},
    "c": {**_SHARED_PREFIX, "latency_model": "roofline"},
    "c100k": {**_SHARED_PREFIX, "latency_model": "roofline", "num_requests": 100_000},
    # The calibrated model (the default for models without trained coefficients).
    "cal": {**_SHARED_PREFIX, "latency_model": "calibrated", "hardware": "H100", "tp": 1},
    # P/D: 4 prefill + 12 decode instances, KV pulled over 50 GB/s links (docs/disaggregation.md)
    "pd": {**_SHARED_PREFIX, "prefill_instances": 4, "decode_instances": 12},
    "pd100k": {
        **_SHARED_PREFIX,
        "prefill_instances": 4,
        "decode_instances": 12,
        "num_requests": 100_000,
    },
    "s": {
        "model": "meta-llama/llama-3.1-8b-instruct",
        "workload": "summarization",
        "rate": 10.0,
        "num_requests": 10_000,
    },
    # Speculative decoding (docs/speculative-decoding.md): the plain stepper, 1 + k tokens
    # per decoder; not in DEFAULT, run it with --only spec.
    "spec": {
        **_CHAT,
        "rate": 20.0,
        "num_requests": 10_000,
        "latency_model": "roofline",
        "speculative_method": "eagle",
        "num_speculative_tokens": 3,
    },
}
SCENARIOS["l"] = {
    "model": "meta-llama/llama-3.1-8b-instruct",
    "workload_spec": os.path.join(os.path.dirname(os.path.abspath(__file__)), "lora-spec.yaml"),
    "num_requests": 10_000,
    "num_instances": 4,
    "max_loras": 4,
    "max_cpu_loras": 8,
    "routing_policy": "weighted",
    "routing_scorers": "adapter-affinity:2,queue-depth:2,kv-utilization:1",
}
DEFAULT = ["a10k", "a100k", "b", "c", "s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), default=DEFAULT)
    ap.add_argument("--exact-steps", action="store_true", help="use the plain stepper")
    args = ap.parse_args()
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    env["PYTHONPATH"] = os.path.abspath(src) + os.pathsep + env.get("PYTHONPATH", "")
    print(
        f"{'scenario':>9} {'requests':>9} {'wall_s':>8} {'cpu_s':>7} {'req/s':>9} "
        f"{'steps/s':>9} {'peak_MB':>8} {'sim_s':>9} {'ttft_p99_ms':>11}"
    )
    for name in args.only:
        opts = dict(SCENARIOS[name])
        if args.exact_steps:
            opts["exact_steps"] = True
        out = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(opts)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        n = int(opts["num_requests"])  # type: ignore[call-overload]
        print(
            f"{name:>9} {n:>9} {r['wall_s']:>8.2f} {r['cpu_s']:>7.2f} {n / r['wall_s']:>9,.0f} "
            f"{r['steps'] / r['wall_s']:>9,.0f} {r['peak_mb']:>8.0f} {r['sim_s']:>9.1f} "
            f"{r['ttft_p99_ms']:>11.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
