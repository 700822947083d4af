"""Listwise building blocks: parsing an LLM's permutation and planning sliding windows.

Parsing is deterministic and loses nothing: a reasoning section (``<think>...</think>``, or
an unterminated ``<think>`` to the end) is dropped first; identifiers are read in order,
duplicates are dropped, out-of-range identifiers are ignored, and identifiers the model never
mentioned are appended in their input order, so every candidate appears exactly once. An
answer without any bracketed identifier is read as bare numbers (``2 > 1 > 3``, as RankGPT and
RankLLM accept it). Each kind of problem is counted so runs can report how often the model
misbehaved.

:func:`read_label` reads the label a setwise answer names without mistaking the article "A"
(or the pronoun "I") in prose for a label.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_ID = re.compile(r"\[(\d+)\]|\b(\d+)\b")
_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.S | re.I)


def without_reasoning(text: str) -> str:
    """``text`` without ``<think>...</think>`` sections (an unterminated one runs to the end)."""
    return _THINK.sub(" ", text) if "<think>" in text.lower() else text


@dataclass(frozen=True)
class ParsedPermutation:
    """A complete permutation of ``range(n)`` (0-based) and what had to be repaired."""

    order: tuple[int, ...]
    duplicates: int = 0
    out_of_range: int = 0
    missing: int = 0
    unbracketed: int = 0
    """1 when the answer had no bracketed identifier and was read as bare numbers."""

    @property
    def clean(self) -> bool:
        """True when the model's answer needed no repair."""
        return not (self.duplicates or self.out_of_range or self.missing or self.unbracketed)

    def problems(self) -> dict[str, int]:
        """Repair counts by kind (zero counts included)."""
        return {
            "duplicates": self.duplicates,
            "out_of_range": self.out_of_range,
            "missing": self.missing,
            "unbracketed": self.unbracketed,
        }


def parse_permutation(text: str, n: int, *, first_label: int = 1, bracketed_only: bool = True) -> ParsedPermutation:
    """Read a ranking like ``[3] > [1] > [2]`` of ``n`` passages labelled from ``first_label``.

    With ``bracketed_only`` (default) only ``[k]`` counts, so numbers inside prose ("top 3")
    are not mistaken for identifiers, unless the answer has no ``[k]`` at all: then bare
    numbers are read (counted as ``unbracketed``). Otherwise bare numbers always count.
    """
    text = without_reasoning(text)
    unbracketed = 0
    if bracketed_only and not any(m.group(1) is not None for m in _ID.finditer(text)):
        bracketed_only = False
        unbracketed = int(any(m.group(2) is not None for m in _ID.finditer(text)))
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
    return ParsedPermutation(tuple(seen + missing), duplicates, out_of_range, len(missing), unbracketed)


_LABEL_VERBS = frozenset(["is", "was", "seems", "has", "answers", "matches", "contains", "provides", "best", "because"])


def read_label(text: str, pattern: str, labels: Sequence[str]) -> int | None:
    """Index in ``labels`` of the first label a setwise answer names by ``pattern`` (the
    template's output regex), reasoning sections dropped. A bare "A" or "I" followed by a
    lowercase word other than a verb such as "is" reads as prose ("A good passage is B",
    "I think C") and is skipped."""
    text = without_reasoning(text)
    for match in re.finditer(pattern, text):
        value = next((g for g in match.groups() if g is not None), match.group(0))
        if value not in labels:
            continue
        bracketed = text[max(match.start() - 1, 0) : match.start() + 1].startswith(("[", "("))
        if value in ("A", "I") and not bracketed and match.group(0) == value:
            after = re.match(r"\s+([a-z]+)", text[match.end() :])
            if after and after.group(1) not in _LABEL_VERBS:
                continue
        return list(labels).index(value)
    return None


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
