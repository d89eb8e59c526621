"""Decision tracing and counterfactual top-k regret (cluster spec sections 13 and 14).

With ``--trace-level decisions`` the cluster's ``decision_hook`` feeds every admission
and routing decision into a :class:`DecisionTrace`. The trace keeps compact columns
(typed arrays, a few dozen bytes per decision and instance) and builds the per-decision
dicts only when asked (:meth:`DecisionTrace.records`), so tracing a long run costs
little memory.

Record fields (every record has all of them; ``None`` where a field does not apply):

==================  =========================================================================
``seq``             position in decision order (admissions and routings interleaved as they ran)
``kind``            ``"admission"`` or ``"routing"``
``request_id``      ``request_<n>``
``clock``           decision time (µs)
``tenant_id``       the request's tenant ("" when it has none)
``slo_class``       the request's SLO class ("" when it has none)
``admitted``        admission: the verdict; routing: None
``reason``          the policy's reason string
``chosen_instance`` routing: the instance id; admission: None
``scores``          routing: ``{instance id: score}`` from scoring policies (weighted), else None
``snapshots``       routing: what the policy saw, one dict per instance in index order
``candidates``      routing with ``--counterfactual-k K > 0``: the top-K instances, best first
``regret``          routing: best score minus the chosen one's, clamped at 0 (0 when K = 0)
==================  =========================================================================

Counterfactual scores: the policy's own scores when it gives them; otherwise minus the
instance's effective load (queued + running + pending), so for load-blind or
load-based policies regret = chosen load - least load. Ranking: score descending, ties
by instance id as plain strings (``"instance_10" < "instance_2"``).
"""

from __future__ import annotations

import json
import numbers
import os
from array import array
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from inference_sim.core.outfiles import OutputFile, output_path
from inference_sim.policies.base import PolicyError, RoutingDecision, RoutingSnapshot, target_index

TRACE_LEVELS = ("none", "decisions")

#: Record keys, in order (also the DataFrame / Parquet column order).
DECISION_COLUMNS: tuple[str, ...] = (
    "seq",
    "kind",
    "request_id",
    "clock",
    "tenant_id",
    "slo_class",
    "admitted",
    "reason",
    "chosen_instance",
    "scores",
    "snapshots",
    "candidates",
    "regret",
)

SNAPSHOT_FIELDS: tuple[str, ...] = (
    "instance_id",
    "queue_depth",
    "batch_size",
    "pending_requests",
    "kv_utilization",
    "free_kv_blocks",
    "cache_hit_rate",
)

CANDIDATE_FIELDS: tuple[str, ...] = (
    "instance_id",
    "score",
    "queue_depth",
    "batch_size",
    "pending_requests",
    "kv_utilization",
    "free_kv_blocks",
)

_ADMISSION = 0
_ROUTING = 1


def effective_load(snap: Any) -> int:
    return int(snap.queue_depth) + int(snap.batch_size) + int(snap.pending_requests)


def _score_list(
    scores: Sequence[float] | Mapping[str, float] | None,
    snapshots: Sequence[Any],
    routing_policy: str = "",
) -> list[float]:
    """One counterfactual score per snapshot: the policy's, else minus the effective load."""
    if scores is None:
        return [float(-effective_load(s)) for s in snapshots]
    return checked_scores(scores, snapshots, routing_policy)


def checked_scores(scores: Any, snapshots: Sequence[Any], routing_policy: str = "") -> list[float]:
    """A routing decision's ``scores`` as one float per snapshot, or a PolicyError.

    A plug-in router's scores feed the counterfactual ranking and regret. A short list
    used to be padded with 0, a NaN ranked anywhere and gave regret 0, and a string
    failed inside ``float()``; the checks and messages are those the ``weighted``
    policy applies to its scorers (a mapping by instance id may leave ids out: they
    score 0, as a scorer's do). ``routing_policy`` names the policy in the message.
    """
    who = f"routing policy {routing_policy}" if routing_policy else "the routing policy"
    n = len(snapshots)
    values = [scores.get(s.id, 0.0) for s in snapshots] if isinstance(scores, Mapping) else scores
    try:
        if isinstance(values, str | bytes):
            raise TypeError
        if len(values) != n:
            raise PolicyError(
                f"{who} returned {len(values)} scores for {n} instances in its "
                "RoutingDecision; it must score each instance"
            )
        out = []
        for i in range(n):
            v = values[i]
            if v.__class__ is not float:
                if not isinstance(v, numbers.Real):
                    raise TypeError
                v = float(v)
            if v != v:
                raise PolicyError(
                    f"{who} returned NaN for instance {i} in its RoutingDecision's scores; "
                    "scores are numbers"
                )
            out.append(v)
    except TypeError:
        raise PolicyError(
            f"{who} returned scores {scores!r:.80}; scores are numbers, one per instance "
            "(a list in index order, or a mapping by instance id)"
        ) from None
    return out


