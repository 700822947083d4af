"""The HTTP server's control flow on a real loopback server with scripted backends: OpenAI
chat (plain, streamed, through the official client), rerank, errors, auth, limits,
readiness and request merging. Real models behind the server: test_serve_e2e.py.
"""

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from rerankflow.backends.types import GenerationParams
from rerankflow.errors import BackendError, ConfigError
from rerankflow.generators.answer import AnswerGenerator
from rerankflow.pipelines.job import ServeSpec, load_job_text
from rerankflow.rerankers.pointwise import PointwiseReranker
from rerankflow.retrievers.bm25 import BM25Retriever
from rerankflow.serve.app import create_app
from rerankflow.serve.launch import job_pipelines_to_serve, serve_in_thread
from rerankflow.serve.served import serve_pipelines
from rerankflow.stage import Transformer
from rerankflow.testing.fake import FakeBackend

from .support.servers import metric

pytestmark = pytest.mark.slow  # starts the server on loopback (in a thread)

REPLY = "BM25 scores terms by frequency [1], and b normalises length [2]."


class Recorder(Transformer):
    """Passes batches through and remembers their sizes (to see requests merged)."""

    def __init__(self):
        self.sizes = []

    def transform(self, batch):
        self.sizes.append(len(batch))
        return list(batch)


class Gate(FakeBackend):
    """A fake whose generation waits for ``opened`` and records the settings it was given."""

    def __init__(self, reply=REPLY):
        super().__init__([reply])
        self.opened = threading.Event()
        self.params = []

    async def _agenerate(self, prompts, params):
        self.params.append(params)
        await asyncio.to_thread(self.opened.wait, 30)
        return await super()._agenerate(prompts, params)


def yes_if_cat(prompt, labels):
    passage = prompt.messages[-1].content.split("Passage:")[-1]
    return {"yes": -0.1 if "cat" in passage else -3.0, "no": -1.0}


@pytest.fixture(scope="module")
def corpus(demo):
    return demo[0]


def make_app(corpus, backend=None, recorder=None, **spec):
    rag = BM25Retriever(corpus, k=3)
    if recorder is not None:
        rag = rag >> recorder
    rag = rag >> AnswerGenerator(backend or FakeBackend([REPLY]), max_tokens=32)
    judge = PointwiseReranker(FakeBackend(labels=yes_if_cat))
    return create_app(serve_pipelines({"rag": rag, "judge": judge}), ServeSpec(**spec))


@pytest.fixture(scope="module")
def url(corpus):
    with serve_in_thread(make_app(corpus)) as base:
        wait_ready(base)
        yield base


def wait_ready(base, timeout=30):
    deadline = time.monotonic() + timeout
    while httpx.get(base + "/readyz").status_code != 200:
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.05)


def chat_body(text="how does bm25 normalise document length?", **extra):
    return {"model": "rag", "messages": [{"role": "user", "content": text}], **extra}


