"""Chunking: heading sections first, then token-sized pieces with overlap.

A document is cut at its Markdown heading lines (HTML headings arrive as such lines; ``#``
lines inside code fences are not headings); each section is split by the rule of
langchain-text-splitters' ``RecursiveCharacterTextSplitter`` (:mod:`.splitter` computes it on
offsets, with lengths counted in batches) measuring length in the embedding model's tokens,
trying paragraph breaks, then line breaks, then sentence ends, then spaces. Every chunk is an
exact slice ``text[start:end]`` of the extracted text; its metadata names the document, the
source, the offsets, the heading path (``Install > Linux``), the chunk number and, for PDFs,
the page.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from ..types import Document
from .extract import SourceDocument
from .splitter import SpanSplitter

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^(```|~~~)")
SEPARATORS = ("\n\n", "\n", r"(?<=[.!?])\s+", " ", "")


@dataclass(frozen=True)
class ChunkSettings:
    """How documents are cut (recorded in the index manifest; changing it needs a rebuild)."""

    chunk_tokens: int = 200
    overlap_tokens: int = 40

    def as_dict(self) -> dict[str, Any]:
        """The settings as the manifest stores them."""
        return {**asdict(self), "splitter": "langchain_text_splitters.RecursiveCharacterTextSplitter"}


def sections(text: str, start: int = 0) -> Iterator[tuple[int, int, str]]:
    """``(start, end, heading path)`` of each heading section of ``text[start:]``; a section
    that holds only its heading line joins the next one."""
    stack: list[tuple[int, str]] = []
    cuts: list[tuple[int, str]] = [(start, "")]
    in_fence = False
    pos = start
    for line in text[start:].splitlines(keepends=True):
        stripped = line.rstrip("\r\n")
        if _FENCE.match(stripped.lstrip()):
            in_fence = not in_fence
        elif not in_fence and (m := _HEADING.match(stripped)):
            level = len(m.group(1))
            stack = [(lvl, h) for lvl, h in stack if lvl < level] + [(level, m.group(2))]
            path = " > ".join(h for _, h in stack)
            last_start, _ = cuts[-1]
            if not _has_body(text[last_start:pos]):
                cuts[-1] = (last_start, path)  # heading-only section: it joins this one
            else:
                cuts.append((pos, path))
        pos += len(line)
    ends = [c for c, _ in cuts[1:]] + [len(text)]
    for (s, heading), e in zip(cuts, ends, strict=True):
        if text[s:e].strip():
            yield s, e, heading


def _has_body(section: str) -> bool:
    """Whether a section has text besides heading lines."""
    return any(line.strip() and not _HEADING.match(line.strip()) for line in section.splitlines())


class Chunker:
    """Cuts :class:`SourceDocument` objects into chunk :class:`Document` objects.

    ``length`` counts tokens (the embedding model's tokenizer, so no chunk is truncated by
    it); ``count_many``, when given, counts a list of texts in one call (a tokenizer's batch
    call: much faster on long documents) and must agree with ``length``.
    """

    def __init__(
        self,
        settings: ChunkSettings,
        length: Callable[[str], int],
        count_many: Callable[[list[str]], list[int]] | None = None,
    ) -> None:
        self.settings = settings
        self._splitter = SpanSplitter(
            SEPARATORS,
            settings.chunk_tokens,
            settings.overlap_tokens,
            count_many or (lambda texts: [length(t) for t in texts]),
        )

    def chunks(self, doc: SourceDocument) -> list[Document]:
        """The chunks of one document, in text order, numbered from 0."""
        out: list[Document] = []
        for s, e, heading in sections(doc.text, doc.body_start):
            for a, b in self._splitter.split(doc.text[s:e]):
                start, end = s + a, s + b
                meta: dict[str, Any] = {
                    **doc.meta,
                    "doc_id": doc.doc_id,
                    "source": doc.source,
                    "start": start,
                    "end": end,
                    "heading": heading,
                    "chunk": len(out),
                }
                if doc.page_starts:
                    meta["page"] = bisect.bisect_right(doc.page_starts, start)
                out.append(Document(f"{doc.doc_id}#{len(out)}", doc.text[start:end], doc.title, meta))
        return out
