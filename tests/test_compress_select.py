"""Budget filter, context reordering and RAG answer metrics (issue 5, first pieces)."""

import pytest

from rerankflow import Candidate, Document, Query, Ranking
from rerankflow.compressors.select import BudgetFilter, Reorder, ends_order
from rerankflow.errors import ConfigError, DataError
from rerankflow.eval.rag import answer_in_context, best_subspan_em, normalize_answer, token_f1
from rerankflow.eval.trace import compression_of


class Words:
    """A tokenizer of whitespace words."""

    def count_tokens(self, text):
        return len(text.split())

    def truncate(self, text, max_tokens):
        return " ".join(text.split()[:max_tokens])


words = Words()


def ranking(lengths, scores=None):
    scores = scores or [10.0 - i for i in range(len(lengths))]
    return Ranking(
        Query("q", "x"),
        tuple(
            Candidate(Document(f"d{i}", " ".join(["w"] * n)), s, "bm25")
            for i, (n, s) in enumerate(zip(lengths, scores))
        ),
    )


def test_budget_keeps_best_first_and_skips_what_does_not_fit():
    f = BudgetFilter(tokenizer=words, max_tokens=10)
    (out,) = f([ranking([4, 8, 3, 2, 5])])
    assert out.docids == ["d0", "d2", "d3"] and compression_of(out).dropped == {"budget": 2}
    (stop,) = BudgetFilter(tokenizer=words, max_tokens=10, overflow="stop")([ranking([4, 8, 3])])
    assert stop.docids == ["d0"]
    (thr,) = BudgetFilter(tokenizer=words, max_tokens=100, min_score=8.5)([ranking([1, 1, 1])])
    assert thr.docids == ["d0", "d1"]
    (none,) = BudgetFilter(tokenizer=words, max_tokens=3)([ranking([4, 5])])
    assert none.candidates == ()
    assert BudgetFilter(tokenizer=words, max_tokens=3)([Ranking(Query("e", "x"))])[0].candidates == ()
    with pytest.raises(ConfigError, match="budget: max_tokens: Input should be greater than or equal to 1"):
        BudgetFilter(tokenizer=words, max_tokens=0)


def test_reorder_policies():
    assert ends_order(5) == [0, 2, 4, 3, 1] and ends_order(0) == []
    r = ranking([1] * 5)
    (ends,) = Reorder("ends")([r])
    assert ends.docids == ["d0", "d2", "d4", "d3", "d1"]
    first = r.with_candidates(c.rescored(-float(i), "rerank") for i, c in enumerate(reversed(r.candidates)))
    (orig,) = Reorder("original")([first])
    assert orig.docids == ["d0", "d1", "d2", "d3", "d4"]  # back to the first stage's order
    assert Reorder("relevance")([first])[0].docids == first.docids
    with pytest.raises(ConfigError, match="policy"):
        Reorder("middle")  # type: ignore[arg-type]


def test_answer_metrics():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert best_subspan_em("It is the Eiffel tower, in Paris.", ["Eiffel Tower"]) == 1.0
    assert best_subspan_em("Paris", ["Eiffel Tower", "tower"]) == 0.0
    assert token_f1("eiffel tower paris", ["Eiffel Tower"]) == pytest.approx(0.8)
    assert token_f1("nothing", ["Eiffel Tower"]) == 0.0
    assert answer_in_context(["It stands in Paris.", "The tower is 330 m"], ["330 m"]) == 1.0
    with pytest.raises(DataError, match="non-empty list"):
        best_subspan_em("x", "Paris")


def test_yaml_stages_build_and_round_trip(tmp_path):
    from rerankflow.pipelines.job import dump_job, load_job_text
    from rerankflow.pipelines.runner import build_job

    text = """
name: ctx
dataset: {builtin: demo, limit: 2}
pipelines:
  ctx:
    - bm25: {k: 10}
    - budget: {tokenizer: {kind: hf, model: smollm2-135m-instruct}, max_tokens: 300}
    - reorder: {policy: ends}
"""
    job = load_job_text(text)
    assert load_job_text(dump_job(job)) == job
    _, pipelines = build_job(job, tmp_path)
    assert "BudgetFilter(max_tokens=300)" in repr(pipelines["ctx"]) and "Reorder(policy='ends')" in repr(
        pipelines["ctx"]
    )
    from rerankflow.errors import ConfigError as CE

    with pytest.raises(CE, match="policy"):
        load_job_text(text.replace("policy: ends", "policy: middle"))
