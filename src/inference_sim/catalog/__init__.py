"""Bundled model, GPU and workload catalog of the simulator.

The package ships its own data file (``data/catalog.json``) holding trained
black-box latency coefficients, each model's default deployment, GPU hardware
figures and workload presets, so simulations need no network access or
external checkout.  Users can layer their own ``--defaults-filepath`` YAML
(reference ``defaults.yaml`` layout) on top via :func:`load_catalog`.

Typical use::

    catalog = load_catalog()
    d = catalog.model_defaults("meta-llama/Llama-3.1-8B-Instruct")
    coeffs = catalog.find_coefficients("meta-llama/llama-3.1-8b-instruct", d.gpu, d.tp,
                                       d.vllm_version)
"""

from .catalog import Catalog
from .errors import CatalogError
from .listing import MODELS_TABLE_COLUMNS, format_models_table, models_table
from .loader import BUNDLED_FORMAT, load_catalog, read_defaults_file
from .schema import CoefficientSet, GpuSpec, ModelDefaults, WorkloadPreset

__all__ = [
    "BUNDLED_FORMAT",
    "MODELS_TABLE_COLUMNS",
    "Catalog",
    "CatalogError",
    "CoefficientSet",
    "GpuSpec",
    "ModelDefaults",
    "WorkloadPreset",
    "format_models_table",
    "load_catalog",
    "models_table",
    "read_defaults_file",
]
