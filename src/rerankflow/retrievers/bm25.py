r"""BM25 retrieval with two engines behind one class.

Scoring (both engines, both variants): for query tokens :math:`q_1..q_m` (repeated tokens
count again, as in rank_bm25),

.. math:: s(d) = \sum_j \mathrm{idf}(q_j)\; \frac{tf(q_j, d)\,(k_1+1)}{tf(q_j, d) + k_1 (1 - b + b\,|d|/\overline{|d|})}

with :math:`|d|` the number of index terms of ``d`` after tokenisation. IDF variants, with
:math:`N` documents and :math:`n` of them containing the term:

* ``"lucene"`` (default): :math:`\ln(1 + (N - n + 0.5)/(n + 0.5))`, always positive (Lucene's
  BM25Similarity; Lucene also drops the constant :math:`k_1+1`, which does not change ranks).
* ``"okapi"``: rank_bm25's ``BM25Okapi``: :math:`\ln((N - n + 0.5)/(n + 0.5))`, and a
  negative value is replaced by ``epsilon`` times the mean IDF of the vocabulary.

Engines: ``"sparse"`` (default) precomputes the per-term document weights in a SciPy sparse
matrix and scores a query by summing the rows of its terms; ``"rank_bm25"`` runs the
reference package. Only documents containing at least one query term are returned; ties are
broken by corpus order. Defaults ``k1=0.9, b=0.4`` are Anserini's MS MARCO settings.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field
from scipy import sparse

from ..errors import ConfigError, DataError
from ..io.jsonl import read_documents, write_documents
from ..options import StageOptions
from ..progress import progress
from ..stage import Retriever
from ..types import Candidate, Document, Query, Ranking, document_text
from .filters import FilteredSearch, MaskCache, combine
from .tokenize import Tokenizer

Variant = Literal["lucene", "okapi"]
Engine = Literal["sparse", "rank_bm25"]
INDEX_FORMAT = 1


def idf_values(df: np.ndarray, n_docs: int, variant: Variant, epsilon: float) -> np.ndarray:
    """IDF of each term from its document frequency (see the module docstring)."""
    df = df.astype(np.float64)
    if variant == "lucene":
        return np.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))
    idf = np.log(n_docs - df + 0.5) - np.log(df + 0.5)
    floor = epsilon * (idf.sum() / len(idf)) if len(idf) else 0.0
    return np.where(idf < 0, floor, idf)


def count_terms(
    texts: Iterable[str], tokenizer: Tokenizer, vocab: dict[str, int] | None = None
) -> tuple[sparse.csr_matrix, dict[str, int]]:
    """Term counts of ``texts`` (texts x terms) and the vocabulary (term -> column); new terms
    are appended to ``vocab`` when one is given."""
    vocab = {} if vocab is None else vocab
    rows: list[int] = []
    cols: list[int] = []
    vals: list[int] = []
    n = 0
    for i, text in enumerate(texts):
        n = i + 1
        for term, count in Counter(tokenizer(text)).items():
            rows.append(i)
            cols.append(vocab.setdefault(term, len(vocab)))
            vals.append(count)
    shape = (n, max(len(vocab), 1))
    return sparse.csr_matrix((np.array(vals, dtype=np.float64), (rows, cols)), shape=shape), vocab


class BM25Index:
    """Tokenised corpus as a documents x terms count matrix; shared by retrievers whose
    scoring settings differ (k1, b, variant), saved to and loaded from a folder.
    """

    def __init__(self, corpus: Sequence[Document], tokenizer: Tokenizer | None = None) -> None:
        self.corpus = list(corpus)
        if not self.corpus:
            raise DataError("the corpus is empty: BM25 needs at least one document")
        self.tokenizer = tokenizer or Tokenizer()
        self.tf: sparse.csr_matrix | None = None
        self.vocab: dict[str, int] = {}

    @classmethod
    def from_counts(
        cls, corpus: Sequence[Document], tf: sparse.csr_matrix, vocab: dict[str, int], tokenizer: Tokenizer
    ) -> BM25Index:
        """An index from term counts made elsewhere (a saved index's segments): ``tf`` has one row
        per document of ``corpus`` and one column per ``vocab`` id."""
        index = cls(corpus, tokenizer)
        if tf.shape[0] != len(index.corpus) or tf.shape[1] < len(vocab):
            raise DataError("term counts, vocabulary and documents disagree in size; rebuild the index")
        index.tf, index.vocab = tf.tocsr(), dict(vocab)
        return index

    def build(self) -> BM25Index:
        """Tokenise every document and fill the count matrix (once)."""
        if self.tf is None:
            docs = progress(self.corpus, desc="bm25: indexing", unit="doc")
            self.tf, self.vocab = count_terms((document_text(d) for d in docs), self.tokenizer)
        return self

    def tokenized_corpus(self) -> list[list[str]]:
        """Every document's tokens (what the rank_bm25 reference engine consumes)."""
        return self.tokenizer.many(document_text(d) for d in progress(self.corpus, desc="bm25: tokenising", unit="doc"))

    def save(self, folder: str | Path) -> Path:
        """Write documents, vocabulary, counts and tokenizer settings to ``folder``."""
        self.build()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_documents(folder / "docs.jsonl", self.corpus)
        terms = [""] * len(self.vocab)
        for term, i in self.vocab.items():
            terms[i] = term
        (folder / "vocab.json").write_text(json.dumps(terms), encoding="utf-8")
        sparse.save_npz(folder / "tf.npz", self.tf)
        tok = {
            "lowercase": self.tokenizer.lowercase,
            "stopwords": self.tokenizer.stopwords,
            "stemmer": self.tokenizer.stemmer,
        }
        meta = {"format": INDEX_FORMAT, "tokenizer": tok, "documents": len(self.corpus)}
        (folder / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> BM25Index:
        """Read an index written by :meth:`save` (no pickle: JSON, JSONL and ``.npz``)."""
        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise DataError(
                f"no BM25 index here (meta.json missing); build one with BM25Index(corpus).save('{folder}')",
                file=folder,
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            tokenizer = Tokenizer(**meta["tokenizer"])
            fmt = meta["format"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"corrupt index metadata ({exc}); rebuild the index", file=meta_path) from exc
        if fmt != INDEX_FORMAT:
            raise DataError(
                f"index format {fmt} is not supported (expected {INDEX_FORMAT}); rebuild the index",
                file=meta_path,
            )
        index = cls(read_documents(folder / "docs.jsonl"), tokenizer)
        try:
            index.tf = sparse.load_npz(folder / "tf.npz").tocsr()
            terms = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"corrupt index files ({exc}); rebuild the index", file=folder) from exc
        index.vocab = {t: i for i, t in enumerate(terms)}
        if index.tf.shape[0] != len(index.corpus) or index.tf.shape[1] < len(index.vocab):
            raise DataError(
                "index term matrix, vocabulary and documents disagree in size; rebuild the index",
                file=folder,
            )
        return index


class BM25Options(StageOptions):
    """BM25 retrieval over the dataset's corpus (see rerankflow.retrievers.bm25)."""

    k: int = Field(100, ge=1, description="candidates returned per query")
    k1: float = Field(0.9, ge=0)
    b: float = Field(0.4, ge=0, le=1)
    variant: Variant = "lucene"
    epsilon: float = Field(0.25, description="okapi only: floor for negative IDF, as a fraction of the mean IDF")
    engine: Engine = "sparse"
    filter: dict[str, Any] | None = Field(
        None, description="metadata filter applied inside retrieval (rerankflow.retrievers.filters)"
    )


class BM25Retriever(FilteredSearch, Retriever):
    """BM25 over a :class:`BM25Index` (or a corpus, indexed on first use); ``engine`` picks
    the implementation, which gives the same results. Settings: :class:`BM25Options`.
    """

    stage_name = "bm25"

    Options = BM25Options

    def __init__(
        self,
        corpus: Sequence[Document] | BM25Index,
        options: BM25Options | None = None,
        *,
        tokenizer: Tokenizer | None = None,
        **settings: Any,
    ) -> None:
        self.options = BM25Options.build(options, settings, "bm25")
        if isinstance(corpus, BM25Index):
            if tokenizer is not None and tokenizer != corpus.tokenizer:
                raise ConfigError(
                    f"the index was built with {corpus.tokenizer}; a different tokenizer needs a new index"
                )
            self.index = corpus
        else:
            self.index = BM25Index(corpus, tokenizer)
        self._weights: sparse.csr_matrix | None = None  # terms x documents, BM25 weights
        self._ref: Any = None
        self._positive = False
        self._masks = MaskCache(self.index.corpus)

    @classmethod
    def from_index(cls, folder: str | Path, **params: Any) -> BM25Retriever:
        """Load a saved :class:`BM25Index`; ``params`` set k, k1, b, variant, engine."""
        return cls(BM25Index.load(folder), **params)

    @property
    def corpus(self) -> list[Document]:
        """The indexed documents."""
        return self.index.corpus

    @property
    def tokenizer(self) -> Tokenizer:
        """The index's tokenizer (queries are tokenised the same way)."""
        return self.index.tokenizer

    def load(self) -> None:
        """Build the engine's scoring structures (indexing the corpus if needed)."""
        if self.options.engine == "rank_bm25":
            self._build_reference()
        else:
            self._build_weights()

    def save(self, folder: str | Path) -> Path:
        """Save the underlying index (see :meth:`BM25Index.save`)."""
        return self.index.save(folder)

    def _build_weights(self) -> None:
        tf = self.index.build().tf
        if tf is None:
            raise DataError("BM25 index has no term matrix")
        n_docs = tf.shape[0]
        doc_len = np.asarray(tf.sum(axis=1)).ravel()
        avgdl = doc_len.mean() if doc_len.mean() > 0 else 1.0
        df = np.diff(tf.tocsc().indptr)
        idf = idf_values(df, n_docs, self.options.variant, self.options.epsilon)
        coo = tf.tocoo()
        norm = self.options.k1 * (1.0 - self.options.b + self.options.b * doc_len[coo.row] / avgdl)
        data = idf[coo.col] * coo.data * (self.options.k1 + 1.0) / (coo.data + norm)
        self._weights = sparse.csr_matrix((data, (coo.col, coo.row)), shape=(tf.shape[1], n_docs))
        self._positive = bool((data > 0).all())  # every posting adds to its document's score

    def _build_reference(self) -> None:
        from rank_bm25 import BM25Okapi

        tokenized = self.index.tokenized_corpus()
        if self.options.variant == "okapi":
            self._ref = BM25Okapi(tokenized, k1=self.options.k1, b=self.options.b, epsilon=self.options.epsilon)
        else:
            self._ref = _lucene_idf_okapi(tokenized, k1=self.options.k1, b=self.options.b)

    def _retrieve(self, queries: Sequence[Query]) -> list[Ranking]:
        """Top ``k`` documents of each query."""
        out = []
        for q in queries:
            flt = combine(self.options.filter, q.filter)
            ids, scores = self._search_one(self.tokenizer(q.text), self._masks.allowed(flt) if flt else None)
            cands = tuple(Candidate(self.corpus[i], float(s), "bm25") for i, s in zip(ids, scores, strict=True))
            out.append(Ranking(q, cands))
        return out

    def _search_one(self, tokens: list[str], allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` ids and scores; ``allowed`` (a mask over the corpus) restricts the candidates."""
        if self.options.engine == "rank_bm25":
            return self._search_reference(tokens, allowed)
        weights = self._weights
        if weights is None:
            raise DataError("BM25 weights are not built; call load() first")
        vocab = self.index.vocab
        counts = Counter(t for t in tokens if t in vocab)
        if not counts:
            return np.array([], dtype=np.int64), np.array([])
        term_ids = np.fromiter((vocab[t] for t in counts), dtype=np.int64)
        rows = weights[term_ids]
        lengths = np.diff(rows.indptr)
        qtf = np.fromiter(counts.values(), dtype=np.float64)
        contributions = rows.data if (qtf == 1).all() else rows.data * np.repeat(qtf, lengths)
        n_docs = weights.shape[1]
        scores = np.bincount(rows.indices, weights=contributions, minlength=n_docs)
        threshold = self._threshold(rows, lengths, scores, allowed) if self._positive else None
        if threshold is not None:
            # Every document scoring at least the k-th best score of a subset of the matches is a
            # candidate: this holds the true top k (ties included) and is found with one comparison
            # instead of marking and sorting every match.
            keep = scores >= threshold
            matched = np.flatnonzero(keep if allowed is None else keep & allowed)
            return _top_k(matched, scores[matched], self.options.k)
        hit = np.zeros(n_docs, dtype=bool)
        hit[rows.indices] = True  # documents containing a query term (a mask: no sort needed)
        if allowed is not None:
            hit &= allowed
        matched = np.flatnonzero(hit)
        return _top_k(matched, scores[matched], self.options.k)

    def _threshold(
        self, rows: sparse.csr_matrix, lengths: np.ndarray, scores: np.ndarray, allowed: np.ndarray | None
    ) -> float | None:
        """A lower bound of the k-th best score: the k-th best among the documents of the query
        term with the shortest postings (``None`` when they are fewer than k). Only valid when
        every posting weight is positive, so unmatched documents (score 0) stay below it."""
        j = int(np.argmin(lengths))
        seed = rows.indices[rows.indptr[j] : rows.indptr[j + 1]]
        if allowed is not None:
            seed = seed[allowed[seed]]
        if seed.size < self.options.k:
            return None
        found = scores[seed]
        kth = float(np.partition(found, seed.size - self.options.k)[seed.size - self.options.k])
        return kth if kth > 0 else None

    def _search_reference(self, tokens: list[str], allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        ref = self._ref
        scores = ref.get_scores(tokens)
        present = set(tokens)
        matched = np.array(
            [
                i
                for i, freqs in enumerate(ref.doc_freqs)
                if not present.isdisjoint(freqs) and (allowed is None or allowed[i])
            ],
            dtype=np.int64,
        )
        if matched.size == 0:
            return matched, np.array([])
        return _top_k(matched, np.asarray(scores)[matched], self.options.k)


def _top_k(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` by score, ties by smaller id (corpus order); deterministic."""
    if ids.size > k:
        kth = np.partition(-scores, k - 1)[k - 1]
        keep = -scores <= kth
        ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))[:k]
    return ids[order], scores[order]


def _lucene_idf_okapi(corpus: list[list[str]], k1: float, b: float) -> Any:
    """rank_bm25's BM25Okapi scoring loop with Lucene's IDF (the reference for ``variant="lucene"``)."""
    from rank_bm25 import BM25Okapi

    class LuceneIDFOkapi(BM25Okapi):
        def _calc_idf(self, nd: dict[str, int]) -> None:
            for word, freq in nd.items():
                self.idf[word] = math.log(1.0 + (self.corpus_size - freq + 0.5) / (freq + 0.5))

    return LuceneIDFOkapi(corpus, k1=k1, b=b)
