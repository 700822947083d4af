"""Text out of source files: plain text, Markdown (front matter), HTML, PDF, JSONL corpora.

Every reader returns :class:`SourceDocument` objects whose ``text`` is what gets chunked;
chunk offsets index into it. For ``.txt`` and ``.md`` files that text is the file itself
(offsets are offsets into the file; front matter becomes metadata and is not chunked); for HTML it is the visible
text with headings written as Markdown ``#`` lines; for PDF the pages' text joined by blank
lines (``page_starts`` gives each page's first character). Libraries: BeautifulSoup with the
standard-library parser for HTML (tolerant of broken markup, no compiled dependency, and it
lets the reader keep heading structure and drop scripts, styles and navigation), pypdf for
PDF (pure Python, maintained; scanned PDFs without a text layer yield no text and are
reported as such).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, DataError, MissingDependencyError
from ..io.jsonl import read_documents
from ..yamlio import load_bounded

SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".jsonl")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?\r?\n)?---[ \t]*(\r?\n|\Z)", re.DOTALL)
_BLOCK_TAGS = (
    "p", "div", "li", "ul", "ol", "tr", "table", "section", "article", "pre", "blockquote",
    "br", "dd", "dt", "figcaption", "main", "aside",
)  # fmt: skip
_DROP_TAGS = ("script", "style", "noscript", "template", "nav", "svg", "head")


@dataclass(frozen=True)
class SourceDocument:
    """One document read from a source: a file, or one record of a JSONL corpus."""

    doc_id: str
    source: str
    text: str
    title: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    page_starts: tuple[int, ...] = ()
    body_start: int = 0
    """Where the content starts (after Markdown front matter); nothing before it is chunked."""


def read_source(path: Path, source: str) -> list[SourceDocument]:
    """The documents of one file (``source``: its name in the index, relative to the folder given).

    Raises :class:`DataError` naming the file and the reason when it cannot be read.
    """
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"unsupported file type {path.suffix!r}; supported: {', '.join(SUFFIXES)}", file=path)
    docs = reader(path, source)
    if not any(d.text.strip() for d in docs):
        raise DataError("no text found (an image-only PDF or an empty file?)", file=path)
    return docs


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"not valid UTF-8 ({exc.reason} at byte {exc.start}); save it as UTF-8", file=path) from exc


def _plain(value: Any) -> Any:
    """Front-matter values as JSON-friendly data (dates become ISO strings)."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _read_text(path: Path, source: str) -> list[SourceDocument]:
    text = _decode(path)
    first = next((line.strip() for line in text.splitlines() if line.strip()), None)
    return [SourceDocument(source, source, text, first[:200] if first else path.stem)]


def _read_markdown(path: Path, source: str) -> list[SourceDocument]:
    text = _decode(path)
    meta: dict[str, Any] = {}
    found = _FRONT_MATTER.match(text)
    if found:
        try:
            parsed = load_bounded(found.group(1) or "")[1] or {}
        except yaml.YAMLError as exc:
            raise DataError(f"front matter is not valid YAML: {exc}", file=path) from exc
        except ConfigError as exc:
            raise DataError(f"front matter: {exc}", file=path) from None
        if not isinstance(parsed, dict):
            raise DataError("front matter must be a YAML mapping (key: value lines)", file=path)
        meta = {str(k): _plain(v) for k, v in parsed.items()}
    title = meta.pop("title", None)
    if title is None:
        heading = re.search(r"^#\s+(.+?)\s*#*\s*$", text, re.MULTILINE)
        title = heading.group(1) if heading else path.stem
    reserved = [k for k in meta if k in _RESERVED]
    if reserved:
        raise DataError(f"front matter key {reserved[0]!r} is reserved by the index; rename it", file=path)
    body = found.end() if found else 0
    return [SourceDocument(source, source, text, str(title), meta, body_start=body)]


def _read_html(path: Path, source: str) -> list[SourceDocument]:
    try:
        from bs4 import BeautifulSoup
    except ImportError as exc:
        raise MissingDependencyError("beautifulsoup4", "index") from exc
    soup = BeautifulSoup(_decode(path), "html.parser")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else None
    for tag in soup.find_all(_DROP_TAGS):
        tag.decompose()
    for tag in soup.find_all(re.compile(r"^h[1-6]$")):
        level = int(tag.name[1])
        tag.replace_with(f"\n\n{'#' * level} {tag.get_text(' ', strip=True)}\n\n")
    for tag in soup.find_all(_BLOCK_TAGS):
        tag.insert_before("\n")
        tag.insert_after("\n")
    lines = [" ".join(line.split()) for line in soup.get_text().splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    if not title:
        heading = re.search(r"^#+ (.+)$", text, re.MULTILINE)
        title = heading.group(1) if heading else path.stem
    return [SourceDocument(source, source, text, title)]


def _read_pdf(path: Path, source: str) -> list[SourceDocument]:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError
    except ImportError as exc:
        raise MissingDependencyError("pypdf", "index") from exc
    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            raise DataError("the PDF is encrypted; decrypt it first", file=path)
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        info = reader.metadata
        title = info.title if info is not None and info.title else None
    except DataError:
        raise
    except (PyPdfError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"cannot read the PDF ({type(exc).__name__}: {exc})", file=path) from exc
    starts: list[int] = []
    text = ""
    for page in pages:
        if text:
            text += "\n\n"
        starts.append(len(text))
        text += page
    return [SourceDocument(source, source, text, str(title) if title else path.stem, page_starts=tuple(starts))]


def _read_jsonl(path: Path, source: str) -> list[SourceDocument]:
    out = []
    for d in read_documents(path):
        reserved = [k for k in d.meta if k in _RESERVED]
        if reserved:
            raise DataError(f"document {d.docid!r}: key {reserved[0]!r} is reserved by the index; rename it", file=path)
        out.append(SourceDocument(d.docid, source, d.text, d.title, dict(d.meta)))
    return out


_RESERVED = ("doc_id", "source", "start", "end", "heading", "page", "chunk")
"""Metadata keys the indexer writes on every chunk (user metadata may not use them)."""

_READERS: dict[str, Callable[[Path, str], list[SourceDocument]]] = {
    ".txt": _read_text,
    ".md": _read_markdown,
    ".markdown": _read_markdown,
    ".html": _read_html,
    ".htm": _read_html,
    ".pdf": _read_pdf,
    ".jsonl": _read_jsonl,
}
