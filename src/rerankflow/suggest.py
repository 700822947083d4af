"""One helper for every name a user can mistype (stage names, keys, measures, presets): the
closest valid names, by difflib's ratio (standard library), a case difference first."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_names(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Valid names close to ``word``: those equal but for case first, then difflib's matches."""
    pool = list(dict.fromkeys(choices))
    same_case = [c for c in pool if c.lower() == word.lower() and c != word]
    by_ratio = difflib.get_close_matches(word.lower(), [c.lower() for c in pool], n=n, cutoff=0.6)
    lowered = {c.lower(): c for c in pool}
    return list(dict.fromkeys([*same_case, *(lowered[m] for m in by_ratio)]))[:n]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` (or ``'x' or 'y'``) when a valid name is close, else ``""``."""
    found = close_names(word, choices)
    if not found:
        return ""
    return "; did you mean " + " or ".join(repr(f) for f in found) + "?"
