"""Recursive splitting that knows where each piece is: langchain's rule, computed on offsets.

:class:`SpanSplitter` cuts text the way langchain-text-splitters'
``RecursiveCharacterTextSplitter`` does with ``keep_separator=True``, regex separators and
``strip_whitespace=True`` (the settings the chunker uses), and returns the same strings; a
differential test checks this on generated text. It exists for two reasons, measured in
docs/indexing.md:

* **Offsets.** The library returns strings only; finding them again in the text is ambiguous
  when text repeats, so a chunk could be placed at an earlier copy and the end of a document
  left uncovered. Here every piece is a ``(start, end)`` span of the original text by
  construction.
* **Batched lengths.** The library calls the length function once per split (one tokenizer
  call per word of a text without line breaks: minutes for a 5 MB one-line file). Here the
  splits of each level are measured together, once per distinct string, through
  ``count_many`` (a tokenizer's batch call).
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence

Span = tuple[int, int]


class SpanSplitter:
    """Splits text into ``(start, end)`` spans of at most ``chunk_size`` length units, with up
    to ``chunk_overlap`` units repeated between neighbours (the library's merge rule)."""

    def __init__(
        self,
        separators: Sequence[str],
        chunk_size: int,
        chunk_overlap: int,
        count_many: Callable[[list[str]], list[int]],
    ) -> None:
        if chunk_overlap > chunk_size:
            raise ValueError(f"chunk overlap {chunk_overlap} is larger than the chunk size {chunk_size}")
        self.separators = list(separators)
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self._count_many = count_many
        self._patterns = {s: re.compile(s) for s in self.separators if s}

    def split(self, text: str) -> list[Span]:
        """The pieces of ``text`` as spans, in text order (``text[s:e]`` is each piece)."""
        lengths: dict[str, int] = {}
        spans: list[Span] = []
        self._measure([""], lengths)
        self._split(text, 0, len(text), self.separators, lengths, spans)
        return spans

    def _measure(self, pieces: Iterable[str], lengths: dict[str, int]) -> None:
        """Add the lengths of the distinct ``pieces`` not measured yet, in one batched call."""
        new = list({p: None for p in pieces if p not in lengths})
        if new:
            lengths.update(zip(new, self._count_many(new), strict=True))

    def _split(
        self, text: str, start: int, end: int, separators: list[str], lengths: dict[str, int], out: list[Span]
    ) -> None:
        part = text[start:end]
        separator, rest = separators[-1], []
        for i, sep in enumerate(separators):
            if not sep:
                separator = sep
                break
            if self._patterns[sep].search(part):
                separator, rest = sep, separators[i + 1 :]
                break
        pattern = self._patterns.get(separator)
        self._measure((part[a:b] for a, b in _pieces(part, pattern)), lengths)
        # Streamed, not listed: a 50 MB text without spaces has 50 million one-character splits.
        splits = (((start + a, start + b), lengths[part[a:b]]) for a, b in _pieces(part, pattern))
        for fits, run in itertools.groupby(splits, key=lambda split: split[1] < self.chunk_size):
            if fits:
                self._merge(text, run, lengths[""], out)
                continue
            for (a, b), _ in run:
                if rest:
                    self._split(text, a, b, rest, lengths, out)
                else:
                    out.append((a, b))

    def _merge(self, text: str, splits: Iterable[tuple[Span, int]], gap: int, out: list[Span]) -> None:
        """Adjacent splits joined into pieces (the library's ``_merge_splits`` with an empty
        separator, whose length ``gap`` counts between splits as the library counts it)."""
        current: deque[tuple[Span, int]] = deque()
        total = 0
        for span, size in splits:
            if current and total + size + gap > self.chunk_size:
                _emit(text, current[0][0][0], current[-1][0][1], out)
                while total > self.chunk_overlap or (
                    total + size + (gap if current else 0) > self.chunk_size and total > 0
                ):
                    total -= current[0][1] + (gap if len(current) > 1 else 0)
                    current.popleft()
            current.append((span, size))
            total += size + (gap if len(current) > 1 else 0)
        if current:
            _emit(text, current[0][0][0], current[-1][0][1], out)


def _pieces(part: str, pattern: re.Pattern[str] | None) -> Iterator[Span]:
    """Non-empty spans of ``part`` cut before every separator match (the separator starts the
    piece after it); no pattern: one span per character."""
    if pattern is None:
        yield from ((i, i + 1) for i in range(len(part)))
        return
    last = 0
    for m in pattern.finditer(part):
        if m.start() > last:
            yield last, m.start()
        last = m.start()
    if len(part) > last:
        yield last, len(part)


def _emit(text: str, start: int, end: int, out: list[Span]) -> None:
    """Append ``text[start:end]`` without surrounding whitespace, unless nothing is left."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        out.append((start, end))
