"""Simulate a measured run and read back what the load tool measured (per stage).

:func:`simulate_run` replays a :class:`~inference_sim.calibrate.runs.MeasuredRun` with
a latency model (``calibrated`` with given coefficients, ``roofline`` or ``blackbox``)
and returns the per-stage means. For the calibrated model it can also return the
*frozen-batch Jacobian*: how each stage mean would move per unit of each fitted
coefficient if every step kept its batch. Step time is a known function of the
coefficients, so each step's derivative is exact; a request's TTFT and E2E are sums of
the step times it waits through, plus the client-side terms. The fitter uses it as the
Jacobian of its least-squares problem (the residuals always come from full
simulations).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml

from inference_sim.calibrate.runs import DEFAULT_PROMPT_SCALE, MeasuredRun
from inference_sim.latency.calibrated import (
    FITTED_FIELDS,
    RECORD_WIDTH,
    CalibratedCoefficients,
    CalibratedLatencyModel,
)

__all__ = ["ReplaySettings", "StageResult", "simulate_run", "step_jacobian"]


@dataclass(frozen=True)
class ReplaySettings:
    """How runs are replayed: stage shortening, prefix reuse, prompt scale, seed."""

    duration_scale: float = 1.0
    min_stage_s: float = 0.0
    prefix_reuse: str = ""  # "" (the run's own), cycle, profile
    prompt_scale: float = DEFAULT_PROMPT_SCALE
    seed: int = 42

    def to_dict(self) -> dict[str, Any]:
        return {
            "duration_scale": self.duration_scale,
            "min_stage_s": self.min_stage_s,
            "prefix_reuse": self.prefix_reuse or "run",
            "prompt_scale": self.prompt_scale,
            "seed": self.seed,
        }


_FULL = ReplaySettings()


@dataclass
class StageResult:
    """Simulated means of one stage (ms) and, optionally, their Jacobians (ms per unit)."""

    index: int
    ttft_ms: float
    e2e_ms: float
    tpot_ms: float
    completed: int
    jac_ttft: np.ndarray | None = field(default=None, repr=False)
    jac_e2e: np.ndarray | None = field(default=None, repr=False)
    jac_tpot: np.ndarray | None = field(default=None, repr=False)


def step_jacobian(model: CalibratedLatencyModel, rec: np.ndarray) -> np.ndarray:
    """d(step µs)/d(coefficient) for recorded steps (rows) x FITTED_FIELDS (columns)."""
    c = model.coefficients
    p = c.smooth_p
    w_dense, w_exp, flops, kv, att, _ar, reqs, ctx = (rec[:, 2 + i] for i in range(8))
    wbytes = w_dense + c.moe * w_exp
    mem = c.weight_read * wbytes
    cmp = c.compute * flops
    with np.errstate(divide="ignore", invalid="ignore"):
        lin = (mem**p + cmp**p) ** (1.0 / p)
        d_mem = np.where(lin > 0, (mem / lin) ** (p - 1.0), 1.0)
        d_cmp = np.where(lin > 0, (cmp / lin) ** (p - 1.0), 1.0)
    active = reqs > 0
    L = float(model.shape.layers)
    cols = {
        "weight_read": d_mem * wbytes * 1e6,
        "compute": d_cmp * flops * 1e6,
        "kv_read": kv * 1e6,
        "attention": att * 1e6,
        "moe": d_mem * c.weight_read * w_exp * 1e6,
        "allreduce_us": np.full_like(
            kv, 2.0 * L * model.shape.link_latency if model.tp > 1 else 0.0
        ),
        "step_us": np.ones_like(kv),
        "layer_us": np.full_like(kv, model.shape.layer_units * model.shape.layer_factor),
        "worker_us": np.full_like(kv, float(model.tp) if model.tp > 1 else 0.0),
        "request_us": reqs.astype(float),
        "sampler_us": reqs * model.shape.sampler_units,
        "sampler_step_us": np.full_like(kv, 1.0 if model.shape.filtered_sampling else 0.0),
        "penalty_us": np.full_like(kv, 1.0 if model.shape.penalized_sampling else 0.0),
        "penalty_token_us": (
            ctx * model.shape.bw / model.shape.kv_tok
            if model.shape.penalized_sampling and model.shape.kv_tok > 0
            else np.zeros_like(kv)
        ),
    }
    out = np.zeros((len(rec), len(FITTED_FIELDS)))
    for j, name in enumerate(FITTED_FIELDS):
        col = cols.get(name)
        if col is not None:
            out[:, j] = np.where(active | (name in ("step_us", "layer_us", "worker_us")), col, 0.0)
    return out


def _phi(starts: np.ndarray, durs: np.ndarray, cum: np.ndarray, per: np.ndarray, t: np.ndarray):
    """Cumulative step derivative up to times ``t`` (interpolated inside a step)."""
    k = np.searchsorted(starts, t, side="right") - 1
    k = np.clip(k, 0, len(starts) - 1)
    frac = np.clip((t - starts[k]) / np.maximum(durs[k], 1.0), 0.0, 1.0)
    before = t < starts[0]
    out = cum[k] + frac[:, None] * per[k]
    out[before] = 0.0
    return out


def simulate_run(
    run: MeasuredRun,
    *,
    latency_model: str = "calibrated",
    coefficients: CalibratedCoefficients | None = None,
    settings: ReplaySettings = _FULL,
    jacobian: bool = False,
    workdir: str | None = None,
) -> list[StageResult]:
    """Replay ``run`` once and return one :class:`StageResult` per stage.

    ``latency_model``: ``calibrated`` (``coefficients``, default the shipped set),
    ``roofline`` or ``blackbox`` (the trained entry for the deployment; raises
    ``ConfigError`` when there is none). ``jacobian`` (calibrated only) fills the
    frozen-batch Jacobians.
    """
    from inference_sim.config.resolve import resolve
    from inference_sim.core.rng import RandomStreams
    from inference_sim.runner import build_requests, build_simulator

    spec = run.workload_spec(
        duration_scale=settings.duration_scale,
        min_stage_s=settings.min_stage_s,
        prompt_scale=settings.prompt_scale,
        prefix_reuse=settings.prefix_reuse,
        seed=settings.seed,
    )
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = os.path.join(tmp, "workload.yaml")
        with open(path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(spec, fh, sort_keys=False)
        mode = "roofline" if latency_model == "calibrated" else latency_model
        opts = run.sim_options(path, latency_model=mode)
        if latency_model == "blackbox" and run.total_kv_blocks <= 0:
            opts.pop("total_kv_blocks", None)  # the trained entry's count
        plan = resolve(opts)
    models: list[CalibratedLatencyModel] = []
    if latency_model == "calibrated":
        assert plan.architecture is not None and plan.gpu_spec is not None
        arch, gpu, tp = plan.architecture, plan.gpu_spec, plan.options["tp"]

        def make() -> CalibratedLatencyModel:
            m = CalibratedLatencyModel(
                arch, gpu, tp, coefficients, record=jacobian, sampling=plan.options["sampling"]
            )
            models.append(m)
            return m

        plan.make_latency_model = make  # type: ignore[method-assign]
    streams = RandomStreams(plan.options["seed"])
    requests = build_requests(plan, streams)
    sim = build_simulator(plan)
    outcome = sim.run(requests)
    stages = [(st.start_us, st.end_us, st.rate) for st in plan.workload_spec.stages]
    cycle = (settings.prefix_reuse or ("cycle" if run.cycle_prompts else "profile")) == "cycle"
    cold_total = run.num_groups * run.prompts_per_group if cycle else 0
    return _stage_results(
        outcome,
        stages,
        [st.rate * st.duration_s for st in run.stages],
        cold_total if settings.duration_scale < 1.0 else 0,
        models if jacobian else [],
    )


def _stage_weights(
    sel: np.ndarray, cold: np.ndarray, true_count: float, cold_before: float
) -> np.ndarray:
    """Per-request weights (summing to 1 over ``sel``) giving a shortened stage the cold-
    cache share the full stage had: the first N·U requests of a prompt cycle miss."""
    n = int(sel.sum())
    w = np.zeros(len(sel))
    if n == 0:
        return w
    w[sel] = 1.0 / n
    c_sel = sel & cold
    m_sim = int(c_sel.sum())
    if m_sim == 0 or m_sim == n or true_count <= n:
        return w
    m_true = min(max(cold_before, 0.0), true_count)
    share = m_true / true_count
    w[c_sel] = share / m_sim
    w[sel & ~cold] = (1.0 - share) / (n - m_sim)
    return w


def _stage_results(outcome, stages, true_counts, cold_total, models) -> list[StageResult]:
    log = outcome.log
    rows = log.rows_for(None)
    index = log.column("index", rows)
    arrival = log.column("arrival", rows).astype(float)
    ttft = log.column("ttft", rows).astype(float)
    e2e = log.column("e2e", rows).astype(float)
    n_in = log.column("num_input", rows).astype(float)
    n_out = log.column("num_output", rows).astype(float)
    done = e2e >= 0
    cold = index < cold_total
    jt = je = None
    if models:
        # One latency model per engine (``dp`` > 1: several), each with its own recorded
        # steps: a request's derivative follows the steps of the engine that served it.
        served_by = log.column("instance", rows).astype(int)
        jt = np.zeros((len(rows), len(FITTED_FIELDS)))
        je = np.zeros_like(jt)
        for i, model in enumerate(models):
            mine = served_by == i if len(models) > 1 else np.ones(len(rows), dtype=bool)
            if mine.any():
                jt[mine], je[mine] = _request_jacobians(
                    model, arrival[mine], ttft[mine], e2e[mine], n_in[mine], n_out[mine]
                )
    out = []
    seen_true = 0.0
    for k, (start, end, _rate) in enumerate(stages):
        sel = (arrival >= start) & (arrival < end) & done
        true_n = true_counts[k] if k < len(true_counts) else float(sel.sum())
        w = _stage_weights(sel, cold, true_n, cold_total - seen_true)
        seen_true += true_n
        n = int(sel.sum())
        res = StageResult(k, 0.0, 0.0, 0.0, n)
        if n:
            res.ttft_ms = float(w @ ttft) / 1000.0
            res.e2e_ms = float(w @ e2e) / 1000.0
            toks = float(w @ np.maximum(n_out - 1.0, 0.0))
            if toks > 0:
                res.tpot_ms = float(w @ (e2e - ttft)) / toks / 1000.0
            if jt is not None and je is not None:
                res.jac_ttft = (w @ jt) / 1000.0
                res.jac_e2e = (w @ je) / 1000.0
                if toks > 0:
                    res.jac_tpot = (w @ (je - jt)) / toks / 1000.0
        out.append(res)
    return out


def _request_jacobians(model, arrival, ttft, e2e, n_in, n_out):
    """Per-request d(TTFT µs)/dθ and d(E2E µs)/dθ with every step's batch frozen."""
    rec = np.frombuffer(model.record, dtype=float).reshape(-1, RECORD_WIDTH)
    per = step_jacobian(model, rec)
    starts, durs = rec[:, 0], rec[:, 1]
    order = np.argsort(starts, kind="stable")
    starts, durs, per = starts[order], durs[order], per[order]
    cum = np.vstack([np.zeros(per.shape[1]), np.cumsum(per, axis=0)[:-1]])
    otp = float(model.output_token_time())
    names = list(FITTED_FIELDS)
    iq = names.index("queue_us")
    iqt = names.index("queue_per_token_us")
    iotp = names.index("output_token_us")
    ok = e2e >= 0
    first_end = np.where(ok, arrival + ttft - otp, arrival)
    last_end = np.where(ok, arrival + e2e - n_out * otp, arrival)
    phi_a = _phi(starts, durs, cum, per, arrival)
    j_ttft = _phi(starts, durs, cum, per, first_end) - phi_a
    j_e2e = _phi(starts, durs, cum, per, last_end) - phi_a
    # The client-side delay only moves TTFT when it outlasts the step in flight (async
    # scheduling); it is counted fully, a slight overestimate when it does not.
    for j in (j_ttft, j_e2e):
        j[:, iq] += 1.0
        j[:, iqt] += n_in
    j_ttft[:, iotp] += 1.0
    j_e2e[:, iotp] += n_out
    return j_ttft, j_e2e
