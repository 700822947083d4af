"""The HTTP backend against a small misbehaving loopback server (real sockets, real HTTP)."""

import threading
import time

import pytest

from rerankflow.backends.http import OpenAIHTTPBackend
from rerankflow.backends.types import Prompt
from rerankflow.errors import BackendError

from .support.servers import DROP, free_port, json_server

pytestmark = pytest.mark.slow  # starts a scripted model server on loopback

OK = {"choices": [{"text": "fine", "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


class Script:
    """What the server answers, request by request; records what it received."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests = []
        self.lock = threading.Lock()

    def next(self, body, headers):
        with self.lock:
            self.requests.append((body, headers))
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def answer(script, body, headers):
    """The scripted answer to one request: ``drop`` the connection, ``sleep`` then answer OK,
    ``echo`` the prompt (after a delay that reverses arrival order), or a status and payload."""
    kind, payload = script.next(body, headers)
    if kind == "drop":  # connection dropped mid-request
        return DROP
    if kind == "sleep":
        time.sleep(payload)
        return 200, OK
    if kind == "echo":
        time.sleep(0.05 * (12 - int(body["prompt"][1:])) / 12)
        return 200, {"choices": [{"text": body["prompt"]}]}
    return kind, payload


@pytest.fixture
def server():
    holder = {}
    with json_server(lambda body, headers: answer(holder["script"], body, headers)) as base:

        def use(*answers, **options):
            holder["script"] = Script(*answers)
            opts = {
                "max_retries": 3,
                "backoff_initial_s": 0.01,
                "backoff_max_s": 0.05,
                "timeout_s": 2.0,
                "api_key_env": None,
                **options,
            }
            return OpenAIHTTPBackend("m", base_url=f"{base}/v1", **opts), holder["script"]

        yield use


PROMPT = [Prompt.raw("hello")]


def test_500s_then_success_is_retried(server):
    backend, script = server((500, {"error": {"message": "boom"}}), (503, b"busy"), (200, OK))
    (out,) = backend.generate(PROMPT)
    assert out.text == "fine" and out.stats.prompt_tokens == 3
    assert len(script.requests) == 3


def test_429_is_retried(server):
    backend, script = server((429, {"error": {"message": "slow down"}}), (200, OK))
    assert backend.generate(PROMPT)[0].text == "fine"
    assert len(script.requests) == 2


def test_400_is_not_retried(server):
    backend, script = server((400, {"error": {"message": "bad max_tokens"}}))
    with pytest.raises(BackendError, match="HTTP 400: bad max_tokens .*not retried"):
        backend.generate(PROMPT)
    assert len(script.requests) == 1


def test_retries_are_bounded(server):
    backend, script = server((500, {"error": {"message": "always"}}), max_retries=2)
    start = time.perf_counter()
    with pytest.raises(BackendError, match="failed after 3 attempts: RetryableHTTPError: HTTP 500: always"):
        backend.generate(PROMPT)
    assert len(script.requests) == 3
    assert time.perf_counter() - start < 2.0


def test_garbage_json_is_a_clear_error(server):
    backend, script = server((200, b"<html>not json</html>"))
    with pytest.raises(BackendError, match="not JSON: '<html>not json</html>'"):
        backend.generate(PROMPT)
    assert len(script.requests) == 1
    backend, _ = server((200, {"id": "x"}))
    with pytest.raises(BackendError, match="without 'choices'"):
        backend.generate(PROMPT)


def test_dropped_connection_then_success(server):
    backend, script = server(("drop", None), (200, OK))
    assert backend.generate(PROMPT)[0].text == "fine"
    assert len(script.requests) == 2


def test_slow_response_past_timeout(server):
    backend, _ = server(("sleep", 1.0), timeout_s=0.2, max_retries=1)
    start = time.perf_counter()
    with pytest.raises(BackendError, match="failed after 2 attempts: ReadTimeout"):
        backend.generate(PROMPT)
    assert time.perf_counter() - start < 1.5


def test_server_down_at_start():
    backend = OpenAIHTTPBackend(
        "m",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        max_retries=2,
        backoff_initial_s=0.01,
        backoff_max_s=0.02,
        api_key_env=None,
    )
    with pytest.raises(BackendError, match="failed after 3 attempts: ConnectError"):
        backend.generate(PROMPT)


def test_api_key_from_environment_is_sent_not_logged(server, monkeypatch, caplog):
    monkeypatch.setenv("RF_TEST_KEY", "sk-secret-123")
    backend, script = server((400, {"error": {"message": "nope"}}), api_key_env="RF_TEST_KEY")
    with pytest.raises(BackendError) as info:
        backend.generate(PROMPT)
    assert script.requests[0][1]["Authorization"] == "Bearer sk-secret-123"
    assert "sk-secret" not in str(info.value) and "sk-secret" not in caplog.text


def test_concurrency_is_bounded(server):
    backend, script = server(("sleep", 0.2), max_concurrency=2)
    start = time.perf_counter()
    out = backend.generate([Prompt.raw(str(i)) for i in range(6)])
    elapsed = time.perf_counter() - start
    assert [c.text for c in out] == ["fine"] * 6
    assert elapsed >= 0.55  # 6 requests, 2 at a time, 0.2 s each: at least 3 rounds
    assert len(script.requests) == 6


def test_results_come_back_in_input_order(server):
    backend, _ = server(("echo", None), max_concurrency=8)
    prompts = [Prompt.raw(f"p{i}") for i in range(12)]
    out = backend.generate(prompts)
    assert [c.text for c in out] == [f"p{i}" for i in range(12)]


def test_labels_after_a_greedy_token_ask_for_two_tokens_and_read_the_second(server):
    """``label_logprobs(after=1)`` (FIRST): both API shapes ask for exactly two tokens (vLLM's
    ``min_tokens``) and read the labels at the second; a server that stops early is an error."""
    completion = {"choices": [{"text": "[B", "logprobs": {"top_logprobs": [{"[": -0.1}, {"B": -0.2, "A": -1.5}]}}],
                  "usage": {"prompt_tokens": 4}}  # fmt: skip
    step = [{"token": "[", "logprob": -0.1, "top_logprobs": [{"token": "[", "logprob": -0.1}]},
            {"token": "B", "logprob": -0.3, "top_logprobs": [{"token": "B", "logprob": -0.3},
                                                             {"token": "A", "logprob": -2.0}]}]  # fmt: skip
    chat = {"choices": [{"message": {"content": "[B"}, "logprobs": {"content": step}}], "usage": {"prompt_tokens": 5}}
    backend, script = server((200, completion))
    (raw,) = backend.label_logprobs([Prompt.raw("rank:")], ["A", "B"], after=1)
    assert raw.logprobs == {"A": -1.5, "B": -0.2} and raw.stats.output_tokens == 2
    script.answers = [(200, chat)]
    (chatted,) = backend.label_logprobs([Prompt.chat("rank")], ["A", "B"], after=1)
    assert chatted.logprobs == {"A": -2.0, "B": -0.3} and chatted.stats.prompt_tokens == 5
    (raw_body, _), (chat_body, _) = script.requests
    assert "prompt" in raw_body and "messages" in chat_body
    assert all(b["max_tokens"] == b["min_tokens"] == 2 for b in (raw_body, chat_body))
    script.answers = [(200, {"choices": [{"text": "[", "logprobs": {"top_logprobs": [{"[": -0.1}]}}]})]
    with pytest.raises(BackendError, match="answer position 1"):
        backend.label_logprobs([Prompt.raw("rank:")], ["A", "B"], after=1)
    backend.label_logprobs([Prompt.raw("rank:")], ["["], after=0)  # the plain case asks for one token only
    assert script.requests[-1][0]["max_tokens"] == 1 and "min_tokens" not in script.requests[-1][0]


def test_prompts_that_say_how_they_are_encoded_are_sent_as_the_engines_token_ids(server, tmp_path):
    """A RankLLM-preset prompt (whole-prompt repair, the tokenizer's BOS) over HTTP with a local
    tokenizer: the server gets the token ids an offline engine would get, as a completions
    prompt; a plain chat prompt still goes to the chat API."""
    from rerankflow.backends import tokens
    from rerankflow.prompts.template import as_template

    from .support.parity import tiny_bos_tokenizer

    tok = tiny_bos_tokenizer()
    tok.save_pretrained(str(tmp_path))
    backend, script = server((200, OK), tokenizer=str(tmp_path))
    prompt = as_template("rank_zephyr").render(query="what’s bm25?", num="1", passages="[1] p")
    backend.generate([prompt])
    body = script.requests[-1][0]
    assert body["prompt"] == tokens.prompt_ids_many(tok, [prompt])[0] and body["prompt"][0] == tok.bos_token_id
    script.answers = [(200, {"choices": [{"message": {"content": "ok"}}]})]
    backend.generate([Prompt.chat("hello")])
    assert "messages" in script.requests[-1][0]
