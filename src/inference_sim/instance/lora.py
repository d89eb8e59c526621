"""The plain stepper with vLLM v1's multi-LoRA rules (docs/lora.md).

* **Batch limit** — at most ``max_loras`` distinct adapters in one step. A waiting
  request whose adapter would exceed it is skipped for this step and the requests
  behind it are still considered (vLLM v1 ``Scheduler.schedule``: skipped requests go
  back to the queue's front, in order, after admission). Running requests were admitted
  under the same limit, so they never exceed it.
* **Residency** — the GPU has ``max_loras`` adapter slots, host memory keeps
  ``max_cpu_loras`` adapters; both evict the least recently used (the GPU never evicts
  an adapter of the current batch). Before a step runs, every adapter of its batch is
  made resident: disk -> host (if not cached) and host -> GPU, each costing base
  latency + bytes / bandwidth, added to the step (vLLM loads them synchronously before
  the forward pass). The listed adapters (``--lora-adapters``, vLLM's
  ``--lora-modules``) are loaded at every server start, free of charge
  (:meth:`LoraState.preload`).
* **Ranks** — one adapter -> rank registry per cluster (:class:`AdapterRanks`, shared
  by :func:`share_adapter_ranks`), so a conflicting ``adapter_rank`` is refused
  whatever the instance count.
* **Step cost** — :meth:`LoraSettings.step_cost` of the batch's distinct adapters.

The fast stepper's bulk decoding cannot skip single requests, so ``make_instance``
builds this one whenever LoRA is on; without LoRA nothing here runs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from inference_sim.core.batch import StepBatch
from inference_sim.core.errors import ConfigError
from inference_sim.core.request import Request, RequestState
from inference_sim.engine.invariants import InvariantViolation
from inference_sim.instance.config import EngineConfig
from inference_sim.instance.engine import Instance, WaitQueueOrder
from inference_sim.instance.lora_config import LISTED, LoraSettings, check_adapter_name
from inference_sim.latency.base import LatencyModel


class AdapterRanks:
    """The cluster's adapter -> rank registry, shared by all its LoRA instances
    (:func:`share_adapter_ranks`), so one adapter has one rank whatever the instance
    count: the listed adapters' ranks, then the first request naming another adapter
    defines its rank (its ``adapter_rank``, else ``max_lora_rank``)."""

    __slots__ = ("max_lora_rank", "origins", "ranks")

    def __init__(self, settings: LoraSettings) -> None:
        self.max_lora_rank = settings.max_lora_rank
        self.ranks: dict[str, int] = dict(settings.adapters)
        #: adapter -> where its rank came from (for the error of a conflicting request).
        self.origins: dict[str, str] = {name: f"in {LISTED}" for name in self.ranks}

    def rank_of(self, req: Request) -> int:
        """The rank of ``req``'s adapter; ConfigError (exit 2) for a bad or conflicting
        ``adapter_rank`` or the reserved name."""
        name = req.adapter
        known = self.ranks.get(name)
        given = req.adapter_rank
        if known is None:
            check_adapter_name(name, req.request_id)
            limit = self.max_lora_rank
            rank = given or limit
            if rank > limit:
                raise ConfigError(
                    f"{req.request_id}: adapter_rank {rank} of adapter {name!r} is above "
                    f"--max-lora-rank {limit}; give a rank in [1, {limit}] or raise --max-lora-rank"
                )
            self.ranks[name] = rank
            self.origins[name] = (
                f"given by {req.request_id}, the first request naming it"
                if given
                else f"(--max-lora-rank) taken by {req.request_id}, the first request "
                "naming it, without adapter_rank"
            )
            return rank
        if given and given != known:
            raise ConfigError(
                f"{req.request_id}: adapter_rank {given} of adapter {name!r} differs from its "
                f"rank {known} {self.origins[name]}; drop adapter_rank or make them agree"
            )
        return known


class LoraState:
    """One instance's adapter residency, counters and per-adapter samples."""

    __slots__ = (
        "cpu",
        "cpu_evictions",
        "cpu_loads",
        "dropped",
        "gpu",
        "gpu_evictions",
        "gpu_loads",
        "load_time",
        "max_adapters_in_batch",
        "per_adapter",
        "preloaded",
        "registry",
        "requests",
        "settings",
        "skip_events",
        "skipped_requests",
    )

    def __init__(self, settings: LoraSettings) -> None:
        self.settings = settings
        self.registry = AdapterRanks(settings)
        # Insertion order = recency: the first key is the least recently used.
        self.gpu: OrderedDict[str, None] = OrderedDict()
        self.cpu: OrderedDict[str, None] = OrderedDict()
        self.gpu_loads = self.cpu_loads = 0
        self.gpu_evictions = self.cpu_evictions = 0
        self.load_time = 0
        self.preloaded = 0  # listed adapters loaded at server starts (not in the above)
        self.skip_events = 0
        self.skipped_requests: set[int] = set()
        self.max_adapters_in_batch = 0
        # adapter ("" = base model) -> requests that reached this instance
        self.requests: dict[str, int] = {}
        # adapter -> its requests dropped as unservable here (never fit the KV cache)
        self.dropped: dict[str, int] = {}
        # adapter -> (ttft samples, e2e samples, output tokens) of completed requests
        self.per_adapter: dict[str, tuple[list[int], list[int], list[int]]] = {}
        self.preload()

    @property
    def ranks(self) -> dict[str, int]:
        """The cluster's adapter ranks (the shared registry's)."""
        return self.registry.ranks

    def rank_of(self, req: Request) -> int:
        return self.registry.rank_of(req)

    def preload(self) -> None:
        """A server start: empty caches, then the listed adapters loaded in list order
        into host memory (LRU, ``max_cpu_loras``) and the GPU slots (LRU,
        ``max_loras``), as vLLM loads its ``--lora-modules`` at start-up
        (``OpenAIServingModels.init_static_loras`` -> ``add_lora`` ->
        ``LRUCacheWorkerLoRAManager.add_adapter``, which also activates each one). No
        step time is charged and the load counters are left alone: ``preloaded``
        counts these loads."""
        s = self.settings
        gpu, cpu = self.gpu, self.cpu
        gpu.clear()
        cpu.clear()
        for name, _rank in s.adapters:
            cpu[name] = None
            if len(cpu) > s.max_cpu_loras:
                victim = next(iter(cpu))
                del cpu[victim]
                gpu.pop(victim, None)  # vLLM's host-cache eviction frees its slot too
            gpu[name] = None
            if len(gpu) > s.max_loras:
                del gpu[next(iter(gpu))]
        self.preloaded += len(s.adapters)

    def make_resident(self, names: list[str]) -> int:
        """Load ``names`` (one batch's adapters) onto the GPU; returns the load time (µs)."""
        s = self.settings
        cost = 0
        gpu, cpu = self.gpu, self.cpu
        ranks = self.registry.ranks
        batch = set(names)
        for name in names:
            if name in gpu:
                gpu.move_to_end(name)
                if name in cpu:
                    cpu.move_to_end(name)
                continue
            rank = ranks[name]
            if name in cpu:
                cpu.move_to_end(name)
            else:
                cost += s.load_disk_to_cpu(rank)
                self.cpu_loads += 1
                if len(cpu) >= s.max_cpu_loras:
                    # Prefer a victim that is not on the GPU (vLLM pins active ones).
                    victim = next((n for n in cpu if n not in gpu and n not in batch), None)
                    if victim is None:
                        victim = next(iter(cpu))
                    del cpu[victim]
                    self.cpu_evictions += 1
                cpu[name] = None
            cost += s.load_cpu_to_gpu(rank)
            self.gpu_loads += 1
            if len(gpu) >= s.max_loras:
                victim = next(n for n in gpu if n not in batch)
                del gpu[victim]
                self.gpu_evictions += 1
            gpu[name] = None
        self.load_time += cost
        return cost

    def arrived(self, req: Request) -> None:
        """``req`` reached this instance: its adapter shows in the results even if none
        of its requests completes."""
        name = req.adapter
        self.requests[name] = self.requests.get(name, 0) + 1

    def count_drop(self, req: Request) -> None:
        """``req`` was dropped as unservable on this instance."""
        self.dropped[req.adapter] = self.dropped.get(req.adapter, 0) + 1

    def record(self, req: Request) -> None:
        samples = self.per_adapter.get(req.adapter)
        if samples is None:
            samples = self.per_adapter[req.adapter] = ([], [], [])
        samples[0].append(req.first_token_time - req.arrival_time)
        samples[1].append(req.first_token_time - req.arrival_time + req.itl_sum)  # as summary
        samples[2].append(req.num_output_tokens)


