"""Listwise building blocks: parsing an LLM's permutation and planning sliding windows.

Parsing is deterministic and loses nothing: identifiers are read in order, duplicates are
dropped, out-of-range identifiers are ignored, and identifiers the model never mentioned are
appended in their input order, so every candidate appears exactly once. Each kind of problem
is counted so runs can report how often the model misbehaved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ID = re.compile(r"\[(\d+)\]|\b(\d+)\b")


@dataclass(frozen=True)
class ParsedPermutation:
    """A complete permutation of ``range(n)`` (0-based) and what had to be repaired."""

    order: tuple[int, ...]
    duplicates: int = 0
    out_of_range: int = 0
    missing: int = 0

    @property
    def clean(self) -> bool:
        """True when the model's answer needed no repair."""
        return not (self.duplicates or self.out_of_range or self.missing)

    def problems(self) -> dict[str, int]:
        """Repair counts by kind (zero counts included)."""
        return {"duplicates": self.duplicates, "out_of_range": self.out_of_range, "missing": self.missing}


def parse_permutation(text: str, n: int, *, first_label: int = 1, bracketed_only: bool = True) -> ParsedPermutation:
    """Read a ranking like ``[3] > [1] > [2]`` of ``n`` passages labelled from ``first_label``.

    With ``bracketed_only`` (default) only ``[k]`` counts, so numbers inside prose ("top 3")
    are not mistaken for identifiers; otherwise bare numbers count too.
    """
    seen: list[int] = []
    duplicates = out_of_range = 0
    for match in _ID.finditer(text):
        raw = match.group(1) if match.group(1) is not None else (None if bracketed_only else match.group(2))
        if raw is None:
            continue
        idx = int(raw) - first_label
        if not 0 <= idx < n:
            out_of_range += 1
        elif idx in seen:
            duplicates += 1
        else:
            seen.append(idx)
    missing = [i for i in range(n) if i not in set(seen)]
    return ParsedPermutation(tuple(seen + missing), duplicates, out_of_range, len(missing))


def sliding_windows(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Windows ``[start, end)`` of a back-to-front sliding-window pass over ``n`` candidates.

    The first window ends at ``n``; each next one moves ``stride`` towards the top; the last
    one is the full window ``[0, window)``, also when ``n - window`` is not a multiple of
    ``stride`` (RankGPT's loop stops before the top positions in that case). ``n <= window`` gives one window;
    ``n < 2`` gives none (nothing to reorder).
    """
    if window < 2 or not 1 <= stride <= window:
        raise ValueError(f"need window >= 2 and 1 <= stride <= window, got window={window}, stride={stride}")
    if n < 2:
        return []
    if n <= window:
        return [(0, n)]
    out = []
    end = n
    while end - window > 0:
        out.append((end - window, end))
        end -= stride
    out.append((0, window))  # a full window at the top, where the reference loop stops short
    return out
