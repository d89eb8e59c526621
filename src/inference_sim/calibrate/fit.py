"""Fit the calibrated latency model to measured runs, the simulator in the loop.

The objective is a robust least-squares problem over every (run, stage):

    log(sim TTFT / measured TTFT),  log(sim E2E / measured E2E),
    log(sim TPOT / measured TPOT*)            (TPOT* = (E2E - TTFT) / (output_len - 1))

weighted (TTFT 1, E2E 1, TPOT 0.5), plus weak Gaussian priors that keep coefficients
the data cannot pin near physically sensible values (weight ``prior_weight`` per
standard deviation). ``scipy.optimize.least_squares`` (trust-region reflective, soft-L1
loss, bounds) drives it. Every residual comes from a full simulation of the (shortened)
runs, run in parallel worker processes; the Jacobian is the simulator's frozen-batch
Jacobian (:mod:`inference_sim.calibrate.harness`), from the same simulations, so one
iteration costs one simulation per run instead of one per run and coefficient.

Shortened stages are slightly biased (ramp-up and drain take a larger share), so the
fit multiplies each simulated stage mean by a *length correction*: the ratio of the
full-length to the shortened simulation at the current reference coefficients. It is
computed at the start and again at the solution, where the optimiser restarts once.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference_sim.calibrate.harness import ReplaySettings, StageResult, simulate_run
from inference_sim.calibrate.runs import MeasuredRun
from inference_sim.latency.calibrated import FITTED_FIELDS, CalibratedCoefficients

__all__ = [
    "DEFAULT_PRIORS",
    "FitOptions",
    "FitResult",
    "Simulator",
    "coefficients_at_bounds",
    "fit_coefficients",
    "stage_errors",
]

#: (mean, standard deviation, lower bound, upper bound) per fitted coefficient, from
#: physics and published kernel behaviour, not from the fitted runs: GEMMs stream weights at
#: ~95-105 % of peak bandwidth when memory-bound and reach ~64 % of peak FLOP/s with the
#: layer's small operators included (Vidur's per-operator H100/A100 profiles, fitted with
#: the same smooth max); paged-attention decode kernels move KV at ~85-90 % of peak
#: bandwidth; FlashAttention prefill runs at ~50 % of peak; vLLM's custom all-reduce takes
#: a few µs per small message on NVLink; a CUDA-graphed layer runs ~10 small kernels of a
#: few µs; tokenisation costs a few µs per token; a top-p/top-k sampler sorts or scans each
#: request's row of logits (a 100k-entry row of float32 is 400 kB: a sort costs tens of µs)
#: with about ten eager kernels of a few µs per step;
#: penalties add ~15 eager kernels and a CPU-GPU sync per step (a few hundred µs) and a
#: padded-tensor rebuild of every scheduled token id on the CPU (tens of ns per token); at
#: TP > 1 vLLM's multiprocessing executor broadcasts each step's scheduler output to every
#: worker process over a shared-memory queue and gathers the result (tens of µs per worker).
DEFAULT_PRIORS: dict[str, tuple[float, float, float, float]] = {
    "weight_read": (1.0, 0.15, 0.5, 3.0),
    "compute": (1.56, 0.2, 0.8, 5.0),
    "kv_read": (1.15, 0.25, 0.3, 5.0),
    "attention": (2.0, 0.7, 0.5, 10.0),
    "moe": (1.0, 0.5, 0.3, 6.0),
    "allreduce_us": (8.0, 5.0, 0.0, 100.0),
    "step_us": (200.0, 200.0, 0.0, 10000.0),
    "layer_us": (25.0, 15.0, 0.0, 200.0),
    "worker_us": (50.0, 50.0, 0.0, 1000.0),
    "request_us": (3.0, 3.0, 0.0, 200.0),
    "sampler_us": (10.0, 10.0, 0.0, 200.0),
    "sampler_step_us": (100.0, 100.0, 0.0, 2000.0),
    "penalty_us": (200.0, 200.0, 0.0, 5000.0),
    "penalty_token_us": (0.03, 0.03, 0.0, 1.0),
    "queue_us": (5000.0, 5000.0, 0.0, 50000.0),
    "queue_per_token_us": (2.0, 3.0, 0.0, 50.0),
    "output_token_us": (5.0, 10.0, 0.0, 2000.0),
}
_SCALE = {
    "weight_read": 1.0,
    "compute": 1.0,
    "kv_read": 1.0,
    "attention": 1.0,
    "moe": 1.0,
    "allreduce_us": 10.0,
    "step_us": 1000.0,
    "layer_us": 10.0,
    "worker_us": 10.0,
    "request_us": 10.0,
    "sampler_us": 10.0,
    "sampler_step_us": 100.0,
    "penalty_us": 100.0,
    "penalty_token_us": 0.01,
    "queue_us": 1000.0,
    "queue_per_token_us": 1.0,
    "output_token_us": 100.0,
}


_FULL = ReplaySettings()


@dataclass
class FitOptions:
    """What to fit and how hard to try."""

    params: tuple[str, ...] = FITTED_FIELDS
    priors: dict[str, tuple[float, float, float, float]] = field(
        default_factory=lambda: dict(DEFAULT_PRIORS)
    )
    prior_weight: float = 0.3
    weights: tuple[float, float, float] = (1.0, 1.0, 0.5)  # TTFT, E2E, TPOT
    loss: str = "soft_l1"
    f_scale: float = 0.05
    max_evals: int = 25
    rounds: int = 2  # optimiser restarts with refreshed length corrections
    settings: ReplaySettings = field(
        default_factory=lambda: ReplaySettings(duration_scale=0.25, min_stage_s=120.0)
    )
    full_settings: ReplaySettings | None = field(default_factory=ReplaySettings)
    workers: int = 0  # 0: os.cpu_count()


@dataclass
class FitResult:
    coefficients: CalibratedCoefficients
    evaluations: int
    seconds: float
    cost: float
    history: list[dict[str, Any]] = field(default_factory=list)
    #: Fitted coefficients that ended at a bound of their prior (``name``, ``lower`` or
    #: ``upper``, the bound): the data pushed them as far as the physics allows, which
    #: usually means runs the model cannot explain (wrong units, settings, deployment).
    at_bounds: list[tuple[str, str, float]] = field(default_factory=list)


def coefficients_at_bounds(
    coeffs: CalibratedCoefficients,
    names: Sequence[str],
    priors: dict[str, tuple[float, float, float, float]],
    rel: float = 1e-3,
) -> list[tuple[str, str, float]]:
    """``(name, "lower" | "upper", bound)`` for each of ``names`` within ``rel`` of its
    prior's bound range from a bound (the optimiser stops just inside, never on it)."""
    out = []
    for n in names:
        lo, hi = priors[n][2], priors[n][3]
        v = float(getattr(coeffs, n))
        tol = rel * (hi - lo)
        if v <= lo + tol:
            out.append((n, "lower", lo))
        elif v >= hi - tol:
            out.append((n, "upper", hi))
    return out


