"""Pointwise LLM reranking: each candidate is scored on its own.

Modes (``mode``), each with its default template:

* ``yes_no`` (``pointwise-yes-no``): ``score="margin"`` gives log P(yes) − log P(no);
  ``score="p_yes"`` gives P(yes) / (P(yes) + P(no)). The template's labels are (yes, no).
* ``grade`` (``pointwise-grade``): the expected grade under the softmax over the grade labels
  (InstUPR, Huang & Chen 2024); labels are the grades in increasing order ("0".."4").
* ``query_likelihood`` (``query-likelihood``): the mean log-probability of the query's tokens
  after a prompt holding the passage (Sachan et al. 2022, UPR).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from ..backends.base import LLMBackend
from ..backends.types import CallStats
from ..errors import ConfigError
from ..prompts.template import PromptTemplate, as_template
from ..stage import Transformer, require_at_most
from ..types import Document, LLMUsage, Ranking, StageRecord, rescore
from .base import PassageOptions, passage_limit, shown_passages, shown_query

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

    def _scores(self, batch: Sequence[Ranking]) -> tuple[list[float], list[CallStats], list[int]]:
        """Scores, call stats and labels left unscored (an HTTP server's top-k), per candidate."""
        queries = [shown_query(self.template.passage_style, r.query.text) for r in batch for _ in r.candidates]
        if self.options.passage_budget == "fixed":  # one tokenizer call for the whole batch
            texts = self.passages([c.doc for r in batch for c in r.candidates])
        else:
            texts = [p for r in batch for p in self.passages([c.doc for c in r.candidates], r.query.text)]
        pairs = list(zip(queries, texts, strict=True))
        if not pairs:
            return [], [], []
        if self.options.mode == "query_likelihood":
            ql_prompts = [self.template.render(passage=p) for _, p in pairs]
            conts = self.backend.continuation_logprobs(ql_prompts, [q for q, _ in pairs])
            return [c.mean for c in conts], [c.stats for c in conts], [0] * len(conts)
        prompts = [self.template.render(query=q, passage=p) for q, p in pairs]
        labels = self.template.labels or []
        t = self.template
        results = self.backend.label_logprobs(prompts, labels, after=t.label_after, context=t.label_context)
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
        """Score every candidate of every ranking and re-sort."""
        require_at_most(batch, self.options.max_candidates, self.name)
        scores, stats, missing = self._scores(batch)
        out, start = [], 0
        for r in batch:
            n = len(r.candidates)
            usage = LLMUsage.of(stats[start : start + n])
            unscored = sum(missing[start : start + n])
            record = StageRecord(self.name, usage, {"unscored_labels": unscored} if unscored else {})
            out.append(rescore(r, scores[start : start + n], self.name).recorded(record))
            start += n
        return out
