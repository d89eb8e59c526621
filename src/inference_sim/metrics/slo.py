"""Service-level objectives on summary metrics: ``ttft_p99_ms=500``, ``responses_per_sec>=50``.

``name=value`` and ``name<=value`` mean "at most"; ``name>=value`` means "at least".
Names are the summary's metric keys (``ttft_p99_ms``, ``e2e_mean_ms``, ``tpot_p99_ms``,
``itl_mean_ms``, ...); vLLM's benchmark spellings are accepted too (``mean_tpot_ms`` for
``tpot_mean_ms``, ``median_ttft_ms`` for ``ttft_p50_ms``, ``p99_e2el_ms`` for
``e2e_p99_ms``).

A run meets the objectives when every objective holds *and* it served the whole
workload: every injected request completed, none rejected by admission.

Kept with the metrics (not in ``planning``) because ``blis run --slo`` uses the same
objectives for goodput (:mod:`inference_sim.metrics.goodput`); ``planning.slo``
re-exports them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from inference_sim.core.errors import ConfigError
from inference_sim.core.suggest import did_you_mean

#: vLLM benchmark spellings (``mean_tpot_ms``, ``p99_ttft_ms``, ``median_itl_ms``,
#: ``p99_e2el_ms``) for the summary's keys (``tpot_mean_ms``, ``ttft_p99_ms``, ...).
_SYNONYMS = {
    f"{stat}_{vllm}_ms": f"{ours}_{key}_ms"
    for vllm, ours in (("ttft", "ttft"), ("tpot", "tpot"), ("itl", "itl"), ("e2el", "e2e"))
    for stat, key in (
        ("mean", "mean"),
        ("median", "p50"),
        ("p50", "p50"),
        ("p90", "p90"),
        ("p95", "p95"),
        ("p99", "p99"),
    )
}
_PATTERN = re.compile(r"^\s*([A-Za-z0-9_]+)\s*(<=|>=|=)\s*([-+0-9.eE]+?)\s*([A-Za-zµ/]*)\s*$")
#: The unit a bound may repeat after its number, by the metric name's suffix.
_UNITS = {"_ms": "ms", "_s": "s"}


@dataclass(frozen=True)
class Objective:
    metric: str
    op: str  # "<=" or ">="
    bound: float

    def holds(self, value: float) -> bool:
        return value <= self.bound if self.op == "<=" else value >= self.bound

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


def parse_slo(text: str) -> Objective:
    m = _PATTERN.match(text)
    if m is None:
        raise ConfigError(f"--slo {text!r}: expected METRIC=VALUE, METRIC<=VALUE or METRIC>=VALUE")
    name, op, raw, unit = m.groups()
    try:
        bound = float(raw)
    except ValueError:
        raise ConfigError(f"--slo {text!r}: {raw!r} is not a number") from None
    if unit:  # ttft_p99_ms=500ms: the metric's own unit may be repeated, no other
        metric = _SYNONYMS.get(name, name)
        own = next((u for suffix, u in _UNITS.items() if metric.endswith(suffix)), "")
        if unit != own:
            what = {"ms": "milliseconds", "s": "seconds"}.get(own)
            raise ConfigError(
                f"--slo {text!r}: the bound of {metric} is a number of {what} (its name "
                f"ends in _{own}): give the number alone or followed by {own}"
                if what
                else f"--slo {text!r}: the bound is a plain number, without a unit"
            )
    if not math.isfinite(bound):
        raise ConfigError(f"--slo {text!r}: the bound must be finite")
    if bound < 0:
        raise ConfigError(f"--slo {text!r}: the bound must be >= 0 (no metric is negative)")
    metric = _SYNONYMS.get(name, name)
    if op != ">=" and bound == 0 and metric.endswith(("_ms", "_s")):
        raise ConfigError(f"--slo {text!r}: a time is never at most 0; give a bound > 0")
    return Objective(metric, ">=" if op == ">=" else "<=", bound)


def parse_slos(texts: Sequence[str]) -> list[Objective]:
    return [parse_slo(t) for t in texts]


def check_metrics(objectives: Sequence[Objective], summary: Mapping[str, Any]) -> None:
    """ConfigError naming the first objective whose metric the summary does not have."""
    numeric = sorted(k for k, v in summary.items() if isinstance(v, int | float))
    for obj in objectives:
        if not isinstance(summary.get(obj.metric), int | float):
            raise ConfigError(
                f"--slo {obj.metric}: not a summary metric{did_you_mean(obj.metric, numeric)}; "
                f"valid: {', '.join(numeric)}"
            )


def served_everything(summary: Mapping[str, Any]) -> bool:
    """Every generated request completed: none rejected by admission or as longer than
    ``--max-model-len`` (neither reaches an instance, so ``injected_requests`` leaves them
    out), none dropped, queued or running at the end."""
    injected = int(summary.get("injected_requests", 0))
    return (
        int(summary.get("completed_requests", 0)) == injected
        and injected > 0
        and int(summary.get("rejected_requests", 0)) == 0
        and int(summary.get("rejected_too_long", 0)) == 0
    )


def _unfinished_note(summary: Mapping[str, Any]) -> str:
    """Say how many requests the run's end (its ``--horizon``) left unfinished: a
    horizon shorter than the workload makes every probe of ``blis plan`` miss."""
    left = int(summary.get("still_queued", 0) or 0) + int(summary.get("still_running", 0) or 0)
    return f", {left} unfinished when the run ended: raise or drop --horizon" if left else ""


def _figure(metric: str, value: Any) -> str:
    """A missed metric's value as the tables print it: ms to 0.1, other numbers to four
    significant digits (a rate, a ratio), counts as they are."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.1f}" if metric.endswith("_ms") else f"{value:.4g}"


def violations(objectives: Sequence[Objective], summary: Mapping[str, Any]) -> list[str]:
    """Why ``summary`` misses the objectives (empty: it meets them)."""
    out: list[str] = []
    if not served_everything(summary):
        out.append(
            f"served {summary.get('completed_requests', 0)} of "
            f"{summary.get('injected_requests', 0)} requests "
            f"({summary.get('rejected_requests', 0)} rejected" + _unfinished_note(summary) + ")"
        )
    for obj in objectives:
        value = summary.get(obj.metric)
        if not isinstance(value, int | float) or not obj.holds(float(value)):
            out.append(f"{obj.metric} = {_figure(obj.metric, value)} (want {obj.op} {obj.bound:g})")
    return out


def meets(objectives: Sequence[Objective], summary: Mapping[str, Any]) -> bool:
    return not violations(objectives, summary)