def share_adapter_ranks(instances: Iterable[object]) -> None:
    """Give the LoRA instances of one cluster one adapter -> rank registry (call before
    the run): an adapter then has one rank however many instances serve it."""
    shared: AdapterRanks | None = None
    for inst in instances:
        state = getattr(inst, "lora", None)
        if isinstance(state, LoraState):
            if shared is None:
                shared = state.registry
            else:
                state.registry = shared


class LoraInstance(Instance):
    """:class:`Instance` with adapter limits, residency and load times."""

    def __init__(
        self,
        index: int,
        config: EngineConfig,
        latency: LatencyModel,
        *,
        order_wait_queue: WaitQueueOrder | None = None,
    ) -> None:
        super().__init__(index, config, latency, order_wait_queue=order_wait_queue)
        assert config.lora is not None
        self.lora = LoraState(config.lora)
        self._adapters: list[str] = []  # this step's distinct adapters, in batch order

    def enqueue(self, req: Request, now: int) -> bool:
        if req.adapter:
            self.lora.rank_of(req)  # bad ranks fail at once (exit 2)
        self.lora.arrived(req)
        wake = super().enqueue(req, now)
        if req.state is RequestState.DROPPED:  # a prompt the cache can never hold
            self.lora.count_drop(req)
        return wake

    def _drop_running(self, req: Request) -> None:
        super()._drop_running(req)
        self.lora.count_drop(req)

    def schedule(self, now: int) -> StepBatch:
        self._adapters = []
        return super().schedule(now)

    def _schedule_running(self, batch: StepBatch, now: int) -> tuple[int, bool]:
        out = super()._schedule_running(batch, now)
        seen = self._adapters
        for req in batch.requests:
            if req.adapter and req.adapter not in seen:
                seen.append(req.adapter)
        return out

    def _skip_admission(self, req: Request) -> bool:  # type: ignore[override]
        """A waiting request whose adapter would exceed ``max_loras`` in this batch is
        skipped (kept in order at the queue's front), not blocking the queue."""
        name = req.adapter
        adapters = self._adapters
        if name and name not in adapters and len(adapters) >= self.lora.settings.max_loras:
            self.lora.skip_events += 1
            self.lora.skipped_requests.add(req.index)
            return True
        return False

    def _admission_mark(self) -> tuple[int, ...]:
        return (*super()._admission_mark(), self.lora.skip_events)

    def _admission_rewind(self, mark: tuple[int, ...]) -> None:
        super()._admission_rewind(mark)
        self.lora.skip_events = mark[-1]

    def _on_admitted(self, req: Request) -> None:
        super()._on_admitted(req)
        name = req.adapter
        if name and name not in self._adapters:
            self._adapters.append(name)

    def restart(self) -> None:
        """A new server process: only the listed adapters loaded (:meth:`LoraState.preload`)."""
        super().restart()
        self.lora.preload()

    def execute(self, batch: StepBatch, now: int) -> int:
        """Load the batch's adapters, check the LoRA invariants, add the adapters' cost."""
        lora = self.lora
        names = self._adapters
        load = lora.make_resident(names) if names else 0
        gpu = lora.gpu
        if len(names) > lora.settings.max_loras:
            raise InvariantViolation(
                f"{len(names)} distinct adapters in one batch, above max_loras "
                f"{lora.settings.max_loras}",
                time=now,
                instance=self.name,
            )
        tokens = 0  # tokens of LoRA requests: the kernels' per-token traffic
        for req, n in zip(batch.requests, batch.num_new):  # noqa: B905 (same length)
            if req.adapter:
                if req.adapter not in gpu:
                    raise InvariantViolation(
                        f"scheduled with adapter {req.adapter!r} not loaded on the GPU",
                        time=now,
                        instance=self.name,
                        request=req,
                    )
                tokens += n
        if len(names) > lora.max_adapters_in_batch:
            lora.max_adapters_in_batch = len(names)
        end = super().execute(batch, now)
        extra = load
        if names:
            ranks = lora.registry.ranks
            extra += round(lora.settings.step_cost([ranks[n] for n in names], tokens))
        if extra:
            end += extra
            self.busy_until = end
            self.stats.kv_block_time += self.kv.num_used * extra
        return end

    def _finish(self, req: Request, end: int, rank: int = -1) -> None:
        super()._finish(req, end, rank)
        self.lora.record(req)
