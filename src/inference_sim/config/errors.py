"""The one error type for bad input found while resolving a run's configuration.

Defined in :mod:`inference_sim.core.errors` so that lower layers (analysis options,
workload readers) raise the same type without importing ``config``.
"""

from inference_sim.core.errors import ConfigError

__all__ = ["ConfigError"]
