"""Did-you-mean hints for unknown keys and names in user input (flags, YAML, JSON)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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
