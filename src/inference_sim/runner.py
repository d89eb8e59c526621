"""Build and run one simulation from a :class:`RunPlan`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from inference_sim.catalog import WorkloadPreset
from inference_sim.cluster.simulator import ClusterSimulator, SimulationOutcome
from inference_sim.config.resolve import RunPlan
from inference_sim.engine.rng import RandomStreams
from inference_sim.instance.fast_engine import FastInstance
from inference_sim.instance.request import Request
from inference_sim.metrics.summary import build_records, build_summary
from inference_sim.policies.admission import ADMISSION_POLICIES
from inference_sim.policies.routing import ROUTING_POLICIES
from inference_sim.results import Results
from inference_sim.workload import (
    DistributionParams,
    LengthDistribution,
    iter_distribution,
    read_csv_trace,
)


def _distribution_params(plan: RunPlan) -> DistributionParams:
    o = plan.options
    kind = o["workload"]
    if kind == "distribution":
        p: WorkloadPreset | None = None
        src = o
    else:
        p = plan.catalog.preset(kind)
        src = {name: getattr(p, name) for name in p.__dataclass_fields__}
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
    if o["workload"] == "traces":
        reqs: Iterable[Request] = read_csv_trace(
            o["workload_traces_filepath"], horizon=o["horizon"]
        )
    else:
        reqs = iter_distribution(
            _distribution_params(plan),
            rate=o["rate"],
            num_requests=o["num_requests"],
            horizon=o["horizon"],
            rng=streams.generator("workload"),
        )
    return _with_default_model(reqs, o["model"])


def _with_default_model(reqs: Iterable[Request], model: str) -> Iterator[Request]:
    for r in reqs:
        if not r.model:
            r.model = model
        yield r


def build_simulator(plan: RunPlan) -> ClusterSimulator:
    o = plan.options
    instances = [
        FastInstance(i, plan.engine, plan.make_latency_model()) for i in range(o["num_instances"])
    ]
    admission_cls = ADMISSION_POLICIES[o["admission_policy"]]
    if o["admission_policy"] == "token-bucket":
        admission = admission_cls(o["token_bucket_capacity"], o["token_bucket_refill_rate"])
    else:
        admission = admission_cls()
    routing = ROUTING_POLICIES[o["routing_policy"]]()
    return ClusterSimulator(
        instances,
        admission=admission,
        routing=routing,
        admission_latency=o["admission_latency"],
        routing_latency=o["routing_latency"],
        horizon=o["horizon"],
        max_model_len=o["max_model_len"],
        check_invariants=o["check_invariants"],
    )


def collect_results(plan: RunPlan, outcome: SimulationOutcome) -> Results:
    summary = build_summary(outcome)
    summary["config"] = plan.resolved_config()
    per_instance = []
    if len(outcome.instances) > 1:
        per_instance = [
            build_summary(outcome, [inst], instance_id=inst.name) for inst in outcome.instances
        ]
    return Results(
        summary=summary, requests=build_records(outcome), instance_summaries=per_instance
    )


def run_plan(plan: RunPlan, *, progress: Callable[[int, int], None] | None = None) -> Results:
    streams = RandomStreams(plan.options["seed"])
    requests = build_requests(plan, streams)
    outcome = build_simulator(plan).run(requests, progress=progress)
    return collect_results(plan, outcome)