# --------------------------------------------------------------------------- parallel runs


def _job(args: tuple[MeasuredRun, str, CalibratedCoefficients | None, ReplaySettings, bool]):
    run, model, coeffs, settings, jac = args
    return simulate_run(
        run, latency_model=model, coefficients=coeffs, settings=settings, jacobian=jac
    )


class Simulator:
    """Runs many measured runs in parallel worker processes (or inline with 1 worker)."""

    def __init__(self, workers: int = 0) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None
        self.calls = 0

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def run(
        self,
        runs: Sequence[MeasuredRun],
        *,
        latency_model: str = "calibrated",
        coefficients: CalibratedCoefficients | None = None,
        settings: ReplaySettings = _FULL,
        jacobian: bool = False,
    ) -> list[list[StageResult] | Exception]:
        """One :func:`simulate_run` per run, in order; a run that fails gives its exception."""
        self.calls += 1
        jobs = [(r, latency_model, coefficients, settings, jacobian) for r in runs]
        if self.workers <= 1 or len(jobs) <= 1:
            out: list[list[StageResult] | Exception] = []
            for j in jobs:
                try:
                    out.append(_job(j))
                except Exception as exc:  # reported per run by the caller
                    out.append(exc)
            return out
        if self._pool is None:
            ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        # Longest runs first (most simulated steps), results back in order.
        cost = [sum(st.duration_s for st in r.stages) * (1 + r.output_len / 500) for r in runs]
        order = sorted(range(len(jobs)), key=lambda i: -cost[i])
        futures = {i: self._pool.submit(_job, jobs[i]) for i in order}
        results: list[list[StageResult] | Exception] = []
        for i in range(len(jobs)):
            try:
                results.append(futures[i].result())
            except Exception as exc:
                results.append(exc)
        return results


