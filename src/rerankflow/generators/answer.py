"""Answer generation with numbered citations.

The generator is the last stage of a RAG pipeline. It shows the ranking's passages, in the
order they arrive (put a ``reorder`` stage before it to choose that order), numbered from 1:
``[n] Title: text``. The prompt goes through the model's own chat template (the backend
applies it). Markers ``[n]``, ``[n, m]`` and ``[Passage n]`` in the answer become
:class:`~rerankflow.types.Citation` objects that map ``n`` back to the document id;
numbers that were not in the context are kept with ``docid=None`` and counted as repairs in
the ranking's trace. The result travels with the ranking (``Ranking.answer``): answer text,
citations, the passages actually sent, the user message, token counts and latency.

``astream``/``stream`` give the same answer piece by piece as the backend produces it.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from pydantic import Field

from ..backends.base import LLMBackend, run_sync
from ..backends.types import Completion, GenerationParams, Message, Prompt
from ..cancel import CancelToken
from ..errors import BackendError, ConfigError
from ..options import StageOptions
from ..prompts.template import PromptTemplate, as_template
from ..stage import Transformer, require_at_most
from ..types import Answer, Citation, Document, LLMUsage, Ranking, StageRecord, one_line

_MARKER = re.compile(r"\[\s*(?:passage\s*)?(\d+(?:\s*[,;]\s*(?:passage\s*)?\d+)*)\s*\]", re.IGNORECASE)


def parse_citations(text: str, context: Sequence[Document]) -> tuple[Citation, ...]:
    """Citation markers of ``text`` in order of first use; ``[n]`` is ``context[n - 1]``."""
    seen: dict[int, Citation] = {}
    for m in _MARKER.finditer(text):
        for num in re.findall(r"\d+", m.group(1)):
            n = int(num)
            if n not in seen:
                seen[n] = Citation(n, context[n - 1].docid if 1 <= n <= len(context) else None)
    return tuple(seen.values())


def passage_line(n: int, doc: Document) -> str:
    """How passage ``[n]`` appears in the prompt: number, title, text, on one line."""
    body = one_line(doc.text)
    return f"[{n}] {one_line(doc.title)}: {body}" if doc.title else f"[{n}] {body}"


@dataclass(frozen=True)
class AnswerChunk:
    """A streamed piece of an answer; the last chunk has empty text, the whole ``answer`` and
    the answered ``ranking`` (its trace holds the generator's record)."""

    text: str
    answer: Answer | None = None
    ranking: Ranking | None = None


class GenerateOptions(StageOptions):
    """Generate an answer from the ranking's passages with numbered citations [n]."""

    max_tokens: int = Field(128, ge=1, description="longest answer, in tokens")
    temperature: float = Field(0.0, ge=0)
    seed: int | None = 0
    max_passages: int | None = Field(
        50, ge=1, description="most passages one prompt may show (error above: cut or compress first)"
    )
    history_tokens: int = Field(
        1024, ge=0, description="a conversation's earlier turns shown to the model, at most (oldest dropped first)"
    )


class AnswerGenerator(Transformer):
    """Generate a cited answer for every ranking (see the module docstring)."""

    stage_name = "generate"
    shown = ("backend",)

    Options = GenerateOptions

    def __init__(
        self,
        backend: LLMBackend,
        template: PromptTemplate | str | None = None,
        options: GenerateOptions | None = None,
        **settings: Any,
    ) -> None:
        self.options = GenerateOptions.build(options, settings, "generate")
        t = as_template(template or "answer-cited")
        if set(t.placeholders) != {"query", "passages"}:
            raise ConfigError(f"template {t.name!r} must have the placeholders query and passages")
        o = self.options
        self.backend = backend
        self.template = t
        self.params = GenerationParams(max_tokens=o.max_tokens, temperature=o.temperature, seed=o.seed)

    def load(self) -> None:
        """Start the backend."""
        self.backend.ensure_loaded()

    def prompt(self, ranking: Ranking) -> tuple[Prompt, str, tuple[Document, ...]]:
        """The prompt for a ranking, its user message, and the passages in it (in order).
        The question is the message as the user wrote it; in a conversation the earlier turns
        come before it as chat messages (:meth:`with_history`)."""
        require_at_most([ranking], self.options.max_passages, self.name, setting="max_passages")
        context = tuple(c.doc for c in ranking.candidates)
        block = "\n".join(passage_line(n, d) for n, d in enumerate(context, 1))
        if not context and ranking.retrieval_skipped:
            block = "(none: this message was answered without searching the documents)"
        prompt = self.with_history(self.template.render(query=ranking.query.asked, passages=block), ranking)
        return prompt, prompt.messages[-1].content if prompt.messages else prompt.text or "", context

    def with_history(self, prompt: Prompt, ranking: Ranking) -> Prompt:
        """``prompt`` with the conversation before its last message: the request's system
        messages appended to the template's system message, then the latest user and assistant
        turns that fit ``history_tokens`` (oldest dropped first). Raw-text prompts are left as
        they are (their format has no turns)."""
        history = ranking.query.history
        if not history or not prompt.messages:
            return prompt
        *head, last = prompt.messages
        system = "\n\n".join(
            [*(m.content for m in head if m.role == "system"), *(t.text for t in history if t.role == "system")]
        )
        turns: list[Message] = []
        budget = self.options.history_tokens
        for t in reversed([t for t in history if t.role in ("user", "assistant")]):
            cost = self.backend.count_tokens(t.text)
            if cost > budget:
                break
            budget -= cost
            turns.insert(0, Message("user" if t.role == "user" else "assistant", t.text))
        messages = ([Message("system", system)] if system else []) + turns + [last]
        return replace(prompt, messages=tuple(messages))

    def _answered(
        self, ranking: Ranking, completion: Completion, user: str, context: tuple[Document, ...], latency_s: float = 0.0
    ) -> Ranking:
        """``ranking`` with its answer and the generator's record (usage, out-of-range citations);
        ``latency_s`` stands in when the backend reports no latency."""
        text = completion.text.strip()
        citations = parse_citations(text, context)
        bad = sum(c.docid is None for c in citations)
        record = StageRecord(self.name, LLMUsage.of([completion.stats]), {"citations out of range": bad} if bad else {})
        block_tokens = sum(self.backend.count_tokens(passage_line(n, d)) for n, d in enumerate(context, 1))
        s = completion.stats
        answer = Answer(
            text,
            citations,
            context,
            user,
            s.prompt_tokens,
            block_tokens,
            s.output_tokens,
            s.latency_s or latency_s,
            completion.finish_reason,
        )
        return ranking.with_answer(answer).recorded(record)

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Answer every ranking with the stage's generation settings."""
        return self.answer(batch)

    def answer(
        self,
        batch: Sequence[Ranking],
        params: GenerationParams | None = None,
        cancel: Sequence[CancelToken | None] | None = None,
    ) -> list[Ranking]:
        """Answer every ranking (all prompts go to the backend together); ``params`` replaces
        the stage's generation settings for this call (a server request's ``max_tokens``...);
        ``cancel`` (one token per ranking) stops the generation of requests that went away
        (their answer is cut, ``finish_reason="cancelled"``)."""
        self.ensure_loaded()
        parts = [self.prompt(r) for r in batch]
        prompts = [p for p, _, _ in parts]
        completions = self.backend.generate(prompts, params or self.params, cancel=cancel) if parts else []
        return [self._answered(r, c, user, ctx) for r, c, (_, user, ctx) in zip(batch, completions, parts, strict=True)]

    async def astream(
        self, ranking: Ranking, params: GenerationParams | None = None, cancel: CancelToken | None = None
    ) -> AsyncGenerator[AnswerChunk, None]:
        """Answer one ranking, yielding text pieces as they are generated, then the answer
        (closing the stream early, or ``cancel``, stops the generation)."""
        self.ensure_loaded()
        prompt, user, context = self.prompt(ranking)
        start = time.perf_counter()
        async with aclosing(self.backend.astream(prompt, params or self.params, cancel=cancel)) as chunks:
            async for chunk in chunks:  # closing this stream closes the backend's, which stops generating
                if chunk.completion is None:
                    yield AnswerChunk(chunk.text)
                else:
                    answered = self._answered(ranking, chunk.completion, user, context, time.perf_counter() - start)
                    yield AnswerChunk("", answered.answer, answered)

    def stream(self, ranking: Ranking, on_text: Callable[[str], None]) -> Ranking:
        """Sync streaming: call ``on_text`` with every piece; return the ranking with its answer."""

        async def consume() -> Ranking:
            final: Ranking | None = None
            async for chunk in self.astream(ranking):
                if chunk.ranking is not None:
                    final = chunk.ranking
                elif chunk.text:
                    on_text(chunk.text)
            if final is None:  # every backend ends a stream with its completion
                raise BackendError(f"{self.backend!r} ended a stream without a completion")
            return final

        return run_sync(consume())
