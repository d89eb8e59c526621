"""Per-GPU efficiencies from operator and collective timings (issue 19, items 1 and 2).

The calibrated model's end-to-end coefficients were fitted on H100 runs only. What another
GPU does differently is captured here, from measurements of the hardware rather than of
serving runs:

* **GEMM efficiency** -- Vidur's per-operator profiles
  (``vidur-profiling/data/profiling/compute/<gpu>/<model>/mlp.csv``: median milliseconds of
  the QKV, output, gated-MLP up and down projections per token count and TP degree) are
  fitted per GPU with the calibrated model's own linear-layer form::

      t = smoothmax(bytes / (BW x bandwidth), FLOPs / (peak x compute); p) + launch

  (``bytes`` = 2 x (K N + M K + M N), ``FLOPs`` = 2 M K N for M tokens, BF16). The
  fitted ``bandwidth`` and ``compute`` are the fractions of the datasheet figures the GPU
  reaches for serving-sized GEMMs (M <= 8192 tokens).
* **All-reduce** -- Vidur's NCCL profiles (``network/<setup>/all_reduce.csv``: median
  milliseconds per message size in bytes and GPU count), single-node rows only, per GPU
  count (= TP degree): the latency of decode-sized messages (median time of messages up
  to 1 MiB, i.e. up to 64 tokens of an 8192-wide model) and the bus bandwidth of large
  messages (4 MiB and up: ``size x 2 (n-1)/n / (t - latency)``); the GPU's summary is
  the median over the counts.
* **Small per-layer operators** -- the same profiles' norms, rotary embedding, activation
  and residual add at decode sizes (<= 64 tokens) of the 8192-wide models (Llama-2-70B on
  H100, Llama-3-70B on A100: the same layer shape): the GPU time of the kernels that are
  neither GEMMs nor attention, which the calibrated model's ``layer_us`` prices.

The calibrated model uses the ratios of these figures to the H100's (the GPU its
end-to-end fit saw), so the H100 stays exactly as fitted and other profiled GPUs follow
from what was measured on them (``catalog/data/gpu-efficiency.json``,
``scripts/calibration_logo.py``). Splitwise's whole-model timings
(``splitwise/perf_model.csv``) are kept out of the fit: they check it (see the script).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "COMPUTE_GPUS",
    "NETWORK_SETUPS",
    "SPLITWISE_GPUS",
    "AllReduceFit",
    "AllReduceRow",
    "GemmFit",
    "GemmRow",
    "LayerOpsRow",
    "SplitwiseRow",
    "fit_allreduce",
    "fit_gemm_efficiency",
    "fit_layer_ops",
    "fit_token_ops",
    "gemm_rows_from_csv",
    "gemm_seconds",
    "load_allreduce",
    "load_gemm_rows",
    "load_layer_ops",
    "load_splitwise",
]

#: Vidur's compute-profile folders and the catalog GPU each one measured.
COMPUTE_GPUS = {"h100": "H100", "a100": "A100-SXM"}
#: Vidur's network setups used (one NVLink node each) and their catalog GPU. The third
#: setup, ``h100_pairwise_nvlink`` (GPUs not all directly linked), is not a DGX/HGX node.
NETWORK_SETUPS = {"h100_dgx": "H100", "a100_dgx": "A100-SXM"}
#: Splitwise hardware names (the power-capped ``h100-80gb-pcap`` is left out).
SPLITWISE_GPUS = {"h100-80gb": "H100", "a100-80gb": "A100-SXM"}
#: GEMMs of one decoder layer: (Vidur column, K, N) as functions of the layer's shape.
_GEMMS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
#: Largest step the fit considers (serving batches; vLLM's token budgets are 2k-8k).
MAX_TOKENS = 8192
SMALL_MESSAGE_BYTES = 1024 * 1024
LARGE_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class GemmRow:
    """One profiled GEMM: M tokens x (K -> N) on one GPU at one TP degree."""

    gpu: str
    model: str
    tp: int
    tokens: int
    op: str
    flops: float
    bytes: float
    seconds: float


def gemm_rows_from_csv(path: str | os.PathLike[str], gpu: str, model: str) -> list[GemmRow]:
    """The four GEMMs of every row of one Vidur ``mlp.csv`` (times in ms in the file)."""
    out: list[GemmRow] = []
    with open(path, newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            tp = int(float(rec["num_tensor_parallel_workers"]))
            m = float(rec["num_tokens"])
            h = float(rec["n_embd"])
            heads = float(rec["n_head"])
            kv = float(rec["n_kv_head"])
            ffn = float(rec["n_expanded_embd"])
            gated = str(rec.get("use_gated_mlp", "True")).lower() in ("true", "1")
            hd = h / heads
            shapes = {
                "attn_pre_proj": (h, (heads + 2.0 * kv) * hd / tp),
                "attn_post_proj": (heads * hd / tp, h),
                "mlp_up_proj": (h, (2.0 if gated else 1.0) * ffn / tp),
                "mlp_down_proj": (ffn / tp, h),
            }
            for op in _GEMMS:
                k, n = shapes[op]
                ms = float(rec[f"time_stats.{op}.median"])
                if not (math.isfinite(ms) and ms > 0):
                    continue
                out.append(
                    GemmRow(
                        gpu=gpu,
                        model=model,
                        tp=tp,
                        tokens=int(m),
                        op=op,
                        flops=2.0 * m * k * n,
                        bytes=2.0 * (k * n + m * k + m * n),
                        seconds=ms * 1e-3,
                    )
                )
    return out


def profiled_layers(vidur_root: str | os.PathLike[str]) -> Iterator[tuple[str, str, str]]:
    """(GPU, model, path) of every Vidur ``mlp.csv`` under ``<root>/data/profiling/compute``,
    in a fixed order."""
    base = os.path.join(os.fspath(vidur_root), "data", "profiling", "compute")
    for folder, gpu in sorted(COMPUTE_GPUS.items()):
        top = os.path.join(base, folder)
        for dirpath, _dirs, files in sorted(os.walk(top)):
            if "mlp.csv" in files:
                model = os.path.relpath(dirpath, top).replace(os.sep, "/")
                yield gpu, model, os.path.join(dirpath, "mlp.csv")


def load_gemm_rows(vidur_root: str | os.PathLike[str]) -> list[GemmRow]:
    """Every GEMM row of every profiled model under ``<root>/data/profiling/compute``."""
    rows: list[GemmRow] = []
    for gpu, model, path in profiled_layers(vidur_root):
        rows.extend(gemm_rows_from_csv(path, gpu, model))
    return rows


@dataclass(frozen=True, slots=True)
class GemmFit:
    """Fractions of the datasheet bandwidth and FLOP/s a GPU reaches, and a launch cost."""

    bandwidth: float
    compute: float
    launch_us: float
    median_ape_pct: float
    rows: int


def gemm_seconds(
    rows: Sequence[GemmRow],
    bandwidth: float,
    compute: float,
    launch_us: float,
    peak_flops: float,
    peak_bw: float,
    smooth_p: float = 1.4,
) -> np.ndarray:
    """Predicted seconds of each GEMM (the calibrated model's linear-layer form)."""
    b = np.array([r.bytes for r in rows])
    f = np.array([r.flops for r in rows])
    mem = b / (peak_bw * bandwidth)
    cmp = f / (peak_flops * compute)
    hi = np.maximum(mem, cmp)
    joined = hi * ((mem / hi) ** smooth_p + (cmp / hi) ** smooth_p) ** (1.0 / smooth_p)
    result: np.ndarray = joined + launch_us * 1e-6
    return result


def fit_gemm_efficiency(
    rows: Sequence[GemmRow],
    peak_flops: float,
    peak_bw: float,
    *,
    max_tokens: int = MAX_TOKENS,
    smooth_p: float = 1.4,
) -> GemmFit:
    """Least-squares fit (log residuals) of bandwidth, compute and launch on ``rows``."""
    from scipy.optimize import least_squares

    use = [r for r in rows if r.tokens <= max_tokens]
    if len(use) < 3:
        raise ValueError(f"need at least 3 GEMM rows to fit, got {len(use)}")
    t = np.array([r.seconds for r in use])

    def resid(x: np.ndarray) -> np.ndarray:
        pred = gemm_seconds(use, x[0], x[1], x[2], peak_flops, peak_bw, smooth_p)
        out: np.ndarray = np.log(pred / t)
        return out

    sol = least_squares(resid, [0.8, 0.7, 5.0], bounds=([0.05, 0.05, 0.0], [1.5, 1.5, 100.0]))
    ape = np.abs(np.exp(resid(sol.x)) - 1.0) * 100.0
    return GemmFit(
        bandwidth=float(sol.x[0]),
        compute=float(sol.x[1]),
        launch_us=float(sol.x[2]),
        median_ape_pct=float(np.median(ape)),
        rows=len(use),
    )


@dataclass(frozen=True, slots=True)
class AllReduceRow:
    setup: str
    gpu: str
    gpus: int
    size_bytes: float
    seconds: float


def load_allreduce(vidur_root: str | os.PathLike[str]) -> list[AllReduceRow]:
    """Single-node all-reduce timings of the setups in :data:`NETWORK_SETUPS`."""
    base = os.path.join(os.fspath(vidur_root), "data", "profiling", "network")
    rows: list[AllReduceRow] = []
    for setup, gpu in sorted(NETWORK_SETUPS.items()):
        path = os.path.join(base, setup, "all_reduce.csv")
        with open(path, newline="", encoding="utf-8") as fh:
            for rec in csv.DictReader(fh):
                n = int(float(rec["num_workers"]))
                if int(float(rec["devices_per_node"])) != n:
                    continue  # spans nodes: not the NVLink path a TP group uses
                rows.append(
                    AllReduceRow(
                        setup=setup,
                        gpu=gpu,
                        gpus=n,
                        size_bytes=float(rec["size"]),
                        seconds=float(rec["time_stats.all_reduce.median"]) * 1e-3,
                    )
                )
    return rows


@dataclass(frozen=True, slots=True)
class AllReduceFit:
    """Summary latency and bus bandwidth, and both per GPU count (``per_tp``)."""

    latency_us: float
    bus_gbs: float
    rows: int
    #: GPU count -> (latency µs, bus GB/s) as measured at that count.
    per_tp: dict[int, tuple[float, float]] = field(default_factory=dict)


def fit_allreduce(rows: Iterable[AllReduceRow]) -> AllReduceFit:
    """Small-message latency and large-message bus bandwidth (see the module docstring)."""
    use = [r for r in rows if r.gpus > 1]
    per_n: dict[int, float] = {}
    for n in sorted({r.gpus for r in use}):
        small = [r.seconds for r in use if r.gpus == n and r.size_bytes <= SMALL_MESSAGE_BYTES]
        if small:
            per_n[n] = float(np.median(small))
    if not per_n:
        raise ValueError("no all-reduce rows of at most 1 MiB")
    # One latency per GPU count (2, 4, 8 differ: NVSwitch vs direct paths); the summary is
    # their median, so no GPU count dominates through its number of rows.
    latency = float(np.median(list(per_n.values())))
    bws: dict[int, list[float]] = {n: [] for n in per_n}
    for r in use:
        if r.size_bytes >= LARGE_MESSAGE_BYTES and r.gpus in per_n and r.seconds > per_n[r.gpus]:
            bws[r.gpus].append(
                r.size_bytes * 2.0 * (r.gpus - 1) / r.gpus / (r.seconds - per_n[r.gpus])
            )
    every = [b for v in bws.values() for b in v]
    if not every:
        raise ValueError("no all-reduce rows of 4 MiB or more")
    per_tp = {n: (per_n[n] * 1e6, float(np.median(v)) / 1e9) for n, v in sorted(bws.items()) if v}
    return AllReduceFit(
        latency_us=latency * 1e6,
        bus_gbs=float(np.median(every)) / 1e9,
        rows=len(use),
        per_tp=per_tp,
    )


#: Vidur's per-layer operators that are neither GEMMs nor attention (one of each per
#: layer; a layer has two norms, listed separately, and two residual adds, one column).
_SMALL_OPS = ("input_layernorm", "attn_rope", "post_attention_layernorm", "mlp_act", "add")
#: Layer width whose small operators are compared across GPUs (both have a 70B model).
LAYER_OPS_HIDDEN = 8192
LAYER_OPS_MAX_TOKENS = 64


@dataclass(frozen=True, slots=True)
class LayerOpsRow:
    """The small operators of one layer: M tokens on one GPU at one TP degree (seconds)."""

    gpu: str
    model: str
    hidden: int
    tp: int
    tokens: int
    seconds: float


def load_layer_ops(vidur_root: str | os.PathLike[str]) -> list[LayerOpsRow]:
    """Per-layer small-operator time of every profiled row (the residual add counted twice)."""
    out: list[LayerOpsRow] = []
    for gpu, model, path in profiled_layers(vidur_root):
        with open(path, newline="", encoding="utf-8") as fh:
            for rec in csv.DictReader(fh):
                try:
                    ms = [float(rec[f"time_stats.{op}.median"]) for op in _SMALL_OPS]
                except (KeyError, ValueError):
                    continue
                if not all(math.isfinite(v) and v >= 0 for v in ms):
                    continue
                out.append(
                    LayerOpsRow(
                        gpu=gpu,
                        model=model,
                        hidden=int(float(rec["n_embd"])),
                        tp=int(float(rec["num_tensor_parallel_workers"])),
                        tokens=int(float(rec["num_tokens"])),
                        seconds=(sum(ms) + ms[-1]) * 1e-3,
                    )
                )
    return out


def fit_layer_ops(
    rows: Iterable[LayerOpsRow],
    hidden: int = LAYER_OPS_HIDDEN,
    max_tokens: int = LAYER_OPS_MAX_TOKENS,
) -> float:
    """Median small-operator µs per layer at decode sizes for layers ``hidden`` wide."""
    use = [r.seconds for r in rows if r.hidden == hidden and r.tokens <= max_tokens]
    if not use:
        raise ValueError(f"no small-operator rows with hidden {hidden} and <= {max_tokens} tokens")
    return float(np.median(use)) * 1e6


#: Fewest tokens of the rows whose per-token small-operator cost is fitted (below this
#: the fixed kernel time dominates).
TOKEN_OPS_MIN_TOKENS = 256


def fit_token_ops(
    rows: Iterable[LayerOpsRow],
    hidden: int = LAYER_OPS_HIDDEN,
    min_tokens: int = TOKEN_OPS_MIN_TOKENS,
) -> tuple[float, float]:
    """Per-token small-operator cost of one layer, µs: (replicated, sharded).

    Under tensor parallelism the norms and residual adds run on the full hidden vector on
    every GPU (replicated: the same time at any TP) while rotary and the activation run on
    the GPU's share of heads and FFN columns (sharded: time / TP). Least squares of
    ``t = a + tokens * (replicated + sharded / tp)`` over the rows ``hidden`` wide with at
    least ``min_tokens`` tokens, every TP degree together (the TP spread separates the
    two). Used by the leave-one-GPU-out structure checks (``scripts/calibration_logo.py``).
    """
    use = [r for r in rows if r.hidden == hidden and r.tokens >= min_tokens]
    if len({r.tp for r in use}) < 2:
        raise ValueError(
            f"need rows at two TP degrees with hidden {hidden} and >= {min_tokens} tokens"
        )
    design = np.array([[1.0, r.tokens, r.tokens / r.tp] for r in use])
    target = np.array([r.seconds * 1e6 for r in use])
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    return float(coef[1]), float(coef[2])


@dataclass(frozen=True, slots=True)
class SplitwiseRow:
    """Median prompt (prefill) and per-token (decode) time of one configuration, ms."""

    model: str
    gpu: str
    tp: int
    prompt: int
    batch: int
    tokens: int
    prompt_ms: float
    token_ms: float


def load_splitwise(path: str | os.PathLike[str], model: str = "llama2-70b") -> list[SplitwiseRow]:
    """Splitwise's ``perf_model.csv`` rows of ``model``, duplicates reduced to medians."""
    groups: dict[tuple[str, int, int, int, int], list[tuple[float, float]]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            gpu = SPLITWISE_GPUS.get(rec["hardware"])
            if gpu is None or rec["model"] != model:
                continue
            key = (
                gpu,
                int(float(rec["tensor_parallel"])),
                int(float(rec["prompt_size"])),
                int(float(rec["batch_size"])),
                int(float(rec["token_size"])),
            )
            groups.setdefault(key, []).append((float(rec["prompt_time"]), float(rec["token_time"])))
    out = []
    for (gpu, tp, prompt, batch, tokens), vals in sorted(groups.items()):
        out.append(
            SplitwiseRow(
                model=model,
                gpu=gpu,
                tp=tp,
                prompt=prompt,
                batch=batch,
                tokens=tokens,
                prompt_ms=float(np.median([v[0] for v in vals])),
                token_ms=float(np.median([v[1] for v in vals])),
            )
        )
    return out
