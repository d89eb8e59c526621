"""Run configuration: the option table, validation and catalog resolution."""

from inference_sim.config.errors import ConfigError
from inference_sim.config.options import OPTIONS, OptionSpec, canonical_name
from inference_sim.config.resolve import RunPlan, normalize_options, resolve

__all__ = [
    "OPTIONS",
    "ConfigError",
    "OptionSpec",
    "RunPlan",
    "canonical_name",
    "normalize_options",
    "resolve",
]
