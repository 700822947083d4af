"""A job's price table (`cost:`): validated in YAML, and the run table's $/q from each LLM
stage's model and usage (scripted backends; the serving side is in test_serve_tracing.py)."""

import pytest

from rerankflow.errors import ConfigError
from rerankflow.eval.experiment import Experiment
from rerankflow.eval.trace import Price, stage_models
from rerankflow.io import demo_dataset
from rerankflow.pipelines.job import load_job_text
from rerankflow.rerankers.pointwise import PointwiseReranker
from rerankflow.retrievers.bm25 import BM25Retriever
from rerankflow.testing.fake import FakeBackend
from rerankflow.types import LLMUsage


def test_the_run_table_shows_dollars_per_query_for_priced_models():
    corpus, topics, qrels = demo_dataset()
    bm25 = BM25Retriever(corpus, k=3)
    judge = bm25 >> PointwiseReranker(FakeBackend(labels=lambda p, labels: {"yes": -0.5, "no": -1.0}, model="j"))
    result = Experiment({"bm25": bm25, "judge": judge}, topics[:4], qrels).run()
    prices = {"j": Price(input_per_mtok=3.0, output_per_mtok=15.0)}
    assert stage_models(judge) == {"pointwise": "j"}
    for system, pipeline in zip(result.systems, (bm25, judge), strict=True):
        system.price(stage_models(pipeline), prices)
    plain, priced = result.systems
    usage = priced.usage["pointwise"]["total"]
    expected = (usage["prompt_tokens"] * 3.0 + usage["output_tokens"] * 15.0) / 1e6 / 4
    assert plain.cost_per_query is None and priced.cost_per_query == pytest.approx(expected)
    table = result.table()
    assert "$/q" in table and f"{expected:.5f}" in table
    assert result.to_json()["systems"][1]["cost_per_query"] == pytest.approx(expected)


def test_a_price_table_in_yaml_is_validated():
    job = load_job_text(
        "dataset: {builtin: demo}\npipelines: {p: [bm25]}\ncost:\n  gpt-x: {input_per_mtok: 2.5, output_per_mtok: 10}\n"
    )
    assert job.cost["gpt-x"].of(LLMUsage(1, 1_000_000, 100_000)) == pytest.approx(3.5)
    with pytest.raises(ConfigError, match="input_per_mtok"):
        load_job_text(
            "dataset: {builtin: demo}\npipelines: {p: [bm25]}\ncost: {m: {input_per_mtok: -1, output_per_mtok: 1}}\n"
        )