def rank_instances(ids: Sequence[str], scores: Sequence[float]) -> list[int]:
    """Instance positions by score descending, ties by instance id (string order)."""
    return sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))


def counterfactual(
    chosen: int | str,
    scores: Sequence[float] | Mapping[str, float] | None,
    snapshots: Sequence[Any],
    k: int,
) -> tuple[list[dict[str, Any]] | None, float]:
    """Top-``k`` alternatives and the regret of choosing ``chosen`` (cluster spec 14).

    ``chosen`` is an instance index or id; ``scores`` the decision's scores (index order
    or a mapping id -> score; None for policies that do not score); ``snapshots`` what
    the policy saw (anything with the :class:`RoutingSnapshot` fields). Returns
    ``(None, 0.0)`` when ``k <= 0``, there are no snapshots or ``chosen`` is not one of
    them.
    """
    if k <= 0 or not snapshots:
        return None, 0.0
    ids = [s.id for s in snapshots]
    if isinstance(chosen, str):
        if chosen not in ids:
            return None, 0.0
        c = ids.index(chosen)
    else:
        c = int(chosen)
        if not 0 <= c < len(ids):
            return None, 0.0
    values = _score_list(scores, snapshots)
    order = rank_instances(ids, values)
    top = []
    for i in order[: min(k, len(order))]:
        s = snapshots[i]
        top.append(
            {
                "instance_id": ids[i],
                "score": values[i],
                "queue_depth": int(s.queue_depth),
                "batch_size": int(s.batch_size),
                "pending_requests": int(s.pending_requests),
                "kv_utilization": float(s.kv_utilization),
                "free_kv_blocks": int(s.free_kv_blocks),
            }
        )
    regret = values[order[0]] - values[c]
    return top, regret if regret > 0.0 else 0.0


def _regret(values: Sequence[float], chosen: int) -> float:
    best = max(values)
    r = best - values[chosen]
    return r if r > 0.0 else 0.0


