"""Build and run one simulation from a :class:`RunPlan`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from inference_sim.analysis.run import RunAnalysis
from inference_sim.cluster.simulator import ClusterSimulator, SimulationOutcome
from inference_sim.config.autoscale import (
    autoscale_enabled,
    autoscale_section,
    build_autoscale_simulator,
    pool_autoscale_enabled,
    pool_autoscale_section,
)
from inference_sim.config.errors import ConfigError
from inference_sim.config.fidelity import plan_fidelity
from inference_sim.config.pd import build_pd_simulator, pd_enabled, pd_result_parts
from inference_sim.config.policies import build_policies
from inference_sim.config.resolve import RunPlan
from inference_sim.core.request import Request
from inference_sim.core.rng import RandomStreams
from inference_sim.instance import make_instance
from inference_sim.instance.lora import share_adapter_ranks
from inference_sim.interrupts import RunSignals
from inference_sim.latency.fidelity import log_line as fidelity_log_line
from inference_sim.metrics.goodput import goodput_keys
from inference_sim.metrics.lora import lora_section
from inference_sim.metrics.slo import parse_slos
from inference_sim.metrics.summary import (
    build_stage_summaries,
    build_summary,
    pd_record_view,
    record_view,
    stage_groups,
)
from inference_sim.metrics.timeseries import TimeseriesSampler
from inference_sim.results import Results
from inference_sim.workload import (
    DistributionParams,
    LengthDistribution,
    iter_distribution,
)
from inference_sim.workload.plan import export_writer, spec_or_trace_requests

log = logging.getLogger("inference_sim")


def _distribution_params(plan: RunPlan) -> DistributionParams:
    """Length parameters from the options (a preset's were folded in by ``resolve``)."""
    src = plan.options
    return DistributionParams(
        prefix_tokens=src["prefix_tokens"],
        prompt=LengthDistribution(
            src["prompt_tokens"],
            src["prompt_tokens_stdev"],
            src["prompt_tokens_min"],
            src["prompt_tokens_max"],
        ),
        output=LengthDistribution(
            src["output_tokens"],
            src["output_tokens_stdev"],
            src["output_tokens_min"],
            src["output_tokens_max"],
        ),
    )


def build_requests(plan: RunPlan, streams: RandomStreams) -> Iterable[Request]:
    """The request stream the options describe (WorkloadError on bad input, raised now)."""
    o = plan.options
    reqs: Iterable[Request] | None = spec_or_trace_requests(
        o, plan.workload_spec, streams, plan.inline_trace
    )
    if reqs is None:
        reqs = iter_distribution(
            _distribution_params(plan),
            rate=o["rate"],
            num_requests=o["num_requests"],
            horizon=o["horizon"],
            rng=streams.generator("workload"),
            arrival=o["arrival"],
            burstiness=o["burstiness"],
            arrival_rng=streams.generator("arrival"),
        )
    stages = plan_stages(plan)
    if stages:
        reqs = stage_groups(reqs, stages)  # one ITL histogram per stage
    return _checked_labels(reqs, o["model"], plan.engine.lora is not None)


def plan_stages(plan: RunPlan) -> list[tuple[int, int, float]]:
    """The workload spec's load stages as ``(start_us, end_us, rate)`` (none: [])."""
    spec = plan.workload_spec
    if spec is None or not spec.stages:
        return []
    return [(st.start_us, st.end_us, st.rate) for st in spec.stages]


def _checked_labels(reqs: Iterable[Request], model: str, lora: bool = True) -> Iterator[Request]:
    """``reqs`` with a request's model label kept only where it says something: a label
    naming the run's own model is cleared, so per-request records carry ``model`` only
    for a workload that names another one (a spec client's ``model``), as the
    reference's records do (cli.md 8.4, 8.7: none in a plain run). A trace v2 exported
    before stamped the run's model on every row; replaying it gives the same records.
    LoRA adapters travel in ``Request.adapter``, not here."""
    own = model.strip().lower()
    for r in reqs:
        if r.model and r.model.strip().lower() == own:
            r.model = ""
        if r.adapter and not lora:
            raise ConfigError(
                f"{r.request_id} names LoRA adapter {r.adapter!r} but LoRA is off; give "
                "--max-loras N (or --lora-adapters / a lora: block), see docs/lora.md"
            )
        yield r


def build_simulator(plan: RunPlan) -> ClusterSimulator:
    o = plan.options
    if pd_enabled(o):
        return build_pd_simulator(plan)
    if autoscale_enabled(o):
        return build_autoscale_simulator(plan)
    n = o["num_instances"]
    policies = build_policies(o, n, plan.engine.block_size)
    instances = [
        make_instance(
            i,
            plan.engine,
            plan.make_latency_model(),
            order_wait_queue=policies.wait_queue_hooks[i],
        )
        for i in range(n)
    ]
    share_adapter_ranks(instances)  # one adapter, one rank cluster-wide (docs/lora.md)
    return ClusterSimulator(
        instances,
        routing=policies.routing,
        **policies.cluster_arguments(o),
    )


def collect_results(
    plan: RunPlan,
    outcome: SimulationOutcome,
    timeseries: dict[str, Any] | None = None,
    analysis: RunAnalysis | None = None,
) -> Results:
    summary = build_summary(outcome)
    if outcome.interrupted:
        summary["interrupted"] = True  # partial results: the run was stopped early
    # Which latency model ran and why (a fallback from trained coefficients shows here).
    summary["latency_model"] = plan.latency_model
    summary["latency_model_reason"] = plan.latency_reason
    summary.update(goodput_keys(outcome, parse_slos(plan.options.get("slo") or []), summary))
    stages = plan_stages(plan)
    if stages:
        summary["stages"] = build_stage_summaries(outcome, stages)
    if analysis is None:
        analysis = RunAnalysis(plan.options, [inst.name for inst in outcome.instances])
    # Fitness, per-SLO distributions, tenant fairness, regret (analysis/run.py).
    summary.update(analysis.summary_keys(outcome, summary))
    entered = summary.get("injected_requests") or 0
    mean_prompt = summary.get("total_input_tokens", 0) / entered if entered else 0.0
    fidelity = plan_fidelity(plan, mean_prompt)
    if fidelity is not None:  # how far from the calibration data (docs/calibration.md)
        summary["fidelity"] = fidelity
        if fidelity != plan_fidelity(plan):
            # the start-up line could not know the prompts: say what the workload changed
            # (a lower bound, a caveat), so the log agrees with the results file
            log.info("%s (revised with the workload's prompts)", fidelity_log_line(fidelity))
    if plan.engine.lora is not None:  # multi-LoRA serving (docs/lora.md)
        summary["lora"] = lora_section(outcome.instances, outcome.end_time)
    summary["config"] = plan.resolved_config()
    per_instance = []
    if len(outcome.instances) > 1:
        per_instance = [
            build_summary(outcome, [inst], instance_id=inst.name) for inst in outcome.instances
        ]
    results = Results(
        summary=summary,
        requests=record_view(outcome),  # records are built when read (bounded memory)
        instance_summaries=per_instance,
        timeseries=timeseries,
    )
    results.decision_trace = analysis.trace
    return results


def expected_requests(plan: RunPlan) -> int | None:
    """How many requests the workload will generate, when known before the run."""
    o = plan.options
    if plan.workload_spec is not None or o["workload"] == "traces":
        return None
    return int(o["num_requests"]) or None


_STOP_CHECK = 10_000  # events between two looks at a stop request (Ctrl-C)


@contextlib.contextmanager
def _stop_on_sigint(sim: ClusterSimulator) -> Iterator[None]:
    """While the block runs, a first SIGINT or SIGTERM asks ``sim`` to stop; a second
    one aborts (:class:`inference_sim.interrupts.RunSignals`)."""
    with RunSignals() as signals:
        signals.start_run()
        signals.attach(sim)
        yield


def run_plan(
    plan: RunPlan,
    *,
    progress: Callable[[int, int], None] | None = None,
    timeseries: bool = True,
    interruptible: bool = False,
    signals: RunSignals | None = None,
) -> Results:
    """Run ``plan``. ``progress(events, simulated_time_us)`` is called now and then; an
    object with an ``attach(instances, expected_requests)`` method (such as
    :class:`inference_sim.report.progress.ProgressBar`) is told the instances first.
    ``timeseries=False`` skips the time-series sampler.

    ``interruptible=True`` (``blis run``): a first SIGINT (Ctrl-C) during the simulation
    stops it between two events and the results of the run so far are returned, with
    ``"interrupted": true`` in the summary; a second one raises KeyboardInterrupt at once.
    Otherwise (sweeps, the Python API) SIGINT raises KeyboardInterrupt as usual, so an
    interrupted run is never taken for a finished one.

    ``signals`` (``blis run``): handlers installed by the caller for the whole command,
    so a first signal after the simulation (while the results are collected and
    written) is kept too; :mod:`inference_sim.interrupts` has the rules."""
    if signals is not None:
        signals.start_run()  # from here on, a first signal keeps the results
    streams = RandomStreams(plan.options["seed"])
    requests = build_requests(plan, streams)
    writer = export_writer(plan.options)  # --export-trace: rows written as requests are read
    try:
        if writer is not None:
            requests = writer.tee(requests)
        sim = build_simulator(plan)
        analysis = RunAnalysis(plan.options, [inst.name for inst in sim.instances])
        if sim.decision_hook is None:
            sim.decision_hook = analysis.hook
        sampler = None
        if timeseries:
            try:
                sampler = TimeseriesSampler(
                    sim.instances,
                    plan.options.get("timeseries_interval", 0),
                    getattr(sim, "exists", None),
                )
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        run_kw: dict[str, Any] = {"progress": progress, "sampler": sampler}
        attach = getattr(progress, "attach", None)
        if attach is not None:
            attach(sim.instances, expected_requests(plan))
            run_kw["progress_every"] = getattr(progress, "every_events", 200_000)
        if interruptible or signals is not None:
            run_kw["progress_every"] = min(run_kw.get("progress_every", _STOP_CHECK), _STOP_CHECK)
        if signals is not None:
            signals.attach(sim)
            guard: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        elif interruptible:
            guard = _stop_on_sigint(sim)
        else:
            guard = contextlib.nullcontext()
        with guard:
            outcome = sim.run(requests, **run_kw)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        if outcome.interrupted:  # what was read so far: say so in the file and the log
            writer.note = (
                f"partial: the run was interrupted; {writer.count} requests exported, those "
                f"read by {outcome.end_time / 1e6:g} s of simulated time"
            )
            log.warning("--export-trace %s: %s", writer.data_path, writer.note)
        writer.close()
    table = None
    if sampler is not None:
        sampler.finish(outcome.end_time)
        table = sampler.table()
    results = collect_results(plan, outcome, table, analysis)
    if pd_enabled(plan.options):  # the `pd` section and per-request P/D fields
        section, fields = pd_result_parts(sim, outcome, plan)
        results.summary["pd"] = section
        results.requests = pd_record_view(outcome, fields)
    if autoscale_enabled(plan.options):  # replicas over time, events, GPU-hours, cost
        results.summary["autoscaling"] = autoscale_section(sim, plan)
    elif pd_enabled(plan.options) and pool_autoscale_enabled(plan.options):
        results.summary["autoscaling"] = pool_autoscale_section(sim, plan)
    analysis.write_trace()  # --trace-output (written atomically)
    return results
