"""Rankings and result tables as pandas DataFrames in PyTerrier's column names."""

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rerankflow.errors import DataError
from rerankflow.eval.experiment import Experiment
from rerankflow.io import demo_dataset, rankings_from_frame, rankings_to_frame
from rerankflow.retrievers.bm25 import BM25Retriever
from rerankflow.types import Candidate, Document, Query, Ranking

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@st.composite
def rankings(draw):
    out = []
    for q in range(draw(st.integers(1, 4))):
        n = draw(st.integers(0, 5))
        scores = sorted(draw(st.lists(st.floats(-1e6, 1e6), min_size=n, max_size=n, unique=True)), reverse=True)
        docs = [Document(f"d{q}-{i}", draw(texts), draw(st.one_of(st.none(), texts.filter(bool)))) for i in range(n)]
        out.append(Ranking(Query(f"q{q}", draw(texts)), tuple(Candidate(d, s, "x") for d, s in zip(docs, scores))))
    return out


@settings(max_examples=60, deadline=None, derandomize=True)
@given(rankings())
def test_rankings_survive_a_round_trip_through_a_frame(original):
    frame = rankings_to_frame(original)
    assert list(frame.columns[:6]) == ["qid", "query", "docno", "text", "score", "rank"]
    back = rankings_from_frame(frame)
    queries_with_docs = [r for r in original if len(r)]
    assert [r.query.qid for r in back] == [r.query.qid for r in queries_with_docs]  # a frame has no empty queries
    for a, b in zip(queries_with_docs, back, strict=True):
        assert a.query == b.query and a.docids == b.docids
        assert [c.score for c in a.candidates] == [c.score for c in b.candidates]
        assert [(c.doc.text, c.doc.title) for c in a.candidates] == [(c.doc.text, c.doc.title) for c in b.candidates]


def test_a_pyterrier_style_frame_orders_by_rank_then_score_and_checks_its_columns():
    frame = pd.DataFrame(
        {"qid": ["1", "1", "2"], "query": ["cats", "cats", "dogs"], "docno": ["a", "b", "c"], "score": [1.0, 3.0, 2.0]}
    )
    one, two = rankings_from_frame(frame)
    assert one.docids == ["b", "a"] and two.docids == ["c"] and one.candidates[0].doc.text == ""
    ranked = frame.assign(rank=[0, 1, 0])
    assert rankings_from_frame(ranked)[0].docids == ["a", "b"]  # rank wins over score
    with pytest.raises(DataError, match=r"lacks the columns \['docno'\]"):
        rankings_from_frame(frame.drop(columns=["docno"]))
    with pytest.raises(DataError, match="two texts"):
        rankings_from_frame(frame.assign(query=["cats", "kittens", "dogs"]))


def test_experiment_tables_as_frames():
    corpus, topics, qrels = demo_dataset()
    result = Experiment(
        {"bm25": BM25Retriever(corpus, k=10), "short": BM25Retriever(corpus, k=3)}, topics[:5], qrels, ["nDCG@10", "R@10"],
        baseline="bm25",
    ).run()  # fmt: skip
    table = result.to_frame()
    assert list(table["system"]) == ["bm25", "short"]
    assert table.loc[1, "nDCG@10"] == pytest.approx(result.systems[1].means["nDCG@10"])
    assert "nDCG@10 p_ttest" in table.columns and "R@10 degraded" in table.columns
    long = result.per_query_frame()
    assert set(long.columns) == {"system", "qid", "measure", "value"}
    assert len(long) == sum(len(v) for s in result.systems for v in s.per_query.values())
    short = long[(long.system == "short") & (long.measure == "R@10")].set_index("qid")["value"]
    assert short.to_dict() == result.systems[1].per_query["R@10"]
    frame = rankings_to_frame(result.systems[0].rankings)
    assert frame.groupby("qid")["rank"].min().eq(0).all() and len(frame) == sum(
        len(r) for r in result.systems[0].rankings
    )
