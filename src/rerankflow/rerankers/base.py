"""The stage shared by plan-based LLM rerankers (listwise, pairwise, setwise).

A subclass only writes :meth:`PlannedReranker.plan` for one query; this class truncates
passages by tokens, restricts reranking to the top ``depth`` candidates, runs every query's
plan through the :class:`~rerankflow.rerankers.scheduler.Scheduler`, records each query's usage
and repaired model outputs in its trace.

Candidates below ``depth`` keep their incoming order under the reranked head; their score is
``(lowest head score) - (1 + position below the head)``, flagged rank-derived.

Under a ``budget`` (:mod:`~rerankflow.rerankers.budget`) the head is first shrunk to what the
budget is expected to pay for (:meth:`PlannedReranker.work` prices a head), the plan runs
under an allowance that stops it when the budget is spent, and the trace records the head,
what stopped it and the work left.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field

from ..backends.base import LLMBackend
from ..errors import ConfigError
from ..options import StageOptions
from ..prompts import rankllm_style
from ..prompts.template import PromptTemplate, as_template
from ..stage import Transformer, require_at_most
from ..types import (
    BudgetUse,
    Candidate,
    Document,
    LLMUsage,
    Ranking,
    StageRecord,
    document_text,
    one_line,
    sort_candidates,
)
from .budget import Budget, Pace, Work, allowance, fitted_depth
from .scheduler import Outcome, Plan, Scheduler, rank_scores

SchedulerMode = Literal["concurrent", "sequential"]


def shown_passages(
    backend: LLMBackend, docs: Sequence[Document], max_tokens: int | None, style: str = "plain"
) -> list[str]:
    """Passages as every LLM reranker shows them, by the template's ``passage_style``: ``plain``,
    title and text on one line; ``verbatim``, as given (line breaks kept); both cut to
    ``max_tokens`` tokens of the backend's tokenizer in one call (``None``: uncut). ``rankllm``:
    RankLLM's content (title/content, ftfy-repaired) cut to ``max_tokens`` words, ``[n]`` written
    ``(n)``, then encoded and decoded within ``max_tokens`` tokens, as RankLLM's pointwise and
    pairwise handlers show MonoT5 and DuoT5 passages."""
    if style == "rankllm":
        limit = max_tokens or 10**9
        return backend.reencode_many([rankllm_style.shown_words(rankllm_style.content(d), limit) for d in docs], limit)
    texts = [document_text(doc) if style == "verbatim" else one_line(document_text(doc)) for doc in docs]
    return texts if max_tokens is None else backend.truncate_many(texts, max_tokens)


def passage_limit(options: PassageOptions, template: PromptTemplate, backend: LLMBackend, query: str) -> int | None:
    """The passage cut for one query: ``max_passage_tokens``, or RankLLM's T5 budget for
    ``query`` (:func:`~rerankflow.prompts.rankllm_style.t5_passage_budget`; the prompt is the
    template's text with empty passages)."""
    if options.passage_budget == "fixed":
        return options.max_passage_tokens
    blanks = {p: "" for p in template.placeholders if p != "query"}
    empty = template.user.format(query=query, **blanks)
    return rankllm_style.t5_passage_budget(empty, len(blanks), backend.count_encoded_many)


def shown_query(style: str, query: str) -> str:
    """The query as a template of ``passage_style`` ``style`` shows it (RankLLM writes [n] as (n))."""
    return rankllm_style.without_identifiers(query) if style == "rankllm" else query


def passage_block(labels: Sequence[str], texts: Sequence[str]) -> str:
    """Numbered passages, one per line: ``[label] text``."""
    return "\n".join(f"[{label}] {text}" for label, text in zip(labels, texts, strict=True))


class PassageOptions(StageOptions):
    """Settings of every LLM reranker: how passages are cut and how many a query may bring."""

    max_passage_tokens: int | None = Field(256, ge=1, description="cut passages to this many tokens")
    passage_budget: Literal["fixed", "rankllm_t5"] = Field(
        "fixed",
        description="fixed: max_passage_tokens for every query; rankllm_t5 (MonoT5/DuoT5 presets): RankLLM's budget "
        "per query, 512 - 64 - the prompt's tokens without its passages, shared by its passages",
    )
    max_candidates: int | None = Field(
        1000, ge=1, description="longest candidate list (within depth) accepted per query (error above)"
    )
    budget: Budget | None = Field(
        None, description="per query: seconds, calls, tokens; the best ranking so far is returned when spent"
    )


class PlannedOptions(PassageOptions):
    """Settings shared by the listwise, pairwise and setwise LLM rerankers."""

    depth: int | None = Field(None, ge=1, description="rerank only the top depth candidates (the rest follow in order)")
    scheduler: SchedulerMode = Field(
        "concurrent", description="concurrent: all queries' calls interleave; sequential: one call at a time"
    )
    max_concurrency: int = Field(64, ge=1, description="calls in flight at once")


class PlannedReranker(Transformer):
    """Base class of the plan-based LLM rerankers (see the module docstring). The settings
    come as an ``options`` object of the subclass's ``Options`` or as keywords."""

    shown = ("backend",)

    stage_name = "llm"
    required_placeholders: frozenset[str] = frozenset()
    Options: ClassVar[type[PlannedOptions]] = PlannedOptions
    options: PlannedOptions

    def __init__(
        self,
        backend: LLMBackend,
        template: PromptTemplate | str | None = None,
        options: PlannedOptions | None = None,
        **settings: Any,
    ) -> None:
        self.options = self.Options.build(options, settings, self.stage_name)
        self.template = as_template(template or self.default_template())
        if set(self.template.placeholders) != self.required_placeholders:
            raise ConfigError(
                f"template {self.template.name!r} has placeholders {sorted(self.template.placeholders)}; "
                f"a {self.stage_name} template needs exactly {sorted(self.required_placeholders)}"
            )
        self.check_template(self.template)
        self.backend = backend
        o = self.options
        self.scheduler = Scheduler(backend, mode=o.scheduler, max_concurrency=o.max_concurrency)
        self.pace = Pace()
        """Seconds per round and tokens per call measured on this stage's plans (prices a budget)."""
        self._work: dict[int, Work] = {}

    @abstractmethod
    def default_template(self) -> str:
        """The built-in template used when none is given (may depend on the options)."""

    def check_template(self, template: PromptTemplate) -> None:
        """Refuse a template these options cannot use (labels, output regex); override if needed."""

    def load(self) -> None:
        """Start the backend (shared engines start once)."""
        self.backend.ensure_loaded()

    @abstractmethod
    def plan(self, query: str, texts: list[str], anytime: bool = False) -> Plan[Outcome]:
        """The calls that rank ``texts`` (already truncated, one line each) for ``query``.
        Every plan catches :class:`~rerankflow.rerankers.budget.BudgetSpent` and returns its
        best ranking so far; ``anytime`` (the query has a budget) lets it split work that is
        otherwise sent at once into rounds, so a stop loses less."""

    @abstractmethod
    def estimate(self, n: int) -> Work:
        """The calls and rounds a head of ``n`` candidates is expected to need under a budget."""

    def work(self, n: int) -> Work:
        """:meth:`estimate`, remembered per head size."""
        if n not in self._work:
            self._work[n] = self.estimate(n) if n >= 2 else Work(0, 0)
        return self._work[n]

    def passages(self, candidates: Sequence[Candidate], query: str) -> list[str]:
        """Passage texts as the model sees them for ``query`` (as shown; see :func:`shown_passages`
        and :func:`passage_limit`)."""
        limit = passage_limit(self.options, self.template, self.backend, query)
        return shown_passages(self.backend, [c.doc for c in candidates], limit, self.template.passage_style)

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Rerank the head of every ranking; all queries' plans run through one scheduler."""
        require_at_most(batch, self.options.max_candidates, self.name, depth=self.options.depth)
        start = time.monotonic()
        limits = [allowance(self.options.budget, r, start) for r in batch]
        heads = [r.candidates[: self.options.depth] if self.options.depth is not None else r.candidates for r in batch]
        fits = [fitted_depth(len(h), self.work, limit, self.pace) for h, limit in zip(heads, limits, strict=True)]
        heads = [h[:fit] for h, fit in zip(heads, fits, strict=True)]
        style = self.template.passage_style
        queries = [shown_query(style, r.query.text) for r in batch]
        plans = [
            self.plan(q, self.passages(head, q), limit is not None)
            for q, head, limit in zip(queries, heads, limits, strict=True)
        ]
        results = self.scheduler.run(plans, limits)
        out = []
        for r, head, limit, result in zip(batch, heads, limits, results, strict=True):
            self.pace.observe(result.rounds, result.seconds, result.stats)
            outcome = result.outcome or Outcome(rank_scores(range(len(head))), rank_derived=True)
            used = None
            if limit is not None:
                timed = limit.deadline is not None
                used = BudgetUse(len(head), result.stopped, dict(outcome.left), timed)
            record = StageRecord(self.name, LLMUsage.of(result.stats), dict(outcome.problems), budget=used)
            out.append(self._reranked(r, head, outcome).recorded(record))
        return out

    def _reranked(self, ranking: Ranking, head: Sequence[Candidate], outcome: Outcome) -> Ranking:
        return with_head_scored(ranking, len(head), outcome.scores, self.name, outcome.rank_derived)


def with_head_scored(ranking: Ranking, size: int, scores: Sequence[float], stage: str, rank_derived: bool) -> Ranking:
    """``ranking`` with its first ``size`` candidates rescored by ``scores`` and sorted; the
    others follow in their order, scored ``(lowest head score) - (1 + position below the head)``
    and flagged rank-derived."""
    head = ranking.candidates[:size]
    scored = sort_candidates(c.rescored(s, stage, rank_derived=rank_derived) for c, s in zip(head, scores, strict=True))
    floor = min((c.score for c in scored), default=0.0)
    tail = [c.rescored(floor - 1.0 - i, stage, rank_derived=True) for i, c in enumerate(ranking.candidates[size:])]
    return ranking.with_candidates([*scored, *tail])
