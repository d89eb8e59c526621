"""Time `blis run` on the chatbot preset near saturation; print requests/s and peak memory.

Usage:  python benchmarks/bench_run.py [--requests 10000 100000] [--rate 60]

Each size runs in a fresh subprocess so peak RSS is per run. Wall-clock numbers
go to stdout here (this is a benchmark, not a simulation result).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, resource, sys, time
from inference_sim.config.resolve import resolve
from inference_sim.runner import run_plan
opts = json.loads(sys.argv[1])
t0 = time.perf_counter()
plan = resolve(opts)
res = run_plan(plan)
wall = time.perf_counter() - t0
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"wall_s": wall, "peak_mb": peak_kb / 1024,
                  "completed": res.summary["completed_requests"],
                  "sim_duration_s": res.summary["vllm_estimated_duration_s"],
                  "ttft_p99_ms": res.summary["ttft_p99_ms"]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--rate", type=float, default=60.0, help="req/s; ~saturation for the default model")
    ap.add_argument("--model", default="meta-llama/llama-3.1-8b-instruct")
    args = ap.parse_args()
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    env["PYTHONPATH"] = os.path.abspath(src) + os.pathsep + env.get("PYTHONPATH", "")
    print(f"{'requests':>10} {'wall_s':>8} {'req/s':>10} {'peak_MB':>8} {'sim_s':>9} {'ttft_p99_ms':>11}")
    for n in args.requests:
        opts = {"model": args.model, "workload": "chatbot", "rate": args.rate, "num_requests": n}
        out = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(opts)],
            capture_output=True, text=True, env=env, check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{n:>10} {r['wall_s']:>8.2f} {n / r['wall_s']:>10,.0f} {r['peak_mb']:>8.0f} "
            f"{r['sim_duration_s']:>9.1f} {r['ttft_p99_ms']:>11.1f}"
        )


if __name__ == "__main__":
    main()