def sse_events(response):
    events = [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_models_list_the_pipelines_and_what_each_serves(url):
    body = httpx.get(url + "/v1/models").json()
    assert body["object"] == "list"
    cards = {m["id"]: m["rerankflow"] for m in body["data"]}
    assert cards["rag"]["chat"] and not cards["rag"]["rerank"]
    assert cards["judge"]["rerank"] and not cards["judge"]["chat"]
    assert httpx.get(url + "/v1/models/judge").json()["id"] == "judge"
    assert httpx.get(url + "/v1/models/nope").status_code == 404


def test_chat_answers_with_the_cited_documents_in_the_extension_field(url, corpus):
    body = httpx.post(url + "/v1/chat/completions", json=chat_body()).json()
    assert body["object"] == "chat.completion" and body["model"] == "rag"
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": REPLY} and choice["finish_reason"] == "stop"
    ext = body["rerankflow"]
    docs = ext["documents"]
    texts = {d.docid: d.text for d in corpus}
    assert len(docs) == 3 and all(texts[d["docid"]] == d["text"] for d in docs)
    assert [d["number"] for d in docs] == [1, 2, 3]
    assert [c["docid"] for c in ext["citations"]] == [docs[0]["docid"], docs[1]["docid"]]
    assert [d["cited"] for d in docs] == [True, True, False]
    u = body["usage"]
    assert (
        u["completion_tokens"] == len(REPLY.split())
        and u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    )


def test_stream_sends_role_text_finish_with_extension_usage_and_done(url):
    plain = httpx.post(url + "/v1/chat/completions", json=chat_body()).json()
    body = chat_body(stream=True, stream_options={"include_usage": True})
    with httpx.stream("POST", url + "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    finish = events[-2]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert finish["rerankflow"]["citations"] == plain["rerankflow"]["citations"]
    assert events[-1]["choices"] == [] and events[-1]["usage"] == plain["usage"]
    assert all(e["usage"] is None for e in events[:-1])


def test_stream_without_usage_option_has_no_usage_chunk(url):
    with httpx.stream("POST", url + "/v1/chat/completions", json=chat_body(stream=True)) as r:
        events = sse_events(r)
    assert all("usage" not in e for e in events) and events[-1]["choices"][0]["finish_reason"] == "stop"


def test_official_openai_client_sync_async_and_streaming(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    assert {m.id for m in client.models.list()} == {"rag", "judge"}
    resp = client.chat.completions.create(model="rag", messages=[{"role": "user", "content": "what is bm25?"}])
    assert resp.choices[0].message.content == REPLY
    assert resp.model_extra["rerankflow"]["citations"][0]["number"] == 1
    stream = client.chat.completions.create(
        model="rag",
        messages=[{"role": "user", "content": "what is bm25?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert chunks[-1].usage.total_tokens == resp.usage.total_tokens

    async def ask():
        aclient = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused")
        one = await aclient.chat.completions.create(model="rag", messages=[{"role": "user", "content": "bm25?"}])
        pieces = []
        async for c in await aclient.chat.completions.create(
            model="rag", messages=[{"role": "user", "content": "bm25?"}], stream=True
        ):
            pieces.extend([c.choices[0].delta.content or ""] if c.choices else [])
        await aclient.close()
        return one.choices[0].message.content, "".join(pieces)

    assert asyncio.run(ask()) == (REPLY, REPLY)
    with pytest.raises(openai.NotFoundError, match="no pipeline named 'gpt-4'"):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])


def test_rerank_in_cohere_shape_with_top_n_and_documents(url):
    docs = ["dogs bark at night", "a cat sleeps all day", {"text": "cat food and more", "id": "x"}]
    body = httpx.post(url + "/v1/rerank", json={"query": "cats", "documents": docs, "top_n": 2}).json()
    assert [r["index"] for r in body["results"]] == [1, 2] and body["model"] == "judge"
    assert body["results"][0]["relevance_score"] >= body["results"][1]["relevance_score"]
    assert "document" not in body["results"][0]
    full = httpx.post(
        url + "/v1/rerank", json={"model": "judge", "query": "cats", "documents": docs, "return_documents": True}
    )
    results = full.json()["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2] and results[-1]["document"] == {"text": docs[0]}
    empty = httpx.post(url + "/v1/rerank", json={"query": "cats", "documents": []}).json()
    assert empty["results"] == []


def test_rerank_through_the_cohere_clients_v1_and_v2_and_in_tei_shape(url):
    """The current Cohere SDK posts to /v2/rerank; its v1 client to /v1/rerank; TEI-style
    clients to /rerank. All three orders equal the /v1/rerank order of the same pipeline."""
    cohere = pytest.importorskip("cohere", reason="cohere is in the dev extra")
    docs = ["dogs bark at night", "a cat sleeps all day", "cat food and more", "fish swim"]
    plain = httpx.post(url + "/v1/rerank", json={"query": "cats", "documents": docs}).json()["results"]
    order = [r["index"] for r in plain]
    v2 = cohere.ClientV2(api_key="unused", base_url=url).rerank(model="judge", query="cats", documents=docs, top_n=3)
    assert [r.index for r in v2.results] == order[:3]
    assert [r.relevance_score for r in v2.results] == [r["relevance_score"] for r in plain[:3]]
    v1 = cohere.Client(api_key="unused", base_url=url).rerank(model="judge", query="cats", documents=docs)
    assert [r.index for r in v1.results] == order
    tei = httpx.post(url + "/rerank", json={"query": "cats", "texts": docs, "return_text": True, "truncate": True})
    assert [r["index"] for r in tei.json()] == order and tei.json()[0]["text"] == docs[order[0]]
    with pytest.raises(cohere.errors.BadRequestError, match="max_tokens_per_doc"):
        cohere.ClientV2(api_key="unused", base_url=url).rerank(
            model="judge", query="cats", documents=docs, max_tokens_per_doc=5
        )
    assert httpx.post(url + "/rerank", json={"query": " ", "texts": docs}).status_code == 400


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/chat/completions", chat_body(model="nope"), 404, "no pipeline named 'nope'; served: rag, judge"),
        ("/v1/chat/completions", chat_body(model="judge"), 400, "cannot serve chat requests; those that end in"),
        ("/v1/chat/completions", chat_body(frobnicate=1), 400, "unrecognized request argument: frobnicate"),
        ("/v1/chat/completions", chat_body(n=2), 400, "n: Input should be 1"),
        ("/v1/chat/completions", {"model": "rag", "messages": []}, 400, "messages: List should have at least 1"),
        (
            "/v1/chat/completions",
            {"model": "rag", "messages": [{"role": "system", "content": "hi"}]},
            400,
            "no user message",
        ),
        ("/v1/chat/completions", chat_body("   "), 400, "no user message with text"),
        ("/v1/chat/completions", chat_body(temperature=5), 400, "temperature: Input should be less than or equal to 2"),
        ("/v1/rerank", {"model": "rag", "query": "q", "documents": ["a"]}, 400, "cannot serve rerank requests"),
        ("/v1/rerank", {"query": " ", "documents": ["a"]}, 400, "query is empty"),
        ("/v1/rerank", {"query": "q", "documents": [{"title": "t"}]}, 400, "documents.0"),
    ],
)
def test_bad_requests_get_openai_error_json_naming_the_problem(url, path, body, status, message):
    r = httpx.post(url + path, json=body)
    assert r.status_code == status
    err = r.json()["error"]
    assert message in err["message"] and err["type"] in {"invalid_request_error", "not_found_error"}


def test_malformed_json_and_unknown_routes_answer_in_the_same_shape(url):
    r = httpx.post(url + "/v1/chat/completions", content=b"{bad", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.get(url + "/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_generation_settings_of_a_request_reach_the_backend_within_the_cap(corpus):
    gate = Gate()
    gate.opened.set()
    with serve_in_thread(make_app(corpus, gate, max_tokens=50)) as base:
        wait_ready(base)
        httpx.post(base + "/v1/chat/completions", json=chat_body())
        httpx.post(base + "/v1/chat/completions", json=chat_body(max_tokens=500, temperature=0.7, stop="END", seed=3))
        httpx.post(base + "/v1/chat/completions", json=chat_body(max_completion_tokens=7))
    assert gate.params == [
        GenerationParams(max_tokens=32),
        GenerationParams(max_tokens=50, temperature=0.7, stop=("END",), seed=3),
        GenerationParams(max_tokens=7),
    ]


def test_api_key_from_the_environment_guards_v1_but_not_health(corpus, monkeypatch):
    monkeypatch.setenv("RF_TEST_KEY", "s3cret")
    with serve_in_thread(make_app(corpus, api_key_env="RF_TEST_KEY")) as base:
        wait_ready(base)
        assert httpx.get(base + "/healthz").status_code == 200
        r = httpx.get(base + "/v1/models")
        assert r.status_code == 401 and "RF_TEST_KEY" in r.json()["error"]["message"]
        assert "s3cret" not in r.text
        assert httpx.get(base + "/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(base + "/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base + "/v1", api_key="wrong").models.list()
        assert len(openai.OpenAI(base_url=base + "/v1", api_key="s3cret").models.list().data) == 2


def test_request_bodies_over_the_limit_get_413_declared_or_chunked(corpus):
    with serve_in_thread(make_app(corpus, max_body_bytes=2048)) as base:
        wait_ready(base)
        big = chat_body("word " * 1000)
        r = httpx.post(base + "/v1/chat/completions", json=big)
        assert r.status_code == 413 and "max_body_bytes" in r.json()["error"]["message"]

        def chunks():
            for _ in range(10):
                yield b" " * 500

        r = httpx.post(base + "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert httpx.post(base + "/v1/chat/completions", json=chat_body()).status_code == 200


def test_saturated_server_answers_429_and_recovers(corpus):
    gate = Gate()
    with serve_in_thread(make_app(corpus, gate, max_concurrent=2)) as base, ThreadPoolExecutor(2) as pool:
        wait_ready(base)
        held = [pool.submit(httpx.post, base + "/v1/chat/completions", json=chat_body(), timeout=30) for _ in range(2)]
        deadline = time.monotonic() + 10
        while httpx.get(base + "/healthz").json()["in_flight"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = httpx.post(base + "/v1/chat/completions", json=chat_body())
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert httpx.post(base + "/v1/rerank", json={"query": "cats", "documents": ["a"]}).status_code == 429
        gate.opened.set()
        assert [f.result().status_code for f in held] == [200, 200]
        assert httpx.post(base + "/v1/chat/completions", json=chat_body()).status_code == 200
        assert httpx.get(base + "/healthz").json()["in_flight"] == 0


def test_slow_requests_get_504_and_keep_their_slot_until_the_work_ends(corpus):
    gate = Gate()
    with serve_in_thread(make_app(corpus, gate, timeout_s=0.3, max_concurrent=1)) as base:
        wait_ready(base)
        r = httpx.post(base + "/v1/chat/completions", json=chat_body())
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout_error"
        assert httpx.get(base + "/healthz").json()["in_flight"] == 1  # still generating
        assert httpx.post(base + "/v1/chat/completions", json=chat_body()).status_code == 429
        gate.opened.set()
        deadline = time.monotonic() + 10
        while httpx.get(base + "/healthz").json()["in_flight"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert httpx.post(base + "/v1/chat/completions", json=chat_body()).status_code == 200


def test_requests_that_wait_too_long_for_their_turn_get_503_and_are_never_computed(corpus):
    gate, recorder = Gate(), Recorder()
    with serve_in_thread(make_app(corpus, gate, recorder, queue_timeout_s=0.3, max_concurrent=4)) as base:
        wait_ready(base)
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, base + "/v1/chat/completions", json=chat_body(), timeout=30)
            deadline = time.monotonic() + 10
            while not gate.params:  # the first request's batch is generating (and holds the pipeline)
                assert time.monotonic() < deadline
                time.sleep(0.02)
            late = httpx.post(base + "/v1/chat/completions", json=chat_body("bm25 length"), timeout=30)
            assert late.status_code == 503 and "serve.queue_timeout_s" in late.json()["error"]["message"]
            assert late.headers["retry-after"] == "5"
            gate.opened.set()
            assert first.result().status_code == 200
        while metric(httpx.get(base + "/metrics").text, "rerankflow_dropped_before_start_total", pipeline="rag") != 1:
            # the late request's batch drops it
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert recorder.sizes == [1]  # no stage ever saw the late request
        assert httpx.get(base + "/healthz").json()["cancelled"]["queue timeout"] == 1


def test_backend_failures_are_502_in_the_error_shape(corpus):
    def broken(prompt):
        raise BackendError("connection refused by the model server")

    with serve_in_thread(make_app(corpus, FakeBackend(broken))) as base:
        wait_ready(base)
        r = httpx.post(base + "/v1/chat/completions", json=chat_body())
        assert r.status_code == 502 and "connection refused" in r.json()["error"]["message"]
        with httpx.stream("POST", base + "/v1/chat/completions", json=chat_body(stream=True)) as s:
            events = sse_events(s)
        assert "connection refused" in events[-1]["error"]["message"]
        assert httpx.get(base + "/healthz").json()["in_flight"] == 0


def test_concurrent_requests_are_merged_into_batches(corpus):
    gate, recorder = Gate(), Recorder()
    with serve_in_thread(make_app(corpus, gate, recorder, max_concurrent=16)) as base, ThreadPoolExecutor(8) as pool:
        wait_ready(base)
        futures = [
            pool.submit(httpx.post, base + "/v1/chat/completions", json=chat_body(f"bm25 question {i}"), timeout=30)
            for i in range(8)
        ]
        deadline = time.monotonic() + 10
        while httpx.get(base + "/healthz").json()["in_flight"] < 8:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        gate.opened.set()
        bodies = [f.result().json() for f in futures]
    assert sum(recorder.sizes) == 8 and max(recorder.sizes) > 1  # the first batch runs alone, the rest merge
    assert len({b["rerankflow"]["query_id"] for b in bodies}) == 8


class SlowLoad(FakeBackend):
    def __init__(self):
        super().__init__([REPLY])
        self.release = threading.Event()

    def load(self):
        self.release.wait(30)


def test_readiness_reflects_model_loading(corpus):
    backend = SlowLoad()
    with serve_in_thread(make_app(corpus, backend)) as base:
        ready = httpx.get(base + "/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "loading"
        health = httpx.get(base + "/healthz").json()
        assert health["ready"] is False and health["in_flight"] == 0 and health["queue_depth"] == 0
        assert health["cancelled"] == {"client disconnected": 0, "timed out": 0, "queue timeout": 0}
        r = httpx.post(base + "/v1/chat/completions", json=chat_body())
        assert r.status_code == 503 and "still loading" in r.json()["error"]["message"]
        backend.release.set()
        wait_ready(base)
        assert httpx.post(base + "/v1/chat/completions", json=chat_body()).status_code == 200


def test_failed_loading_is_reported_by_readiness_and_requests(corpus):
    class Broken(FakeBackend):
        def load(self):
            raise BackendError("weights not found in /models/x")

    with serve_in_thread(make_app(corpus, Broken())) as base:
        deadline = time.monotonic() + 10
        while httpx.get(base + "/readyz").json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        ready = httpx.get(base + "/readyz").json()
        assert ready["status"] == "failed" and "weights not found" in ready["error"]
        r = httpx.post(base + "/v1/chat/completions", json=chat_body())
        assert r.status_code == 503 and "weights not found" in r.json()["error"]["message"]


JOB = """
name: served
dataset: {builtin: demo}
pipelines:
  bm25: [bm25: {k: 10}]
  bm25-x: [bm25: {k: 10}, crossencoder: {model: all-minilm-l6-v2}]
  judge: [biencoder: {model: all-minilm-l6-v2}]
serve:
  port: 9123
  max_concurrent: 3
"""


def test_job_serve_section_picks_pipelines_and_round_trips(tmp_path):
    from rerankflow.pipelines.job import dump_job

    job = load_job_text(JOB)
    assert job.serve.port == 9123 and job.serve.host == "127.0.0.1" and load_job_text(dump_job(job)) == job
    served = job_pipelines_to_serve(job, tmp_path)
    assert list(served) == ["judge"]  # the others retrieve and do not generate
    with pytest.raises(
        ConfigError, match="cannot serve bm25: retrieval only; a served pipeline either ends in 'generate'"
    ):
        job_pipelines_to_serve(job, tmp_path, ["bm25"])
    with pytest.raises(ConfigError, match=r"serve.pipelines names 'nope'.*choose from: bm25, bm25-x, judge"):
        load_job_text(JOB + "  pipelines: [nope]\n")
    with pytest.raises(ConfigError, match="serve.max_concurrent"):
        load_job_text(JOB.replace("max_concurrent: 3", "max_concurrent: 0"))
    with pytest.raises(ConfigError, match="serve.colour"):
        load_job_text(JOB.replace("max_concurrent: 3", "colour: red"))


def test_served_stages_keep_no_per_request_state_so_memory_stays_flat(corpus):
    from rerankflow.compressors.llm import LLMFilter

    judge = FakeBackend(labels=lambda p, labels: {"yes": -0.5, "no": -1.0})
    kept = LLMFilter(judge)
    kept.p_yes.max_entries = 4  # the judgement memo is bounded
    gen = AnswerGenerator(FakeBackend([REPLY]))

    def sizes(stage):
        return {k: len(v) for k, v in vars(stage).items() if isinstance(v, dict | list | set)}

    before = (sizes(kept), sizes(gen))
    app = create_app(serve_pipelines({"rag": BM25Retriever(corpus, k=3) >> kept >> gen}))
    with serve_in_thread(app) as base:
        wait_ready(base)
        for i in range(5):
            assert httpx.post(base + "/v1/chat/completions", json=chat_body(f"bm25 length {i}")).status_code == 200
        with httpx.stream("POST", base + "/v1/chat/completions", json=chat_body(stream=True)) as r:
            assert sse_events(r)[-1]["choices"][0]["finish_reason"] == "stop"
    assert judge.ledger.calls == 6 * 3 and gen.backend.ledger.calls == 6  # the work was done...
    assert (sizes(kept), sizes(gen)) == before and len(kept.p_yes) == 4  # ...and nothing per request kept


def test_sync_calls_do_not_pile_up_event_loops_in_the_request_merger():
    import gc

    from rerankflow.backends.base import run_sync
    from rerankflow.coalesce import Coalescer

    merger = Coalescer(lambda items: [x * 2 for x in items])
    assert [run_sync(merger.submit([i])) for i in range(50)] == [[2 * i] for i in range(50)]
    gc.collect()
    assert len(merger._loop_locks) == 0 and len(merger._pending) == 0


def test_serve_command_rejects_bad_overrides_and_unservable_choices(tmp_path, capsys):
    from rerankflow.cli.main import main

    job = tmp_path / "job.yaml"
    job.write_text(JOB)
    assert main(["serve", str(job), "--port", "70000"]) == 2
    assert "serve.port: Input should be less than or equal to 65535" in capsys.readouterr().err
    assert main(["serve", str(job), "--pipeline", "bm25"]) == 2
    assert "cannot serve bm25" in capsys.readouterr().err
    assert main(["serve", str(job), "--pipeline", "nope"]) == 2
    assert "no pipeline named nope; the job has: bm25, bm25-x, judge" in capsys.readouterr().err


def test_ask_streams_the_answer_and_says_which_sources_it_cited(url, corpus, capsys):
    from rerankflow.cli.main import main

    assert main(["ask", "how does bm25 normalise document length?", "--url", url, "--model", "rag"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(REPLY + "\n") and "sources (* cited):" in out
    assert "  *[1]" in out and "  *[2]" in out and "   [3]" in out
    assert main(["ask", "how does bm25 work?", "--url", url, "--model", "rag", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["choices"][0]["message"]["content"] == REPLY and len(data["rerankflow"]["documents"]) == 3


def test_ask_says_plainly_when_the_answer_cites_nothing(corpus, capsys):
    from rerankflow.cli.main import main

    with serve_in_thread(make_app(corpus, FakeBackend(["I am not sure."]))) as base:
        wait_ready(base)
        assert main(["ask", "how does bm25 normalise document length?", "--url", base, "--model", "rag"]) == 0
    out = capsys.readouterr().out
    assert "the answer cites none of them" in out and "best passage [1]:" in out and "*[" not in out
