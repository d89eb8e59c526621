"""Capacity planning: the fewest instances of each deployment that meet the SLOs.

For every candidate deployment (model, GPU, TP) the planner searches the instance
count N in ``1..max_instances`` for the smallest N whose run at the target rate meets
every objective (see :mod:`inference_sim.planning.slo`), assuming that adding instances
never hurts: first ``max_instances`` (a deployment that cannot meet the SLOs at all is
known after one probe), then bisection of the counts still in doubt. With fixed pools
(``--prefill-instances``/``--decode-instances``) the instances beyond them are
dual-role, which can make the metrics worse, so there the counts are tried upward from
the pools' sum, each once, and the first that meets is the answer.

Then, for the chosen N, the saturation rate -- the highest request rate that still
meets the SLOs -- is found over the rate: doubling from the target rate until a run
fails (at most 2^10 times the target), then bisecting the interval until it is within
``rate_tolerance`` (relative). ``num_requests`` grows with the rate so that every probe
offers load for the same time window.

That schedule (:class:`_Schedule`) is fixed: the probes, their order and the answer are
the same for every number of parallel slots (``--jobs``), as the project's determinism
rule asks. All candidates advance in lock-step, one probe each per step; slots left
over run, ahead of time, the probes the schedule would test next whichever way the
pending ones turn out (:func:`_look_ahead`), so more slots mean fewer rounds, and a
look-ahead run the schedule never reaches is dropped.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from inference_sim.catalog import Catalog, CatalogError, load_catalog
from inference_sim.catalog.hardware import with_hardware_config
from inference_sim.config.errors import ConfigError
from inference_sim.core.logs import LOGGER_NAME
from inference_sim.planning.slo import Objective, check_metrics, violations, violations_at
from inference_sim.replicates import DEFAULT_CONFIDENCE, mean_summary
from inference_sim.sweep.backends import Backend, LocalBackend, execute_run

MAX_RATE_DOUBLINGS = 10

log = logging.getLogger(LOGGER_NAME)


@dataclass(frozen=True)
class Deployment:
    model: str
    hardware: str = ""
    tp: int = 0
    #: P:D ratio of a disaggregated deployment (docs/disaggregation.md); None: colocated.
    pd_ratio: tuple[int, int] | None = None
    #: Per-pool TP of a disaggregated deployment (0: the pool runs at ``tp``).
    prefill_tp: int = 0
    decode_tp: int = 0

    def label(self) -> str:
        hw = self.hardware or "default GPU"
        tp = f"TP{self.tp}" if self.tp else "default TP"
        pd = f" P:D {self.pd_ratio[0]}:{self.pd_ratio[1]}" if self.pd_ratio else ""
        if self.pd_ratio and (self.prefill_tp or self.decode_tp):
            pd += f" prefill TP{self.prefill_tp or '='} decode TP{self.decode_tp or '='}"
        return f"{self.model} {hw} {tp}{pd}"

    def pd_split(self, n: int) -> dict[str, int]:
        """Prefill and decode instances of ``n`` at this ratio (each pool >= 1; none
        below 2 instances, where a split is impossible: a disaggregated candidate's
        search starts at 2)."""
        if self.pd_ratio is None or n < 2:
            return {}
        a, b = self.pd_ratio
        p = min(n - 1, max(1, round(n * a / (a + b))))
        return {"prefill_instances": p, "decode_instances": n - p}

    def gpus(self, n: int, tp: int, prefill_tp: int = 0, decode_tp: int = 0) -> int:
        """GPUs of ``n`` instances: ``n x tp`` colocated; split, each pool's instances
        times its TP (``prefill_tp``/``decode_tp``: the pools' resolved TPs, 0: ``tp``).
        Never decreases as ``n`` grows (one more instance joins one pool), which the
        search's pruning relies on."""
        split = self.pd_split(n)
        if not split:
            return n * tp
        ptp = self.prefill_tp or prefill_tp or tp
        dtp = self.decode_tp or decode_tp or tp
        return split["prefill_instances"] * ptp + split["decode_instances"] * dtp

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model}
        if self.hardware:
            out["hardware"] = self.hardware
        if self.tp:
            out["tp"] = self.tp
        if self.pd_ratio and self.prefill_tp:
            out["prefill_tp"] = self.prefill_tp
        if self.pd_ratio and self.decode_tp:
            out["decode_tp"] = self.decode_tp
        return out


@dataclass
class Probe:
    """One run of the search: instance count, rate, verdict and summary."""

    instances: int
    rate: float
    ok: bool
    why: list[str]
    summary: dict[str, Any]

    def brief(self, objectives: Sequence[Objective]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "instances": self.instances,
            "rate": self.rate,
            "meets": self.ok,
            "violations": self.why,
        }
        for obj in objectives:
            out[obj.metric] = self.summary.get(obj.metric)
        out["completed_requests"] = self.summary.get("completed_requests")
        return out


