"""Compare round-robin with the custom LeastWork policy on p99 TTFT.

    python examples/compare_routing.py

Four replicas of Llama-3.1-8B (H100, TP 2, trained coefficients) with at most 8
running requests each, fed 8 requests/s: busy enough that requests queue. Round-robin
keeps sending work to replicas whose batch is full; LeastWork does not.
"""

from __future__ import annotations

from pathlib import Path

from inference_sim import simulate

HERE = Path(__file__).resolve().parent
SCENARIO = {
    "model": "meta-llama/llama-3.1-8b-instruct",
    "num_instances": 4,
    "max_num_running_reqs": 8,
    "rate": 8,
    "num_requests": 400,
    "seed": 7,
}
POLICIES = {
    "round-robin": "round-robin",
    "LeastWork (custom)": f"{HERE / 'custom_routing.py'}:LeastWork",
}


def compare(**overrides: object) -> dict[str, dict[str, float]]:
    """p99 and mean TTFT (ms) per policy for the scenario (with ``overrides``)."""
    out = {}
    for label, policy in POLICIES.items():
        s = simulate(**{**SCENARIO, **overrides, "routing_policy": policy}).summary
        out[label] = {"ttft_p99_ms": s["ttft_p99_ms"], "ttft_mean_ms": s["ttft_mean_ms"]}
    return out


if __name__ == "__main__":
    for label, m in compare().items():
        print(f"{label:20s} p99 TTFT {m['ttft_p99_ms']:9.1f} ms   mean {m['ttft_mean_ms']:8.1f} ms")
