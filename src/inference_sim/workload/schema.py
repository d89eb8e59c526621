"""The workload spec as data: the frozen dataclasses a parsed spec is made of.

Parsing and validation live in :mod:`inference_sim.workload.spec`; expansions of
``servegen_data`` build these types too, without importing the parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from inference_sim.workload.samplers import (
    LengthSampler,
    make_length_sampler,
)

CATEGORIES = ("language", "multimodal", "reasoning")
SLO_CLASSES = ("critical", "standard", "sheddable", "batch", "background")
V1_SLO_NAMES = {"realtime": "critical", "interactive": "standard"}
DEFAULT_PREFIX_LENGTH = 50
MAX_ROUNDS = 100_000  # rounds of one multi-turn session (a typo guard)
TICKS_PER_SECOND = 1_000_000
MULTIMODAL_FIELDS = (
    "text_distribution",
    "image_distribution",
    "image_count_distribution",
    "audio_distribution",
    "audio_count_distribution",
    "video_distribution",
    "video_count_distribution",
)


# --- the schema as data ---------------------------------------------------------------------


@dataclass(frozen=True)
class DistSpec:
    """A length distribution: ``type``, ``params``; ``file`` is accepted but not read."""

    type: str
    params: Mapping[Any, Any]
    file: str = ""

    def sampler(
        self, where: str, *, floor: int = 1, notes: list[str] | None = None
    ) -> LengthSampler:
        """The sampler (a pure function of the fields: building it twice draws nothing);
        ``notes``: where a truncated token count is said (None: logged at once)."""
        return make_length_sampler(self.type, self.params, where, floor=floor, notes=notes)


@dataclass(frozen=True)
class ArrivalSpec:
    process: str
    cv: float | None = None


@dataclass(frozen=True)
class Window:
    start_us: int
    end_us: int


@dataclass(frozen=True)
class MultiTurnSpec:
    max_rounds: int
    think_time_us: int
    context_growth: str = ""
    #: True: each arrival of the client is ONE request, the next round of its current
    #: session (a new session after ``max_rounds``), so the arrival rate is the request
    #: rate, as inference-perf's multi-turn chat sends; ``think_time_us`` is unused.
    #: False (every YAML client): each arrival starts a whole session (the reference).
    on_arrivals: bool = False

    @property
    def accumulate(self) -> bool:
        return self.context_growth == "accumulate"


@dataclass(frozen=True)
class ReasoningSpec:
    reason_ratio_distribution: DistSpec | None = None
    multi_turn: MultiTurnSpec | None = None


@dataclass(frozen=True)
class NetworkSpec:
    rtt_ms: float = 0.0
    bandwidth_mbps: float = 0.0


@dataclass(frozen=True)
class ClientSpec:
    id: str = ""
    tenant_id: str = ""
    slo_class: str = ""
    model: str = ""
    rate_fraction: float = 0.0
    arrival: ArrivalSpec = ArrivalSpec("")
    input_distribution: DistSpec | None = None
    output_distribution: DistSpec | None = None
    prefix_group: str = ""
    prefix_length: int = 0
    streaming: bool = False
    network: NetworkSpec | None = None
    lifecycle: tuple[Window, ...] | None = None
    multimodal: Mapping[str, DistSpec] | None = None
    reasoning: ReasoningSpec | None = None
    #: LoRA adapter the client's requests run with ("" = base model), docs/lora.md.
    adapter: str = ""
    adapter_rank: int = 0  # 0: the adapter's rank in the lora block, else --max-lora-rank


@dataclass(frozen=True)
class Stage:
    """A constant-rate stage ``[start_us, end_us)`` at ``rate`` requests/second."""

    rate: float
    start_us: int
    end_us: int

    @property
    def duration_s(self) -> float:
        return (self.end_us - self.start_us) / TICKS_PER_SECOND


@dataclass(frozen=True)
class SharedPrefixSpec:
    num_unique_system_prompts: int
    num_users_per_system_prompt: int
    system_prompt_len: int
    question_len: int
    output_len: int
    enable_multi_turn_chat: bool = False


@dataclass(frozen=True)
class InferencePerfSpec:
    stages: tuple[Stage, ...]
    shared_prefix: SharedPrefixSpec
    cycle_prompts: bool = False
    #: poisson | constant (inference-perf's: int(rate x duration) jittered arrivals a
    #: stage) | evenly_spaced (ours: one every 1/rate s).
    load_type: str = "poisson"


@dataclass(frozen=True)
class ServeGenSpec:
    path: str
    span_start: int = 0
    span_end: int = 0


@dataclass(frozen=True)
class WorkloadSpec:
    """A loaded, upgraded, expanded and validated workload spec."""

    version: str = "2"
    seed: int = 0
    category: str = ""
    clients: tuple[ClientSpec, ...] = ()
    aggregate_rate: float = 0.0
    horizon: int = 0
    num_requests: int = 0
    servegen_data: ServeGenSpec | None = None
    inference_perf: InferencePerfSpec | None = None
    stages: tuple[Stage, ...] = ()
    source: str = ""
    #: Notes on what the spec gives but changes nothing or is changed (an ignored
    #: ``aggregate_rate``, a ``cv`` on poisson/constant, ``prefix_length`` without
    #: ``prefix_group`` or differing from its group's, ``adapter_rank`` without
    #: ``adapter``, ``input_distribution`` on a multimodal client, a token count
    #: truncated, a v1 SLO name mapped, ServeGen rows skipped): held back, not logged on
    #: load, so that ``blis run`` and ``blis workload describe`` say them, once each
    #: (``workload spec <file>: ...``), after their workload checks.
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def self_bounded(self) -> bool:
        """True if generation ends by itself (stages, or every client's windows end)."""
        if self.stages:
            return True
        if not self.clients:
            return False
        return all(c.lifecycle is not None for c in self.clients)

    def with_seed(self, seed: int) -> WorkloadSpec:
        return replace(self, seed=int(seed))
