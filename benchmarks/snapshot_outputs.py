"""Per-request outputs of the benchmark scenarios, for byte-for-byte refactor checks.

Usage:
    python benchmarks/snapshot_outputs.py OUT_DIR [--only a10k b c s ...]

Writes ``OUT_DIR/<scenario>.json`` (the whole results document: summary, per-request
records, resolved config) and prints one SHA-256 per scenario. Run it before and after a
change that must not alter results and compare the digests (or ``cmp`` the files).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_run import SCENARIOS

from inference_sim.config.resolve import resolve
from inference_sim.runner import run_plan

DEFAULT = ["a10k", "b", "c", "s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), default=DEFAULT)
    ap.add_argument("--exact-steps", action="store_true", help="use the plain stepper")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for name in args.only:
        opts = dict(SCENARIOS[name])
        if args.exact_steps:
            opts["exact_steps"] = True
        res = run_plan(resolve(opts))
        path = os.path.join(args.out_dir, f"{name}.json")
        res.write_json(path)
        with open(path, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
        print(f"{name:>6} {len(res.records):>8} requests  sha256 {digest}", flush=True)


if __name__ == "__main__":
    main()
