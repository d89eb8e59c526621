"""Speed and memory of the simulator on fixed scenarios.

Usage:
    python benchmarks/bench_run.py                      # scenarios a10k a100k b c (a few minutes)
    python benchmarks/bench_run.py --only a1m           # one scenario
    python benchmarks/bench_run.py --exact-steps        # the plain stepper, for comparison

Scenarios (see docs/performance.md):
  a<N>  one instance, chatbot preset near saturation (75 req/s), N requests
  b     16 instances, weighted routing, 512-token shared prefix, 10k requests
  c     as b with the roofline latency model
  s     one instance, summarization preset near saturation, 10k requests

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
from inference_sim.config.resolve import resolve
from inference_sim.runner import run_plan
opts = json.loads(sys.argv[1])
t0 = time.perf_counter()
res = run_plan(resolve(opts))
wall = time.perf_counter() - t0
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
s = res.summary
print(json.dumps({"wall_s": wall, "peak_mb": peak_kb / 1024, "completed": s["completed_requests"],
                  "sim_s": s["vllm_estimated_duration_s"], "ttft_p99_ms": s["ttft_p99_ms"]}))
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
    "c": {**_SHARED_PREFIX, "latency_model": "roofline"},
    "s": {
        "model": "meta-llama/llama-3.1-8b-instruct",
        "workload": "summarization",
        "rate": 10.0,
        "num_requests": 10_000,
    },
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
        f"{'scenario':>9} {'requests':>9} {'wall_s':>8} {'req/s':>9} {'peak_MB':>8} "
        f"{'sim_s':>9} {'ttft_p99_ms':>11}"
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
            f"{name:>9} {n:>9} {r['wall_s']:>8.2f} {n / r['wall_s']:>9,.0f} "
            f"{r['peak_mb']:>8.0f} {r['sim_s']:>9.1f} {r['ttft_p99_ms']:>11.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
