"""A client that goes away stops costing compute (real SmolLM2 on the HF backend and on the vLLM
offline engine, CPU): streams
dropped after their first chunk and plain requests whose client timed out stop generating
within a few decoding steps, the next request is as fast as on an idle server, and a
cancelled request inside a merged batch leaves the other answers unchanged."""

import time

import httpx
import pytest

from rerankflow.backends.types import GenerationParams, Prompt
from rerankflow.cancel import CancelToken
from rerankflow.errors import BackendError
from rerankflow.generators.answer import AnswerGenerator
from rerankflow.pipelines.job import ServeSpec
from rerankflow.retrievers.bm25 import BM25Retriever
from rerankflow.serve.app import create_app
from rerankflow.serve.launch import serve_in_thread
from rerankflow.serve.served import serve_pipelines

from .support.servers import metric

pytestmark = pytest.mark.slow  # a real model behind a real server

STEPS_AFTER_DISCONNECT = 12
"""Decoding steps a generation may still take after its client left (the disconnect is
noticed within 50 ms; a SmolLM2 step on 2 CPU cores takes tens of ms)."""


def chat(text, max_tokens, stream=False):
    return {"model": "rag", "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens, "stream": stream}


def settled(ledger, quiet_s=1.0, limit_s=30.0):
    """Wait until ``ledger.decoded_tokens`` stops growing; returns its value."""
    deadline = time.monotonic() + limit_s
    last, since = ledger.decoded_tokens, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = ledger.decoded_tokens
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
    raise AssertionError("generation did not stop")


def timed_small_request(base):
    start = time.perf_counter()
    r = httpx.post(base + "/v1/chat/completions", json=chat("what does bm25 do?", 8), timeout=60)
    assert r.status_code == 200, r.text
    return time.perf_counter() - start


@pytest.fixture(scope="module", params=["hf_backend", "vllm_backend"])
def server(demo, request):
    backend = request.getfixturevalue(request.param)
    corpus, _, _ = demo
    rag = BM25Retriever(corpus, k=2) >> AnswerGenerator(backend, max_tokens=8)
    app = create_app(serve_pipelines({"rag": rag}), ServeSpec(max_tokens=400))
    with serve_in_thread(app) as base:
        deadline = time.monotonic() + 120
        while httpx.get(base + "/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        timed_small_request(base)  # first use: tokenizer, caches
        yield base, backend.ledger


def test_dropped_streams_stop_generating_and_cost_the_next_request_nothing(server):
    base, ledger = server
    idle = min(timed_small_request(base) for _ in range(2))
    cancelled_before = ledger.cancelled
    for i in range(3):
        with httpx.stream("POST", base + "/v1/chat/completions", json=chat(f"tell a long story {i}", 300, True)) as r:
            for line in r.iter_lines():
                if '"content": "' in line and '"content": ""' not in line:
                    break  # the first piece of text: the client goes away here
        at_disconnect = ledger.decoded_tokens
        after = settled(ledger)
        assert after - at_disconnect <= STEPS_AFTER_DISCONNECT, (i, after - at_disconnect)
    assert ledger.cancelled - cancelled_before == 3 and ledger.tokens_not_generated > 3 * 200
    assert timed_small_request(base) <= 2 * idle
    metrics = httpx.get(base + "/metrics").text
    assert metric(metrics, "rerankflow_requests_cancelled_total", reason="client disconnected") == 3
    assert metric(metrics, "rerankflow_tokens_not_generated_total", pipeline="rag") > 3 * 200


def test_plain_requests_whose_client_timed_out_stop_generating(server):
    base, ledger = server
    idle = min(timed_small_request(base) for _ in range(2))
    for i in range(2):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(base + "/v1/chat/completions", json=chat(f"write a long essay {i}", 300), timeout=1.5)
        at_disconnect = ledger.decoded_tokens
        after = settled(ledger)
        assert after - at_disconnect <= STEPS_AFTER_DISCONNECT, (i, after - at_disconnect)
    assert timed_small_request(base) <= 2 * idle
    health = httpx.get(base + "/healthz").json()
    assert health["cancelled"]["client disconnected"] >= 2 and health["in_flight"] == 0


class CancelAfter(CancelToken):
    """A token that cancels itself after being checked ``checks`` times (once per decoding step)."""

    def __init__(self, checks):
        super().__init__()
        self.checks = checks

    @property
    def cancelled(self):
        self.checks -= 1
        if self.checks < 0:
            self.cancel("test")
        return super().cancelled


@pytest.mark.parametrize("name", ["hf_backend", "vllm_backend"])
def test_a_cancelled_request_in_a_merged_batch_leaves_the_other_answers_unchanged(name, request):
    backend = request.getfixturevalue(name)
    prompts = [Prompt.chat("Count from one to fifty in words."), Prompt.chat("Name the planets of the solar system.")]
    params = GenerationParams(max_tokens=40)
    whole = backend.generate(prompts, params)
    cut = backend.generate(prompts, params, cancel=[CancelAfter(6), None])
    assert cut[1].text == whole[1].text and cut[1].stats.output_tokens == whole[1].stats.output_tokens
    assert cut[0].finish_reason == "cancelled" and 0 < cut[0].stats.output_tokens < whole[0].stats.output_tokens
    assert whole[0].text.startswith(cut[0].text)
    skipped = backend.generate(prompts[:1], params, cancel=[CancelAfter(0)])
    assert skipped[0].finish_reason == "cancelled" and skipped[0].stats.output_tokens == 0


def test_vllm_skips_prompts_whose_request_already_left(vllm_backend):
    gone = CancelToken()
    gone.cancel("client disconnected")
    before = (vllm_backend.ledger.calls, vllm_backend.ledger.cancelled)
    out = vllm_backend.generate(
        [Prompt.chat("Say hi."), Prompt.chat("Say hi.")], GenerationParams(max_tokens=8), cancel=[gone, None]
    )
    assert out[0].finish_reason == "cancelled" and out[0].text == "" and out[1].stats.output_tokens > 0
    assert (vllm_backend.ledger.calls, vllm_backend.ledger.cancelled) == (before[0] + 1, before[1] + 1)


def test_vllm_a_refused_prompt_in_a_batch_leaves_the_engine_usable(vllm_backend):
    """A prompt the engine refuses (longer than max_model_len) fails the call; the requests
    already added for it are aborted, so nothing is left running and the next call works."""
    too_long = Prompt.raw("word " * 5000)
    with pytest.raises(BackendError, match="vLLM refused a prompt of 5001 tokens: .*maximum context length is 2048"):
        vllm_backend.generate([Prompt.chat("Say hi."), too_long], GenerationParams(max_tokens=4))
    assert vllm_backend.llm.llm_engine.get_num_unfinished_requests() == 0
    (out,) = vllm_backend.generate([Prompt.chat("Say hi.")], GenerationParams(max_tokens=4))
    assert out.finish_reason in ("length", "stop") and out.stats.output_tokens > 0
