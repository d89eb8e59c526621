"""inference-sim: a deterministic discrete-event simulator of LLM inference serving.

Quick use from Python::

    from inference_sim import simulate
    res = simulate(model="meta-llama/llama-3.1-8b-instruct", workload="chatbot",
                   rate=10, num_requests=200)
    res.summary["ttft_p99_ms"], res.records[0]
    res.requests        # pandas DataFrame (with the `data` extra), else the records
    res.timeseries      # queue depth, batch, KV use, cache hits, throughput over time

Every keyword is a ``blis run`` flag name with underscores; the vLLM-style
spellings (``max_num_seqs``, ``max_num_batched_tokens``, ``block_size``,
``num_gpu_blocks``, ``tensor_parallel_size``) are accepted too. ``config="run.yaml"``
reads options from a file (keywords win).
"""

from __future__ import annotations

import itertools
from typing import Any

from inference_sim.core.version import __version__


def simulate(**options: Any) -> Results:
    """Run one simulation and return its :class:`Results`.

    Raises :class:`ConfigError` (or a ``WorkloadError``, both ``ValueError``) with a
    one-line message for bad input.
    """
    from inference_sim.config.outputs import check_run_outputs
    from inference_sim.config.resolve import resolve
    from inference_sim.runner import run_plan

    plan = resolve(options)
    results_path = plan.options["results_path"]
    check_run_outputs(plan.options, options.get("config"))  # before the run, as blis run
    results = run_plan(plan)
    if results_path:
        results.write_json(results_path)
    return results


def _started_as_blis() -> bool:
    """True when this process is the ``blis`` command (console script or ``-m``)."""
    import os
    import sys

    argv = getattr(sys, "orig_argv", sys.argv)
    as_module = any(a == "-m" and b == "inference_sim" for a, b in itertools.pairwise(argv))
    return as_module or os.path.basename(sys.argv[0] if sys.argv else "") == "blis"


try:
    from inference_sim.config.errors import ConfigError
    from inference_sim.results import Results
except KeyboardInterrupt:
    # Ctrl-C while ``blis`` is still importing (numpy, the catalog: ~0.3 s): one line
    # and exit 130, as later in start-up, not a traceback. A library import re-raises.
    if not _started_as_blis():
        raise
    import sys

    sys.stderr.write("Error: interrupted\n")
    raise SystemExit(130) from None

__all__ = ["ConfigError", "Results", "__version__", "simulate"]
