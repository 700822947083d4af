"""``rerankflow index``: bring an index folder in line with its sources, incrementally.

A run scans the sources, compares each file's SHA-256 (and, in JSONL corpora, each record's)
with the manifest, chunks and encodes only new and changed documents into one new segment,
marks the rows of changed and removed documents deleted, and then replaces the manifest
atomically. Until that rename the previous manifest, and the segments it names, are
untouched: a run that is killed leaves the previous index answering. A file that cannot be
read is reported with the reason and counted (its previously indexed version, if any, is
kept); ``strict`` makes it fatal instead.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.embeddings import SentenceTransformerEncoder
from ..backends.models import model_identity
from ..errors import ConfigError, DataError, MissingDependencyError, one_line
from ..io.files import atomic_write
from ..progress import progress
from ..retrievers.bm25 import count_terms
from ..retrievers.tokenize import Tokenizer
from ..types import Document, document_text
from .chunking import Chunker, ChunkSettings
from .extract import SUFFIXES, SourceDocument, read_source
from .store import INDEX_FORMAT, MANIFEST, SegmentData, load_segments, read_manifest, write_segment

log = logging.getLogger(__name__)

NAMES_SHOWN = 10
"""Documents named per line of a run's summary (added, changed, removed); the rest are counted."""

MAX_SEGMENTS = 8
"""More segments than this (or more deleted rows than live ones) and a run merges them into one."""


@dataclass(frozen=True)
class IndexSettings:
    """What the index's contents depend on; an update must use the same (else ``rebuild``)."""

    encoder: str | None = "all-minilm-l6-v2"
    chunking: ChunkSettings = field(default_factory=ChunkSettings)
    tokenizer: Tokenizer = field(default_factory=Tokenizer)
    ann_threshold: int = 200_000
    """Live chunks from which an approximate HNSW index is built (exact search below it)."""

    def as_dict(self) -> dict[str, Any]:
        """The settings as the manifest records them."""
        tok = self.tokenizer
        return {
            "encoder": self.encoder,
            "encoder_identity": model_identity(self.encoder) if self.encoder else None,
            "chunking": self.chunking.as_dict(),
            "tokenizer": {"lowercase": tok.lowercase, "stopwords": tok.stopwords, "stemmer": tok.stemmer},
            "ann_threshold": self.ann_threshold,
        }


