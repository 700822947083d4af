"""Pointwise yes/no reranking: control flow on the fake backend, end to end on real SmolLM2 (vLLM)."""

import json
import math

import pytest

from rerankflow import Ranking
from rerankflow.errors import ConfigError
from rerankflow.eval.trace import usage_total
from rerankflow.pipelines.job import load_job_text
from rerankflow.pipelines.runner import run_job
from rerankflow.rerankers.pointwise import PointwiseReranker
from rerankflow.retrievers.bm25 import BM25Retriever
from rerankflow.testing.fake import FakeBackend, prompt_text


def judge(prompt, labels):
    """Says yes to passages mentioning 'fusion' (a scripted relevance rule)."""
    yes = -0.1 if "fusion" in prompt_text(prompt).split("Passage:")[1].lower() else -3.0
    return {"yes": yes, "no": -1.0}


def test_scores_sort_and_account_per_query(demo):
    corpus, queries, _ = demo
    fake = FakeBackend(labels=judge)
    rr = PointwiseReranker(fake, max_passage_tokens=None)
    out = (BM25Retriever(corpus, k=8) >> rr)([Ranking(q) for q in queries[:3]])
    for r in out:
        assert len(r) == 8 and [c.score for c in r.candidates] == sorted((c.score for c in r.candidates), reverse=True)
        top = r.candidates[0]
        assert set(top.scores()) == {"bm25", "pointwise"}
        if "fusion" in top.doc.text.lower():
            assert top.score == pytest.approx(0.9)
    assert {r.query.qid: usage_total([r]).calls for r in out} == {q.qid: 8 for q in queries[:3]}
    assert usage_total(out).calls == 24 == fake.ledger.calls


def test_p_yes_and_truncation_and_errors():
    fake = FakeBackend(labels=lambda p, labels: {"yes": math.log(0.3), "no": math.log(0.1)})
    rr = PointwiseReranker(fake, score="p_yes", max_passage_tokens=3)
    from rerankflow import Candidate, Document, Query

    r = Ranking(Query("q", "x"), (Candidate(Document("d", "one two three four five"), 0.0),))
    (out,) = rr([r])
    assert out.candidates[0].score == pytest.approx(0.75)
    assert prompt_text(fake.seen[0]).count("one two three") == 1 and "four" not in prompt_text(fake.seen[0])
    assert rr([Ranking(Query("e", "x"))])[0].candidates == ()
    with pytest.raises(ConfigError, match="placeholders query and passage"):
        PointwiseReranker(fake, "listwise")
    with pytest.raises(ConfigError, match="numeric grade labels"):
        PointwiseReranker(fake, "pointwise-yes-no", mode="grade")
    with pytest.raises(ConfigError, match=r"pointwise: mode: Input should be 'yes_no', 'grade' or 'query_likelihood'"):
        PointwiseReranker(fake, mode="listwise")  # type: ignore[arg-type]


def test_grade_mode_is_the_expected_grade():
    grades = {"0": 0.1, "1": 0.1, "2": 0.2, "3": 0.2, "4": 0.4}
    fake = FakeBackend(labels=lambda p, labels: {g: math.log(grades[g]) - 2.0 for g in labels})
    from rerankflow import Candidate, Document, Query

    r = Ranking(Query("q", "x"), (Candidate(Document("d", "text"), 0.0),))
    (out,) = PointwiseReranker(fake, mode="grade")([r])
    assert out.candidates[0].score == pytest.approx(0.1 + 0.4 + 0.6 + 1.6)


def test_query_likelihood_mode_uses_the_mean_query_logprob():
    def cont(prompt, continuation):
        return (
            [-0.5] * len(continuation.split())
            if "fusion" in prompt_text(prompt)
            else [-2.0] * len(continuation.split())
        )

    fake = FakeBackend(continuation=cont)
    from rerankflow import Candidate, Document, Query

    docs = (Candidate(Document("a", "about tokenizers"), 0.0), Candidate(Document("b", "about rank fusion"), 0.0))
    (out,) = PointwiseReranker(fake, mode="query_likelihood")([Ranking(Query("q", "what is rrf"), docs)])
    assert out.docids == ["b", "a"] and out.candidates[0].score == pytest.approx(-0.5)
    assert "what is rrf" not in prompt_text(fake.seen[0])  # the query is scored, never shown


@pytest.mark.slow
def test_pointwise_job_end_to_end_on_vllm(vllm_backend, smollm2, tmp_path):
    """A YAML job with the real model: complete rankings, usage printed and stored, deterministic."""
    job = load_job_text(
        f"""
name: pw
dataset: {{builtin: demo, limit: 2}}
pipelines:
  bm25: [bm25: {{k: 4}}]
  pointwise:
    - bm25: {{k: 4}}
    - pointwise:
        backend: {{kind: vllm, model: "{smollm2}", options: {{enforce_eager: true, gpu_memory_utilization: 0.3, max_model_len: 2048}}}}
        max_passage_tokens: 48
  grade:
    - bm25: {{k: 4}}
    - pointwise:
        backend: {{kind: vllm, model: "{smollm2}", options: {{enforce_eager: true, gpu_memory_utilization: 0.3, max_model_len: 2048}}}}
        mode: grade
        max_passage_tokens: 48
  ql:
    - bm25: {{k: 4}}
    - pointwise:
        backend: {{kind: vllm, model: "{smollm2}", options: {{enforce_eager: true, gpu_memory_utilization: 0.3, max_model_len: 2048}}}}
        mode: query_likelihood
        max_passage_tokens: 48
measures: [nDCG@10]
baseline: bm25
"""
    )
    from rerankflow.backends.factory import backend_key
    from rerankflow.resources import ResourcePool

    pool = ResourcePool()  # hand the session's engine to the job under its config's key
    pool.get(backend_key(job.pipelines["pointwise"][1].config.backend), lambda: vllm_backend)
    first = run_job(job, tmp_path, tmp_path / "a", resources=pool).result
    second = run_job(job, tmp_path, tmp_path / "b", resources=pool).result
    pw = next(s for s in first.systems if s.name == "pointwise")
    assert all(len(r) == 4 and len(set(r.docids)) == 4 for r in pw.rankings)
    assert pw.usage["pointwise"]["total"]["calls"] == 8
    assert set(pw.usage["pointwise"]["per_query"]) == {r.query.qid for r in pw.rankings}
    assert "LLM calls/q" in first.table()
    stored = json.loads((tmp_path / "a" / "results.json").read_text())
    assert (
        next(s for s in stored["systems"] if s["name"] == "pointwise")["usage"]["pointwise"]["total"]["prompt_tokens"]
        > 0
    )
    for name in ("pointwise", "grade", "ql"):
        sys_a = next(s for s in first.systems if s.name == name)
        sys_b = next(s for s in second.systems if s.name == name)
        assert all(sorted(r.docids) == sorted(b.docids) for r, b in zip(sys_a.rankings, sys_b.rankings))
        assert [r.docids for r in sys_a.rankings] == [r.docids for r in sys_b.rankings]  # deterministic
        assert sys_a.usage["pointwise"]["total"]["calls"] == 8
    grade = next(s for s in first.systems if s.name == "grade")
    assert all(0.0 <= c.score <= 4.0 for r in grade.rankings for c in r.candidates)
    ql = next(s for s in first.systems if s.name == "ql")
    assert all(c.score < 0 for r in ql.rankings for c in r.candidates)