@dataclass
class CandidatePlan:
    deployment: Deployment
    instances: int | None = None
    hardware: str = ""
    tp: int = 0
    gpus: int | None = None
    cost_per_hour: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    saturation_rate: float | None = None
    saturation_capped: bool = False
    probes: list[Probe] = field(default_factory=list)
    error: str = ""
    #: Why a disaggregated candidate's search stopped early (it cannot be the cheapest).
    pruned: str = ""

    def latency(self) -> tuple[str, str]:
        """The latency model its runs used and why (from the chosen run or any probe)."""
        for summary in (self.summary, *(p.summary for p in reversed(self.probes))):
            if summary.get("latency_model"):
                return str(summary["latency_model"]), str(summary.get("latency_model_reason", ""))
        return "", ""

    def to_dict(self, objectives: Sequence[Objective]) -> dict[str, Any]:
        model, reason = self.latency()
        out = {
            "model": self.deployment.model,
            "hardware": self.hardware or self.deployment.hardware,
            "tp": self.tp or self.deployment.tp,
            "latency_model": model,
            "latency_model_reason": reason,
            "instances": self.instances,
            "gpus": self.gpus,
            "cost_per_hour": self.cost_per_hour,
            "saturation_rate": self.saturation_rate,
            "saturation_rate_is_lower_bound": self.saturation_capped,
            "error": self.error,
            "summary": self.summary,
            "probes": [p.brief(objectives) for p in self.probes],
        }
        ratio = self.deployment.pd_ratio
        if ratio:  # --pd-ratio candidates only: other plans' JSON is unchanged
            split = self.deployment.pd_split(self.instances or 0)
            out["pd_ratio"] = list(ratio)
            out["prefill_instances"] = split.get("prefill_instances")
            out["decode_instances"] = split.get("decode_instances")
            out["prefill_tp"], out["decode_tp"] = self.pool_tps()
            out["pruned"] = self.pruned
        return out

    def pool_tps(self) -> tuple[int | None, int | None]:
        """The prefill and decode pools' TP as its runs resolved them (None: no run)."""
        d = self.deployment
        for summary in (self.summary, *(p.summary for p in self.probes)):
            config = summary.get("config") or {}
            if config.get("tp"):
                tp = int(config["tp"])
                return (
                    d.prefill_tp or int(config.get("prefill_tp") or 0) or tp,
                    d.decode_tp or int(config.get("decode_tp") or 0) or tp,
                )
        return (d.prefill_tp or d.tp or None, d.decode_tp or d.tp or None)

    def gpus_at(self, n: int) -> int | None:
        """GPUs of this candidate at ``n`` instances (None: no resolved TP yet)."""
        ptp, dtp = self.pool_tps()
        tp = self.tp or _resolved_tp(self)
        if tp is None:
            return None
        return self.deployment.gpus(n, tp, ptp or 0, dtp or 0)


@dataclass
class PlanOutcome:
    rate: float
    objectives: list[Objective]
    max_instances: int
    candidates: list[CandidatePlan]  # ranked: feasible first, cheapest first
    arrival: str = "poisson"  # the arrival process every probe ran with
    seeds: list[int] = field(default_factory=list)  # replicates per probe (none: one run)
    confidence: float | None = None
    headroom: float = 1.0
    #: ``--prefill-instances`` plus ``--decode-instances`` (0: not fixed): the counts of a
    #: colocated candidate were scanned upward from it, the rest being dual-role.
    fixed_pools: int = 0

    #: Runs the search made (a probe with several seeds counts once per seed), runs of
    #: probes looked ahead but never used included: it depends on the parallel slots.
    simulations: int = 0
    #: Runs of the probes the search used: what ``to_dict()`` and :func:`format_plan`
    #: report as ``simulations``, the same for every ``--jobs``.
    probe_runs: int = 0

    @property
    def best(self) -> CandidatePlan | None:
        first = self.candidates[0] if self.candidates else None
        return first if first is not None and first.instances is not None else None

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        head: dict[str, Any] = {
            "rate": self.rate,
            "slos": [str(o) for o in self.objectives],
            "max_instances": self.max_instances,
            "arrival": self.arrival,
            "seeds": self.seeds,
            "confidence": self.confidence,
            "headroom": self.headroom,
        }
        if self.fixed_pools:  # --prefill-instances/--decode-instances only
            head["fixed_pools"] = self.fixed_pools
        if best is not None:
            top = best.to_dict(self.objectives)
            top.pop("probes")
        else:
            top = {"instances": None, "summary": {}}
        head.update(top)
        head["candidates"] = [c.to_dict(self.objectives) for c in self.candidates]
        if any(c.deployment.pd_ratio for c in self.candidates):  # --pd-ratio: side by side
            head["simulations"] = self.probe_runs
            for key, want in (("cheapest_colocated", False), ("cheapest_disaggregated", True)):
                pick = self.cheapest(disaggregated=want)
                head[key] = None if pick is None else pick.to_dict(self.objectives)
                if pick is not None:
                    head[key].pop("probes")
        return head

    def cheapest(self, *, disaggregated: bool) -> CandidatePlan | None:
        """The best-ranked feasible colocated (or disaggregated) candidate."""
        for c in self.candidates:
            if c.instances is not None and bool(c.deployment.pd_ratio) == disaggregated:
                return c
        return None


def _int_points(lo: int, hi: int, k: int) -> list[int]:
    """Up to ``k`` distinct integers strictly between ``lo`` and ``hi``, evenly spaced."""
    inner = hi - lo - 1
    if inner <= 0:
        return []
    if inner <= k:
        return list(range(lo + 1, hi))
    pts = {lo + round((j + 1) * (hi - lo) / (k + 1)) for j in range(k)}
    return sorted(p for p in pts if lo < p < hi)


def _rate_points(lo: float, hi: float, k: int) -> list[float]:
    return [lo + (hi - lo) * (j + 1) / (k + 1) for j in range(k)]


@dataclass
class _Search:
    cand: CandidatePlan
    lo: int = 0  # largest N known to miss
    hi: int | None = None  # smallest N known to meet
    started: bool = False
    rate_lo: float = 0.0
    rate_hi: float | None = None
    doublings: int = 0
    phase: str = "instances"  # instances -> rate -> done
    cap: int | None = None  # largest N worth testing (above it: more GPUs than an answer)
    #: Fewest instances a probe can run: 2 for a split, the fixed pools' sum for
    #: ``--prefill-instances``/``--decode-instances`` (fewer is a ConfigError), else 1.
    least: int = 1
    #: Test the counts upward from ``least``, each once, instead of bisecting: with fixed
    #: pools every instance beyond them serves both phases (dual-role), which can make
    #: the SLO metrics worse (ITL: prefills interrupt its decodes), so more instances
    #: are not known never to hurt and bisection could skip the answer.
    scan: bool = False