# --------------------------------------------------------------------------- errors


def stage_errors(run: MeasuredRun, stages: Sequence[StageResult]) -> list[dict[str, float]]:
    """Signed relative errors (sim / measured - 1) per stage, with the values."""
    out = []
    for st, m in zip(stages, run.stages, strict=True):
        true_tpot = m.tpot_true_ms(run.output_len)
        row = {
            "stage": float(m.index),
            "ttft_sim": st.ttft_ms,
            "ttft_meas": m.ttft_ms,
            "e2e_sim": st.e2e_ms,
            "e2e_meas": m.e2e_ms,
            "tpot_sim": st.tpot_ms,
            "tpot_meas": m.tpot_ms or true_tpot,
            "tpot_true_meas": true_tpot,
        }
        row["ttft_err"] = st.ttft_ms / m.ttft_ms - 1.0
        row["e2e_err"] = st.e2e_ms / m.e2e_ms - 1.0
        row["tpot_err"] = st.tpot_ms / row["tpot_meas"] - 1.0 if row["tpot_meas"] else math.nan
        row["tpot_true_err"] = st.tpot_ms / true_tpot - 1.0 if true_tpot else math.nan
        out.append(row)
    return out


# --------------------------------------------------------------------------- the fit


class _Problem:
    def __init__(
        self,
        runs: Sequence[MeasuredRun],
        start: CalibratedCoefficients,
        opts: FitOptions,
        sim: Simulator,
        log: Callable[[str], None],
    ) -> None:
        self.runs = list(runs)
        self.start = start
        self.opts = opts
        self.sim = sim
        self.log = log
        self.names = list(opts.params)
        self.scale = np.array([_SCALE.get(n, 1.0) for n in self.names])
        self.all_idx = [FITTED_FIELDS.index(n) for n in self.names]
        self.correction: list[list[tuple[float, float, float]]] = [
            [(1.0, 1.0, 1.0)] * len(r.stages) for r in self.runs
        ]
        self._cache: tuple[bytes, np.ndarray, np.ndarray] | None = None
        self.evals = 0
        self.history: list[dict[str, Any]] = []

    def coeffs(self, z: np.ndarray) -> CalibratedCoefficients:
        return self.start.with_values(
            {n: float(v) for n, v in zip(self.names, z * self.scale, strict=True)}
        )

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.array([self.opts.priors[n][2] for n in self.names]) / self.scale
        hi = np.array([self.opts.priors[n][3] for n in self.names]) / self.scale
        return lo, hi

    def refresh_correction(self, coeffs: CalibratedCoefficients) -> None:
        """Length corrections: full-length / shortened simulation, per stage and metric."""
        full_settings = self.opts.full_settings
        if full_settings is None or self.opts.settings == full_settings:
            return
        t0 = time.time()
        full = self.sim.run(self.runs, coefficients=coeffs, settings=full_settings)
        short = self.sim.run(self.runs, coefficients=coeffs, settings=self.opts.settings)
        for i, (f, s) in enumerate(zip(full, short, strict=True)):
            if isinstance(f, Exception) or isinstance(s, Exception):
                continue
            row = []
            for a, b in zip(f, s, strict=True):
                row.append(
                    (
                        a.ttft_ms / b.ttft_ms if b.ttft_ms > 0 else 1.0,
                        a.e2e_ms / b.e2e_ms if b.e2e_ms > 0 else 1.0,
                        a.tpot_ms / b.tpot_ms if b.tpot_ms > 0 else 1.0,
                    )
                )
            self.correction[i] = row
        self.log(f"  length corrections refreshed ({time.time() - t0:.0f} s)")

    def evaluate(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = z.tobytes()
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1], self._cache[2]
        coeffs = self.coeffs(z)
        t0 = time.time()
        results = self.sim.run(
            self.runs, coefficients=coeffs, settings=self.opts.settings, jacobian=True
        )
        self.evals += 1
        wt, we, wp = self.opts.weights
        res: list[float] = []
        jac: list[np.ndarray] = []
        for run, stages, corr in zip(self.runs, results, self.correction, strict=True):
            if isinstance(stages, Exception):
                raise ValueError(f"simulating {run.name} failed: {stages}") from stages
            for st, m, (ct, ce, cp) in zip(stages, run.stages, corr, strict=True):
                true_tpot = m.tpot_true_ms(run.output_len)
                for w, sim_v, meas, c, j in (
                    (wt, st.ttft_ms, m.ttft_ms, ct, st.jac_ttft),
                    (we, st.e2e_ms, m.e2e_ms, ce, st.jac_e2e),
                    (wp, st.tpot_ms, true_tpot, cp, st.jac_tpot),
                ):
                    if w <= 0 or meas <= 0:
                        continue
                    if sim_v <= 0 or j is None:
                        res.append(w * 5.0)  # nothing completed: a large, flat penalty
                        jac.append(np.zeros(len(self.names)))
                        continue
                    res.append(w * math.log(sim_v * c / meas))
                    jac.append(w * j[self.all_idx] * self.scale / sim_v)
        pw = self.opts.prior_weight
        values = z * self.scale
        for k, n in enumerate(self.names):
            mean, sd = self.opts.priors[n][:2]
            res.append(pw * (values[k] - mean) / sd)
            row = np.zeros(len(self.names))
            row[k] = pw * self.scale[k] / sd
            jac.append(row)
        r = np.asarray(res)
        J = np.vstack(jac)
        data = r[: -len(self.names)]
        self.history.append(
            {
                "eval": self.evals,
                "rms": float(np.sqrt(np.mean(data**2))),
                "coefficients": coeffs.to_dict(),
            }
        )
        self.log(
            f"  eval {self.evals:3d}: rms log-error {np.sqrt(np.mean(data**2)):.4f} "
            f"({time.time() - t0:.0f} s)"
        )
        self._cache = (key, r, J)
        return r, J


