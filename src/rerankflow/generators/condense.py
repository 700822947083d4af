"""Conversation-aware retrieval: ``condense`` turns the last message of a chat plus its history
into the standalone query that the retrievers and rerankers work with.

Three modes, cheapest first: ``last_turn`` searches the last message as it is (what a server
without history does); ``user_turns`` searches the last ``turns`` user messages joined, oldest
first; ``llm`` asks a model to rewrite the last message with the conversation in view (the
``condense`` template; any backend). A query without history is left as it is and costs
nothing. The rewritten query replaces ``Query.text`` (``Query.original`` keeps the message as
written, which the answer generator shows), and the stage's trace record says what was searched.
Model output is cleaned deterministically: the first non-empty line, without a ``Query:``
label or surrounding quotes; an empty rewrite falls back to the message as written and is
counted as a repair.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from pydantic import Field

from ..backends.types import GenerationParams
from ..options import StageOptions
from ..types import LLMUsage, Ranking, StageRecord
from .conversation import ConversationStage, history_block

_LABEL = re.compile(r"^\s*(?:standalone\s+)?(?:search\s+)?query\s*:\s*", re.IGNORECASE)


class CondenseOptions(StageOptions):
    """Rewrite a conversation's last message as a standalone search query (skipped without history)."""

    mode: Literal["llm", "user_turns", "last_turn"] = Field(
        "llm", description="llm (a model rewrites it), user_turns (the last user messages joined), last_turn (as is)"
    )
    turns: int = Field(3, ge=1, description="user_turns: how many user messages, the last one included")
    history_messages: int = Field(6, ge=1, description="llm: the most recent earlier messages the model sees")
    max_tokens: int = Field(48, ge=1, description="llm: longest rewrite, in tokens")


def clean_rewrite(text: str) -> str:
    """The query in a model's answer: first non-empty line, label and quotes removed."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = _LABEL.sub("", line).strip()
    if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'`":
        line = line[1:-1].strip()
    return line


class Condenser(ConversationStage):
    """See the module docstring."""

    stage_name = "condense"
    default_template = "condense"
    without_model = "user_turns or last_turn"
    Options = CondenseOptions

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Each ranking with its standalone query and a record of what is searched."""
        o = self.options
        talk = [i for i, r in enumerate(batch) if any(t.role in ("user", "assistant") for t in r.query.history)]
        rewrites: dict[int, tuple[str, LLMUsage | None, dict[str, int]]] = {}
        if o.mode == "user_turns":
            for i in talk:
                q = batch[i].query
                users = [t.text for t in q.history if t.role == "user"][-(o.turns - 1) :] if o.turns > 1 else []
                rewrites[i] = (" ".join([*users, q.asked]), None, {})
        elif o.mode == "llm" and talk and self.backend is not None:
            self.ensure_loaded()
            prompts = [
                self.template.render(
                    history=history_block(batch[i].query.history, o.history_messages), question=batch[i].query.asked
                )
                for i in talk
            ]
            done = self.backend.generate(prompts, GenerationParams(max_tokens=o.max_tokens, temperature=0.0, seed=0))
            for i, completion in zip(talk, done, strict=True):
                text = clean_rewrite(completion.text)
                repairs = {} if text else {"empty rewrite": 1}
                rewrites[i] = (text or batch[i].query.asked, LLMUsage.of([completion.stats]), repairs)
        out = []
        for i, r in enumerate(batch):
            q = r.query
            if i not in rewrites:  # no history, or mode last_turn: searched as written
                record = StageRecord(self.name, decisions={"searched": q.text, "condensed": False})
                out.append(r.recorded(record))
                continue
            text, usage, repairs = rewrites[i]
            record = StageRecord(
                self.name,
                usage=usage,
                repairs=repairs if usage is not None else None,
                decisions={"searched": text, "original": q.asked, "condensed": True},
            )
            out.append(replace(r, query=replace(q, text=text, original=q.asked)).recorded(record))
        return out
