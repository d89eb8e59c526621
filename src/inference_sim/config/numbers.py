"""Integers as users write them: ``1000``, ``1e3``, ``1_000``, ``1000.0``, ``0x10``,
numpy integers.

Flags, ``--config`` files, sweep files, workload specs and ``simulate()`` all read
integer options through :func:`parse_integer`, so ``--num-requests 1e3`` means the same
everywhere (issue 21). Values outside a signed 64-bit integer are refused by the
callers: times and counts become int64 arrays, where a larger value would overflow.

The reference's flags parse integers as Go's ``strconv.ParseInt(s, 0, 64)``: ``0x10``,
``0o10`` and ``0b10`` are 16, 8 and 2 there, and so they are here. Go also reads a
leading ``0`` as octal (``010`` is 8), where Python and most users read 10: such a value
is refused with a message saying so (:func:`leading_zero_problem`), because running
either number silently would surprise one of the two readers.
"""

from __future__ import annotations

import numbers
import re
from decimal import Decimal, InvalidOperation
from typing import Any

import click

#: The largest magnitude an integer option may have (int64).
INT64_MAX = 2**63 - 1

#: Go's base prefixes (``strconv.ParseInt(s, 0, 64)``), with a sign and ``_`` separators.
_PREFIXED = re.compile(r"[+-]?0[xXoObB][0-9a-fA-F_]+")
#: A decimal with a leading zero: octal to Go, decimal to Python.
_LEADING_ZERO = re.compile(r"[+-]?0[0-9_]*[0-9]")


def leading_zero_problem(text: str) -> str | None:
    """Why ``text`` is refused, when it is a leading-zero integer Go reads as octal and
    Python as decimal with a different value (``010``: 8 or 10; ``08``: an error or 8).
    ``00`` and ``007`` mean the same to both and pass."""
    text = text.strip()
    if not _LEADING_ZERO.fullmatch(text):
        return None
    digits = text.lstrip("+-").replace("_", "")
    decimal = int(digits)
    if set(digits) <= set("01234567") and int(digits, 8) == decimal:
        return None
    sign = "-" if text.startswith("-") else ""
    if set(digits) <= set("01234567"):
        octal = f"{sign}{int(digits, 8)}"
        return (
            f"{text!r} is ambiguous: the reference (Go) reads a leading 0 as octal "
            f"({octal}); write {sign}{decimal}, or {sign}0o{digits.lstrip('0')} for {octal}"
        )
    return (
        f"{text!r} is ambiguous: the reference (Go) reads a leading 0 as octal and "
        f"refuses it; write {sign}{decimal}"
    )


def parse_integer(value: Any) -> int | None:
    """``value`` as an exact int, or None if it is not a whole number.

    Booleans are not integers here (``true`` for a count is a mistake). A string in
    exponent or decimal notation is accepted when its value is whole (``1e3``,
    ``2.0``); ``1.5`` and ``1e-3`` are not. Go's ``0x``/``0o``/``0b`` prefixes are
    read as Go reads them; a leading-zero decimal whose octal value differs (``010``)
    gives None (see :func:`leading_zero_problem`). Magnitudes beyond 10^30 in exponent notation
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
    if _PREFIXED.fullmatch(text):  # 0x10, -0o17, 0b1010: Go's base prefixes
        try:
            return int(text, 0)
        except ValueError:
            return None
    if leading_zero_problem(text):
        return None
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
            problem = leading_zero_problem(value) if isinstance(value, str) else None
            self.fail(problem or f"{value!r} is not a valid integer.", param, ctx)
        return out


INTEGER = IntegerType()