@dataclass(frozen=True)
class _Schedule:
    """The fixed probe schedule every search follows, whatever the parallel slots.

    Instances: ``--max-instances`` first (an infeasible candidate is known at once),
    then the midpoint of the counts still in doubt; a scan (fixed pools) tries the
    counts upward instead. Saturation rate: double from the target rate until a run
    misses, then the midpoint of the bracket. Being fixed, it gives the same probes, in
    the same order, and the same answer for every ``--jobs`` (the project's rule: same
    config and seed, same result); parallel slots only run its probes ahead of time
    (:func:`_look_ahead`)."""

    rate: float
    max_instances: int
    saturation: bool
    rate_tolerance: float

    def next_probe(self, s: _Search) -> tuple[int, float] | None:
        """The search's next probe ``(instances, rate)`` (None: nothing left)."""
        if s.phase == "instances":
            if s.scan:  # fixed pools: least, least + 1, ... up to the first that meets
                return (s.lo + 1, self.rate) if s.lo < self.max_instances else None
            if not s.started:
                return self.max_instances, self.rate
            assert s.hi is not None
            # counts above the cap cost more than a known answer: bisect below it as if
            # cap + 1 met (if none does, lo reaches the cap: pruned)
            top = s.hi if s.cap is None else min(s.hi, s.cap + 1)
            pts = _int_points(s.lo, top, 1)
            return (pts[0], self.rate) if pts else None
        if s.phase == "rate":
            n = s.cand.instances
            assert n is not None
            if s.rate_hi is None:
                return n, s.rate_lo * 2.0
            return n, _rate_points(s.rate_lo, s.rate_hi, 1)[0]
        return None

    def advance(self, s: _Search, probe: Probe) -> None:
        """Record the search's next probe and move the search on by its verdict."""
        s.cand.probes.append(probe)
        if s.phase == "instances":
            s.started = True
            _update_instances(s, self.rate, self.max_instances, self.saturation)
        else:
            _update_rate(s, self.rate_tolerance)

    def moved(self, s: _Search, n: int, r: float, ok: bool) -> _Search:
        """A copy of ``s`` moved on as if its probe ``(n, r)`` met the SLOs or not."""
        copy = replace(s, cand=replace(s.cand, probes=list(s.cand.probes)))
        self.advance(copy, Probe(n, r, ok, [], {}))
        return copy


@dataclass(frozen=True)
class _Result:
    """A probe's runs (one per seed), judged: the first failure, else the verdict."""

    error: str | None
    summaries: list[dict[str, Any]]
    summary: dict[str, Any]
    why: list[str]
    warnings: list[str]


def _judge(
    group: Sequence[dict[str, Any] | None],
    objectives: Sequence[Objective],
    seeds: Sequence[Any],
    confidence: float | None,
    headroom: float,
) -> _Result:
    warnings = [w for res in group if res for w in res.pop("plan_warnings", ())]
    bad = next((res for res in group if res is None or res.get("status") != "ok"), None)
    if bad is not None:
        return _Result(str((bad or {}).get("error", "run failed")), [], {}, [], warnings)
    summaries = [res["summary"] for res in group]  # type: ignore[index]
    if len(summaries) == 1 and headroom == 1.0:
        return _Result(
            None, summaries, summaries[0], violations(objectives, summaries[0]), warnings
        )
    summary = summaries[0]
    if len(summaries) > 1:
        summary = mean_summary(summaries, seeds, confidence or DEFAULT_CONFIDENCE)
    why = violations_at(objectives, summaries, confidence=confidence, headroom=headroom)
    return _Result(None, summaries, summary, why, warnings)


def _run_quietly(options: dict[str, Any]) -> dict[str, Any]:
    """:func:`execute_run` with the run's warnings kept in the result (``plan_warnings``)
    rather than given by the backend on arrival: a probe run ahead of time that the
    schedule never uses stays silent, so the warnings do not depend on ``--jobs``."""
    out = execute_run(options)
    if "warnings" in out:
        out["plan_warnings"] = out.pop("warnings")
    return out


def _look_ahead(
    active: Sequence[tuple[int, _Search]],
    done: Mapping[tuple[int, int, float], _Result],
    slots: int,
    schedule: _Schedule,
    *,
    rates_ready: bool,
) -> list[tuple[int, int, float]]:
    """Probes ``(search index, instances, rate)`` to run in this round.

    Each search's next probe on its schedule (past the probes already in ``done``)
    always runs; spare ``slots`` go to the probes it would test next whichever way the
    pending ones turn out (both outcomes, nearest first, on copies of the search). Only
    which probes run early depends on ``slots``, never which probes a search uses.
    Without ``rates_ready`` (the request count of a run at the target rate not known
    yet) no probe at another rate is looked ahead: its options are not final."""
    order = itertools.count()
    # (depth, order, search index, search, a moved copy?): the real searches pop first
    heap = [(0, next(order), i, s, False) for i, s in active]
    wanted: list[tuple[int, int, float]] = []
    seen: set[tuple[int, int, float]] = set()
    while heap:
        depth, _, i, s, ahead = heapq.heappop(heap)
        if ahead and len(wanted) >= slots:
            break
        nxt = schedule.next_probe(s)
        if nxt is None:
            continue
        n, r = nxt
        key = (i, n, r)
        if key in done:
            res = done[key]
            if res.error is None or _miss_on_error(s, r, schedule.rate):
                # a failed run ends the search, unless it counts as a miss
                moved = schedule.moved(s, n, r, res.error is None and not res.why)
                heapq.heappush(heap, (depth, next(order), i, moved, True))
            continue
        if ahead and not rates_ready and r != schedule.rate:
            continue
        if key not in seen:
            seen.add(key)
            wanted.append(key)
        for ok in (True, False):
            heapq.heappush(heap, (depth + 1, next(order), i, schedule.moved(s, n, r, ok), True))
    return wanted


#: The warning of a plan without SLOs that asked for the saturation rate.
NO_SLO_SATURATION = (
    "no --slo: the instance count is the fewest that serve every request, and the "
    "saturation rate is not searched (without an SLO it would double the rate ten times "
    "and report a meaningless lower bound); give --slo, e.g. --slo ttft_p99_ms=500, to "
    "plan against latency"
)


