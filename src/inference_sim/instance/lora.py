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
  the forward pass).
* **Step cost** — :meth:`LoraSettings.step_cost` of the batch's distinct adapters.

The fast stepper's bulk decoding cannot skip single requests, so ``make_instance``
builds this one whenever LoRA is on; without LoRA nothing here runs.
"""

from __future__ import annotations

from collections import OrderedDict

from inference_sim.core.batch import StepBatch
from inference_sim.core.errors import ConfigError
from inference_sim.core.request import Request
from inference_sim.engine.invariants import InvariantViolation
from inference_sim.instance.config import EngineConfig
from inference_sim.instance.engine import Instance, WaitQueueOrder
from inference_sim.instance.lora_config import LoraSettings
from inference_sim.latency.base import LatencyModel


class LoraState:
    """One instance's adapter residency, counters and per-adapter samples."""

    __slots__ = (
        "cpu",
        "cpu_evictions",
        "cpu_loads",
        "gpu",
        "gpu_evictions",
        "gpu_loads",
        "load_time",
        "max_adapters_in_batch",
        "per_adapter",
        "ranks",
        "settings",
        "skip_events",
        "skipped_requests",
    )

    def __init__(self, settings: LoraSettings) -> None:
        self.settings = settings
        self.ranks: dict[str, int] = dict(settings.adapters)
        # Insertion order = recency: the first key is the least recently used.
        self.gpu: OrderedDict[str, None] = OrderedDict()
        self.cpu: OrderedDict[str, None] = OrderedDict()
        self.gpu_loads = self.cpu_loads = 0
        self.gpu_evictions = self.cpu_evictions = 0
        self.load_time = 0
        self.skip_events = 0
        self.skipped_requests: set[int] = set()
        self.max_adapters_in_batch = 0
        # adapter -> (ttft samples, e2e samples, output tokens)
        self.per_adapter: dict[str, tuple[list[int], list[int], list[int]]] = {}

    def rank_of(self, req: Request) -> int:
        """The adapter's rank; the first request naming an unknown adapter defines it."""
        name = req.adapter
        known = self.ranks.get(name)
        given = req.adapter_rank
        limit = self.settings.max_lora_rank
        if known is None:
            rank = given or limit
            if rank > limit:
                raise ConfigError(
                    f"{req.request_id}: adapter_rank {rank} of adapter {name!r} is above "
                    f"--max-lora-rank {limit}; give a rank in [1, {limit}] or raise --max-lora-rank"
                )
            self.ranks[name] = rank
            return rank
        if given and given != known:
            raise ConfigError(
                f"{req.request_id}: adapter_rank {given} of adapter {name!r} differs from its "
                f"rank {known} in the lora block; drop adapter_rank or make them agree"
            )
        return known

    def make_resident(self, names: list[str]) -> int:
        """Load ``names`` (one batch's adapters) onto the GPU; returns the load time (µs)."""
        s = self.settings
        cost = 0
        gpu, cpu = self.gpu, self.cpu
        batch = set(names)
        for name in names:
            if name in gpu:
                gpu.move_to_end(name)
                if name in cpu:
                    cpu.move_to_end(name)
                continue
            rank = self.ranks[name]
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

    def record(self, req: Request) -> None:
        samples = self.per_adapter.get(req.adapter)
        if samples is None:
            samples = self.per_adapter[req.adapter] = ([], [], [])
        samples[0].append(req.first_token_time - req.arrival_time)
        samples[1].append(req.first_token_time - req.arrival_time + req.itl_sum)  # as summary
        samples[2].append(req.num_output_tokens)


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
        return super().enqueue(req, now)

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
        """A new server process: no adapter loaded on the GPU or cached in CPU memory."""
        super().restart()
        self.lora.gpu.clear()
        self.lora.cpu.clear()

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
            extra += round(lora.settings.step_cost([lora.ranks[n] for n in names], tokens))
        if extra:
            end += extra
            self.busy_until = end
            self.stats.kv_block_time += self.kv.num_used * extra
        return end

    def _finish(self, req: Request, end: int, rank: int = -1) -> None:
        super()._finish(req, end, rank)
        self.lora.record(req)