def fit_coefficients(
    runs: Sequence[MeasuredRun],
    *,
    start: CalibratedCoefficients | None = None,
    options: FitOptions | None = None,
    simulator: Simulator | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> FitResult:
    """Fit ``options.params`` of ``start`` (default: the priors' means) to ``runs``."""
    try:
        from scipy.optimize import least_squares
    except ImportError:  # pragma: no cover - depends on the environment
        raise ValueError(
            "blis calibrate needs scipy: pip install 'inference-sim[calibrate]'"
        ) from None

    opts = options or FitOptions()
    if start is None:
        start = CalibratedCoefficients().with_values({n: p[0] for n, p in opts.priors.items()})
    unknown = [n for n in opts.params if n not in FITTED_FIELDS]
    if unknown:
        raise ValueError(f"unknown coefficient(s) to fit: {', '.join(unknown)}")
    if start.overlap != 1.0:  # the frozen-batch Jacobian assumes additive step terms
        raise ValueError(f"overlap must be 1 to fit, got {start.overlap}")
    own = simulator is None
    sim = simulator or Simulator(opts.workers)
    t0 = time.time()
    try:
        prob = _Problem(runs, start, opts, sim, log)
        lo, hi = prob.bounds()
        z = np.array([getattr(start, n) for n in prob.names], dtype=float) / prob.scale
        z = np.clip(z, lo + 1e-9, hi - 1e-9)
        cost = math.nan
        for rnd in range(max(1, opts.rounds)):
            prob.refresh_correction(prob.coeffs(z))
            prob._cache = None
            sol = least_squares(
                lambda v: prob.evaluate(v)[0],
                z,
                jac=lambda v: prob.evaluate(v)[1],
                bounds=(lo, hi),
                loss=opts.loss,
                f_scale=opts.f_scale,
                max_nfev=opts.max_evals,
                x_scale=1.0,
                method="trf",
            )
            z = sol.x
            cost = float(sol.cost)
            log(f"  round {rnd + 1}: cost {cost:.5f}, {sol.nfev} evaluations ({sol.message})")
        coeffs = prob.coeffs(z)
        bounded = coefficients_at_bounds(coeffs, prob.names, opts.priors)
        return FitResult(coeffs, prob.evals, time.time() - t0, cost, prob.history, bounded)
    finally:
        if own:
            sim.close()
