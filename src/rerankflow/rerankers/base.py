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
from typing import Any, ClassVar, Literal

from pydantic import Field

from ..backends.base import LLMBackend
from ..errors import ConfigError
from ..options import StageOptions
from ..prompts import rankllm_style
from ..prompts.template import PromptTemplate, as_template
from ..stage import Transformer, require_at_most
from ..types import Candidate, Document, LLMUsage, Ranking, StageRecord, document_text, one_line, sort_candidates
from .scheduler import Outcome, Plan, Scheduler

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

    @abstractmethod
    def default_template(self) -> str:
        """The built-in template used when none is given (may depend on the options)."""

    def check_template(self, template: PromptTemplate) -> None:
        """Refuse a template these options cannot use (labels, output regex); override if needed."""

    def load(self) -> None:
        """Start the backend (shared engines start once)."""
        self.backend.ensure_loaded()

    @abstractmethod
    def plan(self, query: str, texts: list[str]) -> Plan[Outcome]:
        """The calls that rank ``texts`` (already truncated, one line each) for ``query``."""

    def passages(self, candidates: Sequence[Candidate], query: str) -> list[str]:
        """Passage texts as the model sees them for ``query`` (as shown; see :func:`shown_passages`
        and :func:`passage_limit`)."""
        limit = passage_limit(self.options, self.template, self.backend, query)
        return shown_passages(self.backend, [c.doc for c in candidates], limit, self.template.passage_style)

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Rerank the head of every ranking; all queries' plans run through one scheduler."""
        require_at_most(batch, self.options.max_candidates, self.name, depth=self.options.depth)
        heads = [r.candidates[: self.options.depth] if self.options.depth is not None else r.candidates for r in batch]
        style = self.template.passage_style
        queries = [shown_query(style, r.query.text) for r in batch]
        plans = [self.plan(q, self.passages(head, q)) for q, head in zip(queries, heads, strict=True)]
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
