"""Dense retrieval: normalised embeddings, exact inner-product search (numpy) or FAISS."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from ..backends.embeddings import TextEncoder
from ..errors import DataError, MissingDependencyError
from ..io.files import atomic_write, atomic_write_binary
from ..options import StageOptions
from ..paths import cache_home, corpus_fingerprint
from ..stage import Retriever
from ..types import Candidate, Document, Query, Ranking, document_text
from .filters import FilteredSearch, MaskCache, combine

log = logging.getLogger(__name__)


class DenseOptions(StageOptions):
    """Dense retrieval over the dataset's corpus (exact inner product, optional FAISS)."""

    k: int = Field(100, ge=1, description="candidates returned per query")
    faiss: bool = Field(False, description="search with a FAISS flat index (needs faiss-cpu)")
    cache: bool = Field(True, description="cache corpus embeddings on disk")
    query_batch_size: int = Field(256, ge=1, description="queries encoded and searched at once")
    filter: dict[str, Any] | None = Field(
        None, description="metadata filter applied inside retrieval (rerankflow.retrievers.filters)"
    )


class DenseRetriever(FilteredSearch, Retriever):
    """Exact top-``k`` by inner product of normalised embeddings (= cosine).

    Corpus embeddings are cached in ``cache_dir`` (default ``$RERANKFLOW_HOME/embeddings``)
    under a key made of the encoder identity and the corpus fingerprint, so a second run on
    the same corpus skips encoding. ``faiss`` swaps the numpy search for a FAISS
    ``IndexFlatIP`` (same results, needs ``faiss-cpu``). Settings: :class:`DenseOptions`.
    """

    stage_name = "dense"
    shown = ("encoder",)

    Options = DenseOptions
    # Given ``embeddings`` (a saved index's) are used as they are and nothing is encoded; a
    # given ``ann`` (a FAISS index over them) answers unfiltered queries; filtered ones are
    # searched exactly over the documents that pass the filter, so ``k`` results come back.

    def __init__(
        self,
        corpus: Sequence[Document],
        encoder: TextEncoder,
        options: DenseOptions | None = None,
        *,
        cache_dir: str | Path | None = None,
        embeddings: np.ndarray | None = None,
        ann: Any = None,
        **settings: Any,
    ) -> None:
        self.options = DenseOptions.build(options, settings, "dense")
        self.corpus = list(corpus)
        if not self.corpus:
            raise DataError("the corpus is empty: dense retrieval needs at least one document")
        self.encoder = encoder
        self.cache_dir = Path(cache_dir) if cache_dir is not None else cache_home() / "embeddings"
        if embeddings is not None and embeddings.shape[0] != len(self.corpus):
            raise DataError(f"{embeddings.shape[0]} embeddings for {len(self.corpus)} documents; rebuild the index")
        self._emb: np.ndarray | None = embeddings
        self._faiss: Any = ann
        self._masks = MaskCache(self.corpus)

    def cache_path(self) -> Path:
        """File that holds (or will hold) this corpus's embeddings."""
        key = hashlib.sha256(f"{self.encoder.identity}\n{corpus_fingerprint(self.corpus)}".encode()).hexdigest()[:32]
        return self.cache_dir / f"{key}.npy"

    def load(self) -> None:
        """Encode the corpus or load its cached embeddings; build the FAISS index if asked."""
        if self._emb is not None:
            return
        path = self.cache_path() if self.options.cache else None
        if path is not None and path.is_file():
            emb = np.load(path, allow_pickle=False)
            if emb.shape[0] == len(self.corpus) and emb.dtype == np.float32:
                self._emb = emb
                log.info("loaded %d cached embeddings from %s", len(emb), path)
            else:
                log.warning("ignoring cached embeddings with unexpected shape %s at %s", emb.shape, path)
        if self._emb is None:
            self._emb = self.encoder.encode([document_text(d) for d in self.corpus], desc="dense: encoding corpus")
            if path is not None:
                _save_array(
                    path,
                    self._emb,
                    {"encoder": self.encoder.identity, "documents": len(self.corpus)},
                )
        if self.options.faiss:
            try:
                import faiss
            except ImportError as exc:
                raise MissingDependencyError("faiss-cpu", "faiss") from exc
            index = faiss.IndexFlatIP(self._emb.shape[1])
            index.add(self._emb)
            self._faiss = index

    def _retrieve(self, queries: Sequence[Query]) -> list[Ranking]:
        """Top ``k`` documents of each query by cosine similarity."""
        out: list[Ranking] = []
        k = min(self.options.k, len(self.corpus))
        for start in range(0, len(queries), self.options.query_batch_size):
            chunk = queries[start : start + self.options.query_batch_size]
            qemb = self.encoder.encode([q.text for q in chunk], desc="dense: encoding queries")
            filters = [combine(self.options.filter, q.filter) for q in chunk]
            ids: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(chunk)
            scores: list[np.ndarray] = [np.empty(0)] * len(chunk)
            plain = [row for row, flt in enumerate(filters) if flt is None]
            if plain:  # unfiltered queries are searched together; a filtered one over what passes
                found = self._search(qemb[plain], k)
                for j, row in enumerate(plain):
                    ids[row], scores[row] = found[0][j], found[1][j]
            for row, flt in enumerate(filters):
                if flt is not None:
                    ids[row], scores[row] = self._search_allowed(qemb[row], self._masks.allowed(flt), k)
            for q, row_ids, row_scores in zip(chunk, ids, scores, strict=True):
                cands = tuple(
                    Candidate(self.corpus[i], float(s), "dense")
                    for i, s in zip(row_ids, row_scores, strict=True)
                    if i >= 0
                )
                out.append(Ranking(q, cands))
        return out

    def _search_allowed(self, qvec: np.ndarray, allowed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over the documents ``allowed`` marks (a filtered query)."""
        emb = self._emb
        if emb is None:
            raise DataError("dense index is not loaded; call load() first")
        ids = np.flatnonzero(allowed)
        return _top_rows(emb[ids] @ qvec, ids, k)

    def _search(self, qemb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._faiss is not None:
            scores, ids = self._faiss.search(qemb, k)
            return ids, scores
        emb = self._emb
        if emb is None:
            raise DataError("dense index is not loaded; call load() first")
        sims = qemb @ emb.T
        part = (
            np.argpartition(-sims, k - 1, axis=1)[:, :k]
            if k < sims.shape[1]
            else np.tile(np.arange(sims.shape[1]), (len(sims), 1))
        )
        rows = np.arange(len(sims))[:, None]
        top = sims[rows, part]
        order = np.lexsort((part, -top), axis=1)
        ids = part[rows, order]
        return ids, sims[rows, ids]


def _top_rows(sims: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of one query's similarities (ties by smaller id), as ids and scores."""
    if ids.size > k:
        part = np.argpartition(-sims, k - 1)[:k]
        sims, ids = sims[part], ids[part]
    order = np.lexsort((ids, -sims))
    return ids[order], sims[order]


def _save_array(path: Path, arr: np.ndarray, meta: dict[str, Any]) -> None:
    """Save atomically (temp file + rename) so a crash never leaves a half-written cache."""
    with atomic_write_binary(path) as fh:
        np.save(fh, arr, allow_pickle=False)
    with atomic_write(path.with_suffix(".json")) as fh:
        json.dump(meta, fh)