def check_plan_arguments(
    *,
    rate: float,
    max_instances: int,
    rate_tolerance: float,
    seeds: Sequence[int] | None,
    confidence: float | None,
    headroom: float,
) -> None:
    """ConfigError for plan arguments no search can use; run by :func:`plan_capacity` and,
    before any warning about the runs, by ``blis plan`` (a bad ``--max-instances`` used
    to follow a paragraph of advice on ``--num-requests``)."""
    if not (math.isfinite(headroom) and 0 < headroom <= 1):
        raise ConfigError(f"--headroom must be in (0, 1] (e.g. 0.8), got {headroom}")
    if confidence is not None:
        from inference_sim.replicates import check_confidence

        check_confidence(confidence)
        if not seeds or len(seeds) < 2:
            raise ConfigError("--confidence needs 2 or more runs: give --seeds or --replicates")
    if max_instances < 1:
        raise ConfigError(f"--max-instances must be >= 1, got {max_instances}")
    if not (math.isfinite(rate) and rate > 0):
        raise ConfigError(f"--rate must be a finite number > 0, got {rate}")
    if not (math.isfinite(rate_tolerance) and rate_tolerance > 0):
        raise ConfigError(
            f"--rate-tolerance must be a finite number > 0 (a fraction such as 0.05), "
            f"got {rate_tolerance}"
        )


