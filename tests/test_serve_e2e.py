"""`rerankflow serve` as its own process on a loopback port, serving a YAML job with real
models: SmolLM2-135M on the HF backend (chat, streamed and not, and a yes/no reranker),
SmolLM2 behind a real `vllm serve` through the HTTP backend, and MiniLM for /v1/rerank.
Called with the official `openai` client (sync, async, streaming) and httpx.
"""

import asyncio
import json
import os
import signal
import sys

import httpx
import openai
import pytest

from .support.servers import free_port, server_process

pytestmark = pytest.mark.slow

KEY = "e2e-test-key"
QUESTION = "How does BM25 normalise document length?"


def job_yaml(smollm2, vllm_url):
    return f"""
name: served
dataset: {{builtin: demo}}
pipelines:
  rag:
    - bm25: {{k: 3}}
    - generate: {{backend: {{kind: hf, model: {smollm2}}}, max_tokens: 24}}
  rag-vllm:
    - bm25: {{k: 3}}
    - generate:
        backend:
          kind: http
          model: smollm2
          options: {{base_url: "{vllm_url}", tokenizer: {smollm2}, api_key_env: null}}
        max_tokens: 24
  judge:
    - pointwise: {{backend: {{kind: hf, model: {smollm2}}}, mode: yes_no, max_passage_tokens: 64}}
  minilm:
    - biencoder: {{model: all-minilm-l6-v2}}
  bm25-only:
    - bm25: {{k: 5}}
serve:
  api_key_env: RF_E2E_KEY
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2, vllm_server):
    folder = tmp_path_factory.mktemp("serve")
    job = folder / "job.yaml"
    job.write_text(job_yaml(smollm2, vllm_server))
    port = free_port()
    cmd = [sys.executable, "-m", "rerankflow.cli.main", "serve", str(job), "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RF_E2E_KEY": KEY}
    with server_process(cmd, url + "/readyz", folder / "server.log", env=env, stop=signal.SIGINT):
        yield url, folder / "server.log"


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY)


def ask(client, model, **kw):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}], **kw)


def test_models_lists_the_servable_pipelines_only(client, server):
    assert {m.id for m in client.models.list()} == {"rag", "rag-vllm", "judge", "minilm"}
    assert "not serving bm25-only" in server[1].read_text()


@pytest.mark.parametrize("model", ["rag", "rag-vllm"])
def test_chat_answers_deterministically_and_cites_the_retrieved_passages(client, demo, model):
    first, second = ask(client, model), ask(client, model)
    text = first.choices[0].message.content
    assert text and text == second.choices[0].message.content  # greedy decoding
    assert first.choices[0].finish_reason in {"stop", "length"}
    ext = first.model_extra["rerankflow"]
    corpus = {d.docid: d.text for d in demo[0]}
    assert len(ext["documents"]) == 3 and all(corpus[d["docid"]] == d["text"] for d in ext["documents"])
    sent = {d["docid"] for d in ext["documents"]}
    assert all(c["docid"] in sent or c["docid"] is None for c in ext["citations"])
    assert 0 < first.usage.completion_tokens <= 24 and first.usage.prompt_tokens > 50


@pytest.mark.parametrize("model", ["rag", "rag-vllm"])
def test_streamed_answer_equals_the_plain_one(client, model):
    plain = ask(client, model)
    chunks = list(ask(client, model, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces).strip() == plain.choices[0].message.content
    if model == "rag":
        assert len(pieces) > 2  # HF streams token pieces as they are generated
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert chunks[-2].model_extra["rerankflow"]["documents"] == plain.model_extra["rerankflow"]["documents"]


def test_async_client_gets_the_same_answers_concurrently(client, server):
    expected = ask(client, "rag").choices[0].message.content

    async def run():
        aclient = openai.AsyncOpenAI(base_url=server[0] + "/v1", api_key=KEY)
        replies = await asyncio.gather(
            *[
                aclient.chat.completions.create(model="rag", messages=[{"role": "user", "content": QUESTION}])
                for _ in range(3)
            ]
        )
        await aclient.close()
        return [r.choices[0].message.content for r in replies]

    assert asyncio.run(run()) == [expected] * 3


def test_rerank_with_minilm_and_with_the_smollm2_judge(server):
    url, _ = server
    headers = {"Authorization": f"Bearer {KEY}"}
    docs = [
        "The stock market fell sharply on Monday.",
        "BM25 normalises term frequency by document length with the parameter b.",
        "Cats sleep for most of the day.",
    ]
    body = {"model": "minilm", "query": QUESTION, "documents": docs, "top_n": 2, "return_documents": True}
    minilm = httpx.post(url + "/v1/rerank", json=body, headers=headers).json()
    assert minilm["results"][0]["index"] == 1 and minilm["results"][0]["document"]["text"] == docs[1]
    assert len(minilm["results"]) == 2
    judged = httpx.post(
        url + "/v1/rerank", json={"model": "judge", "query": QUESTION, "documents": docs}, headers=headers
    )
    results = judged.json()["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2]
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)


def test_requests_without_the_key_are_refused(server):
    r = httpx.post(
        server[0] + "/v1/chat/completions", json={"model": "rag", "messages": [{"role": "user", "content": "x"}]}
    )
    assert r.status_code == 401 and KEY not in r.text
    assert httpx.get(server[0] + "/healthz").json()["ready"] is True


def test_curl_style_stream_ends_with_done(server):
    body = {"model": "rag", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream("POST", server[0] + "/v1/chat/completions", json=body, headers=headers, timeout=120) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    finish = json.loads(lines[-2][len("data: ") :])
    assert finish["choices"][0]["finish_reason"] in {"stop", "length"} and "rerankflow" in finish