class DecisionTrace:
    """Every admission and routing decision of one run, in the order they were made.

    Use :meth:`hook` as the cluster's ``decision_hook``. ``counterfactual_k`` > 0 adds
    the top-k candidates and the regret to routing records. ``routing_policy`` names the
    policy in the error a decision with unusable scores raises (:func:`checked_scores`).
    """

    def __init__(
        self,
        instance_ids: Sequence[str] = (),
        counterfactual_k: int = 0,
        *,
        routing_policy: str = "",
    ) -> None:
        if counterfactual_k < 0:
            raise ValueError(f"--counterfactual-k must be >= 0, got {counterfactual_k}")
        self.k = int(counterfactual_k)
        self.routing_policy = routing_policy
        self.instance_ids: list[str] = list(instance_ids)
        self._kind = array("b")
        self._request = array("q")
        self._clock = array("q")
        self._admitted = array("b")  # admission verdict (routing: 0)
        self._target = array("q")  # chosen instance (admission: -1)
        self._block = array("q")  # routing decisions: first row of its snapshot block
        self._scored = array("b")  # routing: the policy gave scores
        self._regret = array("d")
        self._reason: list[str] = []
        # Snapshot rows, one per instance per routing decision.
        self._snap_int = array("q")  # queue depth, batch size, pending, free KV blocks
        self._snap_float = array("d")  # KV utilisation, cache hit rate, score
        self._width: list[int] = []  # instances seen by each routing decision
        # Routing decisions made in a pool (autoscaled ready replicas, a P/D side): the
        # cluster-wide index of each instance the router saw, by routing number.
        self._members: dict[int, tuple[int, ...]] = {}
        self._tenant: dict[int, str] = {}
        self._slo: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._kind)

    # --- recording ---------------------------------------------------------------------
    def hook(self, kind: str, request: Any, state: Any, decision: Any) -> None:
        """The cluster simulator's ``decision_hook``."""
        if kind == "admission":
            if isinstance(decision, tuple):
                admitted = bool(decision[0])
                reason = str(decision[1]) if len(decision) > 1 else ""
            else:
                admitted, reason = bool(decision), ""
            self.record_admission(request, state.clock, admitted, reason)
        else:
            members = getattr(state, "members", None)
            self.record_routing(request, state.clock, decision, state.snapshots, members)

    def _common(self, request: Any, clock: int, kind: int) -> None:
        row = len(self._kind)
        self._kind.append(kind)
        self._request.append(request.index)
        self._clock.append(clock)
        tenant = request.tenant_id
        if tenant:
            self._tenant[row] = tenant
        slo = request.slo_class
        if slo:
            self._slo[row] = slo

    def record_admission(self, request: Any, clock: int, admitted: bool, reason: str = "") -> None:
        self._common(request, clock, _ADMISSION)
        self._admitted.append(1 if admitted else 0)
        self._target.append(-1)
        self._block.append(-1)
        self._scored.append(0)
        self._regret.append(0.0)
        self._reason.append(reason)

    def record_routing(
        self,
        request: Any,
        clock: int,
        decision: RoutingDecision | int | str,
        snapshots: Sequence[RoutingSnapshot],
        members: Sequence[int] | None = None,
    ) -> None:
        """``members``: the cluster-wide index of each snapshot's instance when the router
        saw a pool (``RouterState.members``); the decision's target is a position in it."""
        n = len(snapshots)
        if isinstance(decision, RoutingDecision):
            target, reason, scores = decision.target, decision.reason, decision.scores
        else:
            target, reason, scores = decision, "", None
        if target.__class__ is int and 0 <= target < n:  # type: ignore[operator]
            chosen = target
        else:
            chosen = target_index(target, n, "routing") if n else -1
        if members is None and len(self.instance_ids) < n:
            self.instance_ids = [s.id for s in snapshots]
        if members is not None:
            self._members[len(self._width)] = tuple(members)
        ints = self._snap_int
        floats = self._snap_float
        first = len(floats)
        if scores is None:
            for s in snapshots:
                q = s.queue_depth
                b = s.batch_size
                p = s.pending_requests
                ints.extend((q, b, p, s.free_kv_blocks))
                floats.extend((s.kv_utilization, s.cache_hit_rate, -(q + b + p)))
        else:
            values = checked_scores(scores, snapshots, self.routing_policy)
            for s, v in zip(snapshots, values, strict=True):
                ints.extend((s.queue_depth, s.batch_size, s.pending_requests, s.free_kv_blocks))
                floats.extend((s.kv_utilization, s.cache_hit_rate, v))
        self._common(request, clock, _ROUTING)
        self._admitted.append(0)
        # cluster-wide index (a pool decision's position mapped through its members)
        self._target.append(members[chosen] if members is not None and chosen >= 0 else chosen)
        self._block.append(first // 3)
        self._scored.append(0 if scores is None else 1)
        if self.k > 0 and n and chosen >= 0:
            self._regret.append(_regret(floats[first + 2 :: 3], chosen))
        else:
            self._regret.append(0.0)
        self._reason.append(reason)
        self._width.append(n)

    # --- reading -----------------------------------------------------------------------
    def _snapshots_at(
        self, block: int, n: int, members: tuple[int, ...] | None = None
    ) -> list[RoutingSnapshot]:
        ints = self._snap_int
        floats = self._snap_float
        ids = self.instance_ids
        out = []
        for j in range(n):
            q, b, p, free = ints[4 * (block + j) : 4 * (block + j) + 4]
            util, hit, _ = floats[3 * (block + j) : 3 * (block + j) + 3]
            g = j if members is None else members[j]
            name = ids[g] if g < len(ids) else f"instance_{g}"
            out.append(RoutingSnapshot(name, j, q, b, util, free, hit, p))
        return out

    def records(self) -> Iterator[dict[str, Any]]:
        """One dict per decision, in decision order (keys: :data:`DECISION_COLUMNS`)."""
        routing_no = 0
        for row in range(len(self._kind)):
            rec: dict[str, Any] = {
                "seq": row,
                "kind": "admission" if self._kind[row] == _ADMISSION else "routing",
                "request_id": f"request_{self._request[row]}",
                "clock": self._clock[row],
                "tenant_id": self._tenant.get(row, ""),
                "slo_class": self._slo.get(row, ""),
            }
            if self._kind[row] == _ADMISSION:
                rec.update(
                    admitted=bool(self._admitted[row]),
                    reason=self._reason[row],
                    chosen_instance=None,
                    scores=None,
                    snapshots=None,
                    candidates=None,
                    regret=None,
                )
                yield rec
                continue
            n = self._width[routing_no]
            members = self._members.get(routing_no)
            routing_no += 1
            block = self._block[row]
            snaps = self._snapshots_at(block, n, members)
            values = [self._snap_float[3 * (block + j) + 2] for j in range(n)]
            chosen = self._target[row]
            if members is not None and chosen >= 0:
                chosen = members.index(chosen)
            candidates, _ = counterfactual(chosen, values, snaps, self.k)
            rec.update(
                admitted=None,
                reason=self._reason[row],
                chosen_instance=snaps[chosen].id if 0 <= chosen < n else None,
                scores=(
                    {s.id: v for s, v in zip(snaps, values, strict=True)}
                    if self._scored[row]
                    else None
                ),
                snapshots=[
                    {
                        "instance_id": s.id,
                        "queue_depth": s.queue_depth,
                        "batch_size": s.batch_size,
                        "pending_requests": s.pending_requests,
                        "kv_utilization": s.kv_utilization,
                        "free_kv_blocks": s.free_kv_blocks,
                        "cache_hit_rate": s.cache_hit_rate,
                    }
                    for s in snaps
                ],
                candidates=candidates,
                regret=self._regret[row],
            )
            yield rec

    def regrets(self) -> list[float]:
        """The regret of every routing decision, in order."""
        return [r for r, kind in zip(self._regret, self._kind, strict=True) if kind == _ROUTING]

    def summary(self) -> dict[str, Any]:
        """The reference's trace summary (cluster spec 13), plus the routing count and K."""
        kinds = self._kind
        admissions = sum(1 for k in kinds if k == _ADMISSION)
        admitted = sum(
            1 for k, a in zip(kinds, self._admitted, strict=True) if k == _ADMISSION and a
        )
        targets: dict[str, int] = {}
        ids = self.instance_ids
        for k, t in zip(kinds, self._target, strict=True):
            if k == _ROUTING:
                name = ids[t] if 0 <= t < len(ids) else f"instance_{t}"
                targets[name] = targets.get(name, 0) + 1
        regrets = self.regrets()
        total = 0.0
        for r in regrets:
            total += r
        return {
            "total_decisions": admissions,
            "admitted_count": admitted,
            "rejected_count": admissions - admitted,
            "routing_decisions": len(regrets),
            "unique_targets": len(targets),
            "target_distribution": {key: targets[key] for key in sorted(targets)},
            "counterfactual_k": self.k,
            "mean_regret": total / len(regrets) if regrets else 0.0,
            "max_regret": max(regrets) if regrets else 0.0,
        }

    # --- output ------------------------------------------------------------------------
    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the records as JSON lines, or Parquet when ``path`` ends in ``.parquet``.

        Written to a temporary file in the same folder and renamed, so a reader never
        sees half a trace (devices and FIFOs are written through: ``outfiles``).
        Parquet needs pyarrow (the ``data`` extra).
        """
        target = os.path.abspath(os.fspath(path))
        parquet = target.lower().endswith(".parquet")
        if parquet:
            from inference_sim.core.extras import require

            require("pyarrow", "data", "--trace-output as Parquet")
        if parquet:
            with output_path(target) as tmp:
                _write_parquet(tmp, list(self.records()), self.instance_ids)
            return
        with OutputFile(path) as fh:
            for rec in self.records():
                fh.write(json.dumps(rec))
                fh.write("\n")


def _write_parquet(path: str, records: list[dict[str, Any]], instance_ids: Sequence[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    snap_type = pa.struct(
        [
            ("instance_id", pa.string()),
            ("queue_depth", pa.int64()),
            ("batch_size", pa.int64()),
            ("pending_requests", pa.int64()),
            ("kv_utilization", pa.float64()),
            ("free_kv_blocks", pa.int64()),
            ("cache_hit_rate", pa.float64()),
        ]
    )
    cand_type = pa.struct(
        [
            ("instance_id", pa.string()),
            ("score", pa.float64()),
            ("queue_depth", pa.int64()),
            ("batch_size", pa.int64()),
            ("pending_requests", pa.int64()),
            ("kv_utilization", pa.float64()),
            ("free_kv_blocks", pa.int64()),
        ]
    )
    types = {
        "seq": pa.int64(),
        "kind": pa.string(),
        "request_id": pa.string(),
        "clock": pa.int64(),
        "tenant_id": pa.string(),
        "slo_class": pa.string(),
        "admitted": pa.bool_(),
        "reason": pa.string(),
        "chosen_instance": pa.string(),
        # Parquet has no empty structs: no instances known means no scores at all.
        "scores": (
            pa.struct([(name, pa.float64()) for name in instance_ids])
            if instance_ids
            else pa.null()
        ),
        "snapshots": pa.list_(snap_type),
        "candidates": pa.list_(cand_type),
        "regret": pa.float64(),
    }
    columns = {}
    for name in DECISION_COLUMNS:
        values = [r[name] for r in records]
        columns[name] = pa.array(values, type=types[name])
    pq.write_table(pa.table(columns), path)
