"""Wiring for one run: option checks, the decision hook, summary keys and stdout blocks.

The runner creates a :class:`RunAnalysis` from the resolved options, installs
:meth:`RunAnalysis.hook` as the cluster's ``decision_hook`` and, after the run, appends
:meth:`RunAnalysis.summary_keys` to the cluster summary (after every other key except
``config``):

======================  ==============================================================
``fitness_score``       with ``--fitness-weights``: the weighted score
``fitness_components``  with ``--fitness-weights``: ``{key: normalised value}``
``slo_distributions``   2+ SLO classes: per class, TTFT and E2E statistics in ms
``tenant_metrics``      requests carry tenant ids: per tenant counts and throughput
``jain_fairness_index`` requests carry tenant ids: Jain's index over tenant throughput
``mean_regret``         with ``--trace-level decisions``: mean routing regret
``max_regret``          with ``--trace-level decisions``: largest routing regret
``trace_summary``       with ``--trace-level decisions``: the trace summary as data
======================  ==============================================================

Nested keys are left out of the stdout metrics JSON (they have their own blocks).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from inference_sim.analysis.fairness import (
    fairness_block,
    jain_index,
    slo_distributions,
    tenant_metrics,
)
from inference_sim.analysis.fitness import (
    Distribution,
    FitnessError,
    RawMetrics,
    evaluate_fitness,
    fitness_block,
    parse_fitness_weights,
)
from inference_sim.analysis.trace import TRACE_LEVELS, DecisionTrace
from inference_sim.core.errors import ConfigError

_logger = logging.getLogger("inference_sim")

#: Summary keys holding nested data: results file and ``Results.summary`` only.


class AnalysisOptionError(ConfigError):
    """A bad tracing / fitness option (one line naming the flag)."""


def check_analysis_options(options: Mapping[str, Any]) -> None:
    """Validate the tracing and fitness options before a run; log the reference's warnings.

    Raises :class:`AnalysisOptionError` (a ConfigError) naming the flag.
    """
    level = options.get("trace_level", "none")
    if level == "":
        level = "none"
    if level not in TRACE_LEVELS:
        raise AnalysisOptionError(
            f"--trace-level: unknown level {level!r}; valid: {', '.join(TRACE_LEVELS)}"
        )
    k = options.get("counterfactual_k", 0)
    if k < 0:
        raise AnalysisOptionError(f"--counterfactual-k must be >= 0, got {k}")
    weights = options.get("fitness_weights", "")
    if weights:
        try:
            parse_fitness_weights(weights)
        except FitnessError as exc:
            raise AnalysisOptionError(f"--fitness-weights: {exc}") from None
    out = options.get("trace_output", "")
    tracing = level == "decisions"
    if not tracing:
        if k > 0:
            _logger.warning(
                "--counterfactual-k=%d has no effect without --trace-level decisions", k
            )
        if options.get("summarize_trace"):
            _logger.warning("--summarize-trace has no effect without --trace-level decisions")
        if out:
            _logger.warning("--trace-output has no effect without --trace-level decisions")
        return
    if not options.get("summarize_trace"):
        _logger.info(
            "Decision tracing enabled (trace-level=%s). Use --summarize-trace to print summary.",
            level,
        )
    if out:
        from inference_sim.core.extras import have
        from inference_sim.core.outfiles import OutputPathError, check_output_file

        if str(out).lower().endswith(".parquet") and not have("pyarrow"):
            raise AnalysisOptionError(
                f"--trace-output {out}: Parquet needs pyarrow "
                "(pip install 'inference-sim[data]'), or give a .jsonl path"
            )
        try:
            check_output_file(out)
        except OutputPathError as exc:
            raise AnalysisOptionError(f"--trace-output {out}: cannot write: {exc}") from None


class RunAnalysis:
    """Decision trace, admission rejections per tenant, and the summary keys of one run."""

    def __init__(self, options: Mapping[str, Any], instance_ids: Sequence[str]) -> None:
        self.tracing = options.get("trace_level", "none") == "decisions"
        self.trace: DecisionTrace | None = (
            DecisionTrace(
                instance_ids,
                options.get("counterfactual_k", 0),
                routing_policy=str(options.get("routing_policy", "")),
            )
            if self.tracing
            else None
        )
        text = options.get("fitness_weights", "")
        self.weights: dict[str, float] | None = parse_fitness_weights(text) if text else None
        self.trace_output: str = options.get("trace_output", "") if self.tracing else ""
        #: Admission rejections per tenant id ("" for requests without one).
        self.rejected_by_tenant: dict[str, int] = {}
        self.any_tenant = False

    def hook(self, kind: str, request: Any, state: Any, decision: Any) -> None:
        """The cluster's ``decision_hook``."""
        if kind == "admission":
            admitted = decision[0] if isinstance(decision, tuple) else decision
            if not admitted:
                tenant = request.tenant_id
                if tenant:
                    self.any_tenant = True
                self.rejected_by_tenant[tenant] = self.rejected_by_tenant.get(tenant, 0) + 1
        if self.trace is not None:
            self.trace.hook(kind, request, state, decision)

    def summary_keys(self, outcome: Any, summary: Mapping[str, Any]) -> dict[str, Any]:
        """The keys this run appends to the cluster summary (see the module docstring)."""
        log = outcome.log
        rows = log.rows_for(None)
        out: dict[str, Any] = {}
        if self.weights is not None:
            ttft = np.frombuffer(log.ttft, dtype=np.int64)[rows]
            e2e = np.frombuffer(log.e2e, dtype=np.int64)[rows]
            metrics = RawMetrics(
                ttft=Distribution.of(ttft[ttft >= 0].tolist()),
                e2e=Distribution.of(e2e[e2e >= 0].tolist()),
                requests_per_sec=float(summary.get("responses_per_sec", 0.0)),
                tokens_per_sec=float(summary.get("tokens_per_sec", 0.0)),
            )
            result = evaluate_fitness(metrics, self.weights)
            out["fitness_score"] = result.score
            out["fitness_components"] = result.components
        per_slo = slo_distributions(log, rows)
        if len(per_slo) >= 2:
            out["slo_distributions"] = per_slo
        dropped: dict[str, int] = {}
        for inst in outcome.instances:
            for tenant, n in inst.stats.dropped_by_tenant.items():
                dropped[tenant] = dropped.get(tenant, 0) + n
        if self.any_tenant or log.tenant_id or any(dropped):
            tenants = tenant_metrics(
                log,
                rows,
                float(summary.get("vllm_estimated_duration_s", 0.0)),
                self.rejected_by_tenant,
                dropped,
            )
            out["tenant_metrics"] = tenants
            out["jain_fairness_index"] = jain_index(
                {t: m["throughput_rps"] for t, m in tenants.items()}
            )
        if self.trace is not None:
            ts = self.trace.summary()
            out["mean_regret"] = ts["mean_regret"]
            out["max_regret"] = ts["max_regret"]
            out["trace_summary"] = ts
        return out

    def write_trace(self) -> None:
        """Write ``--trace-output`` (when tracing and a path was given)."""
        if self.trace is not None and self.trace_output:
            self.trace.write(os.fspath(self.trace_output))


