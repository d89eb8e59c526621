"""Bundled model, GPU and workload catalog of the simulator.

The package ships its own data file (``data/catalog.json``) holding trained
black-box latency coefficients, each model's default deployment, GPU hardware
figures and workload presets, so simulations need no network access or
external checkout.  Users can layer their own ``--defaults-filepath`` YAML
(reference ``defaults.yaml`` layout) on top via :func:`load_catalog`, and their own GPUs
(``--hardware-config``) via :func:`with_hardware_config`. Model architectures for the
roofline latency model live in ``data/architectures.json``
(:func:`bundled_architecture`) or come from a HuggingFace ``config.json``
(:func:`read_model_config_folder`).

Typical use::

    catalog = load_catalog()
    d = catalog.model_defaults("meta-llama/Llama-3.1-8B-Instruct")
    coeffs = catalog.find_coefficients("meta-llama/llama-3.1-8b-instruct", d.gpu, d.tp,
                                       d.vllm_version)
"""

from .architecture import (
    GenerationDefaults,
    MLASpec,
    ModelArchitecture,
    MoESpec,
    WeightQuantization,
    architecture_from_hf_config,
    bundled_architecture,
    bundled_architectures,
    read_model_config_folder,
)
from .catalog import Catalog
from .errors import CatalogError
from .hardware import read_hardware_config, with_hardware_config
from .listing import MODELS_TABLE_COLUMNS, format_models_table, models_table
from .loader import BUNDLED_FORMAT, load_catalog, read_defaults_file
from .schema import CoefficientSet, GpuSpec, ModelDefaults, WorkloadPreset

__all__ = [
    "BUNDLED_FORMAT",
    "MODELS_TABLE_COLUMNS",
    "Catalog",
    "CatalogError",
    "CoefficientSet",
    "GenerationDefaults",
    "GpuSpec",
    "MLASpec",
    "MoESpec",
    "ModelArchitecture",
    "ModelDefaults",
    "WeightQuantization",
    "WorkloadPreset",
    "architecture_from_hf_config",
    "bundled_architecture",
    "bundled_architectures",
    "format_models_table",
    "load_catalog",
    "models_table",
    "read_defaults_file",
    "read_hardware_config",
    "read_model_config_folder",
    "with_hardware_config",
]
