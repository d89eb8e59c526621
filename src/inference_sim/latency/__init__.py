"""Step-time models: the protocol, the trained-coefficient model and the registry."""

from inference_sim.latency.base import LatencyModel, StepBatch
from inference_sim.latency.blackbox import BlackboxLatencyModel, LatencyConfigError
from inference_sim.latency.registry import (
    create_latency_model,
    latency_model_names,
    register_latency_model,
)

__all__ = [
    "BlackboxLatencyModel",
    "LatencyConfigError",
    "LatencyModel",
    "StepBatch",
    "create_latency_model",
    "latency_model_names",
    "register_latency_model",
]