# --- stdout blocks (read from a summary, so a loaded results file prints the same) ------


def fitness_section(summary: Mapping[str, Any]) -> str:
    if "fitness_score" not in summary:
        return ""
    return fitness_block(float(summary["fitness_score"]), summary.get("fitness_components") or {})


def fairness_section(summary: Mapping[str, Any]) -> str:
    tenants = summary.get("tenant_metrics") or {}
    return fairness_block(float(summary.get("jain_fairness_index", 0.0)), tenants)


def trace_section(summary: Mapping[str, Any]) -> str:
    """The reference's ``=== Trace Summary ===`` (tracing on and ``--summarize-trace``)."""
    ts = summary.get("trace_summary")
    config = summary.get("config") or {}
    if not ts or not config.get("summarize_trace"):
        return ""
    return trace_summary_block(ts)


def trace_summary_block(ts: Mapping[str, Any]) -> str:
    lines = [
        "=== Trace Summary ===",
        f"Total Decisions: {int(ts.get('total_decisions', 0))}",
        f"  Admitted: {int(ts.get('admitted_count', 0))}",
        f"  Rejected: {int(ts.get('rejected_count', 0))}",
        f"Unique Targets: {int(ts.get('unique_targets', 0))}",
    ]
    dist = ts.get("target_distribution") or {}
    if dist:
        lines.append("Target Distribution:")
        lines += [f"  {name}: {int(dist[name])}" for name in sorted(dist)]
    lines.append(f"Mean Regret: {float(ts.get('mean_regret', 0.0)):.6f}")
    lines.append(f"Max Regret: {float(ts.get('max_regret', 0.0)):.6f}")
    return "\n".join(lines) + "\n"
