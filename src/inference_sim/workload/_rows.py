"""Bounded reading of untrusted trace files: one row at a time, never a whole row unread.

Every trace reader takes its rows from here, so a file of any size is streamed and a
single huge row (a 200 MB line, a line of millions of token or hash ids, a CSV line of
millions of columns) ends with one :class:`~inference_sim.workload.errors.WorkloadError`
naming the file and the row after reading at most :data:`MAX_ROW_CHARS` characters of
it, instead of exhausting memory.

* CSV (the reference's format, trace v2, Azure): :class:`BoundedCsvReader` feeds
  :mod:`csv` through ``readline(limit)``, counting the characters and the columns of the
  current record (several physical lines when a quoted field holds newlines) before
  :mod:`csv` splits it, and lifts the csv module's ``field_size_limit`` — 128 KiB by
  default, less than a 20 000-token prompt written out as ids — to the row limit, for the
  duration of each row only (the setting is process-wide, so other readers keep theirs).
* JSON lines (Mooncake): :func:`bounded_lines` reads each line with ``readline(limit)``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from typing import TextIO

MAX_ROW_CHARS = 32 * 2**20
"""Longest trace row (one CSV record or one JSON line) the readers accept, in characters.

The longest legitimate rows are requests written out with their token ids (the reference
CSV, trace v2's ``input_token_ids``/``output_token_ids``): at most 7 characters per id
(vocabularies stay below a million ids: six digits and a separator), so 32 MiB holds a
request of more than 4.7 million tokens — over twice the longest context window served in
production (1-2 million tokens) and far beyond any published trace, whose rows are tens of
bytes (Azure) to a few kilobytes (Mooncake: one hash id per 512 tokens). A row at the
limit costs about half a GB to read at worst (the text, csv's copy, 16 million parsed ids);
a row past it costs what reading the limit does, about 100 MB."""

MAX_ROW_COLUMNS = 10_000
"""Most columns a CSV trace row may have. Real rows have 3 to 33 (Azure, the reference
CSV, trace v2 with every optional column), plus whatever a tool appends; the bound keeps a
row of millions of tiny cells (which :mod:`csv` would turn into millions of strings,
~25 times the row's size in memory) from being split at all."""

_MAX_QUOTES_SCANNED = 10 * MAX_ROW_COLUMNS
"""Quote characters of one line past which its commas are all counted as separators
(exactly telling quoted commas from separators walks the quotes one by one)."""


class RowTooLong(Exception):
    """A row exceeded a limit (internal: the readers turn it into a WorkloadError)."""

    def __init__(self, message: str, line: int = 0) -> None:
        self.line = line  # 1-based line where the row starts, when the raiser knows it
        super().__init__(f"{message} (see docs/troubleshooting.md)")


def _too_long(limit: int, line: int = 0) -> RowTooLong:
    return RowTooLong(f"row longer than {limit:,} characters, the most a trace row may hold", line)


def _separators(line: str, inside: bool) -> tuple[int, bool]:
    """Column separators of ``line`` (commas outside quoted fields), and whether the line
    ends inside a quoted field; ``inside``: whether it starts inside one.

    Follows the csv module's default dialect: a quote opens a quoted field only at the
    start of a field (elsewhere it is an ordinary character), ``""`` inside a quoted
    field is a quote, and a single quote closes it. The loop runs once per quote.
    """
    count = 0
    pos = 0
    find = line.find
    while True:
        q = find('"', pos)
        if inside:
            if q < 0:
                return count, True
            if line.startswith('"', q + 1):  # "" inside a quoted field: a literal quote
                pos = q + 2
                continue
            inside = False
        else:
            count += line.count(",", pos, len(line) if q < 0 else q)
            if q < 0:
                return count, False
            inside = q == 0 or line[q - 1] == ","  # else a quote inside a plain field
        pos = q + 1


class BoundedCsvReader:
    """``csv.reader(fh, strict=True)`` whose records are at most ``limit`` characters
    and :data:`MAX_ROW_COLUMNS` columns.

    Iterating yields the rows; :attr:`line_num` is csv's (physical lines read so far).
    A row over a limit raises :class:`RowTooLong` once ``limit + 1`` characters of it have
    been read, or before csv splits a line that would give it too many columns.
    """

    def __init__(self, fh: TextIO, limit: int | None = None) -> None:
        self.limit = MAX_ROW_CHARS if limit is None else limit
        self._new_record = [True]  # set before each record: _lines resets its counts
        self._reader = csv.reader(self._lines(fh.readline), strict=True)
        self._rows = self._records()

    @property
    def line_num(self) -> int:
        return self._reader.line_num

    def __iter__(self) -> Iterator[list[str]]:
        return self._rows  # the generator itself: no Python-level call per row

    def __next__(self) -> list[str]:
        return next(self._rows)

    def _lines(self, readline: Callable[[int], str]) -> Iterator[str]:
        limit, new_record = self.limit, self._new_record
        most = MAX_ROW_COLUMNS - 1  # separators
        used = seps = 0  # of the current record: characters read, column separators
        inside = False  # the current record's last line ended inside a quoted field
        exact = True  # False: past a line of too many quotes, every comma counts
        while True:
            if new_record[0]:
                new_record[0] = False
                used = seps = 0
                inside, exact = False, True
            # One character past the room left tells "exactly full" from "too long".
            line = readline(limit - used + 1)
            if not line:
                return
            used += len(line)
            if used > limit:
                raise _too_long(limit)
            if not exact:
                seps += line.count(",")
            elif '"' not in line:
                if not inside:
                    seps += line.count(",")
            elif line.count('"') <= _MAX_QUOTES_SCANNED:
                n, inside = _separators(line, inside)  # a few quotes in a real row
                seps += n
            else:  # no real trace row: count every comma from here on (an upper bound)
                seps += line.count(",")
                exact = False
            if seps > most:
                raise RowTooLong(
                    f"row has more than {MAX_ROW_COLUMNS:,} columns, the most a trace row may have"
                )
            yield line

    def _records(self) -> Iterator[list[str]]:
        reader, new_record, field_limit = self._reader, self._new_record, self.limit + 1
        set_limit = csv.field_size_limit
        while True:
            new_record[0] = True
            # A field may be as long as its row (+1: csv rejects a field of exactly the
            # limit). Restored after each row: the setting is global to the process.
            previous = set_limit(field_limit)
            try:
                row = next(reader, None)
            finally:
                set_limit(previous)
            if row is None:
                return
            yield row


def bounded_lines(fh: TextIO, limit: int | None = None) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line, 1-based; :class:`RowTooLong` past ``limit``."""
    limit = MAX_ROW_CHARS if limit is None else limit
    readline = fh.readline
    number = 0
    while True:
        text = readline(limit + 1)
        if not text:
            return
        number += 1
        if len(text) > limit:
            raise _too_long(limit, number)
        yield number, text
