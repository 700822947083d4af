"""Chunking: heading sections first, then token-sized pieces with overlap.

A document is cut at its Markdown heading lines (HTML headings arrive as such lines; ``#``
lines inside code fences are not headings); each section is split by langchain-text-splitters'
``RecursiveCharacterTextSplitter`` measuring length in the embedding model's tokens, trying
paragraph breaks, then line breaks, then sentence ends, then spaces. Every chunk is an exact
slice ``text[start:end]`` of the extracted text; its metadata names the document, the source,
the offsets, the heading path (``Install > Linux``), the chunk number and, for PDFs, the page.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import MissingDependencyError
from ..types import Document
from .extract import SourceDocument

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

    ``length`` counts tokens (the embedding model's tokenizer, so no chunk is truncated by it).
    """

    def __init__(self, settings: ChunkSettings, length: Callable[[str], int]) -> None:
        try:
            from langchain_text_splitters import RecursiveCharacterTextSplitter
        except ImportError as exc:
            raise MissingDependencyError("langchain-text-splitters", "index") from exc
        self.settings = settings
        self._splitter = RecursiveCharacterTextSplitter(
            separators=list(SEPARATORS),
            is_separator_regex=True,
            keep_separator=True,
            chunk_size=settings.chunk_tokens,
            chunk_overlap=settings.overlap_tokens,
            length_function=length,
            strip_whitespace=True,
        )

    def chunks(self, doc: SourceDocument) -> list[Document]:
        """The chunks of one document, in text order, numbered from 0."""
        out: list[Document] = []
        for s, e, heading in sections(doc.text, doc.body_start):
            section = doc.text[s:e]
            prev_start, prev_end = -1, 0
            for piece in self._splitter.split_text(section):
                at = _place(section, piece, prev_start, prev_end)
                prev_start, prev_end = at, at + len(piece)
                start = s + at
                meta: dict[str, Any] = {
                    **doc.meta,
                    "doc_id": doc.doc_id,
                    "source": doc.source,
                    "start": start,
                    "end": start + len(piece),
                    "heading": heading,
                    "chunk": len(out),
                }
                if doc.page_starts:
                    meta["page"] = bisect.bisect_right(doc.page_starts, start)
                out.append(Document(f"{doc.doc_id}#{len(out)}", piece, doc.title, meta))
        return out


def _place(section: str, piece: str, prev_start: int, prev_end: int) -> int:
    """Where ``piece`` starts in ``section``: after the previous piece's start and no later than
    the first non-space character after its end (pieces leave no text uncovered); the latest
    such place, so repeated text never sends a piece back to an earlier copy."""
    rest = section[prev_end:]
    bound = prev_end + len(rest) - len(rest.lstrip())
    at = section.rfind(piece, prev_start + 1, bound + len(piece))
    if at < 0:
        at = section.find(piece, prev_start + 1)
    return at if at >= 0 else section.find(piece)
