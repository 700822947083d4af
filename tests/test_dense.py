"""Dense retrieval and bi-encoder reranking on the real all-MiniLM-L6-v2 model."""

import numpy as np
import pytest

from rerankflow import Query, Ranking
from rerankflow.rerankers.biencoder import BiEncoderReranker
from rerankflow.retrievers.bm25 import BM25Retriever
from rerankflow.retrievers.dense import DenseRetriever
from rerankflow.types import document_text


class Counting:
    """Wraps the real encoder and counts the texts it encodes."""

    def __init__(self, inner):
        self.inner = inner
        self.texts = 0

    @property
    def identity(self):
        return self.inner.identity

    def encode(self, texts, *, desc=""):
        self.texts += len(texts)
        return self.inner.encode(texts, desc=desc)


def test_dense_scores_are_cosines_and_sorted(demo, minilm, tmp_path):
    corpus, queries, _ = demo
    r = DenseRetriever(corpus, minilm, k=5, cache_dir=tmp_path)
    (out,) = r.retrieve([queries[4]])
    assert len(out) == 5
    scores = [c.score for c in out.candidates]
    assert scores == sorted(scores, reverse=True)
    q = minilm.encode([queries[4].text])[0]
    d = minilm.encode([document_text(out.candidates[0].doc)])[0]
    assert float(q @ d) == pytest.approx(scores[0], abs=1e-5)
    assert np.linalg.norm(d) == pytest.approx(1.0, abs=1e-5)


def test_embedding_cache_is_reused(demo, minilm, tmp_path):
    corpus, queries, _ = demo
    first = Counting(minilm)
    a = DenseRetriever(corpus, first, k=3, cache_dir=tmp_path)
    out_a = a.retrieve(queries[:3])
    assert first.texts == len(corpus) + 3
    assert a.cache_path().is_file()
    second = Counting(minilm)
    b = DenseRetriever(corpus, second, k=3, cache_dir=tmp_path)
    out_b = b.retrieve(queries[:3])
    assert second.texts == 3  # queries only: the corpus came from the cache
    assert [r.docids for r in out_a] == [r.docids for r in out_b]
    changed = DenseRetriever(corpus[:-1], Counting(minilm), k=3, cache_dir=tmp_path)
    assert changed.cache_path() != a.cache_path()


def test_faiss_matches_numpy(demo, minilm, tmp_path):
    pytest.importorskip("faiss")
    corpus, queries, _ = demo
    exact = DenseRetriever(corpus, minilm, k=10, cache_dir=tmp_path).retrieve(queries)
    flat = DenseRetriever(corpus, minilm, k=10, cache_dir=tmp_path, faiss=True).retrieve(queries)
    for a, b in zip(exact, flat):
        assert [round(c.score, 4) for c in a.candidates] == [round(c.score, 4) for c in b.candidates]
        assert set(a.docids[:5]) == set(b.docids[:5])


def test_biencoder_reranks_and_keeps_bm25_scores(demo, minilm, tmp_path):
    corpus, queries, _ = demo
    pipeline = BM25Retriever(corpus, k=20) >> BiEncoderReranker(minilm)
    out = pipeline([Ranking(q) for q in queries])
    dense = DenseRetriever(corpus, minilm, k=len(corpus), cache_dir=tmp_path).retrieve(queries)
    for r, d in zip(out, dense):
        scores = {c.docid: c.score for c in d.candidates}
        for c in r.candidates:
            assert c.score == pytest.approx(scores[c.docid], abs=1e-4)
            assert set(c.scores()) == {"bm25", "biencoder"}
    assert out[0].candidates[0].stage == "biencoder"


def test_empty_rankings_and_empty_query(minilm, demo):
    rr = BiEncoderReranker(minilm)
    assert rr([Ranking(Query("q", "x"))])[0].candidates == ()
    from rerankflow import DataError

    with pytest.raises(DataError, match="empty"):
        DenseRetriever(demo[0], minilm).retrieve([Query("q", " ")])


def test_encoder_memo_encodes_each_text_once(minilm):
    from rerankflow.backends.embeddings import SentenceTransformerEncoder

    enc = SentenceTransformerEncoder("all-minilm-l6-v2", device="cpu", memo_size=3)
    enc._st = minilm._st  # reuse the loaded model; the memo is what is under test
    calls = []
    real = enc._encode
    enc._encode = lambda texts: calls.append(list(texts)) or real(texts)
    a = enc.encode(["x", "y", "x"])
    b = enc.encode(["y", "z"])
    assert calls == [["x", "y"], ["z"]]
    assert np.allclose(a[0], a[2]) and np.allclose(a[1], b[0])
    enc.encode(["w"])  # memo holds 3: "x" (least recent) is evicted
    enc.encode(["x"])
    assert calls[-1] == ["x"]
    assert np.allclose(enc.encode(["x"])[0], minilm.encode(["x"])[0], atol=1e-6)
