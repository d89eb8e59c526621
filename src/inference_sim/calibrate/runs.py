"""Measured serving runs: reading them (CSV, YAML, inference-perf folders) and replaying them.

A :class:`MeasuredRun` is one deployment (model, GPU, TP, engine limits, KV capacity)
under one inference-perf ``shared_prefix`` workload with one or more load stages, and
the client-side means measured per stage (TTFT, E2E, time per output token). The
formats are documented in docs/calibration.md; the CSV columns are those of the vLLM
training table (``training_runs.csv``).

:meth:`MeasuredRun.workload_spec` and :meth:`MeasuredRun.sim_options` turn a run into
the simulator's workload spec and options (what ``blis calibrate --write-specs`` writes
out as files and commands).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from inference_sim.catalog.architecture import bundled_architecture, renamed_model_id
from inference_sim.config.kv_dtype import KV_CACHE_DTYPES
from inference_sim.core.inputs import load_json, load_yaml, read_text

__all__ = [
    "DEFAULT_PROMPT_SCALE",
    "MeasuredRun",
    "RunsError",
    "StageMeasurement",
    "load_runs",
    "read_inference_perf_folder",
    "read_runs_csv",
    "read_runs_yaml",
]

#: Served prompts are longer than nominal (random token ids re-tokenised after
#: decoding): 4-6 % in the vLLM 0.15.1 runs that report it. Used when a run does not.
DEFAULT_PROMPT_SCALE = 1.05
#: inference-perf's shared_prefix defaults, which the tool ran whatever the profile said.
TOOL_GROUPS = 10
TOOL_PROMPTS_PER_GROUP = 10


class RunsError(ValueError):
    """A measured-runs file that cannot be used (one line naming the file and field)."""


@dataclass(frozen=True)
class StageMeasurement:
    """Client-side means of one load stage (milliseconds); 0 means not measured."""

    index: int
    rate: float
    duration_s: float
    ttft_ms: float
    e2e_ms: float
    tpot_ms: float = 0.0  # as reported: (E2E - TTFT) / (measured output length - 1)
    output_len_mean: float = 0.0  # output length the load tool counted, when reported
    prompt_len_mean: float = 0.0
    ttft_p90_ms: float = 0.0
    e2e_p90_ms: float = 0.0

    def tpot_true_ms(self, output_len: int) -> float:
        """(E2E - TTFT) / (output_len - 1): per-token time with the tokens actually generated.

        With ``ignore_eos`` the server generates exactly ``output_len`` tokens; the load
        tool's own count (``output_len_mean``) can be lower (Llama-2 responses it counts
        as 0 tokens), which inflates the reported TPOT.
        """
        if output_len <= 1 or self.e2e_ms <= 0:
            return 0.0
        return (self.e2e_ms - self.ttft_ms) / (output_len - 1)


@dataclass(frozen=True)
class MeasuredRun:
    """One measured deployment + workload, with its per-stage measurements."""

    name: str
    model: str
    hardware: str
    tp: int
    max_num_batched_tokens: int
    system_prompt_len: int
    question_len: int
    output_len: int
    stages: tuple[StageMeasurement, ...]
    max_num_seqs: int = 128
    max_model_len: int = 4096
    #: Data-parallel engines behind the one server (``vllm serve --data-parallel-size``):
    #: replayed as that many instances, balanced as vLLM 0.15 does (:meth:`dp_routing`).
    dp: int = 1
    #: vLLM's ``--kv-cache-dtype`` of the run (``auto``: the model's dtype).
    kv_cache_dtype: str = "auto"
    #: ``fp8`` when a 16-bit checkpoint was served with ``--quantization fp8`` (the table's
    #: ``precision`` FP8 for a model whose checkpoint is not quantized), else "".
    quantization: str = ""
    total_kv_blocks: int = 0  # 0: derive from GPU memory (per engine)
    gpu_memory_utilization: float = 0.9
    num_groups: int = TOOL_GROUPS
    prompts_per_group: int = TOOL_PROMPTS_PER_GROUP
    #: The profile's groups (``num_unique_system_prompts`` x ``num_users_per_system_prompt``
    #: of the training table), which ``prefix_reuse="profile"`` replays; 0: the same as
    #: ``num_groups`` / ``prompts_per_group``. Kept apart because the load tool ran its
    #: own 10 x 10 (``cycle``) whatever the profile asked for.
    profile_groups: int = 0
    profile_prompts_per_group: int = 0
    cycle_prompts: bool = True
    prompt_len_mean: float = 0.0  # served prompt length, when measured
    workload: str = ""
    summary: StageMeasurement | None = None
    notes: tuple[str, ...] = field(default=(), compare=False)

    # ----------------------------------------------------------------- derived

    @property
    def family(self) -> str:
        """The model id (leave-one-model-out groups runs by it)."""
        return self.model

    def dp_routing(self) -> str:
        """How vLLM 0.15 balances this model's data-parallel engines.

        MoE models' engines publish their queue lengths to the DP coordinator, which the
        API server balances on (``vllm-dp``); dense models' engines run independently and
        publish nothing, so each API server only counts its own picks -- a rotation
        (``round-robin``). A model the bundled catalog does not know counts as dense.
        """
        arch = bundled_architecture(self.model)
        return "vllm-dp" if arch is not None and arch.is_moe else "round-robin"

    def prompt_lengths(self, prompt_scale: float = DEFAULT_PROMPT_SCALE) -> tuple[int, int]:
        """(system prompt, question) token counts as served."""
        nominal = self.system_prompt_len + self.question_len
        if nominal <= 0:
            return 0, 0
        served = self.prompt_len_mean if self.prompt_len_mean > 0 else nominal * prompt_scale
        system = round(self.system_prompt_len * served / nominal)
        return system, max(1, round(served) - system)

    def workload_spec(
        self,
        *,
        duration_scale: float = 1.0,
        min_stage_s: float = 0.0,
        prompt_scale: float = DEFAULT_PROMPT_SCALE,
        prefix_reuse: str = "",
        seed: int = 42,
    ) -> dict[str, Any]:
        """The inference-perf workload spec (as a YAML-ready mapping) replaying this run.

        ``duration_scale`` < 1 shortens every stage (at least ``min_stage_s`` seconds,
        never longer than measured) for fitting. ``prefix_reuse``: ``cycle`` (the tool's
        fixed prompt set, sent in a cycle: nearly every prompt a full prefix hit),
        ``profile`` (the profile's groups, a fresh question per request) or "" (the
        run's own setting).
        """
        system, question = self.prompt_lengths(prompt_scale)
        reuse = prefix_reuse or ("cycle" if self.cycle_prompts else "profile")
        if reuse not in ("cycle", "profile"):
            raise RunsError(f"prefix_reuse must be cycle or profile, got {reuse!r}")
        stages = []
        for st in self.stages:
            d = st.duration_s * duration_scale
            d = min(st.duration_s, max(d, min_stage_s))
            stages.append({"rate": st.rate, "duration": round(d, 3)})
        groups, per_group = self.num_groups, self.prompts_per_group
        if reuse == "profile":  # the profile's groups, not the tool's fixed 10 x 10
            groups = self.profile_groups or groups
            per_group = self.profile_prompts_per_group or per_group
        return {
            "version": "2",
            "seed": seed,
            "inference_perf": {
                "stages": stages,
                "shared_prefix": {
                    "num_unique_system_prompts": groups,
                    "num_users_per_system_prompt": per_group,
                    "system_prompt_len": system,
                    "question_len": question,
                    "output_len": self.output_len,
                },
                "cycle_prompts": reuse == "cycle",
                "load_type": "poisson",
            },
        }

    def sim_options(self, spec_path: str = "", **extra: Any) -> dict[str, Any]:
        """``simulate()`` keywords (``blis run`` flags) for this run's deployment."""
        o: dict[str, Any] = {
            "model": self.model,
            "hardware": self.hardware,
            "tp": self.tp,
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "max_model_len": self.max_model_len,
            "enable_prefix_caching": True,
            "gpu_memory_utilization": self.gpu_memory_utilization,
        }
        if self.total_kv_blocks > 0:
            o["total_kv_blocks"] = self.total_kv_blocks
        if self.kv_cache_dtype != "auto":
            o["kv_cache_dtype"] = self.kv_cache_dtype
        if self.quantization:
            o["quantization"] = self.quantization
        if self.dp > 1:
            o["num_instances"] = self.dp
            o["routing_policy"] = self.dp_routing()
        if spec_path:
            o["workload_spec"] = spec_path
        o.update(extra)
        return o

    def command(self, spec_path: str, latency_model: str = "calibrated") -> str:
        """The ``blis run`` command line replaying this run."""
        o = self.sim_options(spec_path, latency_model=latency_model)
        parts = ["blis", "run"]
        for key, value in o.items():
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                parts.append(flag if value else "--no-" + flag[2:])
            else:
                parts.extend((flag, str(value)))
        return " ".join(shlex.quote(p) for p in parts)  # names/paths may hold shell syntax


# --------------------------------------------------------------------------- readers

#: A warning sink: the readers collect their warnings and give them only once the input
#: has been read without error (an error stays the one line printed).
Warn = Callable[[str], None]

#: Columns a CSV of runs must have (docs/calibration.md, "Inputs"): without one, a run
#: would be replayed with a guessed deployment or workload (a TP-2 run at TP 1, a budget
#: of 1024 tokens as 2048) -- a renamed or deleted column is refused, naming it. A blank
#: cell is still "not given". ``hardware`` may come from ``--hardware``; the stage rate
#: and duration from ``all_stages``.
REQUIRED_COLUMNS = (
    "experiment",
    "model",
    "hardware",
    "tp",
    "max_num_batched_tokens",
    "max_num_seqs",
    "max_model_len",
    "system_prompt_len",
    "question_len",
    "output_len",
    "stage_index",
    "stage_rate_rps",
    "stage_duration_s",
    "ttft_mean_ms",
    "e2e_mean_ms",
)
#: Run-level columns (the same on every row of a run; in YAML, keys of the run).
RUN_KEYS = frozenset(
    {
        "experiment",
        "run",
        "model",
        "hardware",
        "tp",
        "dp",
        "data_parallel_size",
        "max_num_batched_tokens",
        "max_num_seqs",
        "max_model_len",
        "total_kv_blocks_from_vllm_log",
        "total_kv_blocks",
        "gpu_memory_utilization",
        "kv_cache_dtype",
        "precision",
        "system_prompt_len",
        "question_len",
        "output_len",
        "num_groups",
        "num_prompts_per_group",
        "num_unique_system_prompts",
        "num_users_per_system_prompt",
        "all_stages",
        "workload",
        # in the training table, not used by the replay
        "exp_id",
        "cpu_kv_offload",
        "cpu_kv_blocks",
        "raw_default_args_dir",
    }
)
#: Stage columns (in YAML, keys of a ``stages`` entry).
STAGE_KEYS = frozenset(
    {
        "stage_index",
        "stage_rate_rps",
        "stage_duration_s",
        "ttft_mean_ms",
        "e2e_mean_ms",
        "itl_mean_ms",
        "output_len_mean",
        "prompt_len_mean",
        "ttft_p90_ms",
        "e2e_p90_ms",
        # in the training table, not used by the replay
        "ttft_p50_ms",
        "ttft_p99_ms",
        "e2e_p50_ms",
        "e2e_p99_ms",
        "n_success",
        "n_fail",
        "req_per_s",
        "output_tok_per_s",
        "input_tok_per_s",
    }
)
#: Spellings other tools use for a column, which a closest-spelling match would miss
#: (``tensor_parallel_size`` is closer to ``data_parallel_size`` than to ``tp``).
_SPELLINGS = {
    "tensor_parallel_size": "tp",
    "tensor_parallelism": "tp",
    "tensor_parallel": "tp",
    "tp_size": "tp",
    "data_parallelism": "dp",
    "gpu": "hardware",
    "gpu_type": "hardware",
    "accelerator": "hardware",
    "model_name": "model",
    "model_id": "model",
    "name": "experiment",
    "num_gpu_blocks": "total_kv_blocks",
    "kv_blocks": "total_kv_blocks",
    "rate": "stage_rate_rps",
    "duration": "stage_duration_s",
    "ttft_ms": "ttft_mean_ms",
    "e2e_ms": "e2e_mean_ms",
    "tpot_ms": "itl_mean_ms",
    "tpot_mean_ms": "itl_mean_ms",
    "itl_ms": "itl_mean_ms",
}
#: Bounds of a plausible mean time per output token (ms): 0.1 ms is 10 000 tokens/s for
#: one request, beyond any GPU; 1000 ms one token a second. Outside them the values are
#: almost surely in another unit (seconds or microseconds in the ``_ms`` columns).
TOKEN_MS_RANGE = (0.1, 1000.0)
#: A mean TTFT below this (ms) is no served request (HTTP and tokenisation alone take more).
MIN_TTFT_MS = 1.0


def _log_warning(msg: str) -> None:
    logging.getLogger("inference_sim").warning(msg)


def _suggest(key: str, known: Iterable[str]) -> str:
    """``' (did you mean "tp"?)'`` for a column or key, another tool's spelling first."""
    from inference_sim.core.suggest import did_you_mean

    hint = _SPELLINGS.get(str(key).strip().lower())
    return f' (did you mean "{hint}"?)' if hint else did_you_mean(key, sorted(known))


def _unknown(keys: Iterable[str], known: Iterable[str], what: str) -> str:
    """``unknown column 'x' (did you mean "y"?)`` for every key, in one message."""
    choices = sorted(known)
    items = [f"{key!r}{_suggest(key, choices)}" for key in keys]
    many = "s" if len(items) > 1 else ""
    return f"unknown {what}{many} {', '.join(items)}"


def _columns_needed(hardware: str) -> str:
    out = []
    for col in REQUIRED_COLUMNS:
        if col == "experiment":
            out.append("experiment (or run)")
        elif col == "hardware":
            if not hardware:
                out.append("hardware (or --hardware)")
        elif col == "stage_rate_rps":
            out.append("stage_rate_rps and stage_duration_s (or all_stages)")
        elif col != "stage_duration_s":
            out.append(col)
    return ", ".join(out)


def _check_columns(header: Sequence[str], source: str, hardware: str, notes: list[str]) -> None:
    """RunsError for a CSV without a required column (naming it, any unknown column that
    may be it renamed, and the required ones); a note for each column the file lacks whose
    default stands in (saying which), and one for the columns nobody reads."""
    have = {str(c) for c in header if c is not None}
    missing = []
    for col in REQUIRED_COLUMNS:
        if col in have:
            continue
        if col == "experiment" and "run" in have:
            continue
        if col == "hardware" and hardware:
            continue
        if col in ("stage_rate_rps", "stage_duration_s") and "all_stages" in have:
            continue
        missing.append(col)
    unknown = sorted(have - RUN_KEYS - STAGE_KEYS)
    if missing:
        hint = f"; {_unknown(unknown, RUN_KEYS | STAGE_KEYS, 'column')}" if unknown else ""
        raise RunsError(
            f"{source}: no {', '.join(missing)} column{'s' if len(missing) > 1 else ''}{hint}; "
            f"a CSV of runs needs the columns {_columns_needed(hardware)} (a blank cell "
            'means "not given"; docs/calibration.md lists the optional ones)'
        )
    if unknown:
        notes.append(
            f"{source}: {_unknown(unknown, RUN_KEYS | STAGE_KEYS, 'column')}; ignored "
            "(docs/calibration.md lists the columns read)"
        )
    if "itl_mean_ms" not in have:
        notes.append(
            f"{source}: no itl_mean_ms column: the table's TPOT is compared with TPOT* "
            "((E2E - TTFT) / (output_len - 1)), not with a reported TPOT"
        )
    if not have & {"total_kv_blocks_from_vllm_log", "total_kv_blocks"}:
        notes.append(
            f"{source}: no total_kv_blocks_from_vllm_log (or total_kv_blocks) column: every "
            "run's KV block count is derived from GPU memory (as vLLM 0.15.1 sizes it)"
        )


def _check_yaml_keys(items: list[Any], where: str, notes: list[str]) -> None:
    """Unknown keys of a YAML file of runs, all named in one note with where each is first
    found and a did-you-mean (``tensor_parallel_size`` used to be ignored without a word,
    the run replayed at TP 1). A key left out is a blank cell: "not given"."""
    unknown: dict[str, str] = {}
    for i, run in enumerate(items):
        if not isinstance(run, dict):
            continue
        for key in run:
            if key != "stages" and key not in RUN_KEYS | STAGE_KEYS:
                unknown.setdefault(str(key), f"runs[{i}]")
        for j, st in enumerate(run.get("stages") or []):
            for key in st if isinstance(st, dict) else ():
                if key not in RUN_KEYS | STAGE_KEYS:
                    unknown.setdefault(str(key), f"runs[{i}].stages[{j}]")
    if unknown:
        known = RUN_KEYS | STAGE_KEYS | {"stages"}
        said = [f"{key!r}{_suggest(key, known)} in {at}" for key, at in unknown.items()]
        notes.append(
            f"{where}: unknown key{'s' if len(said) > 1 else ''} {', '.join(said)}; ignored "
            "(docs/calibration.md lists the keys read)"
        )


def _gpu_problem(name: str) -> str:
    """Why ``name`` is no GPU of the catalog (the same spellings ``blis run`` reads:
    any case, vendor words, memory sizes), or ""."""
    from inference_sim.catalog import CatalogError, load_catalog
    from inference_sim.core.suggest import did_you_mean

    catalog = load_catalog()
    names = catalog.gpu_names()
    spellings = [*names, *(a for g in names for a in catalog.gpu_aliases(g))]
    if name.strip().lower() in {s.lower() for s in spellings}:
        return ""
    try:
        if catalog.match_gpu(name) is not None:
            return ""
    except CatalogError as exc:
        return str(exc)
    return f"unknown GPU{did_you_mean(name, spellings)}; known: {', '.join(names)}"


def _check_deployment(run: MeasuredRun, where: str, hardware_flag: bool) -> None:
    """RunsError when the catalog cannot replay the run's GPU or model: caught when the
    file is read, not as a failed simulation whose message names options calibrate
    lacks (and that a median silently left out)."""
    problem = _gpu_problem(run.hardware)
    if problem:
        label = f"--hardware {run.hardware!r}" if hardware_flag else f"hardware {run.hardware!r}"
        raise RunsError(f"{where}: {label}: {problem}")
    if bundled_architecture(renamed_model_id(run.model)) is None:
        from inference_sim.catalog.architecture import bundled_architectures
        from inference_sim.core.suggest import did_you_mean

        known = sorted(bundled_architectures())
        contain = sorted((k for k in known if run.model in k), key=lambda k: (len(k), k))
        hint = f' (did you mean "{contain[0]}"?)' if contain else did_you_mean(run.model, known)
        raise RunsError(
            f"{where}: model {run.model!r}: no bundled architecture{hint}; `blis models` "
            "lists the models calibrate can replay"
        )


def _check_plausible(st: StageMeasurement, output_len: int, where: str) -> None:
    """One clear error for a stage whose means cannot be milliseconds (seconds or
    microseconds entered in the ``_ms`` columns): they used to be fitted as they were."""
    small = "; the _ms columns are milliseconds: are these values in seconds?"
    large = "; the _ms columns are milliseconds: are these values in microseconds?"
    if st.ttft_ms < MIN_TTFT_MS:
        raise RunsError(
            f"{where}: ttft_mean_ms {st.ttft_ms:g} is below {MIN_TTFT_MS:g} ms, faster than "
            f"any served request{small}"
        )
    if st.e2e_ms <= st.ttft_ms:
        raise RunsError(
            f"{where}: e2e_mean_ms {st.e2e_ms:g} must be above ttft_mean_ms {st.ttft_ms:g} "
            "(E2E includes the first token)"
        )
    lo, hi = TOKEN_MS_RANGE
    if output_len > 1:
        per_token = (st.e2e_ms - st.ttft_ms) / (output_len - 1)
        how = f"(e2e_mean_ms - ttft_mean_ms) / (output_len - 1) = {per_token:.4g} ms"
    else:
        per_token = st.e2e_ms / max(output_len, 1)
        how = f"e2e_mean_ms / output_len = {per_token:.4g} ms"
    if not lo <= per_token <= hi:
        raise RunsError(
            f"{where}: the mean time per output token, {how}, is outside {lo:g}-{hi:g} ms"
            + (small if per_token < lo else large)
        )
    if st.tpot_ms > 0 and not lo <= st.tpot_ms <= hi:
        raise RunsError(
            f"{where}: itl_mean_ms {st.tpot_ms:g} is outside {lo:g}-{hi:g} ms per output token"
            + (small if st.tpot_ms < lo else large)
        )


def _num(row: Mapping[str, Any], key: str, where: str, *, kind: type = float, default: Any = 0):
    raw = row.get(key)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return default
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise RunsError(f"{where}: {key} must be a number, got {raw!r}") from None
    if not math.isfinite(v):
        raise RunsError(f"{where}: {key} must be finite, got {raw!r}")
    if kind is int:
        if not v.is_integer():
            raise RunsError(f"{where}: {key} must be an integer, got {raw!r}")
        return int(v)
    return v


def _bounded(
    row: Mapping[str, Any],
    key: str,
    where: str,
    *,
    kind: type = int,
    default: Any = 0,
    low: float = 0,
    high: float | None = None,
    low_open: bool = False,
    meaning: str = "",
    hint: str = "",
):
    """:func:`_num`, refused outside ``[low, high]`` (``(low, high]`` with ``low_open``).

    A blank cell keeps ``default`` (not given); a given value out of range is an error,
    never replaced by the default.
    """
    v = _num(row, key, where, kind=kind, default=default)
    raw = row.get(key)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return v
    bad = v <= low if low_open else v < low
    if high is not None and v > high:
        bad = True
    if bad:
        label = f"{key} ({meaning})" if meaning else key
        if high is not None:
            allowed = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
        else:
            allowed = f"{'>' if low_open else '>='} {low:g}"
        raise RunsError(f"{where}: {label} must be {allowed}{hint}, got {raw!r}")
    return v


def _text(row: Mapping[str, Any], key: str, where: str) -> str:
    """A text field (blank: ""); a YAML list or mapping is refused, not stringified."""
    raw = row.get(key)
    if raw is None:
        return ""
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise RunsError(
            f"{where}: {key} must be a string, got a {type(raw).__name__} ({str(raw)[:60]!r})"
        )
    return str(raw).strip()


def _check_stage_indexes(
    indexes: Iterable[tuple[str, int]], planned: int, where: str, what: str
) -> None:
    """Stage indexes (``(label, index)``) must be -1 (the summary) or ``0 .. n-1``, each at
    most once; ``n`` is the number of stages in ``all_stages`` (``planned``), else the
    number of stage entries given (``what`` says which)."""
    items = list(indexes)
    n = planned or sum(1 for _, idx in items if idx != -1)
    seen: dict[int, str] = {}
    for label, idx in items:
        if idx != -1 and not 0 <= idx < n:
            raise RunsError(
                f"{label}: stage_index must be -1 (whole-run summary) or 0..{n - 1} "
                f"({n} stage(s) in {what}), got {idx}"
            )
        if idx in seen:
            raise RunsError(
                f"{label}: stage_index {idx} repeated ({seen[idx]} has it too); "
                f"each stage of {where} must appear once"
            )
        seen[idx] = label


def _online_fp8(model: str, precision: Any) -> str:
    """``fp8`` when the run says FP8 but the bundled checkpoint is 16-bit: vLLM quantized
    it at load (``--quantization fp8``); a quantized checkpoint says so itself."""
    if "FP8" not in str(precision or "").upper():
        return ""
    arch = bundled_architecture(renamed_model_id(model))
    return "fp8" if arch is not None and arch.quantization is None else ""


def _kv_dtype(raw: Any, where: str) -> str:
    """A run's ``kv_cache_dtype`` (blank: ``auto``), checked against vLLM's names."""
    name = str(raw or "").strip().lower() or "auto"
    if name not in KV_CACHE_DTYPES:
        raise RunsError(
            f"{where}: kv_cache_dtype must be one of {', '.join(KV_CACHE_DTYPES)}, got {raw!r}"
        )
    return name


def _folder_dp(exp: Mapping[str, Any], where: str) -> int:
    """``data_parallel_size`` (or ``dp``) of an exp-config, >= 1 (absent: 1)."""
    key = "data_parallel_size" if exp.get("data_parallel_size") is not None else "dp"
    dp = _num(exp, key, f"{where}: exp-config.yaml", kind=int, default=1)
    if dp < 1:
        raise RunsError(f"{where}: exp-config.yaml {key} must be >= 1, got {dp}")
    return int(dp)


def _parse_all_stages(text: str, where: str) -> list[tuple[float, float]]:
    """``600s@8;600s@20`` -> [(600, 8), (600, 20)]; every duration and rate finite and > 0
    (a NaN duration used to reach a temporary workload file, a negative one the replay)."""
    out = []
    for part in str(text).split(";"):
        part = part.strip()
        if not part:
            continue
        try:
            dur, rate = part.split("@")
            values = (float(dur.strip().rstrip("s")), float(rate))
        except ValueError:
            raise RunsError(f"{where}: all_stages item {part!r} is not DURATIONs@RATE") from None
        for value, what in zip(values, ("duration (s)", "rate (requests/s)"), strict=True):
            if not (math.isfinite(value) and value > 0):
                raise RunsError(
                    f"{where}: all_stages item {part!r}: the {what} must be a finite number "
                    f"> 0, got {value:g}"
                )
        out.append(values)
    return out


def _stage_from_row(row: Mapping[str, Any], where: str, index: int) -> StageMeasurement:
    for key in ("ttft_mean_ms", "e2e_mean_ms"):
        if key not in row:
            raise RunsError(f"{where}: no {key} (a measured stage needs its mean)")
    ttft = _num(row, "ttft_mean_ms", where)
    e2e = _num(row, "e2e_mean_ms", where)
    if ttft <= 0 or e2e <= 0:
        raise RunsError(
            f"{where}: ttft_mean_ms and e2e_mean_ms must be > 0, got {row['ttft_mean_ms']!r} "
            f"and {row['e2e_mean_ms']!r}"
        )
    rate = duration = 0.0  # the summary row (index -1) has none
    if index >= 0:
        # Blank: not given (all_stages' value is used); a given 0 or negative is an
        # error, never replaced by all_stages' value (a 0 used to be, without a word).
        planned = " (blank: all_stages' value)"
        rate = _bounded(row, "stage_rate_rps", where, kind=float, low_open=True, hint=planned)
        duration = _bounded(row, "stage_duration_s", where, kind=float, low_open=True, hint=planned)
    # Optional measurements: blank is "not measured" (0); a given 0 or negative is an
    # error (a 0 itl_mean_ms used to be replaced by TPOT*, a negative one fitted).
    blank = " (blank: not measured)"

    def measured(key: str) -> float:
        return _bounded(row, key, where, kind=float, low_open=True, hint=blank)

    return StageMeasurement(
        index=index,
        rate=rate,
        duration_s=duration,
        ttft_ms=ttft,
        e2e_ms=e2e,
        tpot_ms=measured("itl_mean_ms"),
        output_len_mean=measured("output_len_mean"),
        prompt_len_mean=measured("prompt_len_mean"),
        ttft_p90_ms=measured("ttft_p90_ms"),
        e2e_p90_ms=measured("e2e_p90_ms"),
    )


def _run_settings(row: Mapping[str, Any], where: str, hardware: str = "") -> dict[str, Any]:
    """The settings of a whole run (deployment and workload) that one row states, checked.

    Every row of a run states them (the table repeats them on each stage's row), so every
    row is checked by the same rules and must agree with the run's first row; only the
    stage columns (``stage_index``, ``stage_rate_rps``, the measured means, ...) vary.
    Keys are the column names (``dp`` for ``dp``/``data_parallel_size``, ``precision``
    for the quantization it implies)."""
    model = _text(row, "model", where).lower()
    if not model:
        raise RunsError(f"{where}: model is required")
    gpu = _text(row, "hardware", where) or str(hardware or "").strip()
    if not gpu:
        raise RunsError(f"{where}: hardware is required (or give --hardware)")
    tp = _bounded(row, "tp", where, default=1, low=1, meaning="tensor-parallel GPUs")
    dp_key = "dp" if str(row.get("dp") or "").strip() else "data_parallel_size"
    dp = _num(row, dp_key, where, kind=int, default=1)
    if dp < 1:
        raise RunsError(f"{where}: {dp_key} (data-parallel engines) must be >= 1, got {dp}")
    derive = " (0 or blank: derived from GPU memory)"
    return {
        "model": model,
        "hardware": gpu,
        "tp": tp,
        "dp": dp,
        "all_stages": _parse_all_stages(row.get("all_stages") or "", where),
        "num_groups": _bounded(row, "num_groups", where, default=TOOL_GROUPS, low=1),
        "num_prompts_per_group": _bounded(
            row, "num_prompts_per_group", where, default=TOOL_PROMPTS_PER_GROUP, low=1
        ),
        # The profile's groups (``--prefix-reuse profile``); blank: num_groups' values.
        "num_unique_system_prompts": _bounded(row, "num_unique_system_prompts", where, low=1),
        "num_users_per_system_prompt": _bounded(row, "num_users_per_system_prompt", where, low=1),
        "total_kv_blocks_from_vllm_log": _bounded(
            row, "total_kv_blocks_from_vllm_log", where, low=0, hint=derive
        ),
        "total_kv_blocks": _bounded(row, "total_kv_blocks", where, low=0, hint=derive),
        "kv_cache_dtype": _kv_dtype(row.get("kv_cache_dtype"), where),
        "precision": _online_fp8(model, row.get("precision")),
        "max_num_batched_tokens": _bounded(
            row, "max_num_batched_tokens", where, default=2048, low=1
        ),
        "max_num_seqs": _bounded(row, "max_num_seqs", where, default=128, low=1),
        "max_model_len": _bounded(row, "max_model_len", where, default=4096, low=1),
        "gpu_memory_utilization": _bounded(
            row,
            "gpu_memory_utilization",
            where,
            kind=float,
            default=0.9,
            low=0,
            high=1,
            low_open=True,
        ),
        "system_prompt_len": _bounded(row, "system_prompt_len", where, low=0),
        "question_len": _bounded(row, "question_len", where, low=0),
        "output_len": _bounded(row, "output_len", where, low=0),
        "workload": _text(row, "workload", where),
    }


def _cell(row: Mapping[str, Any], key: str) -> Any:
    """The cell a :func:`_run_settings` key was read from (blank: "")."""
    if key == "dp" and not str(row.get("dp") or "").strip():
        key = "data_parallel_size"
    raw = row.get(key)
    return "" if raw is None else raw


def _same_settings(
    items: list[tuple[int, Mapping[str, Any]]],
    source: str,
    name: str,
    hardware: str,
    row_name: Callable[[int], str],
) -> dict[str, Any]:
    """The run's settings from its first row, after every other row is checked by the
    same rules and found to agree (else a RunsError naming the row, the run and the
    field: a later row's deployment used to be ignored without a word)."""
    first_line, first = items[0]
    settings = _run_settings(first, f"{source} run {name}", hardware)
    for line, row in items[1:]:
        where = f"{source} {row_name(line)} (run {name})"
        other = _run_settings(row, where, hardware)
        for key, value in settings.items():
            if other[key] != value:
                raise RunsError(
                    f"{where}: {key} {_cell(row, key)!r} differs from "
                    f"{_cell(first, key)!r} in {row_name(first_line)}, the run's first "
                    "row; a run's settings must be the same in every row (only the stage "
                    "columns vary)"
                )
    return settings


def runs_from_rows(
    rows: Iterable[Mapping[str, Any]],
    source: str,
    *,
    hardware: str = "",
    row_names: Sequence[str] | None = None,
) -> list[MeasuredRun]:
    """Group table rows (one per run x stage) into runs; see docs/calibration.md.

    ``row_names`` names each row in messages (default: ``row 2``, ``row 3``, ... as a
    spreadsheet numbers a CSV's rows under its header; YAML: ``runs[i].stages[j]``)."""

    def row_name(line: int) -> str:
        return row_names[line - 2] if row_names is not None else f"row {line}"

    grouped: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
    for i, row in enumerate(rows, start=2):
        key = "experiment" if row.get("experiment") not in (None, "") else "run"
        name = _text(row, key, f"{source} {row_name(i)}")
        if not name:
            raise RunsError(f"{source} {row_name(i)}: experiment (the run name) is required")
        grouped.setdefault(name, []).append((i, row))
    runs = []
    for name, items in grouped.items():
        where = f"{source} run {name}"
        run = _same_settings(items, source, name, hardware, row_name)
        stages: list[StageMeasurement] = []
        labels: dict[int, str] = {}
        summary = None
        planned = run["all_stages"]
        indexes = [
            (
                f"{source} {row_name(line)} (run {name})",
                _num(row, "stage_index", f"{source} {row_name(line)}", kind=int, default=0),
            )
            for line, row in items
        ]
        _check_stage_indexes(
            indexes, len(planned), f"run {name}", "all_stages" if planned else "its rows"
        )
        for (line, row), (_, idx) in zip(items, indexes, strict=True):
            st = _stage_from_row(row, f"{source} {row_name(line)}", idx)
            labels[idx] = f"{source} {row_name(line)} (run {name}, {_stage_label(idx)})"
            if idx < 0:
                summary = st
            else:
                stages.append(st)
        stages.sort(key=lambda s: s.index)
        if not stages:
            raise RunsError(f"{where}: no stage rows (stage_index >= 0)")
        if planned and len(planned) == len(stages):
            stages = [
                replace(st, duration_s=st.duration_s or d, rate=st.rate or r)
                for st, (d, r) in zip(stages, planned, strict=True)
            ]
        for st in stages:
            if not (st.rate > 0 and st.duration_s > 0):  # NaN-proof
                raise RunsError(
                    f"{where}: stage {st.index} needs stage_rate_rps and stage_duration_s > 0"
                )
        if run["output_len"] <= 0 or run["system_prompt_len"] + run["question_len"] <= 0:
            raise RunsError(f"{where}: output_len and system_prompt_len + question_len must be > 0")
        for st in [*stages, *([summary] if summary is not None else [])]:
            _check_plausible(st, run["output_len"], labels[st.index])
        prompt_mean = max((st.prompt_len_mean for st in stages), default=0.0)
        runs.append(
            MeasuredRun(
                name=name,
                model=run["model"],
                hardware=run["hardware"],
                tp=run["tp"],
                dp=run["dp"],
                kv_cache_dtype=run["kv_cache_dtype"],
                quantization=run["precision"],
                max_num_batched_tokens=run["max_num_batched_tokens"],
                max_num_seqs=run["max_num_seqs"],
                max_model_len=run["max_model_len"],
                total_kv_blocks=run["total_kv_blocks_from_vllm_log"] or run["total_kv_blocks"],
                gpu_memory_utilization=run["gpu_memory_utilization"],
                system_prompt_len=run["system_prompt_len"],
                question_len=run["question_len"],
                output_len=run["output_len"],
                num_groups=run["num_groups"],
                prompts_per_group=run["num_prompts_per_group"],
                profile_groups=run["num_unique_system_prompts"],
                profile_prompts_per_group=run["num_users_per_system_prompt"],
                prompt_len_mean=prompt_mean,
                workload=run["workload"],
                stages=tuple(stages),
                summary=summary,
            )
        )
        _check_deployment(runs[-1], where, hardware_flag=not _text(items[0][1], "hardware", where))
    return runs


def read_runs_csv(
    path: str | os.PathLike[str], *, hardware: str = "", warn: Warn | None = None
) -> list[MeasuredRun]:
    """Runs from a CSV with the columns of ``training_runs.csv`` (docs/calibration.md).

    A required column the file lacks is an error naming it; a column whose default stands
    in, or one that nothing reads, is a warning (``warn``, default the package logger),
    given once the file has been read without error."""
    where = os.fspath(path)
    source = os.path.basename(where)
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except OSError as exc:
        raise RunsError(f"{where}: cannot read: {exc.strerror or exc}") from None
    if not rows:
        raise RunsError(f"{where}: no rows")
    notes: list[str] = []
    _check_columns(header, source, hardware, notes)
    runs = runs_from_rows(rows, source, hardware=hardware)
    derived = [r.name for r in runs if r.total_kv_blocks <= 0]
    if "gpu_memory_utilization" not in header and derived:
        notes.append(
            f"{source}: no gpu_memory_utilization column: the runs that derive their KV "
            f"blocks from GPU memory ({', '.join(derived)}) use 0.9, vLLM's default"
        )
    for note in notes:
        (warn or _log_warning)(note)
    return runs


def read_runs_yaml(
    path: str | os.PathLike[str], *, hardware: str = "", warn: Warn | None = None
) -> list[MeasuredRun]:
    """Runs from YAML: ``runs: [{experiment, model, ..., stages: [{stage_rate_rps, ...}]}]``.

    Each run carries the run-level columns of the CSV; its ``stages`` list the stage
    columns (``stage_index`` defaults to the position); a stage may not set a run-level
    key. A key left out reads as a blank cell ("not given"); unknown keys are a warning
    (``warn``), given once the file has been read without error.
    """
    where = os.fspath(path)
    try:
        doc = load_yaml(read_text(path))
    except OSError as exc:
        raise RunsError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise RunsError(f"{where}: invalid YAML: {exc}") from None
    items = doc.get("runs") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise RunsError(f"{where}: expected `runs:` with a list of runs")
    rows = []
    names_of_rows: list[str] = []
    names: dict[str, int] = {}
    for i, run in enumerate(items):
        if not isinstance(run, dict):
            raise RunsError(f"{where}: runs[{i}] must be a mapping")
        stages = run.get("stages")
        if not isinstance(stages, list) or not stages:
            raise RunsError(f"{where}: runs[{i}].stages must be a non-empty list")
        base = {k: v for k, v in run.items() if k != "stages"}
        base.setdefault("experiment", f"run-{i}")
        name = _text(base, "experiment", f"{where}: runs[{i}]")
        if name and name in names:
            raise RunsError(
                f"{where}: runs[{i}].experiment {name!r} repeats runs[{names[name]}]; "
                "run names must be unique"
            )
        names[name] = i
        for key in ("system_prompt_len", "question_len", "output_len"):
            if key not in base:
                raise RunsError(
                    f"{where}: runs[{i}] (run {name}): no {key} (the workload's lengths have "
                    "no default)"
                )
        run_rows = []
        for j, st in enumerate(stages):
            if not isinstance(st, dict):
                raise RunsError(f"{where}: runs[{i}].stages[{j}] must be a mapping")
            _refuse_run_keys(st, run, f"{where}: runs[{i}].stages[{j}] (run {name})")
            row = dict(base)
            row["stage_index"] = j
            row.update(st)
            run_rows.append(row)
        planned = _parse_all_stages(base.get("all_stages") or "", f"{where}: runs[{i}]")
        _check_stage_indexes(
            [
                (
                    f"{where}: runs[{i}].stages[{j}]",
                    _num(row, "stage_index", f"{where}: runs[{i}].stages[{j}]", kind=int),
                )
                for j, row in enumerate(run_rows)
            ],
            len(planned),
            f"runs[{i}]",
            "all_stages" if planned else "its stages list",
        )
        rows.extend(run_rows)
        names_of_rows += [f"runs[{i}].stages[{j}]" for j in range(len(run_rows))]
    notes: list[str] = []
    _check_yaml_keys(items, os.path.basename(where), notes)
    runs = runs_from_rows(rows, os.path.basename(where), hardware=hardware, row_names=names_of_rows)
    for note in notes:
        (warn or _log_warning)(note)
    return runs


def _stage_label(index: int) -> str:
    return "the summary row" if index < 0 else f"stage {index}"


def _refuse_run_keys(stage: Mapping[str, Any], run: Mapping[str, Any], where: str) -> None:
    """A ``stages`` entry may not set a run-level key: with one stage nothing was left to
    disagree with, so ``tp: 2`` in the stage replayed the run at TP 2 without a word."""
    for key in stage:
        if key not in RUN_KEYS:
            continue
        if key in run and run[key] != stage[key]:
            said = f"{key} {stage[key]!r} differs from {run[key]!r}, the run's; "
        else:
            said = ""
        raise RunsError(
            f"{where}: {said}{key} is a run-level field: set it once on the run, not in "
            "its stages (only the stage keys vary: stage_index, stage_rate_rps, "
            "stage_duration_s, the measured means, ...)"
        )


def _read_yaml_or_json(path: str) -> Any:
    text = read_text(path)
    try:
        return load_json(text)
    except ValueError:
        return load_yaml(text)


def read_inference_perf_folder(
    folder: str | os.PathLike[str],
    *,
    model: str = "",
    hardware: str = "",
    tp: int = 0,
    max_num_batched_tokens: int = 0,
    total_kv_blocks: int = 0,
) -> MeasuredRun:
    """A run from an inference-perf output folder.

    Reads ``results/config.yaml`` (or ``config.yaml``: the workload the tool ran) and
    ``stage_N_lifecycle_metrics.json`` (seconds), plus ``exp-config.yaml`` next to them
    when present (model, ``tensor_parallelism``, ``max_num_batched_tokens``,
    ``max_num_seqs``, ``max_model_len``). Keyword arguments fill or override what the
    files lack (the GPU is never in them).
    """
    base = os.fspath(folder)
    where = base
    results = os.path.join(base, "results")
    if not os.path.isdir(results):
        results = base
    cfg_path = os.path.join(results, "config.yaml")
    if not os.path.exists(cfg_path):
        raise RunsError(f"{where}: no results/config.yaml (the load tool's echo of its config)")
    cfg = _read_yaml_or_json(cfg_path) or {}
    exp: dict[str, Any] = {}
    for candidate in (
        os.path.join(base, "exp-config.yaml"),
        os.path.join(results, "exp-config.yaml"),
    ):
        if os.path.exists(candidate):
            exp = _read_yaml_or_json(candidate) or {}
            break
    data = (cfg.get("data") or {}).get("shared_prefix") or {}
    if not data:
        raise RunsError(f"{where}: config.yaml has no data.shared_prefix block")
    load = cfg.get("load") or {}
    planned = load.get("stages") or []
    if not planned:
        raise RunsError(f"{where}: config.yaml has no load.stages")
    stages = []
    for i, st in enumerate(planned):
        path = os.path.join(results, f"stage_{i}_lifecycle_metrics.json")
        if not os.path.exists(path):
            raise RunsError(f"{where}: missing {os.path.basename(path)}")
        doc = _read_yaml_or_json(path)
        ok = (doc.get("successes") or {}) if isinstance(doc, dict) else {}
        lat = ok.get("latency") or {}
        try:
            ttft = float(lat["time_to_first_token"]["mean"]) * 1000.0
            e2e = float(lat["request_latency"]["mean"]) * 1000.0
        except (KeyError, TypeError, ValueError):
            raise RunsError(f"{path}: successes.latency lacks TTFT/request_latency means") from None
        out_mean = float(((ok.get("output_len") or {}).get("mean")) or 0.0)
        prompt_mean = float(((ok.get("prompt_len") or {}).get("mean")) or 0.0)
        tpot = (e2e - ttft) / (out_mean - 1.0) if out_mean > 1 else 0.0
        stages.append(
            StageMeasurement(
                index=i,
                rate=float(st["rate"]),
                duration_s=float(st["duration"]),
                ttft_ms=ttft,
                e2e_ms=e2e,
                tpot_ms=tpot,
                output_len_mean=out_mean,
                prompt_len_mean=prompt_mean,
                ttft_p90_ms=float(lat["time_to_first_token"].get("p90") or 0.0) * 1000.0,
                e2e_p90_ms=float(lat["request_latency"].get("p90") or 0.0) * 1000.0,
            )
        )
    name_model = model or exp.get("model") or (cfg.get("server") or {}).get("model_name") or ""
    if not name_model:
        raise RunsError(f"{where}: the model is not in the files; give it (--model)")
    if not hardware:
        raise RunsError(f"{where}: the GPU is not in the files; give it (--hardware)")
    prompt_mean = max((s.prompt_len_mean for s in stages), default=0.0)
    run = MeasuredRun(
        name=os.path.basename(os.path.normpath(base)),
        model=str(name_model).lower(),
        hardware=hardware,
        tp=int(tp or exp.get("tensor_parallelism") or exp.get("tp") or 1),
        max_num_batched_tokens=int(
            max_num_batched_tokens or exp.get("max_num_batched_tokens") or 2048
        ),
        max_num_seqs=int(exp.get("max_num_seqs") or 128),
        max_model_len=int(exp.get("max_model_len") or 4096),
        dp=_folder_dp(exp, where),
        kv_cache_dtype=_kv_dtype(exp.get("kv_cache_dtype"), f"{where}: exp-config.yaml"),
        quantization=_online_fp8(str(name_model), exp.get("quantization") or exp.get("precision")),
        total_kv_blocks=int(total_kv_blocks),
        system_prompt_len=int(data.get("system_prompt_len") or 0),
        question_len=int(data.get("question_len") or 0),
        output_len=int(data.get("output_len") or 0),
        num_groups=int(
            data.get("num_groups") or data.get("num_unique_system_prompts") or TOOL_GROUPS
        ),
        prompts_per_group=int(
            data.get("num_prompts_per_group")
            or data.get("num_users_per_system_prompt")
            or TOOL_PROMPTS_PER_GROUP
        ),
        prompt_len_mean=prompt_mean,
        stages=tuple(stages),
    )
    if run.output_len <= 0:
        raise RunsError(f"{where}: config.yaml data.shared_prefix.output_len must be > 0")
    for st in stages:
        _check_plausible(st, run.output_len, f"{where}: stage {st.index}")
    _check_deployment(run, where, hardware_flag=True)
    return run


def load_runs(
    paths: Iterable[str | os.PathLike[str]],
    *,
    hardware: str = "",
    warn: Warn | None = None,
    **folder_kw: Any,
) -> list[MeasuredRun]:
    """Runs from CSV files, YAML files and inference-perf folders, in order.

    Warnings about the files (``warn``, default the package logger) are given once every
    file has been read without error."""
    out: list[MeasuredRun] = []
    notes: list[str] = []
    for p in paths:
        s = os.fspath(p)
        if os.path.isdir(s):
            out.append(read_inference_perf_folder(s, hardware=hardware, **folder_kw))
        elif s.lower().endswith((".yaml", ".yml", ".json")):
            out.extend(read_runs_yaml(s, hardware=hardware, warn=notes.append))
        else:
            out.extend(read_runs_csv(s, hardware=hardware, warn=notes.append))
    names = [r.name for r in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise RunsError(f"run names must be unique; repeated: {', '.join(dup)}")
    for note in notes:
        (warn or _log_warning)(note)
    return out
