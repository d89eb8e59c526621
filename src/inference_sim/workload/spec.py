"""The workload-spec YAML (schema v2, v1 upgraded on load): parse strictly, then validate.

:func:`load_workload_spec` reads a file and returns a :class:`WorkloadSpec` that is ready
to generate: v1 SLO names are mapped, an ``inference_perf`` block or ``servegen_data``
directory has been expanded into clients, stages are resolved to microsecond windows,
and every distribution has been checked (unknown fields, unknown names, missing or
out-of-range parameters). Every problem is one :class:`WorkloadError` line naming the
file and the field, e.g. ``workload spec s.yaml: clients[1].rate_fraction must be
positive, got -1.0``.

Extensions over the reference's schema (all optional): a top-level ``stages`` list
(staged load, each stage ``{rate, duration}`` or ``{rate, end}`` in seconds);
``min``/``max`` clamps on ``exponential`` and ``pareto_lognormal``; in ``inference_perf``,
``cycle_prompts`` (inference-perf's fixed prompt set) and ``load_type``
(``poisson``/``constant`` as inference-perf, or ``evenly_spaced``).

Fields a spec gives but that change nothing are said, not dropped: an ``inference_perf``
or ``servegen_data`` block next to clients (logged as the spec loads); and, in
:attr:`WorkloadSpec.warnings`, an ``aggregate_rate`` other than the stages' mean, a
client's ``arrival.cv`` on a ``poisson`` or ``constant`` process, ``prefix_length``
without ``prefix_group`` or other than its group's (the first client naming the group
sets it), ``adapter_rank`` without ``adapter``, ``input_distribution`` on a multimodal
client (or ``multimodal`` on a multi-turn one), ``reason_ratio_distribution`` without
``multi_turn``, and a non-integral token count (truncated), once per field. ``blis run``
and ``blis workload describe`` log that list, each line prefixed ``workload spec
<file>:``, only once their workload checks have passed, so a run they refuse prints its
one error line alone.

Numbers that would pass as numbers but break generation are refused with the field and
the range: a gamma ``arrival.cv`` outside [1e-150, 1000] (weibull's [0.01, 10.4] is the
reference's), ``rate_fraction`` values whose sum overflows, a stage that ends after the
simulator's clock or whose rate x duration overflows.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import yaml

from inference_sim.core.inputs import load_yaml, read_text
from inference_sim.core.rng import MAX_SEED, seed_from_int64
from inference_sim.core.suggest import did_you_mean
from inference_sim.workload.errors import WorkloadError
from inference_sim.workload.samplers import (
    ARRIVAL_PROCESSES,
    check_arrival_cv,
    check_length_bound,
)
from inference_sim.workload.schema import (
    CATEGORIES,
    DEFAULT_PREFIX_LENGTH,
    MAX_ROUNDS,
    MULTIMODAL_FIELDS,
    SLO_CLASSES,
    TICKS_PER_SECOND,
    V1_SLO_NAMES,
    ArrivalSpec,
    ClientSpec,
    DistSpec,
    InferencePerfSpec,
    MultiTurnSpec,
    NetworkSpec,
    ReasoningSpec,
    ServeGenSpec,
    SharedPrefixSpec,
    Stage,
    Window,
    WorkloadSpec,
)

# The schema types are part of this module's interface (parse_workload_spec returns them).
__all__ = [
    "CATEGORIES",
    "DEFAULT_PREFIX_LENGTH",
    "MAX_ROUNDS",
    "MULTIMODAL_FIELDS",
    "SLO_CLASSES",
    "TICKS_PER_SECOND",
    "V1_SLO_NAMES",
    "ArrivalSpec",
    "ClientSpec",
    "DistSpec",
    "InferencePerfSpec",
    "MultiTurnSpec",
    "NetworkSpec",
    "ReasoningSpec",
    "ServeGenSpec",
    "SharedPrefixSpec",
    "Stage",
    "Window",
    "WorkloadSpec",
    "expand_inference_perf",
    "load_workload_spec",
    "parse_stages",
    "parse_workload_spec",
    "read_yaml",
]

_log = logging.getLogger("inference_sim")

#: Largest ``horizon`` (µs), as ``--horizon``: a signed 64-bit tick, the simulator's clock.
MAX_HORIZON = 2**63 - 1

#: Largest integer any other count or time (µs) of a spec may be (``num_requests``,
#: ``think_time_us``, lifecycle windows, ``adapter_rank``): a signed 64-bit integer, as
#: the run's integer flags (``--num-requests``). A larger one used to crash the run
#: (``islice()`` takes at most ``sys.maxsize``) instead of naming the field.
MAX_INT64 = 2**63 - 1

#: Most clients a spec may describe (inference_perf's N x U included): each client is an
#: arrival stream with its own random streams; real specs have 1 to ~100 (issue 21).
MAX_CLIENTS = 10_000

# --- strict parsing helpers ---------------------------------------------------------------


def _map(value: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        what = where or "the document"
        raise WorkloadError(f"{what} must be a mapping, got {type(value).__name__}")
    for key in value:
        if str(key) not in allowed:
            raise WorkloadError(
                f'{where or "top level"}: unknown field "{key}"{did_you_mean(key, allowed)}; '
                f"valid: {', '.join(allowed)}"
            )
    return {str(k): v for k, v in value.items()}


def _str(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        raise WorkloadError(f"{where} must be a string, got {value!r}")
    if isinstance(value, str | int | float):
        return str(value)
    raise WorkloadError(f"{where} must be a string, got {type(value).__name__}")


def _shown(value: Any) -> str:
    """A number for an error message: a 400-digit integer is shown by its size."""
    text = str(value)
    if isinstance(value, int) and len(text) > 40:
        return f"a {len(text.lstrip('-'))}-digit number"
    return text


def _as_float(value: int | float) -> float:
    """``float(value)``; an integer beyond a float's range (YAML reads 400 digits as an
    int) is +-inf, refused by the finiteness checks, instead of an OverflowError."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _float(value: Any, where: str, default: float = 0.0) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WorkloadError(f"{where} must be a number, got {value!r}")
    v = _as_float(value)
    if not math.isfinite(v):
        raise WorkloadError(f"{where} must be a finite number, got {_shown(value)}")
    return v


