"""Pointwise yes/no reranking: control flow on the fake backend, end to end on real SmolLM2 (vLLM)."""

import json
import math

import pytest

from rerankflow import Ranking
from rerankflow.backends.fake import FakeBackend, prompt_text
from rerankflow.errors import ConfigError
from rerankflow.pipelines.job import load_job_text
from rerankflow.pipelines.runner import run_job
from rerankflow.rerankers.pointwise import PointwiseYesNoReranker
from rerankflow.retrievers.bm25 import BM25Retriever


def judge(prompt, labels):
    """Says yes to passages mentioning 'fusion' (a scripted relevance rule)."""
    yes = -0.1 if "fusion" in prompt_text(prompt).split("Passage:")[1].lower() else -3.0
    return {"yes": yes, "no": -1.0}


def test_scores_sort_and_account_per_query(demo):
    corpus, queries, _ = demo
    fake = FakeBackend(labels=judge)
    rr = PointwiseYesNoReranker(fake, max_passage_tokens=None)
    out = (BM25Retriever(corpus, k=8) >> rr)([Ranking(q) for q in queries[:3]])
    for r in out:
        assert len(r) == 8 and [c.score for c in r.candidates] == sorted((c.score for c in r.candidates), reverse=True)
        top = r.candidates[0]
        assert set(top.scores()) == {"bm25", "pointwise"}
        if "fusion" in top.doc.text.lower():
            assert top.score == pytest.approx(0.9)
    assert {q: u.calls for q, u in rr.usage.by_query.items()} == {q.qid: 8 for q in queries[:3]}
    assert rr.usage.total().calls == 24 == fake.ledger.calls


def test_p_yes_and_truncation_and_errors():
    fake = FakeBackend(labels=lambda p, labels: {"yes": math.log(0.3), "no": math.log(0.1)})
    rr = PointwiseYesNoReranker(fake, score="p_yes", max_passage_tokens=3)
    from rerankflow import Candidate, Document, Query

    r = Ranking(Query("q", "x"), (Candidate(Document("d", "one two three four five"), 0.0),))
    (out,) = rr([r])
    assert out.candidates[0].score == pytest.approx(0.75)
    assert prompt_text(fake.seen[0]).count("one two three") == 1 and "four" not in prompt_text(fake.seen[0])
    assert rr([Ranking(Query("e", "x"))])[0].candidates == ()
    with pytest.raises(ConfigError, match="two labels"):
        PointwiseYesNoReranker(fake, "listwise")


@pytest.mark.slow
def test_pointwise_job_end_to_end_on_vllm(vllm_backend, smollm2, tmp_path):
    """A YAML job with the real model: complete rankings, usage printed and stored, deterministic."""
    job = load_job_text(
        f"""
name: pw
dataset: {{builtin: demo, limit: 3}}
pipelines:
  bm25: [bm25: {{k: 5}}]
  pointwise:
    - bm25: {{k: 5}}
    - pointwise:
        backend: {{kind: vllm, model: "{smollm2}", options: {{enforce_eager: true, gpu_memory_utilization: 0.3, max_model_len: 2048}}}}
        max_passage_tokens: 64
measures: [nDCG@10]
baseline: bm25
"""
    )
    from rerankflow.backends.factory import backend_key
    from rerankflow.registry import ResourcePool

    pool = ResourcePool()  # hand the session's engine to the job under its config's key
    pool.get(backend_key(job.pipelines["pointwise"][1].config.backend), lambda: vllm_backend)
    first = run_job(job, tmp_path, tmp_path / "a", resources=pool).result
    second = run_job(job, tmp_path, tmp_path / "b", resources=pool).result
    pw = next(s for s in first.systems if s.name == "pointwise")
    assert all(len(r) == 5 and len(set(r.docids)) == 5 for r in pw.rankings)
    assert pw.usage["pointwise"]["total"]["calls"] == 15
    assert set(pw.usage["pointwise"]["per_query"]) == {r.query.qid for r in pw.rankings}
    assert "LLM calls/q" in first.table()
    stored = json.loads((tmp_path / "a" / "results.json").read_text())
    assert (
        next(s for s in stored["systems"] if s["name"] == "pointwise")["usage"]["pointwise"]["total"]["prompt_tokens"]
        > 0
    )
    again = next(s for s in second.systems if s.name == "pointwise")
    assert [r.docids for r in again.rankings] == [r.docids for r in pw.rankings]
