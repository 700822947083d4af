"""The index folder: a manifest naming immutable segments; reading it back.

Layout::

    INDEX_DIR/manifest.json            the current state (replaced atomically, never edited)
    INDEX_DIR/segments/<name>/         one segment per indexing run that added chunks:
        chunks.jsonl                     chunk text and metadata (one JSON object a line)
        tf.npz, vocab.json               BM25 term counts (chunks x terms) and the terms
        embeddings.npy                   dense vectors (float32, L2-normalised), if dense
    INDEX_DIR/ann-<generation>.faiss   an approximate (HNSW) index over the live vectors, if built

A segment is never changed once written; deleting a document marks its rows in the manifest.
BM25 statistics (document frequencies, average length) are computed over the live chunks when
the index is opened, so they always match the current content; nothing is re-encoded then.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scipy import sparse

from ..errors import DataError, MissingDependencyError, format_path
from ..io.jsonl import read_documents
from ..retrievers.bm25 import BM25Index
from ..retrievers.tokenize import Tokenizer, TokenizerOptions
from ..types import Document

INDEX_FORMAT = 1
MANIFEST = "manifest.json"


_FILE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9._-]*$"
"""A segment or ANN file name: one path part, never ``..`` or hidden (the manifest is data)."""
REBUILD = "rebuild the index with: rerankflow index SOURCES -o DIR --rebuild"


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Chunking(_Part):
    chunk_tokens: int = Field(ge=1)
    overlap_tokens: int = Field(ge=0)


class _Settings(_Part):
    encoder: str | None
    chunking: _Chunking
    tokenizer: TokenizerOptions


class _Segment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=_FILE_NAME)
    chunks: int = Field(ge=0)
    deleted: list[int] = Field(default_factory=list)


class _Ann(_Part):
    file: str = Field(pattern=_FILE_NAME)


class _DocumentEntry(_Part):
    source: str
    hash: str
    segment: str | None = None
    first: int = Field(0, ge=0)
    count: int = Field(0, ge=0)


class _FileEntry(_Part):
    hash: str
    docs: list[str]


class _Manifest(_Part):
    format: int
    generation: int = Field(ge=0)
    settings: _Settings
    segments: list[_Segment]
    documents: dict[str, _DocumentEntry]
    files: dict[str, _FileEntry]
    ann: _Ann | None = None


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of ``folder`` (``None`` when there is no index there yet); a damaged one
    is a :class:`DataError` naming the key and the fix."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"corrupt index manifest ({exc}); {REBUILD}", file=path) from exc
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if isinstance(fmt, int) and fmt != INDEX_FORMAT:
        raise DataError(f"index format {fmt} is not supported (expected {INDEX_FORMAT}); {REBUILD}", file=path)
    try:
        _Manifest.model_validate(manifest)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = format_path(tuple(err["loc"])) or "(top level)"
        raise DataError(f"corrupt index manifest: {where}: {err['msg']}; {REBUILD}", file=path) from None
    problem = _inconsistency(manifest)
    if problem:
        raise DataError(f"corrupt index manifest: {problem}; {REBUILD}", file=path)
    return dict(manifest)


def _inconsistency(manifest: dict[str, Any]) -> str | None:
    """What in a well-formed manifest contradicts itself (``None``: nothing)."""
    for seg in manifest["segments"]:
        bad = [i for i in seg.get("deleted", []) if not 0 <= i < seg["chunks"]]
        if bad:
            return f"segment {seg['name']} deletes row {bad[0]} of {seg['chunks']}"
    for name, entry in manifest["files"].items():
        missing = [d for d in entry["docs"] if d not in manifest["documents"]]
        if missing:
            return f"file {name!r} lists document {missing[0]!r}, which the manifest does not hold"
    return None


@dataclass
class SegmentData:
    """The live rows of one or more segments, concatenated in manifest order."""

    chunks: list[Document]
    tf: sparse.csr_matrix
    vocab: dict[str, int]
    embeddings: np.ndarray | None


def load_segments(folder: Path, segments: list[dict[str, Any]], dense: bool) -> SegmentData:
    """Read the live chunks, term counts (on one shared vocabulary) and vectors of ``segments``."""
    chunks: list[Document] = []
    vocab: dict[str, int] = {}
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    vectors: list[np.ndarray] = []
    for seg in segments:
        where = folder / "segments" / seg["name"]
        docs, tf, terms, emb = _read_segment(where, seg, dense)
        if vectors and emb is not None and emb.shape[1:] != vectors[0].shape[1:]:
            raise DataError(f"segment {seg['name']}: vectors of another size than the others; {REBUILD}", file=where)
        live = np.setdiff1d(np.arange(len(docs)), np.asarray(seg.get("deleted", []), dtype=np.int64))
        remap = np.fromiter((vocab.setdefault(t, len(vocab)) for t in terms), dtype=np.int64, count=len(terms))
        part = tf[live].tocoo()
        rows.append(part.row + len(chunks))
        cols.append(remap[part.col])
        vals.append(part.data)
        chunks.extend(docs[i] for i in live)
        if emb is not None:
            vectors.append(np.asarray(emb[live], dtype=np.float32))
    shape = (len(chunks), max(len(vocab), 1))
    if rows:
        tf_all = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape)
    else:
        tf_all = sparse.csr_matrix(shape)
    emb_all = np.concatenate(vectors) if vectors else (np.zeros((0, 0), np.float32) if dense else None)
    return SegmentData(chunks, tf_all, vocab, emb_all)


def _read_segment(
    where: Path, seg: dict[str, Any], dense: bool
) -> tuple[list[Document], sparse.csr_matrix, list[str], np.ndarray | None]:
    """One segment's chunks, term counts, terms and vectors, checked against each other and
    the manifest (any damage is a :class:`DataError` naming the file and the fix)."""
    if not where.is_dir():
        raise DataError(f"segment {seg['name']} is missing from the index; {REBUILD}", file=where)
    current = where / "chunks.jsonl"
    try:
        docs = read_documents(current)
        current = where / "tf.npz"
        tf = sparse.load_npz(current).tocsr()
        current = where / "vocab.json"
        terms = json.loads(current.read_text(encoding="utf-8"))
        current = where / "embeddings.npy"
        emb = np.load(current, mmap_mode="r", allow_pickle=False) if dense else None
    except DataError as exc:
        raise DataError(f"segment {seg['name']}: {exc}; {REBUILD}") from exc
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot be read ({type(exc).__name__}: {exc}); {REBUILD}", file=current) from exc
    if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
        raise DataError(f"not a list of terms; {REBUILD}", file=where / "vocab.json")
    sizes = (len(docs), tf.shape[0], seg["chunks"], *((emb.shape[0],) if emb is not None else ()))
    if len(set(sizes)) > 1 or tf.shape[1] != len(terms) or (emb is not None and emb.ndim != 2):
        raise DataError(
            f"segment {seg['name']}: chunks, counts, terms and vectors disagree in size {sizes}; {REBUILD}",
            file=where,
        )
    return docs, tf, terms, emb


def write_segment(where: Path, data: SegmentData) -> None:
    """Write a segment's files into the (new, empty) folder ``where``."""
    from ..io.jsonl import write_documents

    where.mkdir(parents=True)
    write_documents(where / "chunks.jsonl", data.chunks)
    sparse.save_npz(where / "tf.npz", data.tf)
    terms = [""] * len(data.vocab)
    for term, i in data.vocab.items():
        terms[i] = term
    (where / "vocab.json").write_text(json.dumps(terms), encoding="utf-8")
    if data.embeddings is not None:
        np.save(where / "embeddings.npy", data.embeddings, allow_pickle=False)


