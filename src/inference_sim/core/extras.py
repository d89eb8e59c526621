"""Optional dependencies: import them on demand, or say which extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

#: extra name -> what it installs (pyproject.toml's optional-dependencies).
EXTRAS = {
    "data": "pandas, pyarrow",
    "plot": "matplotlib",
    "sweep": "pandas, pyarrow, duckdb",
    "ray": "ray",
    "tune": "optuna",
}


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtra` with a one-line install hint."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(
            f"{feature} needs {module.split('.')[0]}: pip install 'inference-sim[{extra}]'"
        ) from None


def have(module: str) -> bool:
    """True when ``module`` can be imported."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
