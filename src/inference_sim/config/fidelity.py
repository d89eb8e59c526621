"""The ``fidelity`` record of a resolved run (:mod:`inference_sim.latency.fidelity`),
for a disaggregated run from both pools: where the run sits relative to the calibrated
model's training data and the error to expect there."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inference_sim.latency.fidelity import combine_pools, run_fidelity, scope_caveats

if TYPE_CHECKING:
    from inference_sim.config.resolve import RunPlan

__all__ = ["plan_fidelity"]


def _deployment(plan: RunPlan) -> dict[str, Any] | None:
    o = plan.options
    gpu = plan.gpu_spec.name if plan.gpu_spec is not None else ""
    return run_fidelity(
        plan.latency_model, o["model"], plan.architecture, gpu, o["tp"], o["latency_coeffs"]
    )


def plan_fidelity(plan: RunPlan, mean_prompt_tokens: float = 0.0) -> dict[str, Any] | None:
    """The run's fidelity record (None unless a deployment runs the calibrated model).

    A P/D run whose pools have their own GPU, TP or latency model gets TTFT from the
    prefill pool's domain and TPOT from the decode pool's (``combine_pools``).
    ``mean_prompt_tokens`` (0: unknown before the run) flags prompts longer than any
    training context."""
    fid = _deployment(plan)
    if plan.pools:
        pre = plan.pools.get("prefill", plan)
        dec = plan.pools.get("decode", plan)
        fid = combine_pools(
            _deployment(pre), _deployment(dec), pre.latency_model, dec.latency_model
        )
    if fid is not None:
        scope_caveats(fid, plan.options, mean_prompt_tokens)
    return fid
