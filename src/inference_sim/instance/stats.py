"""Counters and distributions one instance accumulates over a run."""

from __future__ import annotations

from typing import Any


class InstanceStats:
    """What an instance counts while it runs; metrics/ aggregates these after the run."""

    __slots__ = (
        "cached_prompt_tokens",
        "completed",
        "dropped_by_tenant",
        "dropped_unservable",
        "itl_group_histograms",
        "itl_histogram",
        "kv_allocation_failures",
        "kv_block_time",
        "peak_kv_blocks",
        "preemption_count",
        "prefix_lookup_tokens",
        "spec_accepted_tokens",
        "spec_draft_tokens",
        "spec_request_steps",
        "speculative",
        "step_count",
        "total_input_tokens",
        "total_output_tokens",
    )

    def __init__(self) -> None:
        self.completed = 0
        self.total_input_tokens = 0
        self.total_output_tokens = 0
        self.preemption_count = 0
        self.dropped_unservable = 0
        # Dropped requests are not in the request log: per tenant id ("" without one),
        # so tenant fairness counts them (analysis/fairness.py).
        self.dropped_by_tenant: dict[str, int] = {}
        self.kv_allocation_failures = 0
        self.step_count = 0
        self.peak_kv_blocks = 0
        self.kv_block_time = 0.0
        # ITL samples as value -> count: exact percentiles without one float per token.
        self.itl_histogram: dict[int, int] = {}
        # The same, split by Request.itl_group (requests with a group >= 0 only):
        # group -> value -> count. Per-stage ITL percentiles (metrics/summary.py).
        self.itl_group_histograms: dict[int, dict[int, int]] = {}
        # Prefix-cache hit rate: cached prompt tokens / prompt tokens at first admission.
        self.cached_prompt_tokens = 0
        self.prefix_lookup_tokens = 0
        # Speculative decoding (instance/speculative.py); all zero when it is off.
        self.speculative = False
        self.spec_request_steps = 0  # decode steps of one request that verified drafts
        self.spec_draft_tokens = 0  # draft tokens verified
        self.spec_accepted_tokens = 0  # of those, accepted

    def count_drop(self, req: Any) -> None:
        """``req`` is dropped as unservable here: counted, and by tenant (fairness)."""
        self.dropped_unservable += 1
        tenant = req.tenant_id
        self.dropped_by_tenant[tenant] = self.dropped_by_tenant.get(tenant, 0) + 1

    def retract_samples(self, values: list[int], group: int = -1) -> None:
        """Take ITL samples back out (a request that will not complete): from the
        histogram and, for ``group`` >= 0, from that group's."""
        hists = [self.itl_histogram]
        if group >= 0 and group in self.itl_group_histograms:
            hists.append(self.itl_group_histograms[group])
        for hist in hists:
            for v in values:
                n = hist[v] - 1
                if n:
                    hist[v] = n
                else:
                    del hist[v]

    def add_group_samples(self, group: int, value: int, count: int) -> None:
        """Count ``count`` ITL samples of ``value`` ticks for ITL group ``group``."""
        hist = self.itl_group_histograms.get(group)
        if hist is None:
            hist = self.itl_group_histograms[group] = {}
        hist[value] = hist.get(value, 0) + count
