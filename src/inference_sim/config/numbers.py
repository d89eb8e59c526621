"""Integers as users write them: ``1000``, ``1e3``, ``1_000``, ``1000.0``, numpy integers.

Flags, ``--config`` files, sweep files, workload specs and ``simulate()`` all read
integer options through :func:`parse_integer`, so ``--num-requests 1e3`` means the same
everywhere (issue 21). Values outside a signed 64-bit integer are refused by the
callers: times and counts become int64 arrays, where a larger value would overflow.
"""

from __future__ import annotations

import numbers
from decimal import Decimal, InvalidOperation
from typing import Any

import click

#: The largest magnitude an integer option may have (int64).
INT64_MAX = 2**63 - 1


def parse_integer(value: Any) -> int | None:
    """``value`` as an exact int, or None if it is not a whole number.

    Booleans are not integers here (``true`` for a count is a mistake). A string in
    exponent or decimal notation is accepted when its value is whole (``1e3``,
    ``2.0``); ``1.5`` and ``1e-3`` are not. Magnitudes beyond 10^30 in exponent notation
    give None rather than a huge int, which no option needs.
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return None
    if isinstance(value, numbers.Integral):  # int and numpy integers
        return int(value)
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        d = Decimal(text)
    except InvalidOperation:
        return None
    if not d.is_finite() or d.adjusted() > 30 or d != d.to_integral_value():
        return None
    return int(d)


class IntegerType(click.ParamType):
    """click's INT, also accepting ``1e3`` and ``1000.0`` (see :func:`parse_integer`)."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        out = parse_integer(value)
        if out is None:
            self.fail(f"{value!r} is not a valid integer.", param, ctx)
        return out


INTEGER = IntegerType()
