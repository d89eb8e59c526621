"""Per-SLO-class latency distributions, per-tenant throughput and Jain's fairness index.

* **Per-SLO distributions**: TTFT (every request with a first token) and E2E (completed
  requests) grouped by SLO class (``""`` shown as ``default``), each with mean, p50, p90,
  p95, p99, min, max (ms) and count.
* **Per-tenant throughput**: for each tenant (``""`` shown as ``default``), requests that
  reached an instance, completed, rejected by admission, and completed requests and
  output tokens of completed requests per second of simulated time (the duration of
  the run's ``responses_per_sec``).
* **Jain's fairness index** over the tenants' request throughput:
  ``(sum x)^2 / (n * sum x^2)``: 1 when every tenant gets the same throughput, ``1/n``
  when one tenant gets everything; 0 for no tenants, 1 when every throughput is 0.
  A tenant whose requests were all rejected counts with throughput 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from inference_sim.analysis.fitness import Distribution
from inference_sim.metrics.request_log import RequestLog

DEFAULT_GROUP = "default"


def jain_index(throughputs: Mapping[str, float] | Iterable[float]) -> float:
    """Jain's fairness index ``(sum x)^2 / (n * sum x^2)`` (0 if empty, 1 if all zero)."""
    values = list(throughputs.values() if isinstance(throughputs, Mapping) else throughputs)
    n = len(values)
    if n == 0:
        return 0.0
    total = 0.0
    squares = 0.0
    for x in values:
        total += float(x)
        squares += float(x) * float(x)
    if squares == 0.0:
        return 1.0
    return total * total / (n * squares)


def slo_distributions(log: RequestLog, rows: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per SLO class (sorted): request count and TTFT / E2E statistics in ms."""
    ttft = np.frombuffer(log.ttft, dtype=np.int64)
    e2e = np.frombuffer(log.e2e, dtype=np.int64)
    groups: dict[str, tuple[list[int], list[int], list[int]]] = {}
    for row in rows.tolist():
        t = int(ttft[row])
        e = int(e2e[row])
        ts, es, n = groups.setdefault(log.slo_class.get(row) or DEFAULT_GROUP, ([], [], [0]))
        n[0] += 1
        if t >= 0:
            ts.append(t)
        if e >= 0:
            es.append(e)
    return {
        cls: {
            "requests": groups[cls][2][0],
            "ttft": Distribution.of(groups[cls][0]).as_ms(),
            "e2e": Distribution.of(groups[cls][1]).as_ms(),
        }
        for cls in sorted(groups)
    }


def tenant_metrics(
    log: RequestLog,
    rows: np.ndarray,
    duration_s: float,
    rejected: Mapping[str, int] | None = None,
    dropped: Mapping[str, int] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per tenant (sorted): requests, completed, rejected, throughput_rps, tokens_per_sec.

    ``rows`` are the request-log rows to count; ``rejected`` maps tenants to admission
    rejections (requests that never reached an instance); ``dropped`` to requests that
    reached an instance but were dropped as unservable (not in the log: they count in
    ``requests`` and ``dropped``); ``duration_s`` is the run's simulated duration (no
    throughput when it is 0).
    """
    e2e = np.frombuffer(log.e2e, dtype=np.int64)
    n_out = np.frombuffer(log.num_output, dtype=np.int64)
    acc: dict[str, list[int]] = {}  # requests, completed, output tokens of completed
    for row in rows.tolist():
        a = acc.setdefault(log.tenant_id.get(row) or DEFAULT_GROUP, [0, 0, 0])
        a[0] += 1
        if e2e[row] >= 0:
            a[1] += 1
            a[2] += int(n_out[row])
    rejected_by: dict[str, int] = {}
    for tenant, n in (rejected or {}).items():
        name = tenant or DEFAULT_GROUP
        rejected_by[name] = rejected_by.get(name, 0) + int(n)
        acc.setdefault(name, [0, 0, 0])
    dropped_by: dict[str, int] = {}
    for tenant, n in (dropped or {}).items():
        name = tenant or DEFAULT_GROUP
        dropped_by[name] = dropped_by.get(name, 0) + int(n)
        acc.setdefault(name, [0, 0, 0])[0] += int(n)
    out: dict[str, dict[str, Any]] = {}
    for tenant in sorted(acc):
        requests, completed, tokens = acc[tenant]
        active = completed > 0 and duration_s > 0
        out[tenant] = {
            "requests": requests,
            "completed": completed,
            "rejected": rejected_by.get(tenant, 0),
            "dropped": dropped_by.get(tenant, 0),
            "throughput_rps": completed / duration_s if active else 0.0,
            "tokens_per_sec": tokens / duration_s if active else 0.0,
        }
    return out


def slo_attainment(log: RequestLog, rows: np.ndarray, targets_ms: Mapping[str, float]) -> float:
    """Share of completed requests whose E2E meets its class's target (cluster spec 15.2).

    Classes without a target always meet; 0 when nothing completed.
    """
    e2e = np.frombuffer(log.e2e, dtype=np.int64)
    done = 0
    met = 0
    for row in rows.tolist():
        e = int(e2e[row])
        if e < 0:
            continue
        done += 1
        target = targets_ms.get(log.slo_class.get(row) or DEFAULT_GROUP)
        if target is None or e / 1000.0 <= target:
            met += 1
    return met / done if done else 0.0


def fairness_block(jain: float, tenants: Mapping[str, Mapping[str, Any]]) -> str:
    """``=== Tenant Fairness ===``: Jain's index, then one line per tenant (2+ tenants)."""
    if len(tenants) < 2:
        return ""
    lines = ["=== Tenant Fairness ===", f"Jain Fairness Index: {jain:.6f}"]
    for tenant in sorted(tenants):
        t = tenants[tenant]
        dropped = int(t.get("dropped", 0) or 0)  # unservable: shown when there are any
        lines.append(
            f"  {tenant}: throughput={float(t['throughput_rps']):.4f} req/s "
            f"tokens={float(t['tokens_per_sec']):.2f} tok/s "
            f"(completed={int(t['completed'])}, rejected={int(t['rejected'])}"
            + (f", dropped={dropped}" if dropped else "")
            + ")"
        )
    return "\n".join(lines) + "\n"
