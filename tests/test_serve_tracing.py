"""Per-request traces and cost: OpenTelemetry spans (the SDK's in-memory exporter) for a chat
request and each stage it passed, the same totals in the response's usage extension, and the
run table's $/q from a job's price table. Scripted backends (control flow)."""

from __future__ import annotations

import httpx
import pytest

from rerankflow.eval.trace import Price, usage_summary
from rerankflow.generators.answer import AnswerGenerator
from rerankflow.rerankers.pointwise import PointwiseReranker
from rerankflow.retrievers.bm25 import BM25Retriever
from rerankflow.testing.fake import FakeBackend

pytestmark = pytest.mark.slow  # a loopback server in a thread

sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk is in the otel extra")
PRICES = {
    "judge-model": Price(input_per_mtok=1.0, output_per_mtok=0.0),
    "writer": Price(input_per_mtok=2.0, output_per_mtok=8.0),
}


def traced_app(corpus):
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from rerankflow.pipelines.job import ServeSpec
    from rerankflow.serve.app import create_app
    from rerankflow.serve.served import serve_pipelines

    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    judge = FakeBackend(labels=lambda p, labels: {"yes": -0.5, "no": -1.0}, model="judge-model")
    writer = FakeBackend(["BM25 normalises length with b [1]."], model="writer")
    rag = BM25Retriever(corpus, k=4) >> PointwiseReranker(judge) >> AnswerGenerator(writer, max_tokens=16)
    return create_app(serve_pipelines({"rag": rag}), ServeSpec(), PRICES, provider), exporter


@pytest.mark.parametrize("stream", [False, True])
def test_one_chat_request_gives_a_span_tree_with_usage_and_cost(demo, stream):
    from rerankflow.serve.launch import serve_in_thread

    app, exporter = traced_app(demo[0])
    body = {"model": "rag", "messages": [{"role": "user", "content": "how does bm25 normalise length?"}]}
    with serve_in_thread(app) as base:
        while httpx.get(base + "/readyz").status_code != 200:
            pass
        if stream:
            with httpx.stream("POST", base + "/v1/chat/completions", json={**body, "stream": True}) as r:
                lines = [line for line in r.iter_lines() if '"rerankflow"' in line]
            import json

            ext = json.loads(lines[0][len("data: ") :])["rerankflow"]
        else:
            ext = httpx.post(base + "/v1/chat/completions", json=body).json()["rerankflow"]
    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.name == "chat rag"]
    children = sorted((s for s in spans if s.parent is not None), key=lambda s: s.start_time)
    assert [s.name for s in children] == ["stage bm25", "stage pointwise", "stage generate"]
    assert all(
        s.parent.span_id == root.context.span_id and s.context.trace_id == root.context.trace_id for s in children
    )
    bm25, judge, generate = (dict(s.attributes) for s in children)
    assert bm25["rerankflow.candidates.in"] == 0 and bm25["rerankflow.candidates.out"] == 4
    assert "rerankflow.llm.calls" not in bm25
    assert judge["rerankflow.llm.calls"] == 4 and judge["gen_ai.request.model"] == "judge-model"
    assert judge["rerankflow.cost_usd"] == pytest.approx(judge["gen_ai.usage.input_tokens"] / 1e6)
    assert generate["rerankflow.llm.calls"] == 1
    usage = ext["usage"]
    assert usage["stages"]["pointwise"]["calls"] == 4 and usage["stages"]["generate"]["model"] == "writer"
    total = usage["total"]
    assert total["calls"] == 5 and total["cost"] == pytest.approx(
        usage["stages"]["pointwise"]["cost"] + usage["stages"]["generate"]["cost"]
    )
    attrs = dict(root.attributes)
    assert attrs["rerankflow.llm.calls"] == 5 and attrs["rerankflow.cost_usd"] == pytest.approx(total["cost"])
    assert attrs["gen_ai.usage.input_tokens"] == total["prompt_tokens"] and attrs["rerankflow.stream"] is stream
    assert attrs["rerankflow.searched"] == "how does bm25 normalise length?" and root.status.is_ok


def test_a_request_that_fails_marks_its_span_and_the_stage_that_failed(demo):
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from rerankflow.pipelines.job import ServeSpec
    from rerankflow.serve.app import create_app
    from rerankflow.serve.launch import serve_in_thread
    from rerankflow.serve.served import serve_pipelines
    from rerankflow.stage import Transformer

    class Boom(Transformer):
        def transform(self, batch):
            raise ValueError("this stage fails")

    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    rag = BM25Retriever(demo[0], k=2) >> Boom() >> AnswerGenerator(FakeBackend(["x"]), max_tokens=4)
    body = {"model": "rag", "messages": [{"role": "user", "content": "what is bm25"}]}
    with serve_in_thread(create_app(serve_pipelines({"rag": rag}), ServeSpec(), None, provider)) as base:
        while httpx.get(base + "/readyz").status_code != 200:
            pass
        assert httpx.post(base + "/v1/chat/completions", json=body).status_code == 500
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert not spans["chat rag"].status.is_ok and "ValueError" in spans["chat rag"].status.description
    assert spans["stage Boom"].attributes["rerankflow.error"] == "ValueError: this stage fails"
    assert "stage generate" not in spans


def test_the_usage_summary_prices_only_known_models():
    from rerankflow.types import LLMUsage, Query, Ranking, StageRecord

    r = Ranking(Query("q", "t")).recorded(
        StageRecord("pointwise", LLMUsage(2, 1000, 2)), StageRecord("generate", LLMUsage(1, 500, 50))
    )
    out = usage_summary(r, {"pointwise": "judge-model", "generate": "unpriced"}, PRICES)
    assert out["stages"]["pointwise"]["cost"] == pytest.approx(0.001) and "cost" not in out["stages"]["generate"]
    assert out["total"] == {"calls": 3, "prompt_tokens": 1500, "output_tokens": 52, "cost": pytest.approx(0.001)}
    assert "cost" not in usage_summary(r)["total"]
