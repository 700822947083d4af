"""Token-level pruning by language-model surprisal.

Each passage is split into words (units made of whole tokens of the backend's tokenizer) and
every token gets its log-probability from the backend (``continuation_logprobs``: vLLM
``prompt_logprobs``, HF forward passes, or a server's echoed logprobs).

* ``self_info`` (Selective-Context, Li et al. 2023): a word's score is its self-information,
  the sum of ``-log p(token | preceding text)`` over its tokens, the passage's title as the
  only preceding context. Predictable words carry little information and go first.
* ``question`` (question-aware, after LongLLMLingua, Jiang et al. 2024): the self-information
  plus ``question_weight`` times the contrastive term ``log p(token | question, preceding)
  - log p(token | preceding)``: words that the question makes more likely (its entities and
  their neighbours) are kept ahead of equally surprising words it says nothing about. This
  costs a second scoring pass per passage, with the question in the prompt.

Words are kept best first until the budget is full, in their source order; dropped words
simply disappear from the text (no ellipsis), as in both papers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from ..backends.base import LLMBackend
from ..backends.types import Prompt
from ..errors import BackendError
from ..types import Document, Ranking
from .base import BudgetedOptions, Memo, QueryNotes, Tokenizes, Unit, UnitCompressor

SurprisalMode = Literal["self_info", "question"]


def word_units(text: str, offsets: Sequence[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """Group token spans into words: ``(start, end, first_token, last_token + 1)`` per word.
    A token starts a new word when whitespace precedes it (or it begins with whitespace);
    tokens that share characters (pieces of one multi-byte character) stay together.
    """
    words: list[list[int]] = []
    prev_end = 0
    for i, (a, b) in enumerate(offsets):
        starts_word = i == 0 or (a >= prev_end and (text[a : a + 1].isspace() or (a > 0 and text[a - 1].isspace())))
        if starts_word:
            words.append([a, b, i, i + 1])
        else:
            words[-1][1], words[-1][3] = max(words[-1][1], b), i + 1
        prev_end = max(prev_end, b)
    out = []
    for a, b, first, last in words:
        piece = text[a:b]
        lead = len(piece) - len(piece.lstrip())
        if piece.strip():
            out.append((a + lead, b, first, last))
    return out


class SurprisalOptions(BudgetedOptions):
    """Drop the least informative words (LM self-information; question-aware with mode: question)."""

    mode: SurprisalMode = "self_info"
    question_weight: float = Field(1.0, ge=0, description="question mode: weight of the question's contrastive term")


class SurprisalPruner(UnitCompressor):
    """Drop the least informative words until the context fits (see the module docstring)."""

    shown = ("backend",)

    stage_name = "surprisal"
    calls_llm = True
    Options = SurprisalOptions
    options: SurprisalOptions

    def __init__(
        self,
        backend: LLMBackend,
        *,
        tokenizer: Tokenizes | None = None,
        options: SurprisalOptions | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(tokenizer or backend, options, settings)
        self.backend = backend
        self._memo: Memo[tuple[str, str, str], list[tuple[int, int, float, int]]] = Memo()
        """Scored words per (question or "", docid, text): a passage is scored once while it
        stays in the bounded memo, so a budget sweep on the same stage costs no model calls."""

    @property
    def mode(self) -> SurprisalMode:
        """``self_info`` or ``question`` (from the options)."""
        return self.options.mode

    def load(self) -> None:
        """Start the scoring backend."""
        self.backend.ensure_loaded()

    @staticmethod
    def _prefix(doc: Document) -> str:
        return f"{doc.title}\n" if doc.title else "\n"

    def _key(self, query: str, doc: Document) -> tuple[str, str, str]:
        return (query if self.mode == "question" else "", doc.docid, doc.text)

    def score_units(self, batch: Sequence[Ranking], notes: Sequence[QueryNotes]) -> list[list[Unit]]:
        """Words of every passage with their (question-aware) self-information."""
        todo = {
            self._key(r.query.text, c.doc): (qi, c.doc)
            for qi, r in enumerate(batch)
            for c in r.candidates
            if c.doc.text.strip() and self._key(r.query.text, c.doc) not in self._memo
        }
        scored = self._score(batch, list(todo.values()), notes)
        out: list[list[Unit]] = []
        for r in batch:
            units = []
            for p, c in enumerate(r.candidates):
                if c.doc.text.strip():
                    key = self._key(r.query.text, c.doc)
                    words = scored[key] if key in scored else self._memo.get(key)
                    units += [Unit(p, a, b, score, n) for a, b, score, n in words]
            out.append(units)
        return out

    def _score(
        self, batch: Sequence[Ranking], jobs: list[tuple[int, Document]], notes: Sequence[QueryNotes]
    ) -> dict[tuple[str, str, str], list[tuple[int, int, float, int]]]:
        """Score the passages of ``jobs`` (query index, document), also into the memo."""
        out: dict[tuple[str, str, str], list[tuple[int, int, float, int]]] = {}
        if not jobs:
            return out
        prompts = [Prompt.raw(self._prefix(doc)) for _, doc in jobs]
        if self.mode == "question":
            prompts += [Prompt.raw(f"Question: {batch[qi].query.text}\n{self._prefix(doc)}") for qi, doc in jobs]
        texts = [doc.text for _, doc in jobs]
        scored = self.backend.continuation_logprobs(prompts, texts * (2 if self.mode == "question" else 1))
        for j, (qi, doc) in enumerate(jobs):
            plain = scored[j].token_logprobs
            stats = [scored[j].stats]
            offsets = self.backend.token_offsets(doc.text)
            if len(offsets) != len(plain):
                raise BackendError(
                    f"{self.backend!r} scored {len(plain)} tokens of passage {doc.docid!r} but its tokenizer gives "
                    f"{len(offsets)}; surprisal pruning needs the scoring and the local tokenizer to agree "
                    "(use the vllm or hf backend, or an http backend with the server's tokenizer)"
                )
            gain = [0.0] * len(plain)
            if self.mode == "question":
                cond = scored[len(jobs) + j]
                stats.append(cond.stats)
                gain = [self.options.question_weight * (q - u) for q, u in zip(cond.token_logprobs, plain, strict=True)]
            notes[qi].calls.extend(stats)
            key = self._key(batch[qi].query.text, doc)
            out[key] = [
                (a, b, sum(-plain[t] + gain[t] for t in range(first, last)), last - first)
                for a, b, first, last in word_units(doc.text, offsets)
            ]
            self._memo.put(key, out[key])
        return out
