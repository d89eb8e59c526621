"""Latency models by name: built-ins and user models go through the same door."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inference_sim.latency.base import LatencyModel

LatencyFactory = Callable[..., LatencyModel]
_REGISTRY: dict[str, LatencyFactory] = {}


def register_latency_model(name: str, factory: LatencyFactory) -> None:
    """Make ``factory(**params)`` available as ``--latency-model name``."""
    _REGISTRY[name] = factory


def latency_model_names() -> list[str]:
    return sorted(_REGISTRY)


def create_latency_model(name: str, **params: Any) -> LatencyModel:
    try:
        factory = _REGISTRY[name]
    except KeyError:
        known = ", ".join(latency_model_names())
        raise ValueError(f'--latency-model: unknown model "{name}"; known: {known}') from None
    return factory(**params)


def _register_builtins() -> None:
    from inference_sim.latency.blackbox import BlackboxLatencyModel
    from inference_sim.latency.calibrated import CalibratedLatencyModel
    from inference_sim.latency.roofline import RooflineLatencyModel

    register_latency_model("blackbox", BlackboxLatencyModel)
    register_latency_model("calibrated", CalibratedLatencyModel)
    register_latency_model("roofline", RooflineLatencyModel)


_register_builtins()
