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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from ..errors import DataError, MissingDependencyError
from ..io.jsonl import read_documents
from ..retrievers.bm25 import BM25Index
from ..retrievers.tokenize import Tokenizer
from ..types import Document

INDEX_FORMAT = 1
MANIFEST = "manifest.json"


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of ``folder`` (``None`` when there is no index there yet)."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        fmt = manifest["format"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"corrupt index manifest ({exc}); rebuild the index with --rebuild", file=path) from exc
    if fmt != INDEX_FORMAT:
        raise DataError(f"index format {fmt} is not supported (expected {INDEX_FORMAT}); rebuild it", file=path)
    return dict(manifest)


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
        try:
            docs = read_documents(where / "chunks.jsonl")
            tf = sparse.load_npz(where / "tf.npz").tocsr()
            terms = json.loads((where / "vocab.json").read_text(encoding="utf-8"))
            emb = np.load(where / "embeddings.npy", mmap_mode="r", allow_pickle=False) if dense else None
        except (OSError, ValueError) as exc:
            raise DataError(
                f"segment {seg['name']} cannot be read ({exc}); rebuild with --rebuild", file=where
            ) from exc
        if tf.shape[0] != len(docs) or (emb is not None and emb.shape[0] != len(docs)):
            raise DataError(f"segment {seg['name']}: chunks, counts and vectors disagree in size", file=where)
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
    bm25 = BM25Index.from_counts(data.chunks, data.tf, data.vocab, Tokenizer(**settings["tokenizer"]))
    ann = None
    if dense and manifest.get("ann"):
        try:
            import faiss
        except ImportError as exc:
            raise MissingDependencyError("faiss-cpu", "faiss") from exc
        ann = faiss.read_index(str(folder / manifest["ann"]["file"]))
        if ann.ntotal != len(data.chunks):
            raise DataError("the approximate index does not match the chunks; rebuild with --rebuild", file=folder)
    return OpenIndex(folder, manifest, data.chunks, bm25, data.embeddings, ann)