@dataclass
class IndexReport:
    """What a run did (``rerankflow index`` prints it)."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    chunks_added: int = 0
    chunks_live: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: int = 0
    merged: bool = False
    ann: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"documents: {len(self.added)} added, {len(self.changed)} changed, {len(self.removed)} removed, "
            f"{self.unchanged} unchanged; chunks: {self.chunks_added} new, {self.chunks_live} in the index"
            f"{'; segments merged' if self.merged else ''}{'; approximate (HNSW) index built' if self.ann else ''} "
            f"({self.seconds:.1f} s)"
        ]
        for what, names in (("added", self.added), ("changed", self.changed), ("removed", self.removed)):
            if names:
                more = f" (+{len(names) - NAMES_SHOWN} more)" if len(names) > NAMES_SHOWN else ""
                lines.append(f"{what}: {', '.join(one_line(n) for n in names[:NAMES_SHOWN])}{more}")
        if self.ignored:
            lines.append(f"ignored {self.ignored} files of other types (supported: {', '.join(SUFFIXES)})")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} files that could not be read:")
            lines.extend(f"  {path}: {reason}" for path, reason in self.skipped)
        return "\n".join(lines)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError("another `rerankflow index` run is updating this index; wait for it", file=folder) from None
        yield


def _scan(sources: Sequence[str | Path]) -> tuple[list[tuple[str, Path]], int, list[tuple[str, str]]]:
    """``(name, path)`` of every supported file under ``sources`` (names relative to each
    source's parent folder, so ``index docs/`` names ``docs/a.md``), how many were ignored,
    and ``(name, reason)`` of those refused: a link to a file outside its source folder (not
    followed; links to folders are never followed), a name with a line break or other
    control character (it could forge lines of printed output)."""
    found: dict[str, Path] = {}
    refused: list[tuple[str, str]] = []
    ignored = 0
    for src in sources:
        root = Path(src).resolve()
        if not root.exists():
            raise DataError("source not found; check the path", file=src)
        for path in _files(root):
            rel = path.relative_to(root.parent)
            name = rel.as_posix()
            if root.is_dir() and path.suffix.lower() not in SUFFIXES:
                ignored += 1
                continue
            if not name.isprintable():
                refused.append(
                    (one_line(name), "the file name holds a line break or another control character; rename it")
                )
                continue
            target = path.resolve()
            if root.is_dir() and not target.is_relative_to(root):
                refused.append((name, f"a link to {target}, outside the source folder (links out are not followed)"))
                continue
            if not target.is_file():
                continue
            if name in found and found[name] != path:
                raise DataError(f"two sources give the name {name!r} ({found[name]} and {path}); index them apart")
            found[name] = path
    return sorted(found.items()), ignored, refused


def _files(root: Path) -> list[Path]:
    """Files under a source (itself if it is a file), skipping hidden files and folders
    (``.git``, editor files); links to folders are not entered."""
    if not root.is_dir():
        return [root]
    out = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(folder) / f for f in files if not f.startswith(".")]
    return sorted(out)


def _doc_hash(doc: SourceDocument) -> str:
    payload = json.dumps([doc.text, doc.title, doc.meta, doc.body_start], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


def update_index(
    sources: Sequence[str | Path],
    folder: str | Path,
    settings: IndexSettings | None = None,
    *,
    strict: bool = False,
    rebuild: bool = False,
    encoder: Any = None,
) -> IndexReport:
    """Make the index in ``folder`` hold exactly the documents of ``sources`` (see the module
    docstring). ``settings`` default to the existing index's, else :class:`IndexSettings()`;
    ``encoder`` replaces the one the settings name (tests share a loaded model this way)."""
    started = time.monotonic()
    folder = Path(folder)
    with _locked(folder):
        old = None if rebuild else read_manifest(folder)
        settings = settings or (_settings_of(old) if old else IndexSettings())
        if old is not None:
            _check_same(old["settings"], settings.as_dict())
        report = IndexReport()
        files, report.ignored, report.skipped = _scan(sources)
        plan = _compare(files, old, strict, report)
        segments = [dict(s, deleted=list(s.get("deleted", []))) for s in (old["segments"] if old else [])]
        _mark_deleted(segments, [plan.old_docs[d] for d in (*report.changed, *report.removed)])
        generation = (old["generation"] + 1) if old else 1
        pending: list[Path] = []
        try:
            if plan.fresh:
                segments.append(_add_segment(folder, plan, settings, encoder, generation, pending, report))
            segments = [s for s in segments if len(s["deleted"]) < s["chunks"]]
            dense = bool(settings.encoder)
            report.chunks_live = sum(s["chunks"] - len(s["deleted"]) for s in segments)
            if len(segments) > MAX_SEGMENTS or sum(len(s["deleted"]) for s in segments) > report.chunks_live:
                segments = _merge(folder, segments, plan.docs, generation, dense, pending)
                report.merged = True
            changed = bool(plan.fresh or report.removed or report.changed)
            ann = None
            if dense and report.chunks_live >= settings.ann_threshold and (changed or not old):
                ann = _build_ann(folder, segments, generation, pending)
                report.ann = True
            elif old is not None and old.get("ann") and not changed:
                ann = old["ann"]
            manifest = _manifest(generation, settings, segments, plan, report, ann)
            with atomic_write(folder / MANIFEST) as fh:  # the switch: a run killed before here changed nothing
                json.dump(manifest, fh, indent=1)
        except BaseException:
            for path in pending:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            raise
        _collect_garbage(folder, manifest)
    report.seconds = time.monotonic() - started
    return report


@dataclass
class _Plan:
    """What a run found: the documents the new manifest holds, the files it names, the
    documents to chunk and encode (``fresh``), and the previous manifest's documents."""

    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    fresh: list[SourceDocument] = field(default_factory=list)
    old_docs: dict[str, dict[str, Any]] = field(default_factory=dict)


def _compare(files: list[tuple[str, Path]], old: dict[str, Any] | None, strict: bool, report: IndexReport) -> _Plan:
    """Compare the sources with the previous manifest (file hashes, then document hashes);
    fills ``report`` with what was added, changed, removed, unchanged and skipped."""
    plan = _Plan(old_docs=old["documents"] if old else {})
    old_files: dict[str, dict[str, Any]] = old["files"] if old else {}
    for name, path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        before = old_files.get(name)
        if before is not None and before["hash"] == digest:
            plan.files[name] = before
            plan.docs.update((doc_id, plan.old_docs[doc_id]) for doc_id in before["docs"])
            continue
        try:
            read = read_source(path, name)
            for d in read:
                if d.doc_id in plan.docs:
                    raise DataError(f"document id {d.doc_id!r} is also in {plan.docs[d.doc_id]['source']}", file=path)
        except DataError as exc:
            if strict:
                raise
            report.skipped.append((name, str(exc).removeprefix(f"{path}: ")))
            if before is not None:  # keep what was indexed from it last time
                plan.files[name] = before
                for doc_id in before["docs"]:
                    plan.docs.setdefault(doc_id, plan.old_docs[doc_id])
            continue
        plan.files[name] = {"hash": digest, "docs": [d.doc_id for d in read]}
        for d in read:
            h = _doc_hash(d)
            prior = plan.old_docs.get(d.doc_id)
            if prior is not None and prior["hash"] == h:
                plan.docs[d.doc_id] = prior
                continue
            (report.changed if prior is not None else report.added).append(d.doc_id)
            plan.docs[d.doc_id] = {"source": name, "hash": h}
            plan.fresh.append(d)
    report.removed = sorted(set(plan.old_docs) - set(plan.docs))
    report.unchanged = len(plan.docs) - len(report.added) - len(report.changed)
    return plan


def _add_segment(
    folder: Path,
    plan: _Plan,
    settings: IndexSettings,
    encoder: Any,
    generation: int,
    pending: list[Path],
    report: IndexReport,
) -> dict[str, Any]:
    """Chunk and encode the fresh documents into a new segment (renamed into place when
    complete); their manifest entries get the segment and their rows. Its manifest entry."""
    name = f"seg-{generation:06d}-{uuid.uuid4().hex[:8]}"
    tmp = folder / "segments" / f".tmp-{name}"
    pending.append(tmp)
    data = _encode_segment(plan.fresh, settings, encoder, tmp)
    os.replace(tmp, folder / "segments" / name)
    pending.append(folder / "segments" / name)
    report.chunks_added = len(data.chunks)
    counts = Counter(str(c.meta["doc_id"]) for c in data.chunks)
    row = 0
    for d in plan.fresh:
        n = counts.get(d.doc_id, 0)
        plan.docs[d.doc_id].update(segment=name, first=row, count=n)
        row += n
    return {"name": name, "chunks": len(data.chunks), "deleted": []}


def _manifest(
    generation: int,
    settings: IndexSettings,
    segments: list[dict[str, Any]],
    plan: _Plan,
    report: IndexReport,
    ann: dict[str, Any] | None,
) -> dict[str, Any]:
    """The new manifest (see :mod:`.store` for its layout)."""
    return {
        "format": INDEX_FORMAT,
        "generation": generation,
        "updated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings.as_dict(),
        "segments": segments,
        "documents": plan.docs,
        "files": plan.files,
        "skipped": [{"source": s, "reason": r} for s, r in report.skipped],
        "counts": {
            "documents": len(plan.docs),
            "chunks": report.chunks_live,
            "segments": len(segments),
            "files": len(plan.files),
        },
        "ann": ann,
    }


def _settings_of(manifest: dict[str, Any]) -> IndexSettings:
    s = manifest["settings"]
    return IndexSettings(
        encoder=s.get("encoder"),
        chunking=ChunkSettings(s["chunking"]["chunk_tokens"], s["chunking"]["overlap_tokens"]),
        tokenizer=Tokenizer(**s["tokenizer"]),
        ann_threshold=int(s.get("ann_threshold", IndexSettings.ann_threshold)),
    )


def _check_same(recorded: dict[str, Any], wanted: dict[str, Any]) -> None:
    for key in ("encoder", "encoder_identity", "chunking", "tokenizer"):
        if recorded.get(key) != wanted.get(key):
            raise ConfigError(
                f"the index was built with {key} {recorded.get(key)!r}, this run asks for {wanted.get(key)!r}; "
                "use the same settings, another folder, or --rebuild"
            )


def _mark_deleted(segments: list[dict[str, Any]], entries: list[dict[str, Any]]) -> None:
    by_name = {s["name"]: s for s in segments}
    for e in entries:
        seg = by_name.get(e.get("segment", ""))
        if seg is not None:
            seg["deleted"] = sorted(set(seg["deleted"]) | set(range(e["first"], e["first"] + e["count"])))


def _encode_segment(docs: list[SourceDocument], settings: IndexSettings, encoder: Any, where: Path) -> SegmentData:
    """Chunk, count and encode ``docs`` into a new segment folder ``where`` (chunks and counts
    are written first, the vectors when encoding is done)."""
    if encoder is None:
        encoder = SentenceTransformerEncoder(settings.encoder or "all-minilm-l6-v2", memo_size=0)
    chunker = Chunker(settings.chunking, encoder.count_tokens, getattr(encoder, "count_tokens_many", None))
    chunks: list[Document] = [
        c for d in progress(docs, desc="index: chunking", total=len(docs), unit="doc") for c in chunker.chunks(d)
    ]
    texts = [document_text(c) for c in chunks]
    tf, vocab = count_terms(texts, settings.tokenizer)
    write_segment(where, SegmentData(chunks, tf, vocab, None))
    emb = None
    if settings.encoder:
        emb = encoder.encode(texts, desc="index: encoding chunks") if texts else np.zeros((0, 1), np.float32)
        np.save(where / "embeddings.npy", emb, allow_pickle=False)
    return SegmentData(chunks, tf, vocab, emb)


def _write_new_segment(folder: Path, name: str, data: SegmentData, pending: list[Path]) -> None:
    tmp = folder / "segments" / f".tmp-{name}"
    pending.append(tmp)
    write_segment(tmp, data)
    target = folder / "segments" / name
    os.replace(tmp, target)
    pending.append(target)


def _merge(
    folder: Path,
    segments: list[dict[str, Any]],
    docs: dict[str, dict[str, Any]],
    generation: int,
    dense: bool,
    pending: list[Path],
) -> list[dict[str, Any]]:
    """One segment holding every live row (copied, not re-encoded); document rows renumbered."""
    data = load_segments(folder, segments, dense)
    name = f"seg-{generation:06d}-{uuid.uuid4().hex[:8]}-merged"
    _write_new_segment(folder, name, data, pending)
    firsts: dict[str, int] = {}
    for row, c in enumerate(data.chunks):
        firsts.setdefault(str(c.meta["doc_id"]), row)
    for doc_id, entry in docs.items():
        if doc_id in firsts:
            entry.update(segment=name, first=firsts[doc_id])
    return [{"name": name, "chunks": len(data.chunks), "deleted": []}]


def _build_ann(folder: Path, segments: list[dict[str, Any]], generation: int, pending: list[Path]) -> dict[str, Any]:
    try:
        import faiss
    except ImportError as exc:
        raise MissingDependencyError("faiss-cpu", "faiss") from exc
    emb = load_segments(folder, segments, True).embeddings
    assert emb is not None
    index = faiss.IndexHNSWFlat(emb.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.add(np.ascontiguousarray(emb))
    index.hnsw.efSearch = 128
    file = f"ann-{generation:06d}.faiss"
    pending.append(folder / file)
    faiss.write_index(index, str(folder / file))
    return {"file": file, "kind": "hnsw", "M": 32, "efConstruction": 80, "efSearch": 128}


def _collect_garbage(folder: Path, manifest: dict[str, Any]) -> None:
    """Delete segments and ANN files the manifest no longer names (left by earlier runs)."""
    keep = {s["name"] for s in manifest["segments"]}
    seg_dir = folder / "segments"
    if seg_dir.is_dir():
        for path in seg_dir.iterdir():
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)
    ann = (manifest.get("ann") or {}).get("file")
    for path in folder.glob("ann-*.faiss"):
        if path.name != ann:
            path.unlink(missing_ok=True)
