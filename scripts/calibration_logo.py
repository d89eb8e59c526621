#!/usr/bin/env python
"""Per-GPU efficiencies and the leave-one-GPU-out (LOGO) check (issue 19, items 1 and 2).

    PYTHONPATH=src python scripts/calibration_logo.py ../shared/calibration --write

1. Fits each profiled GPU's GEMM efficiency (fractions of datasheet bandwidth and FLOP/s)
   to Vidur's per-operator timings and its NCCL all-reduce latency and bus bandwidth to
   Vidur's collective timings (``inference_sim.calibrate.gpu_profiles``). With ``--write``
   these become ``src/inference_sim/catalog/data/gpu-efficiency.json``, which the
   calibrated model reads (ratios to the H100, whose end-to-end fit stays as it is).
2. Operator LOGO: the efficiencies fitted on one GPU's operators predict the other GPU's
   operators from its datasheet alone; errors for decode-sized (<= 64 tokens) and
   prefill-sized (>= 1024 tokens) GEMMs, next to the GPU's own fit.
3. Step LOGO on Splitwise's whole-model timings (Llama-2-70B, TP 2/4/8, DGX-A100 and
   DGX-H100, 2023 software -- a data set the efficiencies never saw): the calibrated
   step model's overheads (KV, attention, all-reduce, per-step and per-layer costs) are
   fitted on one GPU's prefill and decode timings with the GEMM efficiencies fixed, then
   the other GPU's timings are predicted (a) from its datasheet with the source GPU's
   efficiencies and small kernels scaled by the boost clocks (nothing measured on the
   target: how a GPU without profiles ships) and (b) with the measured per-GPU
   corrections. ``direct`` compares the model's prediction with the target's timing;
   ``ratio`` predicts the target as the source's measured time x the model's
   target/source ratio, which isolates what the GPU changes from how well the model fits
   this older software at all.
4. Writes docs/calibration-logo.json and the LOGO block of docs/calibration-lomo.md, then
   regenerates the fidelity data (scripts/fidelity_table.py).

Runs in about half a minute on one core. The data are not in the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import dataclass, replace
from datetime import date

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "src"))

from inference_sim.calibrate.gpu_profiles import (  # noqa: E402
    COMPUTE_GPUS,
    NETWORK_SETUPS,
    GemmFit,
    SplitwiseRow,
    fit_allreduce,
    fit_gemm_efficiency,
    fit_layer_ops,
    fit_token_ops,
    gemm_seconds,
    load_allreduce,
    load_gemm_rows,
    load_layer_ops,
    load_splitwise,
)
from inference_sim.catalog import load_catalog  # noqa: E402
from inference_sim.catalog.architecture import ModelArchitecture  # noqa: E402
from inference_sim.latency.calibrated import (  # noqa: E402
    GPU_EFFICIENCY_PATH,
    NO_CORRECTION,
    CalibratedCoefficients,
    CalibratedLatencyModel,
    GpuCorrection,
    clock_layer_factor,
    corrections_from_efficiency,
)

DEFAULT_DATA = os.path.join(ROOT, "..", "shared", "calibration")
REFERENCE_GPU = "H100"
#: Llama-2-70B (Splitwise's model): the published config.json's shape.
LLAMA2_70B = ModelArchitecture(
    name="meta-llama/llama-2-70b-hf",
    layers=80,
    hidden=8192,
    heads=64,
    kv_heads=8,
    ffn=28672,
    vocab=32000,
    dtype_bytes=2,
)
#: Step-model coefficients fitted on the source GPU (the GEMM efficiencies are fixed).
STEP_FREE = ("kv_read", "attention", "allreduce_us", "step_us", "layer_us")
STEP_START = (1.2, 2.0, 8.0, 200.0, 25.0)
STEP_BOUNDS = ((0.1, 0.1, 0.0, 0.0, 0.0), (20.0, 60.0, 500.0, 50_000.0, 2_000.0))
#: The alternative structure checked next to it: the per-layer cost overlapping the GPU
#: work (``overlap``, a smooth-max exponent, fitted too; 1 adds them as shipped).
OVERLAP_FREE = (*STEP_FREE, "overlap")
OVERLAP_START = (*STEP_START, 2.0)
OVERLAP_BOUNDS = ((*STEP_BOUNDS[0], 1.0), (*STEP_BOUNDS[1], 30.0))
#: Prefills of at least this many tokens are compute-bound on both GPUs (the measured
#: A100/H100 time ratio is compared with the GEMM-efficiency ratio).
COMPUTE_BOUND_TOKENS = 2048


def pct(x: float) -> float:
    return round(float(x), 1)


def corrections(eff: dict[str, dict]) -> dict[str, GpuCorrection]:
    """The calibrated model's corrections from fitted efficiencies (as calibrated.py does)."""
    out = corrections_from_efficiency(eff, REFERENCE_GPU)
    out.pop("*", None)
    return out


