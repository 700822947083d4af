import random

import numpy as np
import pytest

from rerankflow import DataError, Document, Query
from rerankflow.errors import ConfigError
from rerankflow.retrievers.bm25 import BM25Index, BM25Retriever
from rerankflow.retrievers.tokenize import Tokenizer


def test_tokenizer_unicode_stopwords_stemming():
    tok = Tokenizer()
    assert tok("The Rankings of Café-Crème in Zürich") == ["rank", "café", "crème", "zürich"]
    assert Tokenizer(stopwords="none", stemmer="none")("The Ranked, the RANKS!") == ["the", "ranked", "the", "ranks"]
    assert Tokenizer(stemmer="none")("Привет мир, 東京") == ["привет", "мир", "東京"]


def synthetic_corpus(n_docs=400, seed=7):
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(300)]
    weights = [1 / (i + 1) for i in range(len(vocab))]
    docs = [Document(f"d{i}", " ".join(rng.choices(vocab, weights, k=rng.randint(3, 40)))) for i in range(n_docs)]
    queries = [Query(f"q{i}", " ".join(rng.choices(vocab, weights, k=rng.randint(1, 5)))) for i in range(60)]
    return docs, queries


def assert_same_results(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        sa = {c.docid: c.score for c in ra.candidates}
        sb = {c.docid: c.score for c in rb.candidates}
        # Same candidates (top-k) and the same score for each, to 1e-5.
        assert sa.keys() == sb.keys(), ra.query
        for d in sa:
            assert sa[d] == pytest.approx(sb[d], abs=1e-5)
        # Same order except possibly between exact ties.
        assert [round(c.score, 6) for c in ra.candidates] == [round(c.score, 6) for c in rb.candidates]


@pytest.mark.parametrize("variant", ["lucene", "okapi"])
@pytest.mark.parametrize("k1,b", [(0.9, 0.4), (1.5, 0.75), (1.2, 0.0)])
def test_parity_sparse_vs_rank_bm25_synthetic(variant, k1, b):
    docs, queries = synthetic_corpus()
    index = BM25Index(docs, Tokenizer(stopwords="none", stemmer="none"))
    fast = BM25Retriever(index, k=10, k1=k1, b=b, variant=variant)
    ref = BM25Retriever(index, k=10, k1=k1, b=b, variant=variant, engine="rank_bm25")
    assert_same_results(fast.retrieve(queries), ref.retrieve(queries))


@pytest.mark.parametrize("variant", ["lucene", "okapi"])
def test_parity_on_demo_collection(demo, variant):
    corpus, queries, _ = demo
    index = BM25Index(corpus)
    fast = BM25Retriever(index, k=20, variant=variant)
    ref = BM25Retriever(index, k=20, variant=variant, engine="rank_bm25")
    out = fast.retrieve(queries)
    assert all(0 < len(r) <= 20 for r in out)
    assert max(len(r) for r in out) == 20
    assert_same_results(out, ref.retrieve(queries))


def test_hand_computed_lucene_score():
    docs = [Document("a", "apple banana"), Document("b", "banana banana cherry"), Document("c", "date")]
    r = BM25Retriever(docs, k1=1.2, b=0.75, tokenizer=Tokenizer(stopwords="none", stemmer="none"))
    out = r.search(["apple"])[0]
    # N=3, n=1: idf = ln(1 + 2.5/1.5); |a|=2, avgdl=6/3=2 -> tf part = 1*2.2/(1+1.2)=1
    assert out.docids == ["a"]
    assert out.candidates[0].score == pytest.approx(np.log(1 + 2.5 / 1.5))


def test_only_matching_documents_are_returned_and_ties_keep_corpus_order():
    docs = [Document("x", "alpha"), Document("y", "beta"), Document("z", "alpha")]
    out = BM25Retriever(docs, tokenizer=Tokenizer(stemmer="none")).search(["alpha gamma", "gamma"])
    assert out[0].docids == ["x", "z"]
    assert out[1].docids == []


def test_index_persists_and_reloads(tmp_path, demo):
    corpus, queries, _ = demo
    original = BM25Retriever(corpus, k=10)
    original.save(tmp_path / "idx")
    reloaded = BM25Retriever.from_index(tmp_path / "idx", k=10)
    assert reloaded.tokenizer == original.tokenizer
    assert_same_results(original.retrieve(queries), reloaded.retrieve(queries))
    assert [r.docids for r in original.retrieve(queries)] == [r.docids for r in reloaded.retrieve(queries)]


def test_index_errors(tmp_path):
    with pytest.raises(DataError, match=r"meta\.json missing"):
        BM25Index.load(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupt index metadata"):
        BM25Index.load(tmp_path)
    with pytest.raises(DataError, match="corpus is empty"):
        BM25Retriever([])
    with pytest.raises(ConfigError, match=r"bm25: b: Input should be less than or equal to 1 \(got 2\)"):
        BM25Retriever([Document("a", "b")], b=2)


def test_empty_query_is_an_error():
    with pytest.raises(DataError, match="empty"):
        BM25Retriever([Document("a", "text")]).search(["   "])
