"""The cascade stage: each rule decides per query from scripted scores; only escalated queries
reach later steps (and pay for them); YAML builds it; the run table says how many escalated."""

from __future__ import annotations

import pytest

from rerankflow.errors import ConfigError
from rerankflow.eval.experiment import Experiment
from rerankflow.pipelines.job import load_job_text
from rerankflow.pipelines.runner import build_job
from rerankflow.rerankers.cascade import Cascade, Rule
from rerankflow.rerankers.listwise import ListwiseReranker
from rerankflow.stage import Transformer
from rerankflow.testing.fake import FakeBackend
from rerankflow.types import Document, Query, Ranking


class Scripted(Transformer):
    """Gives each query the scores ``scores[qid]`` (in input order) and remembers what it saw."""

    def __init__(self, scores: dict[str, list[float]], name: str = "scripted") -> None:
        self.scores = scores
        self.seen: list[str] = []
        self.stage_name = name

    def transform(self, batch):
        self.seen += [r.query.qid for r in batch]
        out = []
        for r in batch:
            rescored = [c.rescored(s, self.name) for c, s in zip(r.candidates, self.scores[r.query.qid], strict=True)]
            out.append(r.with_candidates(sorted(rescored, key=lambda c: -c.score)))
        return out


def ranking(qid: str, n: int = 4) -> Ranking:
    return Ranking.from_documents(Query(qid, qid), [Document(f"{qid}-{i}", f"text {i}") for i in range(n)])


def scored(values: list[float]) -> Ranking:
    return Scripted({"q": values})([ranking("q", len(values))])[0]


def test_margin_rule_reads_the_gap_at_the_boundary():
    near_tie = scored([1.0, 0.52, 0.5, 0.0])
    clear = scored([1.0, 0.9, 0.1, 0.0])
    rule = Rule(rule="margin", k=2, threshold=0.1)
    assert rule.uncertain(near_tie, None) and not rule.uncertain(clear, None)
    raw = Rule(rule="margin", k=2, threshold=0.5, normalize=False)
    assert raw.uncertain(clear, None) is False and raw.uncertain(scored([10, 9.8, 9.5, 0]), None)
    assert not rule.uncertain(scored([1.0, 0.9]), None)  # no rank below k: nothing to decide


def test_agreement_and_confidence_rules():
    before = ranking("q")
    same = before.with_candidates(before.candidates)
    swapped = before.with_candidates([before.candidates[i] for i in (2, 3, 0, 1)])
    rule = Rule(rule="agreement", k=2, threshold=1.0)
    assert not rule.uncertain(same, before) and rule.uncertain(swapped, before)
    conf = Rule(rule="confidence", threshold=0.5)
    assert conf.uncertain(scored([0.4, 0.1, 0, 0]), None) and not conf.uncertain(scored([0.6, 0, 0, 0]), None)
    assert Rule(rule="always").uncertain(same, None) and not Rule(rule="never").uncertain(same, None)
    with pytest.raises(ConfigError, match="two rankings"):
        rule.uncertain(same, None)


def test_only_uncertain_queries_reach_the_next_step_and_the_trace_says_how_far_each_went():
    first = Scripted({"a": [1.0, 0.95, 0.1, 0], "b": [1.0, 0.1, 0.05, 0], "c": [1, 0.9, 0.49, 0]}, "cheap")
    second = Scripted({"a": [0, 1, 2, 30], "c": [3, 2, 1, 0]}, "costly")
    third = Scripted({"c": [0, 0, 0, 5]}, "costliest")
    rules = [Rule(rule="margin", k=1, threshold=0.2), Rule(rule="confidence", threshold=10)]
    cascade = Cascade([first, second, third], escalate=rules)
    out = cascade([ranking(q) for q in "abc"])
    assert first.seen == ["a", "b", "c"] and second.seen == ["a", "c"] and third.seen == ["c"]
    steps = {r.query.qid: r.trace[-1].decisions for r in out}
    assert steps == {
        "a": {"steps": "2", "escalated": True, "skipped": False},
        "b": {"steps": "1", "escalated": False, "skipped": False},
        "c": {"steps": "3", "escalated": True, "skipped": False},
    }
    assert out[1].candidates[0].stage == "cheap" and out[2].candidates[0].docid == "c-3"


def test_skip_returns_certain_queries_untouched():
    first = Scripted({"a": [1, 2, 3, 4], "b": [4, 3, 2, 1]})
    second = Scripted({"a": [4, 3, 2, 1], "b": [1, 2, 3, 4]})
    incoming = [ranking("a"), ranking("b")]
    incoming[1] = incoming[1].with_candidates(
        [c.rescored(s, "bm25") for c, s in zip(incoming[1].candidates, [9, 1, 0.5, 0], strict=True)]
    )
    cascade = Cascade([first, second], escalate=[Rule(rule="never")], skip=Rule(rule="margin", k=1, threshold=0.5))
    out = cascade(incoming)
    assert first.seen == ["a"]
    assert out[1].docids == incoming[1].docids and out[1].trace[-1].decisions["skipped"] is True


def test_cascade_settings_are_checked():
    with pytest.raises(ConfigError, match="2 escalate rules"):
        Cascade([Scripted({}), Scripted({}), Scripted({})], escalate=[Rule()])
    with pytest.raises(ConfigError, match="at least two steps"):
        Cascade([Scripted({})])
    with pytest.raises(ConfigError, match="agreement"):
        Cascade([Scripted({}), Scripted({})], skip={"rule": "agreement"})


JOB = """
name: cascade
dataset: {builtin: demo}
measures: [nDCG@10]
pipelines:
  bm25: [{bm25: {k: 10}}]
  cascade:
    - bm25: {k: 10}
    - cascade:
        steps:
          - [{biencoder: {model: all-minilm-l6-v2}}]
          - [{listwise: {backend: {kind: vllm, model: smollm2-135m-instruct}, window: 10}}]
        escalate: [{rule: margin, k: 3, threshold: 0.05}]
"""


def test_yaml_builds_a_cascade_and_rejects_a_bad_rule():
    job = load_job_text(JOB)
    (stage,) = [s for s in job.pipelines["cascade"] if s.name == "cascade"]
    assert len(stage.inputs) == 2 and stage.config.escalate[0].k == 3
    with pytest.raises(ConfigError, match="rul"):
        load_job_text(JOB.replace("rule: margin", "rul: margin"))
    with pytest.raises(ConfigError, match="steps"):
        load_job_text(JOB.replace("steps:", "step:"))


def test_the_run_table_shows_the_fraction_escalated(demo, tmp_path):
    _, queries, qrels = demo
    _, systems = build_job(load_job_text(JOB), tmp_path)
    listwise = next(s for s in systems["cascade"].walk() if isinstance(s, ListwiseReranker))
    listwise.backend = FakeBackend(["[2] > [1]"])  # scripted: this checks control flow, not quality
    listwise.scheduler.backend = listwise.backend
    result = Experiment({"cascade": systems["cascade"]}, queries, qrels, measures=["nDCG@10"]).run()
    work = result.systems[0].work["cascade"]
    escalated = sum(r.trace[-1].decisions["escalated"] for r in result.systems[0].rankings) / len(queries)
    assert work == {"escalated": pytest.approx(escalated), "skipped": 0.0}
    assert 0 < escalated < 1
    assert f"cascade: cascade escalated {escalated:.0%} of queries" in result.table()
    calls = result.systems[0].usage["listwise"]["per_query"]
    assert len(calls) == round(escalated * len(queries))  # only escalated queries paid for the LLM
