"""OpenAI-compatible HTTP backend: ``vllm serve``, SGLang, llama.cpp, hosted APIs.

* generation: ``/chat/completions`` for chat prompts, ``/completions`` for raw text;
* labels: ``/completions`` (or ``/chat/completions``) with ``max_tokens=1`` and
  ``top_logprobs`` (k <= 20): a label outside the server's top-k cannot be scored exactly and
  is reported in ``LabelScores.missing`` with the smallest returned value. Against a vLLM
  server, ``vllm_label_ids=True`` (with ``tokenizer``) sends vLLM's ``logprob_token_ids``
  extension instead and every label is scored exactly;
* streaming: server-sent events (``stream: true``), one generation per stream;
* continuations: ``/completions`` with ``echo: true`` and ``logprobs``, keeping the tokens
  whose text offset falls inside the continuation. Chat prompts need ``tokenizer`` (a local
  folder or HF id) so the chat template can be applied here.

Requests run concurrently up to ``max_concurrency``; connection errors, timeouts, 429 and 5xx
are retried with exponential backoff and jitter (tenacity), never other 4xx. The API key is
read from the environment variable named by ``api_key_env`` and never logged.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

from pydantic import Field, model_validator

from ..cancel import CancelToken
from ..errors import BackendError
from . import tokens
from .base import LLMBackend
from .http_transport import HTTPTransport, TransportOptions, describe_error
from .models import resolve_llm
from .types import Completion, ContinuationScores, GenerationParams, LabelScores, Prompt, StreamChunk

log = logging.getLogger(__name__)


class HTTPOptions(TransportOptions):
    """An OpenAI-compatible server: where it is (:class:`TransportOptions`) and how to read it."""

    tokenizer: str | None = Field(
        None, description="a local copy of the model's tokenizer (folder or HF id): token counts, exact prompts"
    )
    top_logprobs: int = Field(20, ge=1, description="log-probabilities asked per position (label scoring)")
    vllm_label_ids: bool = Field(
        False, description="ask vLLM for the labels' own log-probabilities by token id (needs tokenizer)"
    )

    @model_validator(mode="after")
    def _ids_need_a_tokenizer(self) -> HTTPOptions:
        if self.vllm_label_ids and not self.tokenizer:
            raise ValueError("vllm_label_ids needs tokenizer: <model folder or HF id> to map labels to token ids")
        return self


class OpenAIHTTPBackend(LLMBackend):
    """Any server that speaks the OpenAI completions / chat completions API."""

    kind = "http"

    Options = HTTPOptions
    options: HTTPOptions

    def __init__(
        self, model: str, *, revision: str | None = None, options: HTTPOptions | None = None, **settings: Any
    ) -> None:
        super().__init__(model, revision=revision)
        self.options = HTTPOptions.build(options, settings, f"http backend {model!r}", BackendError)
        self.http = HTTPTransport(self.options)
        self.tokenizer: Any = None

    def load(self) -> None:
        """Load the local tokenizer, if one is named (the server needs no loading here)."""
        HTTPTransport.check_installed()
        if self.options.tokenizer:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(resolve_llm(self.options.tokenizer))

    def _local_tokenizer(self, what: str) -> Any:
        """Token counts, cuts and offsets over HTTP need a local copy of the model's tokenizer."""
        self.ensure_loaded()
        if self.tokenizer is None:
            raise BackendError(f"{what} over HTTP needs a local tokenizer; set tokenizer: <model folder or HF id>")
        return self.tokenizer

    async def _astream(
        self, prompt: Prompt, params: GenerationParams, cancel: CancelToken
    ) -> AsyncGenerator[StreamChunk, None]:
        """Server-sent events (``stream: true``); usage comes in the last event when the server
        supports ``stream_options.include_usage`` (vLLM and OpenAI do). A stream is not retried
        (pieces may already have been shown): a refused, failed or cut stream is a BackendError.
        """
        import httpx

        path, body = self._generation_body(prompt, params)
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        http = self.http
        timeout = httpx.Timeout(self.options.timeout_s, connect=self.options.connect_timeout_s)
        url = f"{http.base_url}{path}"
        start = time.perf_counter()
        text, finish, usage = "", None, {}
        with http.key_blanked():
            async with httpx.AsyncClient(timeout=timeout, headers=http.headers()) as client:
                try:
                    async with client.stream("POST", url, json=body) as response:
                        if response.status_code >= 400:
                            await response.aread()
                            http.decode(response, _with_choices)  # raises the same errors as a plain request
                        async for line in response.aiter_lines():
                            event = _sse_event(line, url)
                            if event is None:
                                continue
                            if event.get("usage"):
                                usage = event["usage"]
                            for choice in event.get("choices") or []:
                                piece = (
                                    choice.get("text")
                                    if path == "/completions"
                                    else (choice.get("delta") or {}).get("content")
                                )
                                finish = choice.get("finish_reason") or finish
                                if piece:
                                    text += piece
                                    yield StreamChunk(piece)
                except httpx.HTTPError as exc:
                    raise BackendError(f"{url}: the stream failed: {describe_error(exc)}") from exc
        stats = self.stats(
            int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)), time.perf_counter() - start
        )
        yield StreamChunk("", Completion(text, stats, finish))

    # -- the three primitives -----------------------------------------------------------------
    def _exact_ids(self, prompt: Prompt) -> list[int] | None:
        """The token ids of a prompt that says exactly how it is encoded (repairs of the whole
        rendered text, the tokenizer's special tokens, a token cap), computed with the local
        tokenizer as the offline engines compute them and sent as a completions prompt; ``None``
        for other prompts or without a local tokenizer (then the server encodes the text, and a
        chat prompt's repairs apply message by message)."""
        if self.tokenizer is None or not (prompt.repairs or prompt.special_tokens is not None or prompt.cap):
            return None
        return tokens.prompt_ids_many(self.tokenizer, [prompt])[0]

    def _text_prompt(self, prompt: Prompt) -> str | None:
        """Raw text of a prompt, rendering chat through the local tokenizer when there is one."""
        if prompt.text is not None:
            return tokens.repaired(prompt.text, prompt.repairs)
        return tokens.render(self.tokenizer, prompt) if self.tokenizer is not None else None

    def _completion_prompt(self, prompt: Prompt) -> str | list[int] | None:
        """A completions prompt: exact ids (:meth:`_exact_ids`), else :meth:`_text_prompt`
        (``None``: send chat messages)."""
        exact = self._exact_ids(prompt)
        return exact if exact is not None else self._text_prompt(prompt)

    def _generation_body(self, prompt: Prompt, params: GenerationParams) -> tuple[str, dict[str, Any]]:
        """Endpoint path and request body of one generation."""
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        text: str | list[int] | None = self._exact_ids(prompt)
        if text is None:
            text = prompt.text
        if text is not None:
            lp: dict[str, Any] = {"logprobs": params.logprobs} if params.logprobs else {}
            return "/completions", {**body, "prompt": text, **lp}
        lp = {"logprobs": True, "top_logprobs": params.logprobs} if params.logprobs else {}
        return "/chat/completions", {**body, "messages": _messages(prompt), **lp}

    async def _agenerate(self, prompts: list[Prompt], params: GenerationParams) -> list[Completion]:
        bodies = [self._generation_body(p, params) for p in prompts]
        result = []
        for body, (data, latency) in zip(bodies, await self._post_mixed(bodies), strict=True):
            choice = data["choices"][0]
            text = choice.get("text") if body[0] == "/completions" else (choice.get("message") or {}).get("content")
            if not isinstance(text, str):
                raise BackendError(f"server answer has no generated text: {str(choice)[:120]}")
            usage = data.get("usage") or {}
            stats = self.stats(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)), latency)
            result.append(Completion(text, stats, choice.get("finish_reason"), _generated_top_logprobs(choice)))
        return result

    async def _alabel_logprobs(
        self, prompts: list[Prompt], labels: list[str], after: int, context: str | None
    ) -> list[LabelScores]:
        k = self.options.top_logprobs
        steps = after + 1
        # vLLM's min_tokens extension; other servers may stop early (an error below)
        length: dict[str, Any] = {"max_tokens": steps, **({"min_tokens": steps} if after else {})}
        extra: dict[str, Any] = {}
        if self.options.vllm_label_ids:
            extra["logprob_token_ids"] = tokens.label_ids(self.tokenizer, labels, context)
        bodies: list[tuple[str, dict[str, Any]]] = []
        for p in prompts:
            text = self._completion_prompt(p)
            if text is not None:
                body = {"model": self.model, "prompt": text, **length, "temperature": 0, "logprobs": k, **extra}
                bodies.append(("/completions", body))
            else:
                msgs = _messages(p)
                bodies.append(
                    (
                        "/chat/completions",
                        {
                            "model": self.model,
                            "messages": msgs,
                            **length,
                            "temperature": 0,
                            "logprobs": True,
                            "top_logprobs": k,
                        },
                    )
                )
        answers = await self._post_mixed(bodies)
        result = []
        for data, latency in answers:
            positions = _generated_top_logprobs(data["choices"][0]) or ({},)
            if len(positions) <= after:
                raise BackendError(
                    f"the server answered {len(positions)} tokens; labels are read at answer position {after} "
                    "(a server without vLLM's min_tokens may stop early)"
                )
            top = positions[after]
            if not top:
                raise BackendError("the server returned no logprobs; it must support 'logprobs' / 'top_logprobs'")
            floor = min(top.values())
            scores = {label: top.get(label, floor) for label in labels}
            missing = frozenset(label for label in labels if label not in top)
            usage = data.get("usage") or {}
            result.append(LabelScores(scores, self.stats(int(usage.get("prompt_tokens", 0)), steps, latency), missing))
        return result

    async def _post_mixed(self, bodies: list[tuple[str, dict[str, Any]]]) -> list[tuple[dict[str, Any], float]]:
        paths = sorted({p for p, _ in bodies})
        answers: dict[str, Any] = {
            path: iter(await self.http.post_all(path, [b for p, b in bodies if p == path], _with_choices))
            for path in paths
        }
        return [next(answers[p]) for p, _ in bodies]

    async def _acontinuation_logprobs(
        self, prompts: list[Prompt], continuations: list[str]
    ) -> list[ContinuationScores]:
        texts = []
        for p in prompts:
            text = self._text_prompt(p)
            if text is None:
                self._local_tokenizer("scoring a continuation of a chat prompt")
            texts.append(text or "")
        bodies = [
            {"model": self.model, "prompt": t + c, "echo": True, "max_tokens": 1, "temperature": 0, "logprobs": 0}
            for t, c in zip(texts, continuations, strict=True)
        ]
        answers = await self.http.post_all("/completions", bodies, _with_choices)
        result = []
        for t, c, (data, latency) in zip(texts, continuations, answers, strict=True):
            lp = data["choices"][0].get("logprobs") or {}
            offsets, values = lp.get("text_offset"), lp.get("token_logprobs")
            if not isinstance(offsets, list) or not isinstance(values, list):
                raise BackendError("the server did not echo prompt logprobs; it must support 'echo' with 'logprobs'")
            lo, hi = len(t), len(t) + len(c)
            picked = tuple(
                float(v) for off, v in zip(offsets, values, strict=False) if lo <= off < hi and v is not None
            )
            usage = data.get("usage") or {}
            result.append(ContinuationScores(picked, self.stats(int(usage.get("prompt_tokens", 0)), 1, latency)))
        return result


