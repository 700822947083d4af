"""Listwise building blocks: parsing an LLM's permutation and planning sliding windows.

Parsing is deterministic and loses nothing: a reasoning section (``<think>...</think>``, or
an unterminated ``<think>`` to the end: a model cut off while thinking has given no answer,
counted as ``unterminated_reasoning``) is dropped first; identifiers are read in order,
duplicates are dropped, out-of-range identifiers are ignored, and identifiers the model never
mentioned are appended in their input order, so every candidate appears exactly once. Only
bracketed identifiers count (``1. [3]`` reads 3: list numbers and numbers in prose are not
identifiers), unless the answer has none: then bare ones are read (``2 > 1 > 3``, as RankGPT
and RankLLM accept it). Identifiers are numbers, or a template's labels (``[C] > [A] > [B]``
for letter templates). Each kind of problem is counted so runs can report how often the model
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
_UNTERMINATED = re.compile(r"<think>(?:(?!</think>).)*\Z", re.S | re.I)


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
    """1 when the answer had no bracketed identifier and was read as bare ones."""
    unterminated_reasoning: int = 0
    """1 when the answer was an unterminated ``<think>`` section (read as no answer)."""

    @property
    def clean(self) -> bool:
        """True when the model's answer needed no repair."""
        return not any(self.problems().values())

    def problems(self) -> dict[str, int]:
        """Repair counts by kind (zero counts included)."""
        return {
            "duplicates": self.duplicates,
            "out_of_range": self.out_of_range,
            "missing": self.missing,
            "unbracketed": self.unbracketed,
            "unterminated_reasoning": self.unterminated_reasoning,
        }


def _identifiers(labels: Sequence[str] | None) -> re.Pattern[str]:
    """Bracketed (group 1) or bare (group 2) identifiers: numbers, or the given labels."""
    if labels is None:
        return _ID
    names = "|".join(re.escape(x) for x in sorted(labels, key=len, reverse=True))
    return re.compile(rf"\[({names})\]|(?<![\w\[])({names})(?![\w\]])")


def parse_permutation(
    text: str,
    n: int,
    *,
    first_label: int = 1,
    bracketed_only: bool = True,
    labels: Sequence[str] | None = None,
) -> ParsedPermutation:
    """Read a ranking like ``[3] > [1] > [2]`` of ``n`` passages labelled from ``first_label``,
    or, with ``labels`` (a template's identifiers, e.g. letters), like ``[C] > [A] > [B]``
    (``labels[i]`` names passage ``i``; a label past ``n`` is out of range).

    With ``bracketed_only`` (default) only ``[k]`` counts, so numbers inside prose ("top 3")
    and list numbers (``1. [3]``) are not mistaken for identifiers, unless the answer has no
    ``[k]`` at all: then bare identifiers are read (counted as ``unbracketed``). Otherwise bare
    ones always count.
    """
    unterminated = int(bool(_UNTERMINATED.search(text)))
    text = without_reasoning(text)
    pattern = _identifiers(labels)
    unbracketed = 0
    if bracketed_only and not any(m.group(1) is not None for m in pattern.finditer(text)):
        bracketed_only = False
        unbracketed = int(any(m.group(2) is not None for m in pattern.finditer(text)))
    seen: list[int] = []
    duplicates = out_of_range = 0
    for match in pattern.finditer(text):
        raw = match.group(1) if match.group(1) is not None else (None if bracketed_only else match.group(2))
        if raw is None:
            continue
        idx = list(labels).index(raw) if labels is not None else int(raw) - first_label
        if not 0 <= idx < n:
            out_of_range += 1
        elif idx in seen:
            duplicates += 1
        else:
            seen.append(idx)
    missing = [i for i in range(n) if i not in set(seen)]
    return ParsedPermutation(tuple(seen + missing), duplicates, out_of_range, len(missing), unbracketed, unterminated)


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


def sliding_windows(n: int, window: int, stride: int, schedule: str = "full") -> list[tuple[int, int]]:
    """Windows ``[start, end)`` of a back-to-front sliding-window pass over ``n`` candidates.

    ``full`` (default): the first window ends at ``n``; each next one moves ``stride`` towards
    the top; the last one is the full window ``[0, window)``, also when ``n - window`` is not a
    multiple of ``stride`` (RankGPT's loop stops before the top positions in that case).
    ``n <= window`` gives one window; ``n < 2`` gives none (nothing to reorder).

    ``rankllm``: RankLLM 0.25.7's loop (``sliding_windows``): the same moves, but the last
    window is cut at the top instead of filled (``n = 25``, 20/10: ``[5, 25)`` then ``[0, 15)``),
    so a prompt's passage count and word budget are RankLLM's. Where that loop makes no call at
    all (``n == window - stride``: RankLLM leaves such a list unranked) one window ``[0, n)``
    ranks it: the one deliberate difference (docs/presets.md).
    """
    if window < 2 or not 1 <= stride <= window:
        raise ValueError(f"need window >= 2 and 1 <= stride <= window, got window={window}, stride={stride}")
    if schedule not in ("full", "rankllm"):
        raise ValueError(f"window schedule is 'full' or 'rankllm', not {schedule!r}")
    if n < 2:
        return []
    if schedule == "rankllm":
        return _rankllm_windows(n, window, stride)
    if n <= window:
        return [(0, n)]
    out = []
    end = n
    while end - window > 0:
        out.append((end - window, end))
        end -= stride
    out.append((0, window))  # a full window at the top, where the reference loop stops short
    return out


def _rankllm_windows(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    out = []
    end, start = n, n - window
    while end > 0 and start + stride != 0:
        start = max(start, 0)
        out.append((start, end))
        end, start = end - stride, start - stride
    return out or [(0, n)]