@dataclass
class OpenIndex:
    """An index opened for search: its live chunks, BM25 counts and dense vectors."""

    folder: Path
    manifest: dict[str, Any]
    chunks: list[Document]
    bm25: BM25Index
    embeddings: np.ndarray | None
    ann: Any = None

    @property
    def tokenizer(self) -> Tokenizer:
        """The BM25 tokenizer the index was built with."""
        return self.bm25.tokenizer

    @property
    def encoder_model(self) -> str | None:
        """The embedding model the index was built with (``None``: no dense part)."""
        model = self.manifest["settings"].get("encoder")
        return str(model) if model else None

    @property
    def encoder_identity(self) -> str | None:
        """Identity of that model when the index was built (query encoders must match it)."""
        ident = self.manifest["settings"].get("encoder_identity")
        return str(ident) if ident else None


def open_index(folder: str | Path) -> OpenIndex:
    """Open the index in ``folder`` for search (nothing is encoded)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise DataError(
            f"no index here ({MANIFEST} missing); build one with: rerankflow index SOURCES -o {folder}", file=folder
        )
    settings = manifest["settings"]
    dense = bool(settings.get("encoder"))
    data = load_segments(folder, manifest["segments"], dense)
    if not data.chunks:
        raise DataError("the index has no documents; add some with: rerankflow index SOURCES -o DIR", file=folder)
    try:
        tokenizer = Tokenizer(**settings["tokenizer"])
        tokenizer("check")
    except (ValueError, TypeError, KeyError) as exc:
        raise DataError(
            f"corrupt index manifest: settings.tokenizer: {exc}; {REBUILD}", file=folder / MANIFEST
        ) from None
    bm25 = BM25Index.from_counts(data.chunks, data.tf, data.vocab, tokenizer)
    ann = None
    if dense and manifest.get("ann"):
        try:
            import faiss
        except ImportError as exc:
            raise MissingDependencyError("faiss-cpu", "faiss") from exc
        try:
            ann = faiss.read_index(str(folder / manifest["ann"]["file"]))
        except RuntimeError as exc:  # faiss reports unreadable files this way
            raise DataError(f"cannot read the approximate index ({exc}); {REBUILD}", file=folder) from None
        if ann.ntotal != len(data.chunks):
            raise DataError("the approximate index does not match the chunks; rebuild with --rebuild", file=folder)
    return OpenIndex(folder, manifest, data.chunks, bm25, data.embeddings, ann)
