"""How far a calibrated-model run is from the data the model was fitted on, and what error
to expect there.

The calibrated model's coefficients were fitted on real vLLM runs of a few models on one
GPU (``catalog/data/calibrated.json``, ``meta``). A run of another model, GPU or TP degree
is an extrapolation, and the leave-one-model-out validation (docs/calibration-lomo.md)
measured how large the errors of such extrapolations were. This module places a run in
that picture -- GPU measured or extrapolated, model (family) seen or not, TP seen or not,
mixture-of-experts or dense -- and attaches the matching error statistics, so that every
number the simulator prints comes with a statement of how much to trust it.

The statistics live in ``catalog/data/fidelity.json``, which :func:`build_table` derives
from ``docs/calibration-lomo.json`` (and the leave-one-GPU-out table,
``docs/calibration-logo.json``); ``scripts/fidelity_table.py`` regenerates it and
``tests/test_fidelity.py`` checks that the shipped file matches the docs.
"""

from __future__ import annotations

import json
import os
import re
import statistics
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from inference_sim.catalog.architecture import (
    ModelArchitecture,
    WeightQuantization,
    bundled_architecture,
)
from inference_sim.latency.calibrated import gpu_correction, kernel_family
from inference_sim.latency.nodes import gpus_per_node, spans_nodes

__all__ = [
    "FIDELITY_PATH",
    "METRICS",
    "assess",
    "build_table",
    "fidelity_table",
    "log_line",
    "model_family",
    "run_fidelity",
]

FIDELITY_PATH = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "catalog", "data", "fidelity.json"
)
#: (name in the fidelity record, APE column of the LOMO rows). TPOT is TPOT*: against the
#: tokens actually generated (docs/calibration.md, "TPOT and TPOT*").
METRICS: tuple[tuple[str, str], ...] = (
    ("e2e", "e2e_ape"),
    ("tpot", "tpot_true_ape"),
    ("ttft", "ttft_ape"),
)
#: Fewest held-out rows at one TP degree before the TP-specific figure is used.
MIN_ROWS_PER_TP = 3

#: A name and a major version (``llama-3.1``, ``qwen2.5``), not a size (``yi-34b``, ``8x7b``).
_VERSIONED = re.compile(r"([a-z]+)-?(\d+)(?:\.\d+)?(?![\d.]*[bx])")
_WORD = re.compile(r"[a-z]+")
#: Publisher names some repositories put before the model's own name (Meta's Llama 3 and
#: 3.1 repositories before their 2024 rename: ``Meta-Llama-3-8B``).
_PUBLISHER_PREFIXES: tuple[str, ...] = ("meta-",)


def model_family(model_id: str) -> str:
    """A model's family: its name's first word plus major version, without the org.

    ``meta-llama/llama-3.1-8b-instruct`` -> ``llama-3``; ``qwen/qwen2.5-7b-instruct`` ->
    ``qwen-2``; ``redhatai/phi-4-fp8-dynamic`` -> ``phi-4``; ``01-ai/yi-34b`` -> ``yi``
    (``34b`` is a size, not a version); ``mistralai/mixtral-8x7b-v0.1`` -> ``mixtral``.
    Quantized re-uploads fall in their base model's family. Meta's older repository
    names carry a ``Meta-`` prefix (``meta-llama/Meta-Llama-3-8B-Instruct``, and
    re-uploads such as ``RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8``): it is the publisher,
    not the model's name, so it is dropped before matching (``llama-3``, not ``meta``).
    """
    base = model_id.strip().lower().rsplit("/", 1)[-1]
    for prefix in _PUBLISHER_PREFIXES:
        if base.startswith(prefix) and len(base) > len(prefix):
            base = base[len(prefix) :]
            break
    m = _VERSIONED.match(base)
    if m:
        return f"{m.group(1)}-{m.group(2)}"
    w = _WORD.match(base)
    return w.group(0) if w else base


def _stats(values: Iterable[float]) -> dict[str, float | int]:
    vals = [float(v) for v in values]
    return {
        "median": round(statistics.median(vals), 1),
        "max": round(max(vals), 1),
        "rows": len(vals),
    }