def plan_capacity(
    base: Mapping[str, Any],
    deployments: Sequence[Deployment],
    objectives: Sequence[Objective],
    *,
    rate: float,
    max_instances: int = 16,
    backend: Backend | None = None,
    saturation: bool = True,
    rate_tolerance: float = 0.05,
    gpu_hour_price: float | Mapping[str, float] | None = None,
    on_probe: Callable[[Deployment, Probe], None] | None = None,
    seeds: Sequence[int] | None = None,
    confidence: float | None = None,
    headroom: float = 1.0,
) -> PlanOutcome:
    """Search every deployment; return the candidates ranked (see the module doc).

    ``seeds`` (2+): every probe runs once per seed and its summary holds the means (and
    ``replicates``: each metric's interval). ``headroom`` (0 < h <= 1) tightens every
    objective to ``bound * h`` ("at least": ``bound / h``); ``confidence`` requires it
    to hold for the one-sided confidence bound of the mean over the seeds
    (:func:`inference_sim.planning.slo.violations_at`).
    """
    check_plan_arguments(
        rate=rate,
        max_instances=max_instances,
        rate_tolerance=rate_tolerance,
        seeds=seeds,
        confidence=confidence,
        headroom=headroom,
    )
    if isinstance(gpu_hour_price, Mapping):
        _check_price_keys(gpu_hour_price, _pricing_catalog(base))
    if not deployments:
        raise ConfigError("no deployment to plan: give --model (and --hardware, --tp)")
    backend = backend or LocalBackend()
    objectives = list(objectives)
    if not objectives and saturation:
        # Without objectives a probe only has to serve every request, which nearly every
        # rate does: the search doubled the rate ten times (runs of up to 1 024 times the
        # requests) to report ">1024x the target", a figure that means nothing.
        log.warning(NO_SLO_SATURATION)
        saturation = False
    base = with_plan_arrival(base)
    refuse_own_rate_workload(base)
    run_seeds: list[Any] = list(seeds) if seeds and len(seeds) > 1 else [None]
    if seeds and len(seeds) == 1:
        base["seed"] = seeds[0]
    searches = [_Search(CandidatePlan(d)) for d in deployments]
    pools = _fixed_pools(base)
    for s in searches:
        if s.cand.deployment.pd_ratio:  # a split needs 2 instances: start the search there
            s.least = 2
            if max_instances < 2:
                s.cand.error = "a disaggregated deployment needs --max-instances >= 2"
                s.phase = "done"
        elif pools:
            # Fixed pools: fewer instances than they hold is a ConfigError ("exceed
            # --num-instances"), which used to end the bisection and discard an answer.
            # More are dual-role, which can make the metrics worse: scan upward from
            # P + D (the first probe at --max-instances missed where P + D met).
            s.least = pools
            s.scan = True
            if max_instances < pools:
                s.cand.error = (
                    f"--prefill-instances plus --decode-instances ({pools}) exceed "
                    f"--max-instances {max_instances}"
                )
                s.phase = "done"
        s.lo = s.least - 1
    checked = False
    simulations = 0

    # Requests of a run at the target rate: the flag's, else what the first such run
    # generated (a workload spec's own num_requests, say); 0 for traces, whose rows are
    # the requests (a probe at another rate replays them all, over a shorter window).
    trace = base.get("workload") == "traces" or bool(base.get("workload_traces_filepath"))
    given = base.get("num_requests")
    base_requests = 0 if trace else int(given or 0)

    def options_for(s: _Search, n: int, r: float) -> dict[str, Any]:
        opts = dict(base)
        opts.update(s.cand.deployment.options())
        opts["num_instances"] = n
        opts.update(s.cand.deployment.pd_split(n))
        opts["rate"] = r
        if base.get("workload_spec"):
            # A spec ignores --rate (as the reference): its aggregate_rate is scaled.
            opts["aggregate_rate"] = r
        if r != rate and base_requests > 0:
            # Same arrival window at every rate: the load is sustained as long.
            opts["num_requests"] = max(1, math.ceil(base_requests * r / rate))
        return opts

    def generated(summary: Mapping[str, Any]) -> int:
        return sum(
            int(summary.get(k) or 0)
            for k in ("injected_requests", "rejected_requests", "rejected_too_long")
        )

    # Every search follows one fixed schedule (:class:`_Schedule`: the run at
    # --max-instances, then bisection; doubling, then bisection of the rate), advanced in
    # lock-step (one probe per active search per step, then the pruning), so the probes,
    # their order and the answer are the same for every --jobs. Parallel slots only run
    # probes of that schedule ahead of time (:func:`_look_ahead`); the steps then consume
    # them from ``done`` in order, and a look-ahead run the schedule never reaches is
    # dropped unseen (its warnings included).
    schedule = _Schedule(rate, max_instances, saturation, rate_tolerance)
    done: dict[tuple[int, int, float], _Result] = {}
    requests_known = trace or base_requests > 0  # probe options final at every rate
    used_runs = 0
    while True:
        active = [(i, s) for i, s in enumerate(searches) if s.phase != "done"]
        if not active:
            break
        slots = max(1, backend.jobs // len(run_seeds))
        wanted = _look_ahead(active, done, slots, schedule, rates_ready=requests_known)
        batch = [(i, n, r) for i, n, r in wanted if (i, n, r) not in done]
        results: list[dict[str, Any] | None] = [None] * (len(batch) * len(run_seeds))

        def store(i: int, res: dict[str, Any], results: list[Any] = results) -> None:
            results[i] = res

        items = []
        for i, n, r in batch:
            for seed in run_seeds:  # one run per seed (replicates), in seed order
                opts = options_for(searches[i], n, r)
                if seed is not None:
                    opts["seed"] = seed
                items.append(opts)
        if items:
            backend.map(_run_quietly, items, store)
        simulations += len(items)
        for j, key in enumerate(batch):
            group = results[j * len(run_seeds) : (j + 1) * len(run_seeds)]
            done[key] = _judge(group, objectives, run_seeds, confidence, headroom)
        # Consume whole steps while every active search's next probe has run.
        while True:
            step = []
            for i, s in enumerate(searches):
                if s.phase == "done":
                    continue
                nxt = schedule.next_probe(s)
                if nxt is None:
                    s.phase = "done"  # nothing left to test (never expected)
                    continue
                step.append((i, s, nxt))
            if not step or any((i, *nxt) not in done for i, _s, nxt in step):
                break
            for i, s, (n, r) in step:
                res = done[(i, n, r)]
                used_runs += len(run_seeds)
                for text in res.warnings:
                    log.warning(text)
                if res.error is not None and not _miss_on_error(s, r, rate):
                    s.cand.error = res.error
                    s.phase = "done"
                    continue
                if res.error is not None:
                    # A count below one that met failed to run: it cannot serve, so it
                    # counts as a miss rather than discarding the count that met.
                    log.warning(f"{s.cand.deployment.label()} x{n}: {res.error}")
                    probe = Probe(n, r, False, [f"run failed: {res.error}"], {})
                    if on_probe is not None:
                        on_probe(s.cand.deployment, probe)
                    schedule.advance(s, probe)
                    continue
                if not requests_known and r == rate:
                    base_requests = generated(res.summaries[0])
                    requests_known = True
                if not checked:
                    check_metrics(objectives, res.summaries[0])
                    checked = True
                probe = Probe(n, r, not res.why, list(res.why), res.summary)
                if on_probe is not None:
                    on_probe(s.cand.deployment, probe)
                schedule.advance(s, probe)
            _prune(searches)

    catalog = _pricing_catalog(base) if isinstance(gpu_hour_price, Mapping) else None
    for s in searches:
        _finish(s.cand, gpu_hour_price, catalog)
    ranked = sorted(searches, key=lambda s: _rank_key(s.cand, gpu_hour_price is not None))
    outcome = PlanOutcome(rate, objectives, max_instances, [s.cand for s in ranked])
    outcome.simulations = simulations
    outcome.probe_runs = used_runs
    # Every seed the probes ran with: a single --seeds 7 too (it used to print []).
    outcome.seeds = list(seeds or [])
    outcome.confidence = confidence
    outcome.headroom = headroom
    outcome.fixed_pools = pools
    if base.get("workload_spec"):
        outcome.arrival = "the workload spec's"
    elif _is_trace(base) and not _untimed_trace(base):
        outcome.arrival = "the trace's"
    else:
        outcome.arrival = str(base.get("arrival") or "gamma")
    return outcome


def _fixed_pools(base: Mapping[str, Any]) -> int:
    """Instances ``--prefill-instances`` plus ``--decode-instances`` fix (0: none)."""
    total = 0
    for key in ("prefill_instances", "decode_instances"):
        try:
            total += max(0, int(base.get(key) or 0))
        except (TypeError, ValueError):
            return 0  # not a count: the runs report it
    return total


def _miss_on_error(s: _Search, r: float, rate: float) -> bool:
    """Whether a failed probe counts as a miss: a count bisected below one that met at
    the target rate (it cannot serve; the answer found stays), not any other failure."""
    return s.phase == "instances" and s.hi is not None and r == rate


def refuse_own_rate_workload(base: Mapping[str, Any]) -> None:
    """ConfigError for a workload that fixes its own rate: a timed trace, a staged spec.

    Plan runs every probe at a rate it chooses (the target, then the saturation search),
    which such a workload refuses; each candidate used to print that refusal and the
    command exited 0 with nothing planned. An unreadable file is left to the runs, which
    name it as before.
    """
    from inference_sim.workload.errors import WorkloadError
    from inference_sim.workload.plan import InlineWorkload, untimed_length_trace
    from inference_sim.workload.spec import load_workload_spec, parse_workload_spec

    spec = base.get("workload_spec")
    if spec:
        where = spec if isinstance(spec, str) else "(inline)"
        try:
            if isinstance(spec, str):
                stages = load_workload_spec(spec).stages
            else:
                stages = parse_workload_spec(dict(spec), source="inline").stages
        except (WorkloadError, OSError):
            return
        if stages:
            raise ConfigError(
                f"--workload-spec {where}: blis plan cannot vary the rate of a staged spec, "
                "which sets its own rates in load stages; drop its stages (a spec with "
                "aggregate_rate is scaled to each probed rate) or run it with blis run"
            )
        return
    path = base.get("workload_traces_filepath")
    if not path or base.get("workload", "traces") != "traces":
        return
    o = {"workload_traces_filepath": path, "trace_format": base.get("trace_format", "auto")}
    try:
        untimed = untimed_length_trace(o, InlineWorkload())
    except (WorkloadError, OSError):
        return
    if not untimed:
        _check_timed_trace_reads(o)  # a file that is no trace at all: its own error
        raise ConfigError(
            f"--workload-traces-filepath {path}: blis plan cannot vary the rate of a timed "
            "trace, which replays its rows at their recorded times; give a length trace "
            "without a time column (plan sets its rate) or run the trace with blis run"
        )


def _check_timed_trace_reads(o: Mapping[str, Any]) -> None:
    """Raise the reader's own error for a file that does not read as the timed trace its
    content suggests (a CSV of two length columns under names a length trace does not
    know reads as the reference format, which needs five): "timed" would mislead."""
    from inference_sim.workload.errors import WorkloadError
    from inference_sim.workload.formats import detect_format
    from inference_sim.workload.traces import read_csv_trace

    path = o["workload_traces_filepath"]
    fmt = o["trace_format"] if o["trace_format"] != "auto" else detect_format(path)
    if fmt != "csv":
        return
    try:
        read_csv_trace(path, horizon=0)  # every row's columns and arrival are checked
    except WorkloadError as exc:
        raise ConfigError(str(exc)) from None


def with_plan_arrival(base: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with Poisson arrivals unless it names a process (or a gamma burstiness).

    Planning defaults to Poisson, unlike ``blis run``: evenly spaced arrivals never
    bunch up, so they understate queueing and would size a deployment too small.
    """
    from inference_sim.config.resolve import merge_config_file

    out = merge_config_file(base)
    own_times = bool(out.get("workload_spec")) or (_is_trace(out) and not _untimed_trace(out))
    if "arrival" not in out and "burstiness" not in out and not own_times:
        out["arrival"] = "poisson"
    return out


def _is_trace(base: Mapping[str, Any]) -> bool:
    """Whether the runs replay a trace file (``--workload traces``, or a path alone)."""
    workload = base.get("workload")
    return workload == "traces" or (bool(base.get("workload_traces_filepath")) and not workload)


def _untimed_trace(base: Mapping[str, Any]) -> bool:
    """Whether the trace is a length trace without a time column: its requests arrive
    at the probe's rate, spaced by ``--arrival`` (Poisson by default, as any workload's),
    not at times of its own. An unreadable file is left to the runs (False)."""
    from inference_sim.workload.errors import WorkloadError
    from inference_sim.workload.plan import InlineWorkload, untimed_length_trace

    path = base.get("workload_traces_filepath")
    if not path:
        return False
    o = {"workload_traces_filepath": path, "trace_format": base.get("trace_format", "auto")}
    try:
        return untimed_length_trace(o, InlineWorkload())
    except (WorkloadError, OSError):
        return False


def _update_instances(s: _Search, rate: float, max_instances: int, saturation: bool) -> None:
    at_rate = [p for p in s.cand.probes if p.rate == rate]
    ok = [p.instances for p in at_rate if p.ok]
    if not ok and s.scan:  # the next count up, unless max_instances has missed too
        s.lo = max(p.instances for p in at_rate)
        if s.lo >= max_instances:
            s.phase = "done"
        return
    if not ok:
        s.phase = "done"  # even max_instances misses (the first round tests it)
        return
    s.hi = min(ok)
    fails = [p.instances for p in at_rate if not p.ok and p.instances < s.hi]
    s.lo = max(fails, default=s.least - 1)
    if s.hi - s.lo <= 1:
        s.cand.instances = s.hi
        if saturation:
            s.phase = "rate"
            s.rate_lo = rate
        else:
            s.phase = "done"


def _update_rate(s: _Search, tolerance: float) -> None:
    """Narrow the saturation bracket; done within ``tolerance`` or once it stops moving.

    A tiny tolerance (1e-300) cannot be met in floating point: the midpoints round to
    the bounds themselves, the bracket stays put, and the search ends there.
    """
    before = (s.rate_lo, s.rate_hi)
    n = s.cand.instances
    at_n = [p for p in s.cand.probes if p.instances == n]
    ok_rates = [p.rate for p in at_n if p.ok]
    s.rate_lo = max(ok_rates)
    fails = [p.rate for p in at_n if not p.ok and p.rate > s.rate_lo]
    if fails:
        s.rate_hi = min(fails)
    else:
        s.doublings += 1
        s.rate_hi = None
        if s.rate_lo >= s.cand.probes[0].rate * 2.0**MAX_RATE_DOUBLINGS:
            s.cand.saturation_capped = True
            s.phase = "done"
            return
    if s.rate_hi is not None and (s.rate_hi - s.rate_lo) <= tolerance * s.rate_hi:
        s.phase = "done"
    elif s.rate_hi is not None and before == (s.rate_lo, s.rate_hi):
        s.phase = "done"  # the bounds stopped moving: no float between them helps


def _resolved_tp(cand: CandidatePlan) -> int | None:
    """The run-wide TP a candidate's probes resolved (None: no successful probe yet)."""
    for p in cand.probes:
        tp = (p.summary.get("config") or {}).get("tp")
        if tp:
            return int(tp)
    return cand.deployment.tp or None


def _prune(searches: Sequence[_Search]) -> None:
    """Stop disaggregated candidates that cannot be the cheapest of their deployment.

    The disaggregated candidates of one deployment (same model, GPU and TP: one price
    per GPU, so fewer GPUs is cheaper) are compared by GPU count. Once some candidate
    is known to meet the SLOs with G GPUs, another whose *smallest* untested count
    ``lo + 1`` already needs more than G GPUs cannot beat it (more instances never
    help it meet the SLOs sooner, and GPUs never fall as instances grow): its search
    stops. Otherwise its next rounds bisect only the counts within G GPUs (up to its
    cap): if none of them meets, only dearer counts are left and it is pruned. A
    candidate whose answer is found but needs more than G GPUs skips its saturation
    search. Colocated candidates are never pruned.
    """
    groups: dict[tuple[str, str, int], list[_Search]] = {}
    for s in searches:
        d = s.cand.deployment
        if d.pd_ratio:
            groups.setdefault((d.model, d.hardware, d.tp), []).append(s)
    for members in groups.values():
        best: tuple[int, str] | None = None
        for s in members:
            n = s.cand.instances if s.cand.instances is not None else s.hi
            g = s.cand.gpus_at(n) if n is not None else None
            if g is not None and (best is None or g < best[0]):
                best = (g, f"{s.cand.deployment.label()} x{n}")
        if best is None:
            continue
        for s in members:
            if s.phase == "done":
                continue
            if s.phase == "instances":
                floor = s.cand.gpus_at(s.lo + 1)
                if floor is not None and floor > best[0]:
                    s.cand.pruned = (
                        f"needs > {best[0]} GPUs at any count left to test "
                        f"({best[1]} already met the SLOs with {best[0]})"
                    )
                    s.phase = "done"
                elif s.hi is not None:
                    top = range(s.hi - 1, s.lo, -1)
                    s.cap = next((n for n in top if (s.cand.gpus_at(n) or 0) <= best[0]), None)
            elif s.cand.instances is not None:
                g = s.cand.gpus_at(s.cand.instances)
                if g is not None and g > best[0]:
                    s.cand.pruned = f"saturation not searched: {best[1]} needs fewer GPUs"
                    s.phase = "done"


def _finish(
    cand: CandidatePlan, price: float | Mapping[str, float] | None, catalog: Catalog | None = None
) -> None:
    n = cand.instances
    if n is None:
        return
    chosen = [p for p in cand.probes if p.instances == n and p.ok]
    rate0 = min(p.rate for p in chosen)
    run = next(p for p in chosen if p.rate == rate0)
    cand.summary = run.summary
    config = run.summary.get("config") or {}
    cand.hardware = str(config.get("hardware") or cand.deployment.hardware)
    cand.tp = int(config.get("tp") or cand.deployment.tp or 1)
    cand.gpus = cand.gpus_at(n)
    if cand.pruned:  # its saturation search was stopped part-way: no figure
        pass
    elif len(chosen) > 1 or any(p.instances == n and p.rate > rate0 for p in cand.probes):
        cand.saturation_rate = max(p.rate for p in chosen)
    if price is not None:
        cand.cost_per_hour = _cost_per_hour(price, cand, n, config, catalog)


def _cost_per_hour(
    price: float | Mapping[str, float],
    cand: CandidatePlan,
    n: int,
    config: Mapping[str, Any],
    catalog: Catalog | None,
) -> float | None:
    """The candidate's GPUs at their prices: a P/D run's pools at their own GPUs
    (``--prefill-hardware``/``--decode-hardware``), instances in no pool at the run's."""
    hw = cand.hardware
    pre, dec = int(config.get("prefill_instances") or 0), int(config.get("decode_instances") or 0)
    if not (pre or dec):
        unit = _price_for(price, hw, catalog)
        return None if unit is None or cand.gpus is None else cand.gpus * unit
    tp = cand.tp or 1
    parts = [
        (pre, int(config.get("prefill_tp") or tp), str(config.get("prefill_hardware") or hw)),
        (dec, int(config.get("decode_tp") or tp), str(config.get("decode_hardware") or hw)),
        (max(0, n - pre - dec), tp, hw),
    ]
    total = 0.0
    for count, gpu_tp, gpu in parts:
        if count:
            unit = _price_for(price, gpu, catalog)
            if unit is None:
                return None
            total += count * gpu_tp * unit
    return total


def _pricing_catalog(base: Mapping[str, Any]) -> Catalog | None:
    """The catalog the probes resolved GPUs with: the bundled one (or
    ``--defaults-filepath``) plus ``--hardware-config``'s GPUs, so a price keyed by any
    spelling of a GPU defined only in that file finds it."""
    try:
        catalog = load_catalog(base.get("defaults_filepath") or None)
        if base.get("hardware_config"):
            catalog = with_hardware_config(catalog, base["hardware_config"])
    except CatalogError:
        return None  # the probes have already reported the file
    return catalog


def _check_price_keys(price: Mapping[str, float], catalog: Catalog | None) -> None:
    """A price under a name no GPU answers to would never be used: refuse it (a typo such
    as ``H10O=3`` used to leave every candidate unpriced without a word)."""
    catalog = catalog or load_catalog()
    for key in price:
        if key == "*":
            continue
        try:
            found = catalog.match_gpu(key)
        except CatalogError as exc:
            raise ConfigError(f"--gpu-hour-price {key}={price[key]:g}: {exc}") from None
        if found is None:
            raise ConfigError(
                f"--gpu-hour-price {key}={price[key]:g}: unknown GPU; known: "
                f"{', '.join(catalog.gpu_names())} (or * for every GPU)"
            )


def _price_for(
    price: float | Mapping[str, float], hardware: str, catalog: Catalog | None = None
) -> float | None:
    if isinstance(price, int | float):
        return float(price)
    lowered = {k.lower(): v for k, v in price.items()}
    if hardware.lower() in lowered:
        return float(lowered[hardware.lower()])
    catalog = catalog or load_catalog()
    try:  # the run's GPU under its canonical name (A100-80 is the A100-SXM)
        canonical = catalog.match_gpu(hardware) or hardware
    except CatalogError:
        canonical = hardware
    for key, value in price.items():  # a price given under another spelling of the GPU
        try:
            if key != "*" and catalog.match_gpu(key) in (hardware, canonical):
                return float(value)
        except CatalogError:
            continue
    return lowered.get("*")


def _rank_key(c: CandidatePlan, by_cost: bool) -> tuple[Any, ...]:
    if c.instances is None:
        return (1, math.inf, math.inf, c.deployment.label())
    cost = c.cost_per_hour if by_cost and c.cost_per_hour is not None else math.inf
    return (0, cost if by_cost else c.gpus, c.instances, c.deployment.label())


def parse_prices(values: Sequence[str]) -> float | dict[str, float] | None:
    """``--gpu-hour-price 2.5`` (every GPU) or ``--gpu-hour-price H100=4.1`` (repeatable)."""
    if not values:
        return None
    out: dict[str, float] = {}
    for text in values:
        name, sep, raw = text.partition("=")
        if not sep:
            name, raw = "*", text
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"--gpu-hour-price {text!r}: expected PRICE or GPU=PRICE") from None
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"--gpu-hour-price {text!r}: the price must be >= 0")
        out[name.strip() or "*"] = value
    if list(out) == ["*"]:
        return out["*"]
    return out


