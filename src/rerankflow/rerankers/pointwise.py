"""Pointwise LLM reranking: each candidate is scored on its own.

Modes (``mode``), each with its default template:

* ``yes_no`` (``pointwise-yes-no``): ``score="margin"`` gives log P(yes) − log P(no);
  ``score="p_yes"`` gives P(yes) / (P(yes) + P(no)). The template's labels are (yes, no).
* ``grade`` (``pointwise-grade``): the expected grade under the softmax over the grade labels
  (InstUPR, Huang & Chen 2024); labels are the grades in increasing order ("0".."4").
* ``query_likelihood`` (``query-likelihood``): the mean log-probability of the query's tokens
  after a prompt holding the passage (Sachan et al. 2022, UPR).

Under a ``budget`` the candidates are scored from the top of the input down, ``budget_step``
per query per round; when the budget is spent the scored head is sorted by score and the rest
keeps its input order below it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from ..backends.base import LLMBackend, run_sync
from ..backends.types import CallStats
from ..errors import ConfigError
from ..prompts.template import PromptTemplate, as_template
from ..stage import Transformer, require_at_most
from ..types import BudgetUse, Document, LLMUsage, Ranking, StageRecord, rescore
from .base import PassageOptions, passage_limit, shown_passages, shown_query, with_head_scored
from .budget import Allowance, Pace, Work, allowance, fitted_depth, rounds_for

Mode = Literal["yes_no", "grade", "query_likelihood"]
ScoreMode = Literal["margin", "p_yes"]
DEFAULT_TEMPLATES: dict[str, str] = {
    "yes_no": "pointwise-yes-no",
    "grade": "pointwise-grade",
    "query_likelihood": "query-likelihood",
}


class PointwiseOptions(PassageOptions):
    """Pointwise LLM reranking: yes/no label logprobs, expected grade, or query likelihood."""

    mode: Mode = "yes_no"
    score: ScoreMode = Field("margin", description="yes_no only: log-odds margin or P(yes)")
    budget_step: int = Field(
        16, ge=1, description="under a budget: candidates per query scored per round, from the top of the input"
    )


class PointwiseReranker(Transformer):
    """One backend call per candidate (all candidates of a batch go to the backend at once).

    Passages are cut to ``max_passage_tokens`` tokens (``None``: no cut).
    """

    stage_name = "pointwise"
    shown = ("backend",)

    Options = PointwiseOptions

    def __init__(
        self,
        backend: LLMBackend,
        template: PromptTemplate | str | None = None,
        options: PointwiseOptions | None = None,
        **settings: Any,
    ) -> None:
        self.options = PointwiseOptions.build(options, settings, "pointwise")
        o = self.options
        self.template = as_template(template or DEFAULT_TEMPLATES[o.mode])
        self.backend = backend
        self.pace = Pace()
        """Seconds per round and tokens per call measured under budgets (prices the next one)."""
        self._check_template()

    def _check_template(self) -> None:
        t, labels = self.template, self.template.labels or []
        if self.options.mode == "query_likelihood":
            if set(t.placeholders) != {"passage"}:
                raise ConfigError(f"template {t.name!r}: query likelihood needs exactly the placeholder passage")
            return
        if set(t.placeholders) != {"query", "passage"}:
            raise ConfigError(f"template {t.name!r} must have the placeholders query and passage")
        if self.options.mode == "yes_no" and len(labels) != 2:
            raise ConfigError(f"template {t.name!r} must have two labels (yes, no) for mode yes_no")
        if self.options.mode == "grade" and (len(labels) < 2 or not all(x.strip().isdigit() for x in labels)):
            raise ConfigError(f"template {t.name!r} must have numeric grade labels for mode grade, got {labels}")

    def load(self) -> None:
        """Start the backend (shared engines start once)."""
        self.backend.ensure_loaded()

    def passages(self, docs: Sequence[Document], query: str = "") -> list[str]:
        """The passages as shown for ``query`` (see :func:`~rerankflow.rerankers.base.shown_passages`;
        the query matters only for ``passage_budget: rankllm_t5``, which counts it as given, as
        RankLLM's MonoT5 does before it writes ``[n]`` as ``(n)``)."""
        limit = passage_limit(self.options, self.template, self.backend, query)
        return shown_passages(self.backend, docs, limit, self.template.passage_style)

    def _pairs(self, batch: Sequence[Ranking]) -> list[tuple[str, str]]:
        """(query, passage) as shown, for every candidate of every ranking."""
        queries = [shown_query(self.template.passage_style, r.query.text) for r in batch for _ in r.candidates]
        if self.options.passage_budget == "fixed":  # one tokenizer call for the whole batch
            texts = self.passages([c.doc for r in batch for c in r.candidates])
        else:
            texts = [p for r in batch for p in self.passages([c.doc for c in r.candidates], r.query.text)]
        return list(zip(queries, texts, strict=True))

    async def _ascores(self, pairs: Sequence[tuple[str, str]]) -> tuple[list[float], list[CallStats], list[int]]:
        """Scores, call stats and labels left unscored (an HTTP server's top-k), per pair."""
        if not pairs:
            return [], [], []
        if self.options.mode == "query_likelihood":
            ql_prompts = [self.template.render(passage=p) for _, p in pairs]
            conts = await self.backend.acontinuation_logprobs(ql_prompts, [q for q, _ in pairs])
            return [c.mean for c in conts], [c.stats for c in conts], [0] * len(conts)
        prompts = [self.template.render(query=q, passage=p) for q, p in pairs]
        labels = self.template.labels or []
        t = self.template
        results = await self.backend.alabel_logprobs(prompts, labels, after=t.label_after, context=t.label_context)
        if self.options.mode == "grade":
            grades = [float(x) for x in labels]
            scores = [
                sum(g * math.exp(lp) for g, lp in zip(grades, (r.normalized()[x] for x in labels), strict=True))
                for r in results
            ]
        elif self.options.score == "margin":
            scores = [r.logprobs[labels[0]] - r.logprobs[labels[1]] for r in results]
        else:
            scores = [math.exp(r.normalized()[labels[0]]) for r in results]
        return scores, [r.stats for r in results], [len(r.missing) for r in results]

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Score every candidate of every ranking and re-sort (under a budget: see :meth:`_budgeted`)."""
        require_at_most(batch, self.options.max_candidates, self.name)
        start = time.monotonic()
        limits = [allowance(self.options.budget, r, start) for r in batch]
        if any(limit is not None for limit in limits):
            return run_sync(self._budgeted(batch, limits))
        scores, stats, missing = run_sync(self._ascores(self._pairs(batch)))
        out, first = [], 0
        for r in batch:
            n = len(r.candidates)
            out.append(
                rescore(r, scores[first : first + n], self.name).recorded(self._record(stats, missing, first, n))
            )
            first += n
        return out

    def _record(
        self, stats: Sequence[CallStats], missing: Sequence[int], first: int, n: int, used: BudgetUse | None = None
    ) -> StageRecord:
        unscored = sum(missing[first : first + n])
        usage = LLMUsage.of(stats[first : first + n])
        return StageRecord(self.name, usage, {"unscored_labels": unscored} if unscored else {}, budget=used)

    async def _budgeted(self, batch: Sequence[Ranking], limits: Sequence[Allowance | None]) -> list[Ranking]:
        """Score the top of each input first, ``budget_step`` candidates per query per round,
        while the query's allowance lasts (a round still running at its deadline is cancelled);
        the scored head is sorted by score, the rest keeps its input order below it."""
        step = self.options.budget_step
        fits = [
            fitted_depth(len(r.candidates), lambda d: Work(d, rounds_for(d, step)), limit, self.pace)
            for r, limit in zip(batch, limits, strict=True)
        ]
        pairs = [self._pairs([r]) for r in batch]
        done: list[tuple[list[float], list[CallStats], list[int]]] = [([], [], []) for _ in batch]
        stopped: list[str | None] = [None] * len(batch)
        while True:
            jobs: dict[int, tuple[int, int]] = {}
            for i, limit in enumerate(limits):
                first = len(done[i][0])
                size = min(step, fits[i] - first)
                if stopped[i] is None and size > 0:
                    reason = limit.admit(size) if limit is not None else None
                    if reason is None:
                        jobs[i] = (first, first + size)
                    else:
                        stopped[i] = reason
            if not jobs:
                break
            began = time.monotonic()
            rounds = await asyncio.gather(
                *(self._round(pairs[i][a:b], limits[i]) for i, (a, b) in jobs.items()), return_exceptions=True
            )
            spent: list[CallStats] = []
            for i, result in zip(jobs, rounds, strict=True):
                if isinstance(result, BaseException):
                    raise result
                if result is None:
                    stopped[i] = "seconds"
                    continue
                scores, stats, missing = done[i]
                scores.extend(result[0])
                stats.extend(result[1])
                missing.extend(result[2])
                spent.extend(result[1])
                limit = limits[i]
                if limit is not None and any([limit.spend(c) for c in result[1]]):  # every call counted
                    stopped[i] = "tokens"
            self.pace.observe(1, time.monotonic() - began, spent)
        out = []
        for i, (r, limit) in enumerate(zip(batch, limits, strict=True)):
            scores, stats, missing = done[i]
            used = None
            if limit is not None:
                left = {"candidates": len(r.candidates) - len(scores)} if len(scores) < len(r.candidates) else {}
                used = BudgetUse(fits[i], stopped[i], left, limit.deadline is not None)
            ranked = with_head_scored(r, len(scores), scores, self.name, rank_derived=False)
            out.append(ranked.recorded(self._record(stats, missing, 0, len(scores), used)))
        return out

    async def _round(
        self, pairs: Sequence[tuple[str, str]], limit: Allowance | None
    ) -> tuple[list[float], list[CallStats], list[int]] | None:
        """One query's chunk, or ``None`` when its deadline came first (the call is cancelled)."""
        wait = limit.seconds_left() if limit is not None else None
        try:
            return await asyncio.wait_for(self._ascores(pairs), timeout=wait)
        except TimeoutError:
            return None
