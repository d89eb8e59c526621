"""Cluster-level anomaly counters and per-SLO-class latency distributions.

* **Priority inversions** (only when the priority policy is not ``constant``): per
  instance and SLO class, over completed requests in arrival order (ties: generation
  order), the pairs ``i < j`` where the earlier request's E2E exceeds twice the later
  one's.
* **HOL blocking events** (2+ instances): with ``avg_i`` the mean wait-queue length of
  instance ``i`` over its steps (sampled after batch formation) and ``mean`` the mean
  of the ``avg_i``, the number of instances with ``avg_i > 2 * mean``.
* **Per-SLO distributions**: TTFT (every request with a first token) and E2E
  (completed requests) grouped by SLO class, ``""`` shown as ``default``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from inference_sim.metrics.outcome import InstanceView
from inference_sim.metrics.request_log import RequestLog
from inference_sim.metrics.stats import mean_ms, percentile_ms

DEFAULT_CLASS = "default"


def count_pairs_over_twice(values: Sequence[int] | np.ndarray) -> int:
    """Number of pairs ``i < j`` with ``values[i] > 2 * values[j]`` (O(n log^2 n))."""
    v = np.asarray(values, dtype=np.int64)
    n = len(v)
    if n < 2:
        return 0
    if n <= 64:
        return int(np.triu(v[:, None] > 2 * v[None, :], k=1).sum())
    # Ranks in the union of v and 2v turn "v_i > 2 v_j" into "a_i > b_j" on small ints.
    universe = np.unique(np.concatenate([v, 2 * v]))
    a = np.searchsorted(universe, v)
    b = np.searchsorted(universe, 2 * v)
    big = len(universe) + 1
    idx = np.arange(n)
    sorted_a = a.copy()  # blocks of `width` (aligned) sorted ascending
    total = 0
    width = 1
    while width < n:
        pair = idx // (2 * width)
        right = (idx // width) % 2 == 1
        left_keys = sorted_a[~right] + pair[~right] * big  # globally ascending
        q_pair = pair[right]
        q = b[right] + q_pair * big
        end = np.searchsorted(left_keys, (q_pair + 1) * big, side="left")
        total += int((end - np.searchsorted(left_keys, q, side="right")).sum())
        merged = np.sort(sorted_a + pair * big, kind="stable")
        sorted_a = merged - pair * big
        width *= 2
    return total


def _slo(log: RequestLog, row: int) -> str:
    return log.slo_class.get(row) or DEFAULT_CLASS


def priority_inversions(log: RequestLog, priority_policy: str) -> int:
    if priority_policy in ("", "constant"):
        return 0
    rows = np.flatnonzero(np.frombuffer(log.finished, dtype=np.int8) == 1)
    if len(rows) < 2:
        return 0
    inst = np.frombuffer(log.instance, dtype=np.int64)[rows]
    arrival = np.frombuffer(log.arrival, dtype=np.int64)[rows]
    index = np.frombuffer(log.index, dtype=np.int64)[rows]
    e2e = np.frombuffer(log.e2e, dtype=np.int64)[rows]
    groups: dict[tuple[int, str], list[int]] = {}
    for k, row in enumerate(rows.tolist()):
        groups.setdefault((int(inst[k]), _slo(log, row)), []).append(k)
    total = 0
    for key in sorted(groups):
        members = np.asarray(groups[key], dtype=np.int64)
        if len(members) < 2:
            continue
        order = members[np.lexsort((index[members], arrival[members]))]
        total += count_pairs_over_twice(e2e[order])
    return total


def hol_blocking_events(instances: Sequence[InstanceView], queue_length_sums: Sequence[int]) -> int:
    if len(instances) < 2 or len(queue_length_sums) != len(instances):
        return 0
    avgs = []
    for inst, qsum in zip(instances, queue_length_sums, strict=True):
        steps = inst.stats.step_count
        avgs.append(qsum / steps if steps else 0.0)
    mean = sum(avgs) / len(avgs)
    if mean <= 0:
        return 0
    return sum(1 for a in avgs if a > 2 * mean)


def slo_metrics(log: RequestLog, rows: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per class (sorted): TTFT and E2E mean and p99 in ms, and counts; {} if < 2 classes."""
    ttft = np.frombuffer(log.ttft, dtype=np.int64)
    e2e = np.frombuffer(log.e2e, dtype=np.int64)
    by_class: dict[str, tuple[list[int], list[int]]] = {}
    for row in rows.tolist():
        t = int(ttft[row])
        e = int(e2e[row])
        if t < 0 and e < 0:
            continue
        ts, es = by_class.setdefault(_slo(log, row), ([], []))
        if t >= 0:
            ts.append(t)
        if e >= 0:
            es.append(e)
    if len(by_class) < 2:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for cls in sorted(by_class):
        ts, es = (sorted(x) for x in by_class[cls])
        out[cls] = {
            "ttft_mean_ms": mean_ms(ts),
            "ttft_p99_ms": percentile_ms(ts, 99),
            "ttft_count": len(ts),
            "e2e_mean_ms": mean_ms(es),
            "e2e_p99_ms": percentile_ms(es, 99),
            "e2e_count": len(es),
        }
    return out
