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
reads options from a file (keywords win); ``simulate(SimConfig(...))`` takes the typed
model; ``simulate(res.config, hardware=...)`` repeats a run as ``config="results.json"``
does; ``workload_spec={...}`` a spec as a dict; ``trace=df`` a DataFrame of lengths.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from inference_sim.core.version import __version__

if TYPE_CHECKING:  # imported on first use at run time (see __getattr__)
    from inference_sim.config.model import SimConfig
    from inference_sim.replicates import Replicates


def simulate(
    run_config: SimConfig | Mapping[str, Any] | None = None,
    /,
    *,
    trace: Any = None,
    **options: Any,
) -> Results:
    """Run one simulation and return its :class:`Results`.

    ``run_config`` (optional, positional) is a :class:`SimConfig` or a mapping of
    options; keywords given here win over it. A results file's ``config`` (a previous
    run's ``res.config``, which records ``package_version``) repeats that run exactly as
    ``config="results.json"`` does: the figures the run derived for its own deployment
    (coefficients, KV blocks) are derived again, so ``simulate(res.config,
    hardware="A100-80")`` prices the A100. ``workload_spec`` may be a path or the
    spec itself as a dict; ``trace`` a pandas DataFrame (or a list of dicts) of request
    lengths, replayed as a length trace (docs/workloads.md; a previous run's
    ``res.requests`` works). ``results_path`` writes the results file; ``"-"`` prints
    it on stdout, as ``blis run --results-path -``. Raises :class:`ConfigError` (or a
    ``WorkloadError``, both ``ValueError``) with a one-line message for bad input.
    """
    from inference_sim.config.outputs import check_run_outputs
    from inference_sim.config.resolve import resolve
    from inference_sim.runner import run_plan

    if run_config is not None:
        options = _merged(run_config, options)
    if trace is not None:
        if "workload_traces_filepath" in options:
            raise ConfigError("give either trace= or workload_traces_filepath=, not both")
        options["workload_traces_filepath"] = trace
    plan = resolve(options)
    results_path = plan.options["results_path"]
    # Before the run, as blis run; "-" is stdout there and here, not a file named "-".
    to_file = {**plan.options, "results_path": "" if results_path == "-" else results_path}
    check_run_outputs(to_file, options.get("config"))
    results = run_plan(plan)
    if results_path:
        results.write_json(results_path)  # "-": the results document on stdout
    return results


def _merged(run_config: Any, options: dict[str, Any]) -> dict[str, Any]:
    """``run_config``'s options (a SimConfig or a mapping) with ``options`` on top."""
    from inference_sim.config.model import SimConfig, is_results_config, merge_results_config
    from inference_sim.config.options import canonical_name

    if isinstance(run_config, SimConfig):
        base = run_config.to_options()
    elif isinstance(run_config, Mapping) and is_results_config(run_config):
        return merge_results_config(run_config, options)  # as config="results.json"
    elif isinstance(run_config, Mapping):
        base = SimConfig.from_options(run_config).to_options()
    else:
        raise ConfigError(
            f"simulate(): the positional argument must be a SimConfig or a mapping of "
            f"options, got {type(run_config).__name__}"
        )
    named = {canonical_name(k) or k for k in options}
    merged = {k: v for k, v in base.items() if k not in named}
    merged.update(options)
    return merged


def compare(runs: Any, *, metrics: Any = None, labels: Any = None) -> Any:
    """Several runs' summary metrics side by side: a DataFrame (metric x run).

    ``runs`` is a list of :class:`Results` (columns labelled by the options that differ,
    e.g. ``rate=10``) or a ``{label: Results}`` mapping; see docs/python-api.md.
    """
    from inference_sim.report.compare import compare as _compare

    return _compare(runs, metrics=metrics, labels=labels)


def replicate(
    run_config: SimConfig | Mapping[str, Any] | None = None, /, **options: Any
) -> Replicates:
    """Run once per seed (``seeds=[1, 2, 3]`` or ``replicates=N``); mean and CI per metric.

    Returns :class:`inference_sim.replicates.Replicates` (``.metrics``, ``.mean``,
    ``.table()``, ``.runs``); ``confidence=0.95`` by default. See docs/python-api.md.
    """
    from inference_sim.replicates import replicate as _replicate

    return _replicate(run_config, **options)


def __getattr__(name: str) -> Any:
    """``SimConfig`` is imported on first use (pydantic is slow to import for the CLI);
    type checkers see the real class (the ``TYPE_CHECKING`` import above)."""
    if name == "SimConfig":
        from inference_sim.config.model import SimConfig

        return SimConfig
    raise AttributeError(f"module 'inference_sim' has no attribute {name!r}")


def _started_as_blis() -> bool:
    """True when this process is the ``blis`` command (console script or ``-m``)."""
    import os
    import sys

    argv = getattr(sys, "orig_argv", sys.argv)
    as_module = any(a == "-m" and b == "inference_sim" for a, b in itertools.pairwise(argv))
    return as_module or os.path.basename(sys.argv[0] if sys.argv else "") == "blis"


try:
    from inference_sim.config.errors import ConfigError
    from inference_sim.report import notebook as _notebook  # noqa: F401  (Results views)
    from inference_sim.results import Results
except KeyboardInterrupt:
    # Ctrl-C while ``blis`` is still importing (numpy, the catalog: ~0.3 s): one line
    # and exit 130, as later in start-up, not a traceback. A library import re-raises.
    if not _started_as_blis():
        raise
    import sys

    sys.stderr.write("Error: interrupted\n")
    raise SystemExit(130) from None

__all__ = [
    "ConfigError",
    "Results",
    "SimConfig",
    "__version__",
    "compare",
    "replicate",
    "simulate",
]
