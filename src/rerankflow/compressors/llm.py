"""LLM-judged context compression: a relevance filter and a sentence extractor.

* :class:`LLMFilter` asks, per passage, whether it helps answer the question and keeps it
  when ``P(yes) / (P(yes) + P(no))`` (label log-probabilities, no generation) reaches
  ``threshold``. The ``keep_at_least`` best-judged passages are kept whatever their score,
  so the generator is never left with an empty context by a timid judge.
* :class:`LLMExtractor` shows each passage as numbered sentences and asks for the numbers
  of the helpful ones; only sentences of the source are ever kept (the model's words never
  enter the context). Repair is deterministic and counted in the trace's ``repairs``: numbers out of
  range are ignored; an answer with no number at all keeps the passage whole; ``[0]``,
  "none", or only out-of-range numbers drop the passage.

Both then fit the optional budget in rank order, and record usage per query in its trace.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field

from ..backends.base import LLMBackend
from ..backends.types import GenerationParams
from ..errors import ConfigError
from ..prompts.template import PromptTemplate, as_template
from ..types import Candidate, Ranking, document_text, one_line
from .base import Compressor, CompressorOptions, Memo, QueryNotes, Tokenizes, Unit, assemble
from .sentences import split_sentences

_NUMBER = re.compile(r"\[(\d+)\]")


def _template(template: PromptTemplate | str, labels: bool) -> PromptTemplate:
    t = as_template(template)
    if set(t.placeholders) != {"query", "passage"}:
        raise ConfigError(f"template {t.name!r} must have the placeholders query and passage")
    if labels and len(t.labels or []) != 2:
        raise ConfigError(f"template {t.name!r} must have two labels (yes, no)")
    return t


def _pair_key(ranking: Ranking, candidate: Candidate) -> tuple[str, str, str]:
    return (ranking.query.text, candidate.docid, candidate.doc.text)


class _LLMCompressor(Compressor):
    """Shared parts: backend, template, passage cut; usage and repairs go to the trace."""

    shown = ("backend",)

    calls_llm = True
    repairs_output = True
    default_template: ClassVar[str]
    needs_labels: ClassVar[bool] = False

    def __init__(
        self,
        backend: LLMBackend,
        template: PromptTemplate | str | None,
        tokenizer: Tokenizes | None,
        options: CompressorOptions | None,
        settings: dict[str, Any],
    ) -> None:
        super().__init__(tokenizer or backend, options, settings)
        self.backend = backend
        self.template = _template(template or self.default_template, labels=self.needs_labels)
        self.max_passage_tokens: int | None = getattr(self.options, "max_passage_tokens", None)

    def load(self) -> None:
        """Start the backend."""
        self.backend.ensure_loaded()

    def _cut(self, text: str) -> str:
        return text if self.max_passage_tokens is None else self.backend.truncate(text, self.max_passage_tokens)


class LLMFilterOptions(CompressorOptions):
    """Keep passages the LLM says help answer the question (P(yes) >= threshold)."""

    threshold: float = Field(0.5, ge=0, le=1, description="P(yes) a passage needs to be kept")
    keep_at_least: int = Field(1, ge=0, description="always keep this many best-judged passages")
    max_passage_tokens: int | None = Field(256, ge=1, description="cut passages to this many tokens")


class LLMFilter(_LLMCompressor):
    """Keep passages the LLM judges helpful (see the module docstring)."""

    stage_name = "llm_filter"
    default_template = "context-filter"
    needs_labels = True
    Options = LLMFilterOptions
    options: LLMFilterOptions

    def __init__(
        self,
        backend: LLMBackend,
        template: PromptTemplate | str | None = None,
        *,
        tokenizer: Tokenizes | None = None,
        options: LLMFilterOptions | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(backend, template, tokenizer, options, settings)
        self.p_yes: Memo[tuple[str, str, str], float] = Memo()
        """P(yes) of judged (query text, document id, text): a pair is judged once while it
        stays in the bounded memo, so a budget sweep on the same stage costs no further calls."""

    def compress(self, batch: Sequence[Ranking], notes: Sequence[QueryNotes]) -> list[list[Candidate]]:
        """Judge every passage, keep the helpful ones (rank order kept), fit the budget."""
        todo = {
            _pair_key(r, c): (i, c)
            for i, r in enumerate(batch)
            for c in r.candidates
            if _pair_key(r, c) not in self.p_yes
        }
        prompts = [
            self.template.render(query=batch[i].query.text, passage=self._cut(one_line(document_text(c.doc))))
            for i, c in todo.values()
        ]
        labels = self.template.labels or []
        results = self.backend.label_logprobs(prompts, labels) if prompts else []
        judged = {}
        for (key, (i, _)), res in zip(todo.items(), results, strict=True):
            judged[key] = math.exp(res.normalized()[labels[0]])
            self.p_yes.put(key, judged[key])
            notes[i].calls.append(res.stats)
        out = []
        for r, note in zip(batch, notes, strict=True):
            p = [judged[k] if k in judged else self.p_yes.get(k) for k in (_pair_key(r, c) for c in r.candidates)]
            best = set(sorted(range(len(p)), key=lambda i: (-p[i], i))[: self.options.keep_at_least])
            kept = [c for i, c in enumerate(r.candidates) if p[i] >= self.options.threshold or i in best]
            note.drop("judged not helpful", len(r.candidates) - len(kept))
            out.append(self.fit(note, kept))
        return out


class LLMExtractOptions(CompressorOptions):
    """Keep the sentences of each passage that the LLM picks (by number)."""

    max_output_tokens: int = Field(32, ge=1, description="longest reply (sentence numbers)")
    max_passage_tokens: int | None = Field(None, ge=1, description="cut the numbered sentences to this many tokens")


class LLMExtractor(_LLMCompressor):
    """Keep the sentences the LLM picks (see the module docstring)."""

    stage_name = "llm_extract"
    default_template = "context-extract"
    Options = LLMExtractOptions
    options: LLMExtractOptions

    def __init__(
        self,
        backend: LLMBackend,
        template: PromptTemplate | str | None = None,
        *,
        tokenizer: Tokenizes | None = None,
        options: LLMExtractOptions | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(backend, template, tokenizer, options, settings)
        self.replies: Memo[tuple[str, str, str], str] = Memo()
        """The model's reply per (query text, document id, text), asked once while it stays
        in the bounded memo."""

    def _numbered(self, text: str, spans: list[tuple[int, int]]) -> str:
        return self._cut("\n".join(f"[{i}] {one_line(text[a:b])}" for i, (a, b) in enumerate(spans, 1)))

    @staticmethod
    def _pick(reply: str, n: int, notes: QueryNotes) -> list[int] | None:
        """0-based sentence indices chosen, ``None`` when the reply names no number at all."""
        numbers = [int(m) for m in _NUMBER.findall(reply)] or [int(m) for m in re.findall(r"\b\d+\b", reply)]
        if not numbers:
            if re.search(r"(?i)\bnone\b", reply):
                return []
            notes.repairs["no sentence numbers (passage kept whole)"] += 1
            return None
        bad = [x for x in numbers if not 0 <= x <= n]
        if bad:
            notes.repairs["sentence numbers out of range"] += len(bad)
        return sorted({x - 1 for x in numbers if 1 <= x <= n})

    def compress(self, batch: Sequence[Ranking], notes: Sequence[QueryNotes]) -> list[list[Candidate]]:
        """Ask for the helpful sentences of every passage, rebuild, fit the budget."""
        jobs = [(i, r, c, split_sentences(c.doc.text)) for i, r in enumerate(batch) for c in r.candidates]
        todo = {_pair_key(r, c): (i, c, s) for i, r, c, s in jobs if _pair_key(r, c) not in self.replies}
        prompts = [
            self.template.render(query=batch[i].query.text, passage=self._numbered(c.doc.text, s))
            for i, c, s in todo.values()
        ]
        params = GenerationParams(max_tokens=self.options.max_output_tokens)
        completions = self.backend.generate(prompts, params) if prompts else []
        replies = {}
        for (key, (i, _, _)), completion in zip(todo.items(), completions, strict=True):
            replies[key] = completion.text
            self.replies.put(key, completion.text)
            notes[i].calls.append(completion.stats)
        kept: list[list[Candidate]] = [[] for _ in batch]
        for i, r, c, spans in jobs:
            key = _pair_key(r, c)
            picked = self._pick(replies[key] if key in replies else self.replies.get(key), len(spans), notes[i])
            if picked is None:
                kept[i].append(c)
            elif not picked:
                notes[i].drop("no sentence picked")
            else:
                units = [Unit(0, a, b, 0.0, 0) for a, b in spans]
                kept[i] += assemble([c], units, picked)
        return [self.fit(note, k) for note, k in zip(notes, kept, strict=True)]
