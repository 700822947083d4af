"""The stage shared by plan-based LLM rerankers (listwise, pairwise, setwise).

A subclass only writes :meth:`PlannedReranker.plan` for one query; this class truncates
passages by tokens, restricts reranking to the top ``depth`` candidates, runs every query's
plan through the :class:`~rerankflow.rerankers.scheduler.Scheduler`, records each query's usage
and repaired model outputs in its trace.

Candidates below ``depth`` keep their incoming order under the reranked head; their score is
``(lowest head score) - (1 + position below the head)``, flagged rank-derived.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ..backends.base import LLMBackend
from ..errors import ConfigError
from ..prompts.template import PromptTemplate, as_template
from ..stage import Transformer, require_at_most
from ..types import Candidate, Document, LLMUsage, Ranking, StageRecord, document_text, one_line, sort_candidates
from .scheduler import Outcome, Plan, Scheduler

SchedulerMode = Literal["concurrent", "sequential"]


def shown_passages(backend: LLMBackend, docs: Sequence[Document], max_tokens: int | None) -> list[str]:
    """Passages as every LLM reranker shows them: title and text on one line, cut to
    ``max_tokens`` tokens of the backend's tokenizer in one call (``None``: uncut)."""
    texts = [one_line(document_text(doc)) for doc in docs]
    return texts if max_tokens is None else backend.truncate_many(texts, max_tokens)


def passage_block(labels: Sequence[str], texts: Sequence[str]) -> str:
    """Numbered passages, one per line: ``[label] text``."""
    return "\n".join(f"[{label}] {text}" for label, text in zip(labels, texts, strict=True))


class PlannedReranker(Transformer):
    """Base class of the plan-based LLM rerankers (see the module docstring)."""

    stage_name = "llm"
    required_placeholders: frozenset[str] = frozenset()

    def __init__(
        self,
        backend: LLMBackend,
        template: PromptTemplate | str,
        *,
        depth: int | None = None,
        max_passage_tokens: int | None = 256,
        scheduler: SchedulerMode = "concurrent",
        max_concurrency: int = 64,
        max_candidates: int | None = 1000,
        template_dir: Path | None = None,
    ) -> None:
        if depth is not None and depth < 1:
            raise ConfigError(f"depth must be at least 1 (or None for all candidates), got {depth}")
        if max_passage_tokens is not None and max_passage_tokens < 1:
            raise ConfigError(f"max_passage_tokens must be at least 1 (or None for no cut), got {max_passage_tokens}")
        self.template = as_template(template, template_dir)
        if set(self.template.placeholders) != self.required_placeholders:
            raise ConfigError(
                f"template {self.template.name!r} has placeholders {sorted(self.template.placeholders)}; "
                f"a {self.stage_name} template needs exactly {sorted(self.required_placeholders)}"
            )
        self.backend = backend
        self.depth = depth
        self.max_passage_tokens = max_passage_tokens
        self.max_candidates = max_candidates
        self.scheduler = Scheduler(backend, mode=scheduler, max_concurrency=max_concurrency)

    @property
    def name(self) -> str:
        """Provenance name."""
        return self.stage_name

    def load(self) -> None:
        """Start the backend (shared engines start once)."""
        self.backend.ensure_loaded()

    @abstractmethod
    def plan(self, query: str, texts: list[str]) -> Plan[Outcome]:
        """The calls that rank ``texts`` (already truncated, one line each) for ``query``."""

    def passages(self, candidates: Sequence[Candidate]) -> list[str]:
        """Passage texts as the model sees them (see :func:`shown_passages`)."""
        return shown_passages(self.backend, [c.doc for c in candidates], self.max_passage_tokens)

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Rerank the head of every ranking; all queries' plans run through one scheduler."""
        require_at_most(batch, self.max_candidates, self.name, depth=self.depth)
        heads = [r.candidates[: self.depth] if self.depth is not None else r.candidates for r in batch]
        plans = [self.plan(r.query.text, self.passages(head)) for r, head in zip(batch, heads, strict=True)]
        results = self.scheduler.run(plans)
        out = []
        for r, head, result in zip(batch, heads, results, strict=True):
            record = StageRecord(self.name, LLMUsage.of(result.stats), dict(result.outcome.problems))
            out.append(self._reranked(r, head, result.outcome).recorded(record))
        return out

    def _reranked(self, ranking: Ranking, head: Sequence[Candidate], outcome: Outcome) -> Ranking:
        scored = sort_candidates(
            c.rescored(s, self.name, rank_derived=outcome.rank_derived)
            for c, s in zip(head, outcome.scores, strict=True)
        )
        floor = min((c.score for c in scored), default=0.0)
        tail = [
            c.rescored(floor - 1.0 - i, self.name, rank_derived=True)
            for i, c in enumerate(ranking.candidates[len(head) :])
        ]
        return ranking.with_candidates([*scored, *tail])
