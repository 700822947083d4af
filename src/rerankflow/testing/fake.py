"""A scripted backend for control-flow unit tests (never the only test of a scoring path)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from ..backends.base import LLMBackend
from ..backends.types import Completion, ContinuationScores, GenerationParams, LabelScores, Prompt

Reply = str | Callable[[Prompt], str]
LabelFn = Callable[[Prompt, Sequence[str]], dict[str, float]]


def prompt_text(prompt: Prompt) -> str:
    """All text of a prompt (what the fake's rules look at)."""
    return prompt.text if prompt.text is not None else "\n".join(m.content for m in prompt.messages)


class FakeBackend(LLMBackend):
    """Answers from fixed, cycling or computed replies; tokens are whitespace-separated words.

    ``replies``: a list used in turn (cycling) or one callable ``prompt -> text``;
    ``labels``: callable ``(prompt, labels) -> {label: logprob}`` (default: uniform);
    ``continuation``: callable ``(prompt, continuation) -> [logprob per word]``.
    Every prompt it saw is kept in ``seen`` (in call order).
    """

    kind = "fake"

    def __init__(
        self,
        replies: Sequence[Reply] | Reply = ("",),
        *,
        labels: LabelFn | None = None,
        continuation: Callable[[Prompt, str], list[float]] | None = None,
        model: str = "fake",
    ) -> None:
        super().__init__(model)
        self.replies = [replies] if isinstance(replies, str) or callable(replies) else list(replies)
        self.label_fn = labels
        self.continuation_fn = continuation
        self.seen: list[Prompt] = []
        self._turn = 0

    def load(self) -> None:
        """Nothing to load."""

    def count_tokens(self, text: str) -> int:
        """Whitespace-separated words."""
        return len(text.split())

    def truncate_many(self, texts: Sequence[str], max_tokens: int) -> list[str]:
        """First ``max_tokens`` words of each text."""
        return [t if len(t.split()) <= max_tokens else " ".join(t.split()[:max_tokens]) for t in texts]

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Spans of the whitespace-separated words."""
        return [m.span() for m in re.finditer(r"\S+", text)]

    def _reply(self, prompt: Prompt) -> str:
        reply = self.replies[self._turn % len(self.replies)]
        self._turn += 1
        return reply(prompt) if callable(reply) else reply

    async def _agenerate(self, prompts: list[Prompt], params: GenerationParams) -> list[Completion]:
        self.seen.extend(prompts)
        out = []
        for p in prompts:
            text = self._reply(p)
            out.append(
                Completion(text, self.stats(self.count_tokens(prompt_text(p)), self.count_tokens(text), 0.0), "stop")
            )
        return out

    async def _alabel_logprobs(
        self, prompts: list[Prompt], labels: list[str], after: int = 0, context: str | None = None
    ) -> list[LabelScores]:
        self.seen.extend(prompts)
        out = []
        for p in prompts:
            scores = self.label_fn(p, labels) if self.label_fn else {label: -float(len(labels)) for label in labels}
            out.append(LabelScores(dict(scores), self.stats(self.count_tokens(prompt_text(p)), 1, 0.0)))
        return out

    async def _acontinuation_logprobs(
        self, prompts: list[Prompt], continuations: list[str]
    ) -> list[ContinuationScores]:
        self.seen.extend(prompts)
        out = []
        for p, c in zip(prompts, continuations, strict=True):
            values = self.continuation_fn(p, c) if self.continuation_fn else [-1.0] * len(c.split())
            out.append(
                ContinuationScores(
                    tuple(values), self.stats(self.count_tokens(prompt_text(p)) + len(c.split()), 0, 0.0)
                )
            )
        return out
