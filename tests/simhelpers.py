"""Small builders shared by the engine tests."""

from __future__ import annotations

import os
from pathlib import Path

from inference_sim.cluster.simulator import ClusterSimulator, SimulationOutcome
from inference_sim.core.request import Request
from inference_sim.engine.events import NEVER
from inference_sim.instance import make_instance
from inference_sim.instance.config import EngineConfig
from inference_sim.latency.blackbox import BlackboxLatencyModel

_next_token = [1_000_000]


def fresh_tokens(n: int) -> list[int]:
    """Token ids never used before, so prompts share no prefix."""
    start = _next_token[0]
    _next_token[0] += n
    return list(range(start, start + n))


def make_request(index: int, arrival: int, prompt: int | list[int], output: int) -> Request:
    tokens = prompt if isinstance(prompt, list) else fresh_tokens(prompt)
    return Request(index, arrival, tokens, fresh_tokens(output))


def simulate_requests(
    requests: list[Request],
    *,
    alpha: tuple[float, float, float] = (0.0, 0.0, 0.0),
    beta: tuple[float, float, float] = (1000.0, 1.0, 1.0),
    num_gpu_blocks: int = 20_000,
    block_size: int = 16,
    max_num_seqs: int = 256,
    max_num_batched_tokens: int = 2048,
    long_prefill_token_threshold: int = 0,
    num_instances: int = 1,
    horizon: int = NEVER,
    check_invariants: bool = True,
    exact_steps: bool = False,
    enable_prefix_caching: bool = True,
) -> SimulationOutcome:
    cfg = EngineConfig(
        num_gpu_blocks=num_gpu_blocks,
        block_size=block_size,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        long_prefill_token_threshold=long_prefill_token_threshold,
        exact_steps=exact_steps,
        enable_prefix_caching=enable_prefix_caching,
    )
    instances = [
        make_instance(i, cfg, BlackboxLatencyModel(alpha, beta)) for i in range(num_instances)
    ]
    sim = ClusterSimulator(instances, horizon=horizon, check_invariants=check_invariants)
    return sim.run(requests)


def shared_dir() -> Path | None:
    """The shared reference data (``../shared`` next to the repository, or
    ``$INFERENCE_SIM_SHARED``), or None: tests that need it skip cleanly without it."""
    candidates = [Path(__file__).resolve().parents[2] / "shared"]
    env = os.environ.get("INFERENCE_SIM_SHARED")
    if env:
        candidates.append(Path(env))
    for cand in candidates:
        if (cand / "reference-data" / "testdata" / "goldendataset.json").is_file():
            return cand
    return None