def _sse_event(line: str, url: str) -> dict[str, Any] | None:
    """One server-sent event line as JSON (``None`` for blank lines, comments and ``[DONE]``)."""
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    if payload == "[DONE]":
        return None
    try:
        event = json.loads(payload)
    except json.JSONDecodeError:
        raise BackendError(f"{url} streamed an event that is not JSON: {payload[:120]!r}") from None
    if not isinstance(event, dict):
        raise BackendError(f"{url} streamed an event that is not a JSON object: {payload[:120]!r}")
    if "error" in event:
        raise BackendError(f"{url} reported an error mid-stream: {str(event['error'])[:200]}")
    return event


def _with_choices(url: str, data: Any) -> None:
    """An OpenAI completion answer has a non-empty ``choices`` list."""
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
        raise BackendError(f"{url} answered JSON without 'choices': {str(data)[:120]}")


def _messages(prompt: Prompt) -> list[dict[str, str]]:
    """Chat messages in the OpenAI request shape (the prompt's repairs applied to each)."""
    return [{"role": m.role, "content": tokens.repaired(m.content, prompt.repairs)} for m in prompt.messages]


def _generated_top_logprobs(choice: dict[str, Any]) -> tuple[dict[str, float], ...] | None:
    """Top logprobs of each generated token, from either API shape."""
    lp = choice.get("logprobs")
    if not lp:
        return None
    if isinstance(lp.get("content"), list):  # chat completions
        return tuple(
            {t["token"]: float(t["logprob"]) for t in step.get("top_logprobs") or []} for step in lp["content"]
        )
    tops = lp.get("top_logprobs")
    if isinstance(tops, list):  # completions
        return tuple({k: float(v) for k, v in (step or {}).items()} for step in tops)
    return None
