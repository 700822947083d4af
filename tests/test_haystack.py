"""Haystack adapters inside a real Haystack Pipeline (haystack-ai 3.x): a rerankflow
retriever feeding a rerankflow ranker, serialised and loaded back by Haystack, with the same
documents as the rerankflow pipeline run directly (real MiniLM bi-encoder)."""

import pytest

from rerankflow.errors import ConfigError
from rerankflow.pipelines.runner import load_pipeline
from rerankflow.types import Query, Ranking

haystack = pytest.importorskip("haystack", reason="haystack-ai is in the dev extra")
pytestmark = pytest.mark.slow  # loads MiniLM

JOB = """name: hs
dataset: {builtin: demo}
pipelines:
  search: [bm25: {k: 8}]
  rank: [biencoder: {model: all-minilm-l6-v2}]
  both: [bm25: {k: 8}, biencoder: {model: all-minilm-l6-v2}]
"""
QUESTION = "how does reciprocal rank fusion combine rankings?"


def test_retriever_and_ranker_in_a_haystack_pipeline_survive_serialisation(tmp_path, minilm):
    from rerankflow.serve.haystack import RerankflowRanker, RerankflowRetriever

    job = tmp_path / "job.yaml"
    job.write_text(JOB)
    pipe = haystack.Pipeline()
    pipe.add_component("retriever", RerankflowRetriever(str(job), "search", top_k=8))
    pipe.add_component("ranker", RerankflowRanker(str(job), "rank", top_k=3))
    pipe.connect("retriever.documents", "ranker.documents")
    out = pipe.run({"retriever": {"query": QUESTION}, "ranker": {"query": QUESTION}})["ranker"]["documents"]
    (direct,) = load_pipeline(job, "both")([Ranking(Query("q", QUESTION))])
    assert [d.id for d in out] == direct.docids[:3]
    assert [d.score for d in out] == pytest.approx([c.score for c in direct.candidates[:3]], abs=1e-5)
    assert out[0].meta["rank"] == 0 and set(out[0].meta["scores"]) == {"input", "biencoder"} and out[0].meta["title"]
    with pytest.raises(haystack.core.errors.DeserializationError, match="allowlist"):
        haystack.Pipeline.loads(pipe.dumps())  # Haystack trusts no module it was not told to
    again = haystack.Pipeline.loads(pipe.dumps(), allowed_modules=["rerankflow.serve.haystack"])
    out2 = again.run({"retriever": {"query": QUESTION}, "ranker": {"query": QUESTION}})["ranker"]["documents"]
    assert [d.id for d in out2] == [d.id for d in out]
    data = again.get_component("ranker").to_dict()
    assert data["init_parameters"] == {"job": str(job), "pipeline": "rank", "top_k": 3}


def test_a_ranker_keeps_haystack_metadata_and_refuses_the_wrong_pipeline(tmp_path, minilm):
    from rerankflow.serve.haystack import RerankflowRanker, RerankflowRetriever

    job = tmp_path / "job.yaml"
    job.write_text(JOB)
    ranker = RerankflowRanker(str(job), "rank")
    docs = [haystack.Document(content="BM25 saturates term frequency", meta={"file": "a.md"}),
            haystack.Document(content="Reciprocal rank fusion sums one over k plus rank", meta={"file": "b.md"})]  # fmt: skip
    ranked = ranker.run(query=QUESTION, documents=docs, top_k=1)["documents"]
    assert len(ranked) == 1 and ranked[0].meta["file"] == "b.md" and ranked[0].id == docs[1].id
    assert ranker.run(query=QUESTION, documents=[])["documents"] == []
    with pytest.raises(ConfigError, match="retrieves; a ranker"):
        RerankflowRanker(str(job), "search")
    with pytest.raises(ConfigError, match="retrieves nothing"):
        RerankflowRetriever(str(job), "rank")
    with pytest.raises(ConfigError, match="distinct ids"):
        ranker.run(query=QUESTION, documents=[docs[0], docs[0]])