def _pool_tp_cell(c: CandidatePlan) -> str:
    """``prefill TP/decode TP`` of a disaggregated candidate (``-`` for colocated)."""
    if not c.deployment.pd_ratio:
        return "-"
    ptp, dtp = c.pool_tps()
    return f"{ptp or '-'}/{dtp or '-'}"


#: Why a fixed-pools plan reads as it does (docs/planning.md: fixed pools).
_DUAL_ROLE = (
    "instances beyond the {pools} of --prefill-instances and --decode-instances serve "
    "both prefill and decode, so counts were tried upward from {pools}; --pd-ratio "
    "scales the pools instead"
)


def format_plan(outcome: PlanOutcome) -> str:
    """The ranked table ``blis plan`` prints (infeasible candidates last, with the reason)."""
    metrics = [o.metric for o in outcome.objectives]
    with_pd = any(c.deployment.pd_ratio for c in outcome.candidates)  # --pd-ratio only
    header = ["rank", "model", "GPU", "TP", *(["P:D", "P/D TP"] if with_pd else [])]
    header += ["latency model", "instances", "GPUs", "$/hour"]
    header += [*metrics, "saturation rate"]
    rows = [header]
    notes = []
    for i, c in enumerate(outcome.candidates, 1):
        d = c.deployment
        if c.instances is None:
            why = c.error or c.pruned
            if not why:
                span = f"in 2..{outcome.max_instances}" if d.pd_ratio else "<="
                if not d.pd_ratio:
                    span += f" {outcome.max_instances}"
                if outcome.fixed_pools and not d.pd_ratio:
                    span = f"in {outcome.fixed_pools}..{outcome.max_instances}"
                why = f"no instance count {span} meets the SLOs"
                if outcome.fixed_pools and not d.pd_ratio:
                    why += f" ({_DUAL_ROLE.format(pools=outcome.fixed_pools)})"
            notes.append(f"{i}. {d.label()}: {why}")
            lat = c.latency()[0] or "-"
            ratio = [f"{d.pd_ratio[0]}:{d.pd_ratio[1]}" if d.pd_ratio else "-"] if with_pd else []
            if with_pd:
                ratio.append(_pool_tp_cell(c))
            rows.append([str(i), d.model, d.hardware or "-", str(d.tp or "-"), *ratio, lat])
            rows[-1] += ["-"] * (len(header) - len(rows[-1]))
            continue
        cost = f"{c.cost_per_hour:,.2f}" if c.cost_per_hour is not None else "-"
        split = d.pd_split(c.instances)
        pd_cell = f"{split['prefill_instances']}:{split['decode_instances']}" if split else "-"
        if (
            split
            and d.pd_ratio
            and split["prefill_instances"] * d.pd_ratio[1]
            != (split["decode_instances"] * d.pd_ratio[0])
        ):  # the ratio rounded at this count: say which ratio it came from
            pd_cell += f" of {d.pd_ratio[0]}:{d.pd_ratio[1]}"
        pd_cells = [pd_cell, _pool_tp_cell(c)] if with_pd else []
        cells = [str(i), d.model, c.hardware, str(c.tp), *pd_cells]
        cells.append(c.latency()[0] or "-")
        cells += [str(c.instances), str(c.gpus), cost]
        for m in metrics:
            v = c.summary.get(m)
            cells.append(f"{v:,.1f}" if isinstance(v, int | float) else "-")
        if c.saturation_rate is None:
            sat = "-"
        else:
            sat = f"{'>' if c.saturation_capped else ''}{c.saturation_rate:,.1f}/s"
        cells.append(sat)
        rows.append(cells)
        if outcome.fixed_pools and not d.pd_ratio and c.instances > outcome.fixed_pools:
            dual = c.instances - outcome.fixed_pools
            notes.append(
                f"{i}. {d.label()}: {dual} of its {c.instances} instances dual-role "
                f"({_DUAL_ROLE.format(pools=outcome.fixed_pools)})"
            )
        if c.error:  # its saturation search failed part-way: say why, not just "-"
            notes.append(f"{i}. {d.label()}: saturation search stopped: {c.error}")
        fid = c.summary.get("fidelity") if c.summary else None
        if isinstance(fid, Mapping) and fid.get("coefficients") == "shipped":
            # Ranked side by side, GPUs differ in how far the model can be trusted.
            e = fid.get("expected_abs_error_pct") or {}
            figures = ", ".join(
                f"{label} {e[key]['median']} %"
                for key, label in (("e2e", "E2E"), ("tpot", "TPOT"), ("ttft", "TTFT"))
                if key in e
            )
            bound = " (a lower bound)" if fid.get("lower_bound") else ""
            notes.append(
                f"{i}. {d.label()}: calibrated model on {fid.get('gpu')} "
                f"({fid.get('gpu_domain')}): expected |error| {figures} median{bound}"
            )
    widths = [max(len(r[j]) for r in rows) for j in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[j]) for j, cell in enumerate(r)).rstrip() for r in rows]
    slos = ", ".join(str(o) for o in outcome.objectives) or "none (every request served)"
    title = f"Plan for {outcome.rate:g} requests/s; SLOs: {slos}"
    title += f"; arrivals: {outcome.arrival}"
    if outcome.headroom != 1.0:
        title += f"; headroom {outcome.headroom:g}"
    if len(outcome.seeds) == 1:
        title += f"; seed {outcome.seeds[0]}"
    elif outcome.seeds:
        conf = f", SLOs held at {outcome.confidence:.0%} confidence" if outcome.confidence else ""
        title += f"; means of {len(outcome.seeds)} seeds{conf}"
    fallbacks = [
        f"{c.deployment.label()}: latency model {c.latency()[0]} ({c.latency()[1]})"
        for c in outcome.candidates
        if c.latency()[1].startswith("auto fallback")
    ]
    if any(c.deployment.pd_ratio for c in outcome.candidates):
        for name, want in (("colocated", False), ("disaggregated", True)):
            pick = outcome.cheapest(disaggregated=want)
            if pick is None:
                notes.append(f"cheapest {name}: none meets the SLOs")
            else:
                cost = f", {pick.cost_per_hour:,.2f}/hour" if pick.cost_per_hour else ""
                notes.append(
                    f"cheapest {name}: {pick.deployment.label()} x{pick.instances}"
                    f" ({pick.gpus} GPUs){cost}"
                )
        pruned = sum(1 for c in outcome.candidates if c.pruned)
        notes.append(
            f"{outcome.probe_runs} simulations; {pruned} disaggregated candidates pruned"
            " (they cannot be the cheapest)"
        )
        for c in outcome.candidates:
            if c.pruned and c.instances is not None:
                notes.append(f"{c.deployment.label()} x{c.instances}: {c.pruned}")
    return "\n".join([title, *lines, *notes, *fallbacks]) + "\n"