def _int(value: Any, where: str, default: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool):
        raise WorkloadError(f"{where} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise WorkloadError(f"{where} must be an integer, got {value!r}")


def _bounded_int(value: Any, where: str, low: int, note: str = "") -> int:
    """:func:`_int` in ``[low, MAX_INT64]`` (``note``: what the bounds mean, e.g. units)."""
    n = _int(value, where)
    if not low <= n <= MAX_INT64:
        raise WorkloadError(f"{where} must be in [{low}, {MAX_INT64}]{note}, got {_shown(n)}")
    return n


def _bool(value: Any, where: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    raise WorkloadError(f"{where} must be true or false, got {value!r}")


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise WorkloadError(f"{where} must be a list, got {type(value).__name__}")
    return value


def _dist(value: Any, where: str, notes: list[str], *, floor: int = 1) -> DistSpec:
    """A distribution, validated now; what it truncates is noted in ``notes`` (the spec's
    held-back warnings: once per field, after the run's checks)."""
    m = _map(value, where, ("type", "params", "file"))
    if not m:
        raise WorkloadError(
            f"{where} is required (type: one of gaussian, exponential, pareto_lognormal, "
            "empirical, constant)"
        )
    params = m.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise WorkloadError(f"{where}.params must be a mapping, got {type(params).__name__}")
    dist = DistSpec(
        _str(m.get("type"), f"{where}.type"), params, _str(m.get("file"), f"{where}.file")
    )
    dist.sampler(where, floor=floor, notes=notes)  # validates type and parameters now
    return dist


# --- stages -------------------------------------------------------------------------------


def parse_stages(value: Any, where: str) -> tuple[Stage, ...]:
    """``[{rate, duration} | {rate, end}, ...]`` (seconds) -> contiguous stages from t = 0."""
    items = _list(value, where)
    if not items:
        raise WorkloadError(f"{where}: at least one stage required")
    stages: list[Stage] = []
    prev_end = 0.0
    requests = 0.0  # expected requests so far: the generator's operational time
    for i, item in enumerate(items):
        w = f"{where}[{i}]"
        m = _map(item, w, ("rate", "duration", "end"))
        if "rate" not in m:
            raise WorkloadError(f"{w}.rate is required (requests per second)")
        rate = m["rate"]
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise WorkloadError(f"{w}.rate must be a finite positive number, got {rate!r}")
        if not (math.isfinite(_as_float(rate)) and rate > 0):
            shown = _shown(rate) if isinstance(rate, int) else str(float(rate))
            raise WorkloadError(f"{w}.rate must be a finite positive number, got {shown}")
        if ("duration" in m) == ("end" in m):
            raise WorkloadError(f"{w}: give exactly one of duration or end (seconds)")
        if "duration" in m:
            d = _float(m["duration"], f"{w}.duration")
            if d <= 0:
                raise WorkloadError(f"{w}.duration must be positive, got {m['duration']}")
            end = prev_end + d
        else:
            end = _float(m["end"], f"{w}.end")
            if end <= prev_end:
                raise WorkloadError(
                    f"{w}.end must be greater than the previous stage's end "
                    f"({prev_end:g} s): stage lists must be increasing, got {end:g}"
                )
        # Bounded as a lifecycle window is, by the simulator's clock: an end of 1e305 s
        # (+inf µs) used to crash the run with an OverflowError.
        if end * TICKS_PER_SECOND > MAX_HORIZON:
            raise WorkloadError(
                f"{w}: the stage ends at {end:g} s, after {MAX_HORIZON} µs (the simulator's clock)"
            )
        start_us = round(prev_end * TICKS_PER_SECOND)
        end_us = round(end * TICKS_PER_SECOND)
        if end_us <= start_us:
            raise WorkloadError(f"{w}: stage is shorter than 1 µs")
        # rate x duration overflowing (rate 1e308 for 100 s) made every arrival 0 and
        # the later stages unreachable, with numpy's overflow warning on stderr.
        requests += float(rate) * ((end_us - start_us) / TICKS_PER_SECOND)
        if not math.isfinite(requests):
            raise WorkloadError(
                f"{w}.rate {float(rate):g} req/s: the stages' requests (rate x duration) "
                "overflow a float; lower the rate"
            )
        stages.append(Stage(float(rate), start_us, end_us))
        prev_end = end
    return tuple(stages)


# --- clients ------------------------------------------------------------------------------

_CLIENT_KEYS = (
    "id",
    "tenant_id",
    "slo_class",
    "model",
    "rate_fraction",
    "arrival",
    "input_distribution",
    "output_distribution",
    "prefix_group",
    "prefix_length",
    "streaming",
    "network",
    "lifecycle",
    "multimodal",
    "reasoning",
    "adapter",
    "adapter_rank",
)


def _parse_client(value: Any, i: int, warnings: list[str], *, v1: bool) -> ClientSpec:
    w = f"clients[{i}]"
    m = _map(value, w, _CLIENT_KEYS)
    slo = _str(m.get("slo_class"), f"{w}.slo_class")
    if v1 and slo in V1_SLO_NAMES:
        new = V1_SLO_NAMES[slo]
        warnings.append(
            f'{w}: deprecated SLO class "{slo}" auto-mapped to "{new}"; '
            "update your spec to use v2 tier names"
        )
        slo = new
    if slo and slo not in SLO_CLASSES:
        raise WorkloadError(
            f'{w}.slo_class: unknown SLO class "{slo}"; valid: {", ".join(SLO_CLASSES)}, or empty'
        )
    fraction = _float(m.get("rate_fraction"), f"{w}.rate_fraction")
    if fraction <= 0:
        raise WorkloadError(f"{w}.rate_fraction must be positive, got {fraction}")

    if m.get("arrival") is None:
        raise WorkloadError(f"{w}.arrival is required (process: {', '.join(ARRIVAL_PROCESSES)})")
    am = _map(m.get("arrival"), f"{w}.arrival", ("process", "cv"))
    process = _str(am.get("process"), f"{w}.arrival.process")
    if process not in ARRIVAL_PROCESSES:
        raise WorkloadError(
            f'{w}.arrival.process: unknown arrival process "{process}"; '
            f"valid: {', '.join(ARRIVAL_PROCESSES)}"
        )
    cv: float | None = None
    if am.get("cv") is not None:
        raw = am["cv"]
        if (
            isinstance(raw, bool)
            or not isinstance(raw, int | float)
            or not math.isfinite(_as_float(raw))
        ):
            shown = _shown(raw) if isinstance(raw, int) else repr(raw)
            raise WorkloadError(f"{w}.arrival.cv must be a finite number, got {shown}")
        cv = float(raw)
        if process == "weibull":  # its range first, as the reference checks it
            check_arrival_cv(process, cv, f"{w}.arrival.cv")
        if cv <= 0:
            raise WorkloadError(f"{w}.arrival.cv must be positive, got {cv}")
        # gamma: a cv whose shape 1/cv² is 0 or infinite used to pass here and then crash
        # the run (ZeroDivisionError) or give NaN gaps, every arrival 1 µs apart.
        check_arrival_cv(process, cv, f"{w}.arrival.cv")
        if process in ("poisson", "constant"):
            # Accepted, as the reference accepts it (workload spec 5.4), but said.
            warnings.append(
                f"{w}.arrival.cv {raw} has no effect with process {process} (its CV is "
                f"{'1' if process == 'poisson' else '0'}); use gamma or weibull for another CV"
            )
            cv = None

    prefix_length = _int(m.get("prefix_length"), f"{w}.prefix_length")
    if prefix_length < 0:
        raise WorkloadError(f"{w}.prefix_length must be non-negative, got {prefix_length}")
    check_length_bound(prefix_length, f"{w}.prefix_length")

    input_dist = _dist(m.get("input_distribution"), f"{w}.input_distribution", warnings)
    output_dist = _dist(m.get("output_distribution"), f"{w}.output_distribution", warnings)

    network = None
    if m.get("network") is not None:
        nm = _map(m["network"], f"{w}.network", ("rtt_ms", "bandwidth_mbps"))
        network = NetworkSpec(
            _float(nm.get("rtt_ms"), f"{w}.network.rtt_ms"),
            _float(nm.get("bandwidth_mbps"), f"{w}.network.bandwidth_mbps"),
        )

    lifecycle = None
    if m.get("lifecycle") is not None:
        lm = _map(m["lifecycle"], f"{w}.lifecycle", ("windows",))
        windows = []
        for j, item in enumerate(_list(lm.get("windows"), f"{w}.lifecycle.windows")):
            ww = f"{w}.lifecycle.windows[{j}]"
            wm = _map(item, ww, ("start_us", "end_us"))
            start = _int(wm.get("start_us"), f"{ww}.start_us")
            end = _int(wm.get("end_us"), f"{ww}.end_us")
            if start < 0:
                raise WorkloadError(f"{ww}.start_us must be >= 0, got {start}")
            for name, t in (("start_us", start), ("end_us", end)):
                if t > MAX_HORIZON:
                    raise WorkloadError(
                        f"{ww}.{name} must be <= {MAX_HORIZON} µs (the simulator's clock), "
                        f"got {_shown(t)}"
                    )
            if end <= start:
                raise WorkloadError(f"{ww}.end_us must be greater than start_us, got {end}")
            windows.append(Window(start, end))
        lifecycle = tuple(windows)

    multimodal = None
    if m.get("multimodal") is not None:
        mm = _map(m["multimodal"], f"{w}.multimodal", MULTIMODAL_FIELDS)
        multimodal = {}
        for name in MULTIMODAL_FIELDS:
            if mm.get(name) is not None:
                floor = 0 if name.endswith("count_distribution") else 1
                multimodal[name] = _dist(mm[name], f"{w}.multimodal.{name}", warnings, floor=floor)
        for kind in ("image", "audio", "video"):
            if (f"{kind}_distribution" in multimodal) != (
                f"{kind}_count_distribution" in multimodal
            ):
                raise WorkloadError(
                    f"{w}.multimodal: {kind}_distribution and {kind}_count_distribution "
                    "must be given together"
                )

    reasoning = None
    if m.get("reasoning") is not None:
        rm = _map(m["reasoning"], f"{w}.reasoning", ("reason_ratio_distribution", "multi_turn"))
        ratio = None
        if rm.get("reason_ratio_distribution") is not None:
            ratio = _dist(
                rm["reason_ratio_distribution"],
                f"{w}.reasoning.reason_ratio_distribution",
                warnings,
                floor=0,
            )
        multi_turn = None
        if rm.get("multi_turn") is not None:
            mw = f"{w}.reasoning.multi_turn"
            tm = _map(rm["multi_turn"], mw, ("max_rounds", "think_time_us", "context_growth"))
            rounds = _int(tm.get("max_rounds"), f"{mw}.max_rounds")
            if not 0 < rounds <= MAX_ROUNDS:
                raise WorkloadError(f"{mw}.max_rounds must be in [1, {MAX_ROUNDS}], got {rounds}")
            think = _bounded_int(tm.get("think_time_us"), f"{mw}.think_time_us", 0, " µs")
            growth = _str(tm.get("context_growth"), f"{mw}.context_growth")
            if growth not in ("", "accumulate", "none"):
                raise WorkloadError(
                    f'{mw}.context_growth: unknown value "{growth}"; valid: accumulate, none'
                )
            multi_turn = MultiTurnSpec(rounds, think, growth)
        reasoning = ReasoningSpec(ratio, multi_turn)
        if ratio is not None and multi_turn is None:
            warnings.append(
                f"{w}.reasoning.reason_ratio_distribution has no effect without "
                "reasoning.multi_turn (only session rounds record a reason ratio)"
            )

    # What a multimodal client draws (workload spec 10, 11): its prompts are text plus
    # image/audio/video tokens, and a session's rounds draw input_distribution instead.
    # The reference requires input_distribution either way, so a portable spec keeps it.
    if multimodal is not None and (reasoning is None or reasoning.multi_turn is None):
        warnings.append(
            f"{w}.input_distribution has no effect on a multimodal client (its prompt is "
            "multimodal.text_distribution plus the image/audio/video tokens); it is still "
            "required, as the reference requires it"
        )
    elif multimodal is not None:
        warnings.append(
            f"{w}.multimodal has no effect with reasoning.multi_turn (session rounds draw "
            "their prompts from input_distribution, as the reference's do)"
        )

    prefix_group = _str(m.get("prefix_group"), f"{w}.prefix_group")
    if prefix_length and not prefix_group:
        # Said, not refused: harmless (nothing reads it), but likely a missing group.
        warnings.append(
            f"{w}.prefix_length {prefix_length} has no effect without prefix_group (only a "
            "prefix group shares a prefix; the prompt is the input_distribution alone)"
        )
    adapter = _str(m.get("adapter"), f"{w}.adapter")
    adapter_rank = _adapter_rank(m.get("adapter_rank"), f"{w}.adapter_rank")
    if adapter_rank and not adapter:
        warnings.append(
            f"{w}.adapter_rank {adapter_rank} has no effect without adapter (the requests run "
            "on the base model)"
        )
    return ClientSpec(
        id=_str(m.get("id"), f"{w}.id"),
        tenant_id=_str(m.get("tenant_id"), f"{w}.tenant_id"),
        slo_class=slo,
        model=_str(m.get("model"), f"{w}.model"),
        rate_fraction=fraction,
        arrival=ArrivalSpec(process, cv),
        input_distribution=input_dist,
        output_distribution=output_dist,
        prefix_group=prefix_group,
        prefix_length=prefix_length,
        streaming=_bool(m.get("streaming"), f"{w}.streaming"),
        network=network,
        lifecycle=lifecycle,
        multimodal=multimodal,
        reasoning=reasoning,
        adapter=adapter,
        adapter_rank=adapter_rank,
    )


def _shared_prefix_notes(clients: tuple[ClientSpec, ...]) -> list[str]:
    """A note for each client whose ``prefix_length`` differs from its group's length.

    A group's prefix is drawn once, its length from the first client naming it (0: 50,
    workload spec 9, as the generator's ``_prefixes``); a later client's different length
    changes nothing, which used to be dropped silently.
    """
    first: dict[str, tuple[int, int]] = {}  # group -> (client index, length)
    notes: list[str] = []
    for i, c in enumerate(clients):
        g = c.prefix_group
        if not g:
            continue
        if g not in first:
            first[g] = (i, c.prefix_length if c.prefix_length > 0 else DEFAULT_PREFIX_LENGTH)
            continue
        j, length = first[g]
        if c.prefix_length > 0 and c.prefix_length != length:
            notes.append(
                f"clients[{i}].prefix_length {c.prefix_length} has no effect: prefix group "
                f'"{g}" takes its length ({length}) from clients[{j}], the first client '
                "naming it"
            )
    return notes


def _adapter_rank(value: Any, where: str) -> int:
    """An adapter rank: a whole number >= 1, or absent (0: decided by the run)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WorkloadError(f"{where} must be a whole number >= 1, got {value!r}")
    if value > MAX_INT64:
        raise WorkloadError(f"{where} must be in [1, {MAX_INT64}], got {_shown(value)}")
    return value


# --- inference-perf -----------------------------------------------------------------------

_SHARED_PREFIX_ALIASES = {
    "num_groups": "num_unique_system_prompts",
    "num_prompts_per_group": "num_users_per_system_prompt",
}
_SHARED_PREFIX_KEYS = (
    "num_unique_system_prompts",
    "num_users_per_system_prompt",
    "system_prompt_len",
    "question_len",
    "output_len",
    "enable_multi_turn_chat",
    *_SHARED_PREFIX_ALIASES,
)


#: ``inference_perf.load_type`` values: inference-perf's ``poisson`` and ``constant``
#: (exactly int(rate x duration) requests a stage, jittered: docs/workloads.md), and our
#: ``evenly_spaced`` (one request every 1/rate s, dealt round-robin to the clients).
LOAD_TYPES = ("poisson", "constant", "evenly_spaced")


def _parse_inference_perf(value: Any) -> InferencePerfSpec:
    w = "inference_perf"
    m = _map(value, w, ("stages", "shared_prefix", "cycle_prompts", "load_type"))
    if m.get("stages") is None:
        raise WorkloadError(f"{w}: at least one stage required")
    stages = parse_stages(m.get("stages"), f"{w}.stages")
    if m.get("shared_prefix") is None:
        raise WorkloadError(f"{w}: shared_prefix is required")
    sw = f"{w}.shared_prefix"
    raw = _map(m["shared_prefix"], sw, _SHARED_PREFIX_KEYS)
    sp: dict[str, Any] = {}
    for key, v in raw.items():
        canonical = _SHARED_PREFIX_ALIASES.get(key, key)
        if canonical in sp:
            raise WorkloadError(f"{sw}: {canonical} given twice (as {key})")
        sp[canonical] = v
    counts = {}
    for key in ("num_unique_system_prompts", "num_users_per_system_prompt"):
        n = _int(sp.get(key), f"{sw}.{key}")
        if n <= 0:
            raise WorkloadError(f"{sw}.{key} must be positive, got {n}")
        counts[key] = n
    product = counts["num_unique_system_prompts"] * counts["num_users_per_system_prompt"]
    if product > MAX_CLIENTS:
        raise WorkloadError(
            f"{sw}: num_unique_system_prompts x num_users_per_system_prompt is {product:,}, "
            f"more than {MAX_CLIENTS:,} clients (see docs/troubleshooting.md)"
        )
    lengths = {}
    for key in ("system_prompt_len", "question_len", "output_len"):
        n = _int(sp.get(key), f"{sw}.{key}")
        if n < 0:
            raise WorkloadError(f"{sw}.{key} must be non-negative, got {n}")
        check_length_bound(n, f"{sw}.{key}")
        lengths[key] = n
    load_type = _str(m.get("load_type"), f"{w}.load_type") or "poisson"
    if load_type not in LOAD_TYPES:
        raise WorkloadError(
            f'{w}.load_type: unknown load type "{load_type}"{did_you_mean(load_type, LOAD_TYPES)}'
            f"; valid: {', '.join(LOAD_TYPES)}"
        )
    shared = SharedPrefixSpec(
        counts["num_unique_system_prompts"],
        counts["num_users_per_system_prompt"],
        lengths["system_prompt_len"],
        lengths["question_len"],
        lengths["output_len"],
        _bool(sp.get("enable_multi_turn_chat"), f"{sw}.enable_multi_turn_chat"),
    )
    return InferencePerfSpec(
        stages, shared, _bool(m.get("cycle_prompts"), f"{w}.cycle_prompts"), load_type
    )


def expand_inference_perf(ip: InferencePerfSpec) -> tuple[ClientSpec, ...]:
    """N x U clients, one per (system prompt, user), as the reference expands them.

    Fixed on purpose: a ``system_prompt_len`` of 0 means no shared prefix (the reference
    silently uses its 50-token default), and multi-turn sessions keep the system prompt
    (our generator prepends a client's prefix to its sessions too). With ``load_type:
    constant`` or ``evenly_spaced`` the generator deals ONE stream at the stage rate to
    these clients round-robin, in this order (``generate.spec_sources``), as
    inference-perf's single load generator does, rather than running N x U processes.

    Multi-turn chat: every ARRIVAL is one request, the next round of that client's
    5-round accumulating session (``MultiTurnSpec.on_arrivals``), as inference-perf sends
    one request per arrival (``SharedPrefixDataGenerator.load_lazy_data``: user
    ``i mod users``, round ``i // users``). The reference starts a whole session per
    arrival, which multiplied the stage's request rate by the number of rounds.
    """
    sp = ip.shared_prefix
    total = sp.num_unique_system_prompts * sp.num_users_per_system_prompt
    multi = None
    if sp.enable_multi_turn_chat:
        multi = ReasoningSpec(
            None,
            MultiTurnSpec(
                max_rounds=5, think_time_us=0, context_growth="accumulate", on_arrivals=True
            ),
        )
    process = "poisson" if ip.load_type == "poisson" else "constant"  # dealt: generate.py
    clients = []
    for p in range(sp.num_unique_system_prompts):
        for u in range(sp.num_users_per_system_prompt):
            clients.append(
                ClientSpec(
                    id=f"prompt-{p}-user-{u}",
                    tenant_id=f"prompt-{p}",
                    slo_class="batch",
                    rate_fraction=1.0 / total,
                    arrival=ArrivalSpec(process),
                    input_distribution=DistSpec("constant", {"value": sp.question_len}),
                    output_distribution=DistSpec("constant", {"value": sp.output_len}),
                    prefix_group=f"prompt-{p}" if sp.system_prompt_len > 0 else "",
                    prefix_length=sp.system_prompt_len,
                    reasoning=multi,
                )
            )
    return tuple(clients)


# --- top level ----------------------------------------------------------------------------

_TOP_KEYS = (
    "version",
    "seed",
    "category",
    "clients",
    "aggregate_rate",
    "horizon",
    "num_requests",
    "servegen_data",
    "inference_perf",
    "stages",
)


def parse_workload_spec(data: Any, *, source: str = "", base_dir: str = "") -> WorkloadSpec:
    """Build a validated :class:`WorkloadSpec` from parsed YAML data.

    Errors carry the field path only; :func:`load_workload_spec` adds the file name.
    """
    if data is None:
        raise WorkloadError("the file is empty, expected a mapping with clients")
    if isinstance(data, dict) and not data.keys() & {"clients", "inference_perf", "servegen_data"}:
        bundle = sorted(
            str(k) for k in data.keys() & {"admission", "routing", "priority", "scheduler"}
        )
        if bundle:
            raise WorkloadError(
                f"this is a policy bundle ({', '.join(bundle)}), not a workload spec: "
                "it has no clients, inference_perf or servegen_data"
            )
    m = _map(data, "", _TOP_KEYS)
    warnings: list[str] = []
    version = _str(m.get("version"), "version")
    if version not in ("", "1", "2"):
        raise WorkloadError(f'version: unknown version "{version}"; valid: 1, 2')
    category = _str(m.get("category"), "category")
    if category and category not in CATEGORIES:
        raise WorkloadError(
            f'category: unknown category "{category}"; valid: {", ".join(CATEGORIES)}'
        )
    seed = seed_from_int64(_int(m.get("seed"), "seed"))  # the reference's is int64
    if not 0 <= seed <= MAX_SEED:
        raise WorkloadError(f"seed must be in [0, {MAX_SEED}] (a 64-bit seed), got {seed}")
    horizon = _int(m.get("horizon"), "horizon")
    if not 0 <= horizon <= MAX_HORIZON:
        # A horizon past the clock's range used to pass here and then read as "no
        # horizon", so the run asked for one although the file gave one.
        raise WorkloadError(
            f"horizon must be in [0, {MAX_HORIZON}] µs (0: none; as --horizon), got {horizon}"
        )
    # Bounded as --num-requests is (a 64-bit integer; 0: no limit): a larger count used
    # to pass here and crash the run ("Stop argument for islice() ...").
    num_requests = _bounded_int(m.get("num_requests"), "num_requests", 0, " (0: no limit)")

    inference_perf = None
    if m.get("inference_perf") is not None:
        inference_perf = _parse_inference_perf(m["inference_perf"])
        if m.get("clients"):  # expanded only without clients (workload spec 8.1, 16)
            _log.warning(
                "inference_perf is ignored: the spec has clients, which set the load "
                "(aggregate_rate and their rate fractions)"
            )
            inference_perf = None
    stages: tuple[Stage, ...] = ()
    if m.get("stages") is not None:
        stages = parse_stages(m["stages"], "stages")
    if inference_perf is not None:
        if stages:
            raise WorkloadError("stages: give stages either at top level or in inference_perf")
        stages = inference_perf.stages

    aggregate_rate = _float(m.get("aggregate_rate"), "aggregate_rate")
    if not stages and aggregate_rate <= 0:
        raise WorkloadError(f"aggregate_rate must be positive, got {aggregate_rate}")
    if stages and aggregate_rate < 0:
        raise WorkloadError(f"aggregate_rate must be positive, got {aggregate_rate}")
    if stages and aggregate_rate > 0:
        warnings.extend(_ignored_aggregate_rate(aggregate_rate, stages))

    servegen = None
    if m.get("servegen_data") is not None:
        sm = _map(m["servegen_data"], "servegen_data", ("path", "span_start", "span_end"))
        path = _str(sm.get("path"), "servegen_data.path")
        if not path:
            raise WorkloadError("servegen_data.path is required")
        servegen = ServeGenSpec(
            path,
            _int(sm.get("span_start"), "servegen_data.span_start"),
            _int(sm.get("span_end"), "servegen_data.span_end"),
        )

    raw_clients = _list(m.get("clients"), "clients")
    if len(raw_clients) > MAX_CLIENTS:
        raise WorkloadError(
            f"clients: {len(raw_clients):,} clients, more than {MAX_CLIENTS:,} "
            "(see docs/troubleshooting.md)"
        )
    if not raw_clients and servegen is None and inference_perf is None:
        raise WorkloadError(
            "clients: at least one client, servegen_data or inference_perf required"
        )
    if servegen is not None and (raw_clients or inference_perf is not None):
        # Loaded only without clients, after an inference_perf block (workload spec 8.1).
        _log.warning(
            "servegen_data is ignored: %s",
            "the spec has clients, which set the load (aggregate_rate and their rate fractions)"
            if raw_clients
            else "the inference_perf block sets the clients (it is expanded first, as in "
            "the reference)",
        )
    v1 = version in ("", "1")
    clients = tuple(_parse_client(c, i, warnings, v1=v1) for i, c in enumerate(raw_clients))
    if clients and not math.isfinite(sum(c.rate_fraction for c in clients)):
        # Each rate is aggregate_rate x fraction / sum: an infinite sum made every rate
        # NaN and every gap 1 µs.
        raise WorkloadError(
            "clients: the rate_fraction values sum to more than a float holds; scale them "
            "down (only their ratios matter)"
        )
    warnings.extend(_shared_prefix_notes(clients))

    if not clients and inference_perf is not None:
        if not inference_perf.cycle_prompts:
            clients = expand_inference_perf(inference_perf)
        if not category:
            category = (
                "reasoning" if inference_perf.shared_prefix.enable_multi_turn_chat else "language"
            )
    elif not clients and servegen is not None:
        from inference_sim.workload.servegen import load_servegen_clients

        clients, more = load_servegen_clients(servegen, base_dir=base_dir)
        warnings.extend(more)

    if version in ("", "1"):
        version = "2"
    return WorkloadSpec(
        version=version,
        seed=seed,
        category=category,
        clients=clients,
        aggregate_rate=aggregate_rate,
        horizon=horizon,
        num_requests=num_requests,
        servegen_data=servegen,
        inference_perf=inference_perf,
        stages=stages,
        source=source,
        warnings=tuple(warnings),
    )


def _ignored_aggregate_rate(aggregate_rate: float, stages: tuple[Stage, ...]) -> list[str]:
    """The warning that an explicit ``aggregate_rate`` other than the stages' mean has no
    effect (none when it is that mean, as in the reference's inference-perf example).

    We honour the stages (docs/workloads.md); the reference applies the stage average
    only when ``aggregate_rate <= 0`` (workload spec 8.1, 16), so its run of the same file
    is at ``aggregate_rate``: dropping a number the user wrote silently hid that. It goes
    to :attr:`WorkloadSpec.warnings`, which ``blis run`` logs (package logger) once the
    run's own checks have passed, so a run stopped by ``--aggregate-rate`` prints its one
    error line alone.
    """
    span = sum(st.end_us - st.start_us for st in stages)
    mean = sum(st.rate * (st.end_us - st.start_us) for st in stages) / span
    if math.isclose(aggregate_rate, mean, rel_tol=1e-9):
        return []
    return [
        f"aggregate_rate {aggregate_rate:g} req/s is ignored: the stages set the load "
        f"({mean:g} req/s on average over {span / TICKS_PER_SECOND:g} s); the reference "
        f"would run the whole workload at {aggregate_rate:g} req/s. Remove aggregate_rate "
        f"or set it to {mean:g}"
    ]


def _yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is not None:
        return f"invalid YAML: {problem} (line {mark.line + 1}, column {mark.column + 1})"
    return f"invalid YAML: {problem}"


def read_yaml(path: str | os.PathLike[str], what: str) -> Any:
    """Parse a YAML file; errors are one line naming ``what`` and the file."""
    p = os.fspath(path)
    try:
        text = read_text(p)
    except FileNotFoundError:
        raise WorkloadError(f"{what} {p}: file not found") from None
    except UnicodeDecodeError:
        raise WorkloadError(f"{what} {p}: not UTF-8 text") from None
    except OSError as exc:
        raise WorkloadError(f"{what} {p}: cannot read: {exc.strerror or exc}") from None
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        raise WorkloadError(f"{what} {p}: {_yaml_error(exc)}") from None
    except ValueError as exc:  # a value YAML cannot build: an integer of 5,000 digits
        raise WorkloadError(f"{what} {p}: invalid YAML: {exc}") from None


def load_workload_spec(path: str | os.PathLike[str]) -> WorkloadSpec:
    """Read, upgrade, expand and validate a workload-spec file."""
    p = os.fspath(path)
    data = read_yaml(p, "workload spec")
    try:
        return parse_workload_spec(data, source=p, base_dir=os.path.dirname(os.path.abspath(p)))
    except WorkloadError as exc:
        raise WorkloadError(f"workload spec {p}: {exc}") from None
