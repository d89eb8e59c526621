"""Step-time models: the protocol, the trained, roofline and calibrated models, the registry."""

from inference_sim.latency.base import LatencyModel, StepBatch
from inference_sim.latency.blackbox import BlackboxLatencyModel, LatencyConfigError
from inference_sim.latency.calibrated import CalibratedCoefficients, CalibratedLatencyModel
from inference_sim.latency.registry import (
    create_latency_model,
    latency_model_names,
    register_latency_model,
)
from inference_sim.latency.roofline import RooflineLatencyModel

__all__ = [
    "BlackboxLatencyModel",
    "CalibratedCoefficients",
    "CalibratedLatencyModel",
    "LatencyConfigError",
    "LatencyModel",
    "RooflineLatencyModel",
    "StepBatch",
    "create_latency_model",
    "latency_model_names",
    "register_latency_model",
]
