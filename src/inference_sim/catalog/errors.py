"""The single exception type raised by the catalog package."""

from __future__ import annotations

__all__ = ["CatalogError"]


class CatalogError(ValueError):
    """A catalog file is unusable or a lookup names something the catalog lacks.

    It subclasses :class:`ValueError` so callers that already treat bad
    configuration as a value error keep working, while the CLI can catch this
    narrower type and print the one-line message without a traceback.  Every
    message names the file (or lookup) and field at fault and, where the set is
    small, the values that would have been accepted.
    """
