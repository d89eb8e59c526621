"""Did-you-mean hints for unknown keys and names in user input (flags, YAML, JSON)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


def did_you_mean(word: object, choices: Iterable[object]) -> str:
    """``' (did you mean "x"?)'`` for the choice closest to ``word``, or ``""``.

    Case is ignored when matching (``OUTPUT_TOKENS`` suggests ``output_tokens``); the
    suggestion keeps the choice's own spelling.
    """
    by_lower: dict[str, str] = {}
    for choice in choices:
        by_lower.setdefault(str(choice).lower(), str(choice))
    text = str(word).lower()
    if not text or (text in by_lower and by_lower[text] == str(word)):
        return ""
    found = difflib.get_close_matches(text, list(by_lower), n=1, cutoff=0.6)
    return f' (did you mean "{by_lower[found[0]]}"?)' if found else ""


def unknown_keys(keys: Sequence[object], choices: Iterable[object], what: str) -> str:
    """``unknown option 'x' (did you mean "y"?)`` for one key, ``unknown options 'x' (did
    you mean "y"?), 'z'`` for several: every unknown key in one message, each with its
    hint, so fixing a file takes one round, not one per key."""
    known = list(choices)
    items = ", ".join(f"{key!r}{did_you_mean(key, known)}" for key in keys)
    return f"unknown {what}{'s' if len(keys) > 1 else ''} {items}"
