"""PyTerrier both ways (its core package; no Java): rerankflow stages as pt.Transformers inside
PyTerrier pipelines and experiments, PyTerrier transformers inside rerankflow pipelines, and the
same numbers through both on the DL19 BM25 hits (shared data; MiniLM bi-encoder)."""

import pandas as pd
import pytest

from rerankflow.eval.measures import evaluate
from rerankflow.io import demo_dataset, rankings_to_frame
from rerankflow.io.trec import rankings_to_run
from rerankflow.retrievers.bm25 import BM25Retriever
from rerankflow.types import Ranking

pt = pytest.importorskip("pyterrier", reason="pyterrier (core, no Java) is in the dev extra")


@pytest.fixture(scope="module")
def demo():
    return demo_dataset()


def test_a_rerankflow_retriever_is_a_pyterrier_transformer(demo):
    from rerankflow.serve.pyterrier import as_pyterrier

    corpus, topics, _ = demo
    bm25 = BM25Retriever(corpus, k=10)
    queries = pd.DataFrame({"qid": [q.qid for q in topics[:3]], "query": [q.text for q in topics[:3]]})
    out = as_pyterrier(bm25).transform(queries)
    expected = rankings_to_frame(bm25.search(topics[:3]))
    pd.testing.assert_frame_equal(out, expected)
    cut = (as_pyterrier(bm25) % 3).transform(queries)  # PyTerrier's own rank cutoff operator
    assert cut.groupby("qid").size().eq(3).all() and set(cut.docno) <= set(out.docno)


def test_a_pyterrier_transformer_is_a_rerankflow_stage(demo):
    from rerankflow.serve.pyterrier import from_pyterrier

    corpus, topics, _ = demo
    by_length = from_pyterrier(pt.apply.doc_score(lambda row: float(len(row["text"]))), name="length")
    (ranking,) = (BM25Retriever(corpus, k=5) >> by_length)([Ranking(topics[0])])
    assert [c.score for c in ranking.candidates] == sorted(
        (float(len(c.doc.text)) for c in ranking.candidates), reverse=True
    )
    assert all(c.stage == "length" and c.history[0][0] == "bm25" for c in ranking.candidates)
    assert ranking.candidates[0].doc.title  # the document (title, metadata) is rerankflow's own


@pytest.mark.slow  # MiniLM over DL19's BM25 top-20
@pytest.mark.shared_data
def test_the_same_numbers_through_both_on_dl19(trec_dl, minilm):
    from rerankflow.io.jsonl import read_hits
    from rerankflow.io.trec import read_qrels
    from rerankflow.rerankers.biencoder import BiEncoderReranker
    from rerankflow.serve.pyterrier import as_pyterrier

    hits = [r.top(20) for r in read_hits(trec_dl / "bm25_dl19.json")]
    qrels = read_qrels(trec_dl / "qrels.dl19-passage.txt")
    hits = [r for r in hits if r.query.qid in qrels]
    reranker = BiEncoderReranker(minilm)
    direct = reranker(hits)
    ours = evaluate(["nDCG@10", "RR(rel=2)@10"], qrels, rankings_to_run(direct))
    frame = rankings_to_frame(hits)
    through_pt = pt.Transformer.from_df(frame) >> as_pyterrier(reranker)
    qrels_frame = pd.DataFrame([(q, d, g) for q, docs in qrels.items() for d, g in docs.items()],
                               columns=["qid", "docno", "label"])  # fmt: skip
    topics = frame[["qid", "query"]].drop_duplicates()
    from ir_measures import RR, nDCG

    table = pt.Experiment([through_pt], topics, qrels_frame, [nDCG @ 10, RR(rel=2) @ 10], names=["minilm"])
    assert table.loc[0, "nDCG@10"] == pytest.approx(ours["nDCG@10"], abs=1e-9)
    assert table.loc[0, "RR(rel=2)@10"] == pytest.approx(ours["RR(rel=2)@10"], abs=1e-9)
    assert ours["nDCG@10"] > 0.5  # MiniLM on BM25's top 20 of DL19 (BM25 alone: 0.506)
