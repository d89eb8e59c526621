"""Small strict type checks shared by the bundled-JSON and user-YAML readers.

Each helper takes the file being read and a dotted field path so that the
resulting :class:`CatalogError` is a single line a user can act on, e.g.
``/tmp/d.yaml: models[2].alpha_coeffs: expected a list of 3 numbers, got 2 items``.
Booleans are rejected where numbers are expected: YAML turns ``yes``/``no``
into booleans, and silently treating them as 1/0 would hide typos.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

from inference_sim.core.suggest import did_you_mean

from .errors import CatalogError

__all__ = ["Source"]


class Source:
    """Names the file being parsed and formats errors about its fields."""

    __slots__ = ("label",)

    def __init__(self, label: str) -> None:
        self.label = label

    def error(self, field: str, problem: str) -> CatalogError:
        """A :class:`CatalogError` for ``field`` (empty for the whole file)."""
        where = f"{self.label}: {field}" if field else self.label
        return CatalogError(f"{where}: {problem}")

    @staticmethod
    def describe(value: Any) -> str:
        """A short human description of an offending value."""
        if value is None:
            return "nothing (null)"
        text = repr(value)
        if len(text) > 40:
            text = text[:37] + "..."
        return f"{type(value).__name__} {text}"

    def mapping(
        self,
        value: Any,
        field: str,
        *,
        allowed: Collection[str] | None = None,
        required: Collection[str] = (),
    ) -> Mapping[str, Any]:
        """Check ``value`` is a string-keyed mapping with acceptable keys."""
        if not isinstance(value, Mapping):
            raise self.error(field, f"expected a mapping, got {self.describe(value)}")
        for key in value:
            if not isinstance(key, str):
                raise self.error(field, f"keys must be strings, got {self.describe(key)}")
            if allowed is not None and key not in allowed:
                raise self.error(
                    field,
                    f'unknown key "{key}"{did_you_mean(key, allowed)}; '
                    f"allowed: {', '.join(sorted(allowed))}",
                )
        missing = sorted(k for k in required if k not in value)
        if missing:
            noun = "key" if len(missing) == 1 else "keys"
            raise self.error(field, f"missing required {noun}: {', '.join(missing)}")
        return value

    def sequence(self, value: Any, field: str) -> list[Any]:
        """Check ``value`` is a list."""
        if not isinstance(value, list):
            raise self.error(field, f"expected a list, got {self.describe(value)}")
        return value

    def string(self, value: Any, field: str) -> str:
        """Check ``value`` is a non-empty string."""
        if not isinstance(value, str) or not value.strip():
            raise self.error(field, f"expected a non-empty string, got {self.describe(value)}")
        return value

    def optional_string(self, value: Any, field: str) -> str:
        """A string, with ``None`` meaning "absent" and mapped to ``""``."""
        return "" if value is None else self.string(value, field)

    def integer(self, value: Any, field: str, *, minimum: int = 0) -> int:
        """Check ``value`` is a whole number >= ``minimum``.

        Floats with no fractional part (``4.0``) are accepted because JSON and
        some YAML writers do not distinguish them from integers.
        """
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(field, f"expected an integer, got {self.describe(value)}")
        if value < minimum:
            raise self.error(field, f"must be >= {minimum}, got {value}")
        return value

    def number(self, value: Any, field: str) -> float:
        """Check ``value`` is a finite int or float."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(field, f"expected a number, got {self.describe(value)}")
        result = float(value)
        if not math.isfinite(result):
            raise self.error(field, f"expected a finite number, got {value!r}")
        return result

    def triple(self, value: Any, field: str) -> tuple[float, float, float]:
        """Check ``value`` is a list of exactly three numbers."""
        items = self.sequence(value, field)
        if len(items) != 3:
            raise self.error(field, f"expected a list of 3 numbers, got {len(items)} items")
        a, b, c = (self.number(x, f"{field}[{i}]") for i, x in enumerate(items))
        for i, v in enumerate((a, b, c)):
            if v < 0:  # step-time coefficients: a negative one would shorten steps
                raise self.error(f"{field}[{i}]", f"must be >= 0, got {v:g}")
        return (a, b, c)
