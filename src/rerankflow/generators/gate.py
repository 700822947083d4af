"""Retrieve or not: ``gate`` decides per message whether a search runs, so "thanks!" costs no
retrieval, reranking or passages in the prompt.

``mode: rule`` (no model) lets a message through without search when the whole message is
small talk: a greeting, thanks, an acknowledgement or a goodbye (``patterns``, regular
expressions matched against the whole message, case-insensitive; punctuation and emoji around
it are ignored). ``mode: llm`` asks a model the ``retrieval-gate`` question and compares the
probabilities of ``yes`` and ``no`` (one scoring call, no generation); ties search. The
decision is recorded on the ranking's trace (``retrieve``, ``reason``); retrievers pass a
query that is not searched through with no candidates, and the generator says so in the prompt.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from ..backends.base import LLMBackend
from ..errors import ConfigError
from ..options import StageOptions
from ..prompts.template import PromptTemplate
from ..types import LLMUsage, Ranking, StageRecord
from .conversation import ConversationStage, history_block

SMALL_TALK = (
    r"(hi|hello|hey|hiya|good (morning|afternoon|evening))( there)?",
    r"(many )?(thanks|thank you|thx|ty|cheers)( (so|very) much| a lot)?",
    r"(ok|okay|cool|great|nice|perfect|got it|i see|sounds good|awesome)",
    r"(bye|goodbye|see you|see ya)",
)
"""The default ``patterns``: whole messages that need no search."""


class GateOptions(StageOptions):
    """Decide per message whether to search (rule: small talk does not; llm: a yes/no question)."""

    mode: Literal["rule", "llm"] = Field("rule", description="rule (small-talk patterns) or llm (yes/no scoring)")
    patterns: list[str] = Field(
        default_factory=lambda: list(SMALL_TALK), description="rule: whole messages that need no search (regex)"
    )
    history_messages: int = Field(4, ge=0, description="llm: the most recent earlier messages the model sees")


class RetrievalGate(ConversationStage):
    """See the module docstring."""

    stage_name = "gate"
    default_template = "retrieval-gate"
    without_model = "rule"
    Options = GateOptions

    def __init__(
        self,
        backend: LLMBackend | None = None,
        template: PromptTemplate | str | None = None,
        options: GateOptions | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(backend, template, options, **settings)
        try:
            self._small_talk = [re.compile(p, re.IGNORECASE) for p in self.options.patterns]
        except re.error as exc:
            raise ConfigError(f"gate: pattern {exc.pattern!r} is not a regular expression ({exc})") from None

    def small_talk(self, text: str) -> bool:
        """The whole message matches a pattern (punctuation, emoji and spaces around it ignored)."""
        core = re.sub(r"^[\W_]+|[\W_]+$", "", text.strip())
        return bool(core) and any(p.fullmatch(core) for p in self._small_talk)

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Each ranking with the gate's decision on its trace."""
        if self.options.mode == "rule":
            return [self._decided(r, not self.small_talk(r.query.asked), "rule", None) for r in batch]
        assert self.backend is not None  # checked in __init__
        self.ensure_loaded()
        prompts = [
            self.template.render(
                history=history_block(r.query.history, self.options.history_messages) or "(none)",
                question=r.query.asked,
            )
            for r in batch
        ]
        scored = self.backend.label_logprobs(prompts, ["yes", "no"]) if batch else []
        return [
            self._decided(r, s.logprobs["yes"] >= s.logprobs["no"], "llm", LLMUsage.of([s.stats]))
            for r, s in zip(batch, scored, strict=True)
        ]

    def _decided(self, ranking: Ranking, search: bool, reason: str, usage: LLMUsage | None) -> Ranking:
        return ranking.recorded(StageRecord(self.name, usage=usage, decisions={"retrieve": search, "reason": reason}))