def _group_stats(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    return {name: _stats(r[col] for r in rows) for name, col in METRICS}


def _is_moe(model_id: str) -> bool:
    arch = bundled_architecture(model_id)
    return arch is not None and arch.is_moe


def build_table(lomo: Mapping[str, Any], logo: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The fidelity data from the leave-one-model-out results (and leave-one-GPU-out ones).

    ``lomo`` is ``docs/calibration-lomo.json`` (``scripts/calibration_lomo.py --write``);
    ``logo`` is ``docs/calibration-logo.json`` (``scripts/calibration_logo.py --write``).
    """
    held_out = list(lomo["rows"]["LOMO"])
    in_sample = list(lomo["rows"]["in-sample"])
    models: dict[str, dict[str, Any]] = {}
    for r in in_sample:
        m = models.setdefault(
            r["model"], {"family": model_family(r["model"]), "tp": [], "moe": _is_moe(r["model"])}
        )
        if r["tp"] not in m["tp"]:
            m["tp"] = sorted([*m["tp"], r["tp"]])
    moe_rows = [r for r in held_out if models[r["model"]]["moe"]]
    dense_rows = [r for r in held_out if not models[r["model"]]["moe"]]
    by_tp: dict[str, Any] = {}
    for tp in sorted({r["tp"] for r in dense_rows}):
        rows = [r for r in dense_rows if r["tp"] == tp]
        by_tp[str(tp)] = _group_stats(rows)

    def per_model(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
        return {m: _group_stats([r for r in rows if r["model"] == m]) for m in sorted(models)}

    gpus: dict[str, Any] = {"H100": {"domain": "measured"}}
    if logo:
        for gpu, entry in sorted(logo.get("gpus", {}).items()):
            if gpu not in gpus:
                gpus[gpu] = {
                    "domain": "profiled",
                    "step_error_pct": {
                        k: round(float(v), 1) for k, v in entry["step_error_pct"].items()
                    },
                    "basis": entry.get("basis", ""),
                }
    return {
        "format": "inference-sim-fidelity/1",
        "datasheet_gpu": _datasheet_transfer(logo),
        "source": (
            "derived by scripts/fidelity_table.py from docs/calibration-lomo.json "
            f"({lomo.get('generated', '')}) and docs/calibration-logo.json"
            f" ({(logo or {}).get('generated', 'absent')})"
        ),
        "training": {
            "gpus": ["H100"],
            "models": dict(sorted(models.items())),
            "tp": sorted({tp for m in models.values() for tp in m["tp"]}),
            "runs": len({r["run"] for r in in_sample}),
        },
        "errors": {
            "in_sample": per_model(in_sample),
            "held_out_model": per_model(held_out),
            "held_out_dense": _group_stats(dense_rows),
            "held_out_dense_by_tp": by_tp,
            "held_out_moe": _group_stats(moe_rows) if moe_rows else None,
            "held_out_all": _group_stats(held_out),
        },
        "gpus": gpus,
    }


def _datasheet_transfer(logo: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What pricing a GPU by its datasheet alone cost where it could be checked.

    The leave-one-GPU-out step rows with ``datasheet`` figures predicted each profiled
    GPU's step timings from the other GPU's efficiencies on its own datasheet -- exactly
    how a GPU without measurements (L40S, H200, ...) is priced. The mean over both
    directions is the expected extra step error, the worse direction its worst case
    (decode steps for E2E and TPOT, prefill steps for TTFT).
    """
    rows = [
        r
        for r in (logo or {}).get("step_logo", [])
        if r["gpu_figures"] == "datasheet" and r["prediction"] == "ratio"
    ]
    if not rows:
        return None
    decode = [float(r["decode_ape"]) for r in rows]
    prefill = [float(r["prefill_ape"]) for r in rows]

    def pct(dec: float, pre: float) -> dict[str, float]:
        return {"e2e": round(dec, 1), "tpot": round(dec, 1), "ttft": round(pre, 1)}

    return {
        "step_error_pct": pct(statistics.fmean(decode), statistics.fmean(prefill)),
        "step_error_max_pct": pct(max(decode), max(prefill)),
        "basis": (
            "leave-one-GPU-out steps priced from the datasheet with the other GPU's "
            "efficiencies ("
            + ", ".join(f"{r['target']} from {r['fitted_on']}" for r in rows)
            + "; Splitwise Llama-2-70B, ratio)"
        ),
    }


@cache
def fidelity_table() -> dict[str, Any]:
    """The shipped fidelity data (``catalog/data/fidelity.json``)."""
    with open(FIDELITY_PATH, encoding="utf-8") as fh:
        doc: dict[str, Any] = json.load(fh)
    return doc


def _basis(
    table: Mapping[str, Any], model: str, tp: int, moe: bool, gpu_measured: bool
) -> tuple[dict[str, Any], str]:
    errors = table["errors"]
    trained = table["training"]["models"].get(model)
    if trained is not None and gpu_measured and tp in trained["tp"]:
        return errors["in_sample"][model], (
            "in-sample rows of this model (it is in the training set at this TP)"
        )
    if moe and errors.get("held_out_moe"):
        moe_models = [m for m, v in table["training"]["models"].items() if v["moe"]]
        return errors["held_out_moe"], (
            f"leave-one-model-out rows of the MoE model{'s' if len(moe_models) > 1 else ''} "
            f"in training ({', '.join(moe_models)})"
        )
    by_tp = {
        int(k): v
        for k, v in errors["held_out_dense_by_tp"].items()
        if v["e2e"]["rows"] >= MIN_ROWS_PER_TP
    }
    if tp in by_tp:
        return by_tp[tp], f"leave-one-model-out rows of dense models at TP {tp}"
    below = [t for t in by_tp if t < tp]
    above = [t for t in by_tp if t > tp]
    near = ([max(below)] if below else []) + ([min(above)] if above else [])
    if not near:
        return errors["held_out_dense"], "leave-one-model-out rows of all dense models"
    # An unseen degree: the worse of the nearest measured degrees on either side (the
    # errors grow with TP in the table, so all dense rows, mostly TP 1, would understate).
    merged = {
        name: {
            "median": max(by_tp[t][name]["median"] for t in near),
            "max": max(by_tp[t][name]["max"] for t in near),
            "rows": sum(by_tp[t][name]["rows"] for t in near),
        }
        for name, _ in METRICS
    }
    return merged, (
        "leave-one-model-out rows of dense models at the nearest trained TP "
        f"({' and '.join(map(str, near))}), the worse of them"
    )


def assess(
    model: str,
    arch: ModelArchitecture,
    gpu: str,
    tp: int,
    *,
    shipped: bool = True,
    table: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Where the run (``model`` on ``gpu`` at ``tp``) sits relative to the training data.

    ``gpu`` is the canonical GPU name (``A100-SXM``, not the alias). ``shipped`` is False
    for ``--latency-coeffs`` sets, whose training data this module does not know.
    Returns the results file's ``fidelity`` section.
    """
    if not shipped:
        return {
            "coefficients": "custom (--latency-coeffs)",
            "note": "training domain unknown: no expected error is given for custom coefficients",
        }
    table = table if table is not None else fidelity_table()
    training = table["training"]
    model = model.strip().lower()
    family = model_family(model)
    families = sorted({v["family"] for v in training["models"].values()})
    if model in training["models"]:
        seen = "model"
    elif family in families:
        seen = "family"
    else:
        seen = "no"
    tp_seen = tp in training["tp"]
    moe = arch.is_moe
    gpu_entry = table["gpus"].get(gpu, {"domain": "datasheet"})
    gpu_measured = gpu_entry["domain"] == "measured"
    stats, basis = _basis(table, model, tp, moe, gpu_measured)
    expected = {k: dict(v) for k, v in stats.items()}
    lower_bound = False
    caveats: list[str] = []
    step = gpu_entry.get("step_error_pct")
    transfer = table.get("datasheet_gpu") if not gpu_measured and not step else None
    if step:
        _add_step_error(expected, step, step)
        basis += (
            f", plus the leave-one-GPU-out step-time error on {gpu} "
            f"({step.get('step', max(step.values()))} %, docs/calibration-lomo.md)"
        )
        caveats.append(
            f"{gpu} has no end-to-end vLLM runs in training: its efficiencies come from "
            "operator and step timings (docs/calibration.md)"
        )
    elif not gpu_measured:
        datasheet_note = (
            f"{gpu} has neither end-to-end runs nor operator timings: it is priced by its "
            f"{gpu_correction(gpu).source} (an independent check on real A100-80GB and L40S runs, "
            "before per-GPU efficiencies were fitted, found TPOT and E2E 8-24 % too fast "
            "with the H100's)"
        )
        sibling = _sibling(table, gpu)
        own = table["gpus"][sibling].get("step_error_pct") if sibling else None
        if transfer:
            median, worst = transfer["step_error_pct"], transfer["step_error_max_pct"]
            if own:
                # Priced with the sibling's measured efficiencies: at least its own error.
                median, worst = _at_least(median, own), _at_least(worst, own)
            _add_step_error(expected, median, worst)
            basis += f", plus the step-time error of {transfer['basis']}"
            if own:
                basis += f" or of {sibling} itself, whichever is larger"
        else:
            lower_bound = True
            datasheet_note += "; expect more than the figures given"
        if sibling is None and not gpu_measured:
            lower_bound = True
            datasheet_note += (
                "; no profiled GPU runs its kernel generation, and the datasheet transfer "
                "was checked between A100 and H100 only"
            )
        caveats.append(datasheet_note)
    if not tp_seen:
        lower_bound = True
        caveats.append(
            f"TP {tp} is outside the training TPs "
            f"({', '.join(map(str, training['tp']))}): no held-out evidence at this degree"
        )
    if spans_nodes(gpu, tp):
        lower_bound = True
        node = gpus_per_node(gpu)
        caveats.append(
            f"TP {tp} spans {-(-tp // node)} nodes of {node} GPUs: every all-reduce is "
            "priced over the network between nodes (NCCL latency measured on two A100 "
            "nodes, the node's datasheet network bandwidth); extrapolated, no measured run "
            "spans nodes (docs/calibration.md#tensor-parallelism-across-nodes)"
        )
    local = arch.local_attention
    if local is not None:
        caveats.append(
            f"{local.kind} local attention ({local.layers} of {arch.layers} layers, "
            f"{local.size} tokens): those layers' KV reads and attention FLOPs are priced "
            "from the window, which no training model exercised (Llama-4-Scout's 8192-token "
            "chunks exceed its runs' 4096-token contexts)"
        )
    if moe:
        moe_tps = sorted({t for v in training["models"].values() if v["moe"] for t in v["tp"]})
        caveats.append(
            "one MoE model in training (its quantized experts at TP "
            f"{', '.join(map(str, moe_tps))}): routed-expert costs are fitted on it alone, "
            "other MoE models are extrapolated from it (docs/calibration.md)"
        )
        if tp not in moe_tps:
            lower_bound = True
            caveats.append(
                f"TP {tp}: no MoE model was measured at this degree (expert-parallel "
                "collectives and per-GPU expert reads are extrapolated), so the figures "
                "are a lower bound"
            )
    quant = arch.quantization
    if quant is not None and model not in training["models"] and not quant.w8a8:
        kind = _quantization_kind(model, quant)
        lower_bound = True
        caveats.append(
            f"{kind} weights ({quant.scope} layers): the only quantized training model "
            "(Llama-4-Scout FP8-dynamic) quantizes its MoE feed-forward layers; these "
            "GEMM and weight costs are extrapolated"
        )
    if seen == "no":
        caveats.append(
            f"model family {family!r} is not in training (seen: {', '.join(families)}); "
            "the leave-one-model-out folds held out whole families too"
        )
    return {
        "coefficients": "shipped",
        "training_domain": (
            f"{training['runs']} vLLM runs of {len(training['models'])} models on "
            f"{', '.join(training['gpus'])}, TP {', '.join(map(str, training['tp']))}"
        ),
        "gpu": gpu,
        "gpu_domain": gpu_entry["domain"],
        "model_family": family,
        "model_seen": seen,
        "tp": tp,
        "tp_seen": tp_seen,
        "moe": moe,
        "expected_abs_error_pct": expected,
        "basis": basis,
        "lower_bound": lower_bound,
        "caveats": caveats,
    }


#: The largest context of the training runs: every run served with
#: ``--max-model-len 4096`` (prompts of 550-1 034 tokens). Longer prompts lean on the
#: attention term, whose coefficient the training data leave at its prior.
TRAINING_MAX_MODEL_LEN = 4096


def scope_caveats(
    fid: dict[str, Any], options: Mapping[str, Any], mean_prompt_tokens: float = 0.0
) -> None:
    """Add what the four axes (GPU, model, TP, MoE) do not see to a ``fidelity`` record:
    features the training runs never used and inputs that replace the measured GPU or
    model. Each makes the figures a lower bound."""
    if fid.get("coefficients") != "shipped":
        return
    out: list[str] = []
    if options.get("quantization"):
        out.append(
            f"--quantization {options['quantization']}: online weight quantization is not "
            "in the training runs (their FP8 model was quantized offline)"
        )
    if str(options.get("kv_cache_dtype", "auto")).startswith("fp8"):
        out.append("an FP8 KV cache is not in the training runs (all used the model's dtype)")
    if options.get("speculative_method"):
        out.append(
            "speculative decoding is priced from the calibrated step "
            "(docs/speculative-decoding.md), not fitted on speculative runs"
        )
        method = str(options["speculative_method"]).strip().lower().replace("_", "-")
        if method in ("ngram", "draft-model"):  # vLLM v0.15 runs them synchronously
            out.append(
                f"--speculative-method {method} runs without async scheduling, as in vLLM "
                "v0.15: the CPU work synchronous scheduling exposes between steps is not "
                "priced, so latencies are optimistic by an unmeasured amount"
            )
    if options.get("max_loras") or options.get("lora_adapters"):
        out.append("LoRA adapters are priced from the calibrated step, not fitted on LoRA runs")
    if options.get("kv_cpu_blocks", 0) > 0 or options.get("cpu_offload_gib", 0) > 0:
        out.append(
            "a CPU KV tier: the fit's replays of the training runs leave their CPU "
            "offloading out, so load-back times and CPU hits are not checked against "
            "measurements (docs/kv-offload.md)"
        )
    if options.get("hardware_config"):
        out.append(
            "--hardware-config supplies the GPU figures: the expected error holds only "
            f"for the catalog's {fid.get('gpu')}"
        )
    if options.get("model_config_folder"):
        out.append(
            "--model-config-folder supplies the architecture: the model's place in the "
            "training domain is judged by its name only"
        )
    if mean_prompt_tokens > TRAINING_MAX_MODEL_LEN:
        out.append(
            f"prompts of {mean_prompt_tokens:.0f} tokens on average, longer than any "
            f"training context ({TRAINING_MAX_MODEL_LEN}): the attention term is at its "
            "prior there"
        )
    if out:
        fid["caveats"] = [*fid.get("caveats", []), *out]
        fid["lower_bound"] = True


def combine_pools(
    prefill: dict[str, Any] | None,
    decode: dict[str, Any] | None,
    prefill_model: str,
    decode_model: str,
) -> dict[str, Any] | None:
    """One record for a disaggregated run whose pools differ (GPU, TP, latency model):
    TTFT is the prefill pool's, TPOT the decode pool's, E2E the worse of the two. A pool
    on another latency model (``prefill_model`` / ``decode_model``) gives no figure for
    what it decides."""
    if prefill is None and decode is None:
        return None
    for fid in (prefill, decode):
        if fid is not None and fid.get("coefficients") != "shipped":
            return fid
    base = dict(decode if decode is not None else prefill)  # type: ignore[arg-type]
    base["pools"] = {"prefill": prefill, "decode": decode}
    expected: dict[str, Any] = {}
    caveats: list[str] = []
    if prefill is not None:
        expected["ttft"] = prefill["expected_abs_error_pct"]["ttft"]
        caveats += [f"prefill pool: {c}" for c in prefill["caveats"]]
    else:
        caveats.append(f"the prefill pool runs the {prefill_model} model: no figure for TTFT")
    if decode is not None:
        expected["tpot"] = decode["expected_abs_error_pct"]["tpot"]
        caveats += [f"decode pool: {c}" for c in decode["caveats"]]
    else:
        caveats.append(f"the decode pool runs the {decode_model} model: no figure for TPOT, E2E")
    if prefill is not None and decode is not None:
        a, b = prefill["expected_abs_error_pct"]["e2e"], decode["expected_abs_error_pct"]["e2e"]
        expected["e2e"] = {k: max(a[k], b[k]) if k != "rows" else min(a[k], b[k]) for k in a}
    both = [f for f in (prefill, decode) if f is not None]
    for key in ("gpu", "tp"):
        values = [str(f[key]) for f in both]
        if len(set(values)) > 1:
            base[key] = f"{values[0]} (prefill) / {values[1]} (decode)"
    base["tp_seen"] = all(f["tp_seen"] for f in both)
    domains = [f["gpu_domain"] for f in both]
    base["gpu_domain"] = next(
        (d for d in ("datasheet", "profiled", "measured") if d in domains), domains[0]
    )
    base["expected_abs_error_pct"] = expected
    base["caveats"] = caveats
    base["lower_bound"] = any(f["lower_bound"] for f in both) or len(both) < 2
    base["basis"] = "; ".join(
        f"{name} pool: {f['basis']}" for name, f in (("prefill", prefill), ("decode", decode)) if f
    )
    return base


def _at_least(errors: Mapping[str, Any], floor: Mapping[str, Any]) -> dict[str, float]:
    """``errors`` per metric, raised to ``floor``'s value where that is larger."""
    return {k: max(float(v), float(floor.get(k, 0.0))) for k, v in errors.items()}


def _sibling(table: Mapping[str, Any], gpu: str) -> str | None:
    """The measured or profiled GPU whose efficiencies a datasheet GPU borrows (the same
    kernel generation, as ``latency.calibrated.gpu_correction`` picks it), if any."""
    family = kernel_family(gpu)
    if family is None:
        return None
    return next((name for name in sorted(table["gpus"]) if kernel_family(name) == family), None)


def _quantization_kind(model: str, quant: WeightQuantization) -> str:
    """``4-bit``, ``INT8 W8A8``, ``FP8`` or ``8-bit weight-only``, from the stored width and
    what the checkpoint's ``quantization_config`` says its GEMMs compute in; only a record
    that does not say (a bundled entry) falls back to the checkpoint's name
    (compressed-tensors checkpoints name their scheme)."""
    if quant.bytes_per_param < 1.0:
        return "4-bit"
    dtype = quant.gemm_dtype
    if dtype == "?":
        name = model.lower()
        dtype = "fp8" if "fp8" in name else "int8" if "w8a8" in name else ""
    return {"int8": "INT8 W8A8", "fp8": "FP8"}.get(dtype, "8-bit weight-only")


def _add_step_error(
    expected: dict[str, dict[str, Any]], median: Mapping[str, Any], worst: Mapping[str, Any]
) -> None:
    """Add a GPU-transfer step error (percent points) to the model-level figures."""
    for name, _ in METRICS:
        for key, source in (("median", median), ("max", worst)):
            add = float(source.get(name, source.get("step", 0.0)))
            expected[name][key] = round(expected[name][key] + add, 1)


_DOMAIN_WORDS = {
    "measured": "measured",
    "profiled": "extrapolated from operator/step timings",
    "datasheet": "extrapolated from its datasheet",
}


def log_line(fid: Mapping[str, Any]) -> str:
    """One ``--log info`` line summarising a fidelity record."""
    if fid.get("coefficients") != "shipped":
        return f"fidelity: {fid.get('note', '')}"
    e = fid["expected_abs_error_pct"]
    seen = {"model": "seen", "family": "family seen", "no": "unseen"}[fid["model_seen"]]
    bound = "at least " if fid["lower_bound"] else ""
    given = [(label, e[key]) for key, label in (("e2e", "E2E"), ("tpot", "TPOT"), ("ttft", "TTFT"))
             if key in e]  # fmt: skip
    figures = ", ".join(f"{label} {v['median']} %" for label, v in given)
    worst = " / ".join(f"{v['max']}" for _, v in given)
    caveats = fid.get("caveats") or []
    extra = f"; {len(caveats)} caveat(s) in the results file" if caveats else ""
    return (
        f"fidelity: GPU {fid['gpu']} {_DOMAIN_WORDS.get(fid['gpu_domain'], fid['gpu_domain'])}; "
        f"model {seen} (family {fid['model_family']}); TP {fid['tp']} "
        f"{'seen' if fid['tp_seen'] else 'unseen'}; {'MoE' if fid['moe'] else 'dense'} -> "
        f"expected |error| {bound}{figures} median (worst {worst} %); basis: {fid['basis']}"
        f"{extra}"
    )


def run_fidelity(
    latency_model: str,
    model: str,
    arch: ModelArchitecture | None,
    gpu: str,
    tp: int,
    latency_coeffs_path: str,
) -> dict[str, Any] | None:
    """The ``fidelity`` section of a run, or None unless it uses the calibrated model."""
    if latency_model != "calibrated" or arch is None:
        return None
    return assess(model, arch, gpu, tp, shipped=not latency_coeffs_path)