@dataclass
class StepCase:
    row: SplitwiseRow
    kind: str  # prefill | decode

    @property
    def measured_us(self) -> float:
        return (self.row.prompt_ms if self.kind == "prefill" else self.row.token_ms) * 1e3


#: Largest prefill (batch x prompt tokens) checked: serving token budgets are 2k-8k, and
#: Splitwise's larger batched prompts include timings its README calls inconsistent.
MAX_PREFILL_TOKENS = 8192


def step_cases(rows: list[SplitwiseRow]) -> list[StepCase]:
    out = [StepCase(r, "decode") for r in rows]
    out += [StepCase(r, "prefill") for r in rows if r.batch * r.prompt <= MAX_PREFILL_TOKENS]
    return out


def predict_steps(
    cases: list[StepCase],
    gpu_name: str,
    coeffs: CalibratedCoefficients,
    correction: GpuCorrection,
    term: str = "total_us",
) -> np.ndarray:
    """Unrounded step times (µs): a prefill of batch x prompt, or one decode iteration
    (``term``: one term of the step instead of its total)."""
    gpu = load_catalog().gpu(gpu_name)
    models = {
        tp: CalibratedLatencyModel(
            LLAMA2_70B, gpu, tp, coeffs, sampling="plain", correction=correction
        )
        for tp in sorted({c.row.tp for c in cases})
    }
    out = []
    for c in cases:
        r = c.row
        m = models[r.tp]
        if c.kind == "prefill":
            t = m.terms([(0, r.prompt)] * r.batch, 0, 0)[term]
        else:  # mean context over the generated tokens
            t = m.terms([], r.batch, r.batch * (r.prompt + r.tokens // 2))[term]
        out.append(t)
    return np.array(out)


def figures(
    mode: str, src: str, tgt: str, eff: dict[str, dict], corr: dict[str, GpuCorrection]
) -> tuple[float, float, GpuCorrection, GpuCorrection]:
    """(weight_read, compute, source correction, target correction) of a step-LOGO mode."""
    if mode == "datasheet":  # only the source GPU's own measurements
        # as an unprofiled GPU ships: small kernels scaled by the boost clocks
        return (
            1.0 / eff[src]["bandwidth"],
            1.0 / eff[src]["compute"],
            NO_CORRECTION,
            GpuCorrection(layer=clock_layer_factor(tgt, src)),
        )
    # the shipped scheme: H100 efficiencies x per-GPU corrections
    ref = eff[REFERENCE_GPU]
    return 1.0 / ref["bandwidth"], 1.0 / ref["compute"], corr[src], corr[tgt]


def step_coefficients(
    x: np.ndarray | tuple[float, ...],
    weight_read: float,
    compute: float,
    free: tuple[str, ...] = STEP_FREE,
) -> CalibratedCoefficients:
    values = dict(zip(free, (float(v) for v in x), strict=True))
    return CalibratedCoefficients(
        weight_read=weight_read,
        compute=compute,
        request_us=0.0,
        sampler_us=0.0,
        penalty_us=0.0,
        penalty_token_us=0.0,
        **values,
    )


def fit_steps(
    cases: list[StepCase],
    gpu: str,
    weight_read: float,
    compute: float,
    corr: GpuCorrection,
    overlap: bool = False,
) -> CalibratedCoefficients:
    """The step model's overheads fitted to ``cases`` (with ``overlap``: its exponent too)."""
    from scipy.optimize import least_squares

    meas = np.array([c.measured_us for c in cases])
    free, start, bounds = (
        (OVERLAP_FREE, OVERLAP_START, OVERLAP_BOUNDS)
        if overlap
        else (STEP_FREE, STEP_START, STEP_BOUNDS)
    )

    def resid(x: np.ndarray) -> np.ndarray:
        co = step_coefficients(x, weight_read, compute, free)
        pred = predict_steps(cases, gpu, co, corr)
        out: np.ndarray = np.log(pred / meas)
        return out

    sol = least_squares(resid, start, bounds=bounds, x_scale="jac")
    return step_coefficients(sol.x, weight_read, compute, free)


#: Structure checks (docs/calibration.md, "Other structures, checked"): each variant adds
#: one thing to the step model, measured or fitted on the source GPU, and is transferred
#: to the target like the rest. None ships; the table says why.
VARIANTS = (
    "small ops per token, measured",
    "small ops per token, fitted",
    "all-reduce bytes, fitted",
    "GEMM efficiencies, fitted",
)


def token_ops_us(cases: list[StepCase], per_token: tuple[float, float]) -> np.ndarray:
    """Per-token small-operator time of the step (µs): replicated + sharded / TP, per
    layer, times the step's tokens (a prefill's batch x prompt, a decode's batch)."""
    rep, shard = per_token
    out = []
    for c in cases:
        r = c.row
        n = r.batch * r.prompt if c.kind == "prefill" else r.batch
        out.append(LLAMA2_70B.layers * n * (rep + shard / r.tp))
    return np.array(out)


def hidden_pass_us(cases: list[StepCase], gpu: str, corr: GpuCorrection) -> np.ndarray:
    """One read of every token's hidden vector per layer at the GPU's datasheet bandwidth
    (x its measured correction), µs: the unit of the fitted per-token small-op cost."""
    bw = load_catalog().gpu(gpu).peak_bandwidth_tbs * 1e12 * corr.bandwidth
    per = LLAMA2_70B.layers * LLAMA2_70B.hidden * LLAMA2_70B.dtype_bytes / bw * 1e6
    n = [c.row.batch * c.row.prompt if c.kind == "prefill" else c.row.batch for c in cases]
    return np.array(n, dtype=float) * per


def variant_predict(
    variant: str,
    cases: list[StepCase],
    gpu: str,
    co: CalibratedCoefficients,
    corr: GpuCorrection,
    extra: tuple[float, ...],
    per_token: tuple[float, float],
) -> np.ndarray:
    """Step times (µs) of the step model plus ``variant``'s addition."""
    base = predict_steps(cases, gpu, co, corr)
    if variant == "small ops per token, measured":
        return base + token_ops_us(cases, per_token)
    if variant == "small ops per token, fitted":
        return base + extra[0] * co.weight_read * hidden_pass_us(cases, gpu, corr)
    if variant == "all-reduce bytes, fitted":
        no_latency = replace(co, allreduce_us=0.0)
        return base + (extra[0] - 1.0) * predict_steps(cases, gpu, no_latency, corr, "allreduce_us")
    return base  # GEMM efficiencies: carried by ``co``


def fit_variant(
    variant: str,
    cases: list[StepCase],
    gpu: str,
    weight_read: float,
    compute: float,
    corr: GpuCorrection,
    per_token: tuple[float, float],
) -> tuple[CalibratedCoefficients, tuple[float, ...]]:
    """The step overheads and the variant's own parameters fitted to ``cases``."""
    from scipy.optimize import least_squares

    meas = np.array([c.measured_us for c in cases])
    n_base = len(STEP_FREE)
    own: dict[str, tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]] = {
        "small ops per token, measured": ((), (), ()),
        "small ops per token, fitted": ((2.0,), (0.0,), (200.0,)),
        "all-reduce bytes, fitted": ((1.0,), (0.2,), (20.0,)),
        # never above the datasheet peaks (x 1/efficiency >= 1)
        "GEMM efficiencies, fitted": ((weight_read, compute), (1.0, 1.0), (10.0, 10.0)),
    }
    start, lo, hi = own[variant]

    def build(x: np.ndarray) -> tuple[CalibratedCoefficients, tuple[float, ...]]:
        extra = tuple(float(v) for v in x[n_base:])
        if variant == "GEMM efficiencies, fitted":
            return step_coefficients(x[:n_base], *extra), ()
        return step_coefficients(x[:n_base], weight_read, compute), extra

    def resid(x: np.ndarray) -> np.ndarray:
        co, extra = build(x)
        out: np.ndarray = np.log(
            variant_predict(variant, cases, gpu, co, corr, extra, per_token) / meas
        )
        return out

    sol = least_squares(
        resid,
        (*STEP_START, *start),
        bounds=((*STEP_BOUNDS[0], *lo), (*STEP_BOUNDS[1], *hi)),
        x_scale="jac",
    )
    return build(sol.x)


def compute_bound_ratio(
    cases: dict[str, list[StepCase]], eff: dict[str, dict], peaks: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """A100/H100 time of the compute-bound prefills: measured (median) and what the GEMM
    efficiencies (FLOP/s) and bandwidths predict."""
    a, h = "A100-SXM", REFERENCE_GPU
    h_by = {(c.row.tp, c.row.prompt, c.row.batch): c.measured_us for c in cases[h]
            if c.kind == "prefill"}  # fmt: skip
    ratios = [
        c.measured_us / h_by[(c.row.tp, c.row.prompt, c.row.batch)]
        for c in cases[a]
        if c.kind == "prefill"
        and c.row.prompt * c.row.batch >= COMPUTE_BOUND_TOKENS
        and (c.row.tp, c.row.prompt, c.row.batch) in h_by
    ]
    return {
        "measured": round(float(np.median(ratios)), 2),
        "measured_min": round(float(np.min(ratios)), 2),
        "measured_max": round(float(np.max(ratios)), 2),
        "rows": len(ratios),
        "flops_model": round(
            peaks[h][0] * eff[h]["compute"] / (peaks[a][0] * eff[a]["compute"]), 2
        ),
        "bandwidth_model": round(
            peaks[h][1] * eff[h]["bandwidth"] / (peaks[a][1] * eff[a]["bandwidth"]), 2
        ),
    }


def summarize(errors: np.ndarray, kinds: list[str]) -> dict[str, float]:
    out = {}
    for kind in ("prefill", "decode"):
        e = [float(v) for v, k in zip(errors, kinds, strict=True) if k == kind]
        out[f"{kind}_ape"] = pct(statistics.median(abs(v) for v in e))
        out[f"{kind}_bias"] = pct(statistics.median(e))
        out[f"{kind}_max"] = pct(max(abs(v) for v in e))
    out["rows"] = len(errors)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("data", nargs="?", default=DEFAULT_DATA, help="../shared/calibration")
    ap.add_argument("--write", action="store_true", help="write catalog/data/gpu-efficiency.json")
    ap.add_argument("--docs", default=os.path.join(ROOT, "docs"))
    args = ap.parse_args(argv)
    vidur = os.path.join(args.data, "vidur-profiling")
    split = os.path.join(args.data, "splitwise", "perf_model.csv")
    for path in (vidur, split):
        if not os.path.exists(path):
            print(f"error: {path} not found (the calibration data are not in the repository)")
            return 2
    catalog = load_catalog()
    peaks = {
        g: (catalog.gpu(g).peak_tflops * 1e12, catalog.gpu(g).peak_bandwidth_tbs * 1e12)
        for g in COMPUTE_GPUS.values()
    }

    # 1. efficiencies ------------------------------------------------------------------
    gemms = load_gemm_rows(vidur)
    by_gpu = {g: [r for r in gemms if r.gpu == g] for g in COMPUTE_GPUS.values()}
    fits: dict[str, GemmFit] = {
        g: fit_gemm_efficiency(rows, *peaks[g]) for g, rows in by_gpu.items()
    }
    nets = load_allreduce(vidur)
    ar = {g: fit_allreduce([r for r in nets if r.gpu == g]) for g in NETWORK_SETUPS.values()}
    layer_ops = load_layer_ops(vidur)
    small = {g: fit_layer_ops([r for r in layer_ops if r.gpu == g]) for g in COMPUTE_GPUS.values()}
    models = {g: sorted({r.model for r in rows}) for g, rows in by_gpu.items()}
    eff: dict[str, dict] = {}
    for g, f in fits.items():
        setup = next(s for s, gg in NETWORK_SETUPS.items() if gg == g)
        eff[g] = {
            "bandwidth": round(f.bandwidth, 4),
            "compute": round(f.compute, 4),
            "launch_us": round(f.launch_us, 2),
            "gemm_rows": f.rows,
            "gemm_median_ape_pct": pct(f.median_ape_pct),
            "allreduce_latency_us": round(ar[g].latency_us, 2),
            "allreduce_bus_gbs": round(ar[g].bus_gbs, 1),
            "allreduce_by_tp": {
                str(n): {"latency_us": round(lat, 2), "bus_gbs": round(bus, 1)}
                for n, (lat, bus) in ar[g].per_tp.items()
            },
            "layer_ops_us": round(small[g], 2),
            "data": (
                f"Vidur operator profiles ({', '.join(m.split('/')[-1] for m in models[g])}, "
                f"TP 1-8, <= 8192 tokens; small operators of the 8192-wide layers at <= 64 "
                f"tokens) and NCCL all-reduce ({setup}, single node, per TP)"
            ),
        }
    corr = corrections(eff)

    # 2. operator LOGO -------------------------------------------------------------------
    op_rows = []
    gpus = list(COMPUTE_GPUS.values())
    for tgt in gpus:
        rows = [r for r in by_gpu[tgt] if r.tokens <= 8192]
        meas = np.array([r.seconds for r in rows])
        tokens = np.array([r.tokens for r in rows])
        for src in gpus:
            f = fits[src]
            pred = gemm_seconds(rows, f.bandwidth, f.compute, f.launch_us, *peaks[tgt])
            err = (pred / meas - 1.0) * 100.0
            dec, pre = err[tokens <= 64], err[tokens >= 1024]
            op_rows.append(
                {
                    "target": tgt,
                    "fitted_on": src,
                    "decode_ape": pct(np.median(np.abs(dec))),
                    "decode_bias": pct(np.median(dec)),
                    "prefill_ape": pct(np.median(np.abs(pre))),
                    "prefill_bias": pct(np.median(pre)),
                    "all_ape": pct(np.median(np.abs(err))),
                    "rows": len(rows),
                }
            )

    # 3. step LOGO (Splitwise) -------------------------------------------------------------
    sw = load_splitwise(split)
    cases = {g: step_cases([r for r in sw if r.gpu == g]) for g in gpus}
    step_rows = []
    in_sample = {}
    overlap_fit: dict[str, float] = {}
    attention_parity: dict[str, dict] = {}
    for src in gpus:
        tgt = next(g for g in gpus if g != src)
        key = {(c.row.tp, c.row.prompt, c.row.batch, c.row.tokens, c.kind): i
               for i, c in enumerate(cases[src])}  # fmt: skip
        for mode in ("datasheet", "measured", "measured, overlap"):
            wr, cp, c_src, c_tgt = figures(mode, src, tgt, eff, corr)
            co = fit_steps(cases[src], src, wr, cp, c_src, overlap=mode.endswith("overlap"))
            if mode.endswith("overlap"):
                overlap_fit[src] = round(co.overlap, 2)
            src_pred = predict_steps(cases[src], src, co, c_src)
            src_meas = np.array([c.measured_us for c in cases[src]])
            kinds_src = [c.kind for c in cases[src]]
            in_sample[(src, mode)] = summarize((src_pred / src_meas - 1) * 100, kinds_src)
            tgt_pred = predict_steps(cases[tgt], tgt, co, c_tgt)
            tgt_meas = np.array([c.measured_us for c in cases[tgt]])
            kinds = [c.kind for c in cases[tgt]]
            direct = (tgt_pred / tgt_meas - 1.0) * 100.0
            ratio = []
            for c, p, m in zip(cases[tgt], tgt_pred, tgt_meas, strict=True):
                i = key[(c.row.tp, c.row.prompt, c.row.batch, c.row.tokens, c.kind)]
                ratio.append((src_meas[i] * p / src_pred[i] / m - 1.0) * 100.0)
            if mode == "measured":  # diagnostic: attention as fast on both GPUs
                attn_src = predict_steps(cases[src], src, co, c_src, "attention_us")
                attn_tgt = predict_steps(cases[tgt], tgt, co, c_tgt, "attention_us")
                parity = []
                for j, (c, p, m) in enumerate(zip(cases[tgt], tgt_pred, tgt_meas, strict=True)):
                    i = key[(c.row.tp, c.row.prompt, c.row.batch, c.row.tokens, c.kind)]
                    same = p - attn_tgt[j] + attn_src[i]
                    parity.append((src_meas[i] * same / src_pred[i] / m - 1.0) * 100.0)
                attention_parity[tgt] = {
                    "fitted_on": src,
                    "attention_fitted": {src: round(co.attention, 2)},
                    **summarize(np.array(parity), kinds),
                }
            for how, errs in (("direct", direct), ("ratio", np.array(ratio))):
                step_rows.append(
                    {
                        "target": tgt,
                        "fitted_on": src,
                        "gpu_figures": mode,
                        "prediction": how,
                        **summarize(errs, kinds),
                    }
                )

    # 3b. other structures, checked ----------------------------------------------------
    token_ops = {g: fit_token_ops([r for r in layer_ops if r.gpu == g]) for g in gpus}
    structure_rows = []
    for variant in VARIANTS:
        for src in gpus:
            tgt = next(g for g in gpus if g != src)
            key = {(c.row.tp, c.row.prompt, c.row.batch, c.row.tokens, c.kind): i
                   for i, c in enumerate(cases[src])}  # fmt: skip
            for mode in ("datasheet", "measured"):
                wr, cp, c_src, c_tgt = figures(mode, src, tgt, eff, corr)
                pt_src = token_ops[src]
                pt_tgt = (
                    token_ops[tgt]
                    if mode == "measured"  # else the source's, on the target's bandwidth
                    else (
                        pt_src[0] * peaks[src][1] / peaks[tgt][1],
                        pt_src[1] * peaks[src][1] / peaks[tgt][1],
                    )
                )
                co, extra = fit_variant(variant, cases[src], src, wr, cp, c_src, pt_src)
                src_pred = variant_predict(variant, cases[src], src, co, c_src, extra, pt_src)
                tgt_pred = variant_predict(variant, cases[tgt], tgt, co, c_tgt, extra, pt_tgt)
                src_meas = np.array([c.measured_us for c in cases[src]])
                tgt_meas = np.array([c.measured_us for c in cases[tgt]])
                ratio = [
                    (src_meas[i] * p / src_pred[i] / m - 1.0) * 100.0
                    for c, p, m in zip(cases[tgt], tgt_pred, tgt_meas, strict=True)
                    for i in [key[(c.row.tp, c.row.prompt, c.row.batch, c.row.tokens, c.kind)]]
                ]
                kinds = [c.kind for c in cases[tgt]]
                fitted: dict[str, float] = {"attention": round(co.attention, 1)}
                if variant == "small ops per token, fitted":
                    # one pass over a token's hidden vector in one layer, as fitted (µs)
                    pass_us = (
                        LLAMA2_70B.hidden
                        * LLAMA2_70B.dtype_bytes
                        * wr
                        * 1e6
                        / (peaks[src][1] * c_src.bandwidth)
                    )
                    fitted["passes"] = round(extra[0], 1)
                    fitted["passes_measured"] = round(pt_src[0] / pass_us, 1)
                elif variant == "all-reduce bytes, fitted":
                    fitted["allreduce_bytes_x"] = round(extra[0], 2)
                elif variant == "GEMM efficiencies, fitted":
                    fitted["weight_read_x"] = round(co.weight_read / wr, 2)
                    fitted["compute_x"] = round(co.compute / cp, 2)
                structure_rows.append(
                    {
                        "variant": variant,
                        "target": tgt,
                        "fitted_on": src,
                        "gpu_figures": mode,
                        "fitted": fitted,
                        "ratio": summarize(np.array(ratio), kinds),
                        "direct": summarize((tgt_pred / tgt_meas - 1.0) * 100.0, kinds),
                        "in_sample": summarize(
                            (src_pred / src_meas - 1.0) * 100.0, [c.kind for c in cases[src]]
                        ),
                    }
                )

    # 4. outputs -------------------------------------------------------------------------
    today = date.today().isoformat()
    command = "PYTHONPATH=src python scripts/calibration_logo.py ../shared/calibration --write"
    gpu_entries = {}
    for g in gpus:
        if g == REFERENCE_GPU:
            continue
        r = next(
            s for s in step_rows
            if s["target"] == g and s["gpu_figures"] == "measured" and s["prediction"] == "ratio"
        )  # fmt: skip
        gpu_entries[g] = {
            "step_error_pct": {
                "e2e": r["decode_ape"],
                "tpot": r["decode_ape"],
                "ttft": r["prefill_ape"],
                "step": max(r["decode_ape"], r["prefill_ape"]),
            },
            "basis": "Splitwise Llama-2-70B steps predicted from H100 (ratio, measured figures)",
        }
    doc = {
        "generated": today,
        "command": command,
        "efficiency": eff,
        "corrections": {
            g: {k: round(v, 4) if isinstance(v, float) else v for k, v in vars_(c).items()}
            for g, c in corr.items()
        },
        "operator_logo": op_rows,
        "step_logo": step_rows,
        "step_in_sample": [{"gpu": g, "gpu_figures": m, **v} for (g, m), v in in_sample.items()],
        "overlap_fitted": overlap_fit,
        "compute_bound_prefill_ratio": compute_bound_ratio(cases, eff, peaks),
        "attention_parity": attention_parity,
        "structure_checks": structure_rows,
        "gpus": gpu_entries,
    }
    with open(os.path.join(args.docs, "calibration-logo.json"), "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
    write_block(os.path.join(args.docs, "calibration-lomo.md"), doc)
    print(render_block(doc))
    if args.write:
        with open(GPU_EFFICIENCY_PATH, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "format": "inference-sim-gpu-efficiency/1",
                    "source": f"fitted {today} by scripts/calibration_logo.py "
                    "(docs/calibration.md)",
                    "reference_gpu": REFERENCE_GPU,
                    "gpus": eff,
                },
                fh,
                indent=1,
            )
            fh.write("\n")
        print(f"wrote {GPU_EFFICIENCY_PATH}")
        import runpy

        runpy.run_path(os.path.join(HERE, "fidelity_table.py"))["main"]([])
    return 0


def vars_(c: GpuCorrection) -> dict[str, object]:
    from dataclasses import asdict

    return {k: v for k, v in asdict(c).items() if k not in ("source",)}


def render_block(doc: dict) -> str:
    eff = doc["efficiency"]
    lines = [
        "<!-- logo:begin -->",
        "## Leave one GPU out",
        "",
        f"Generated {doc['generated']} by `{doc['command']}`. Do not edit by hand; see",
        "[calibration.md](calibration.md#per-gpu-efficiencies).",
        "",
        "**GEMM efficiency and all-reduce per GPU** (Vidur profiles; fractions of the datasheet"
        " peak):",
        "",
        "| GPU | bandwidth | compute | launch µs | GEMM rows | median APE | small ops µs/layer"
        " | all-reduce latency µs | bus GB/s | per TP: latency µs / bus GB/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for g, e in eff.items():
        per_tp = ", ".join(
            f"TP {n}: {v['latency_us']:.0f} / {v['bus_gbs']:.0f}"
            for n, v in e.get("allreduce_by_tp", {}).items()
        )
        lines.append(
            f"| {g} | {e['bandwidth']:.3f} | {e['compute']:.3f} | {e['launch_us']:.1f} | "
            f"{e['gemm_rows']} | {e['gemm_median_ape_pct']} % | {e.get('layer_ops_us', 0):.1f} | "
            f"{e['allreduce_latency_us']:.1f} | {e['allreduce_bus_gbs']:.0f} | {per_tp} |"
        )
    lines += [
        "",
        "**Operators** (median APE / median signed error, %): each GPU's GEMMs predicted from "
        "its datasheet with the efficiencies fitted on the GPU in `fitted on`:",
        "",
        "| target | fitted on | decode (<= 64 tok) | prefill (>= 1024 tok) | all | rows |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in doc["operator_logo"]:
        lines.append(
            f"| {r['target']} | {r['fitted_on']} | {r['decode_ape']} / {r['decode_bias']:+} | "
            f"{r['prefill_ape']} / {r['prefill_bias']:+} | {r['all_ape']} | {r['rows']} |"
        )
    lines += [
        "",
        "**Steps** (Splitwise Llama-2-70B, TP 2/4/8; median APE / median signed error / worst,"
        " %): step overheads fitted on `fitted on`, then the target predicted with "
        "`datasheet` figures (the source GPU's efficiencies on the target's datasheet, small"
        " kernels scaled by the boost clocks: nothing measured on the target) or the"
        " `measured` per-GPU corrections (what ships);"
        " `direct` = model vs timing, `ratio` = source timing x model ratio:",
        "",
        "| target | fitted on | GPU figures | prediction | prefill | decode | rows |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for r in doc["step_logo"]:
        lines.append(
            f"| {r['target']} | {r['fitted_on']} | {r['gpu_figures']} | {r['prediction']} | "
            f"{r['prefill_ape']} / {r['prefill_bias']:+} / {r['prefill_max']} | "
            f"{r['decode_ape']} / {r['decode_bias']:+} / {r['decode_max']} | {r['rows']} |"
        )
    lines += [
        "",
        "In sample (the step model on its own GPU's timings): "
        + "; ".join(
            f"{r['gpu']} ({r['gpu_figures']}) prefill {r['prefill_ape']} %, decode "
            f"{r['decode_ape']} %"
            for r in doc["step_in_sample"]
        )
        + ".",
    ]
    if doc.get("overlap_fitted"):
        lines += [
            "",
            "`measured, overlap`: the per-layer cost joined with the GPU work by a smooth max"
            " whose exponent is fitted too (1 = sum, as shipped): "
            + ", ".join(f"{g} {v}" for g, v in doc["overlap_fitted"].items())
            + ".",
        ]
    parity = doc.get("attention_parity")
    if parity:
        fitted = {g: v["attention_fitted"][v["fitted_on"]] for g, v in parity.items()}
        lines += [
            "",
            "Attention as fast on both GPUs (diagnostic, `measured` / `ratio` with the"
            " target's prefill-attention time set to the source's; not leave-one-out):"
            " fitted `attention` "
            + ", ".join(f"{v['fitted_on']} {fitted[g]}" for g, v in parity.items())
            + "; "
            + "; ".join(
                f"{g} from {v['fitted_on']} prefill {v['prefill_ape']} / {v['prefill_bias']:+},"
                f" decode {v['decode_ape']} / {v['decode_bias']:+}"
                for g, v in parity.items()
            )
            + ".",
        ]
    cb = doc.get("compute_bound_prefill_ratio")
    if cb:
        lines += [
            "",
            f"Compute-bound prefills (>= {COMPUTE_BOUND_TOKENS} tokens, {cb['rows']} rows):"
            f" A100/H100 time measured {cb['measured']} (median; {cb['measured_min']}-"
            f"{cb['measured_max']}); the GEMM efficiencies give {cb['flops_model']}"
            f" (FLOP/s), the bandwidths {cb['bandwidth_model']}.",
        ]
    checks = doc.get("structure_checks")
    if checks:
        lines += [
            "",
            "**Other structures, checked** (none ships; see calibration.md): the step model"
            " plus one addition, measured or fitted on `fitted on`; ratio and direct as above"
            " (median APE / median signed error, %):",
            "",
            "| addition | target | fitted on | GPU figures | fitted | ratio prefill"
            " | ratio decode | direct prefill | direct decode | in sample prefill / decode |",
            "|---|---|---|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in checks:
            rt, dr, ins = r["ratio"], r["direct"], r["in_sample"]
            fitted = ", ".join(f"{k} {v}" for k, v in r["fitted"].items())
            lines.append(
                f"| {r['variant']} | {r['target']} | {r['fitted_on']} | {r['gpu_figures']} | "
                f"{fitted} | {rt['prefill_ape']} / {rt['prefill_bias']:+} | "
                f"{rt['decode_ape']} / {rt['decode_bias']:+} | "
                f"{dr['prefill_ape']} / {dr['prefill_bias']:+} | "
                f"{dr['decode_ape']} / {dr['decode_bias']:+} | "
                f"{ins['prefill_ape']} / {ins['decode_ape']} |"
            )
    lines += [
        "<!-- logo:end -->",
    ]
    return "\n".join(lines)


def write_block(path: str, doc: dict) -> None:
    """Insert or replace the LOGO block of calibration-lomo.md."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    block = render_block(doc)
    begin, end = "<!-- logo:begin -->", "<!-- logo:end -->"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


if __name__ == "__main__":
    sys.exit(main())
