"""Pointwise LLM reranking: yes/no relevance from next-token label log-probabilities."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ..accounting import UsageByQuery
from ..backends.base import LLMBackend
from ..errors import ConfigError
from ..prompts.template import PromptTemplate, load_template
from ..stage import Transformer
from ..types import Ranking, rescore

ScoreMode = Literal["margin", "p_yes"]


class PointwiseYesNoReranker(Transformer):
    """Score each candidate alone: ``margin`` = log P(yes) − log P(no) (default) or
    ``p_yes`` = P(yes) / (P(yes) + P(no)). The template's two labels are (yes, no) in that
    order. Passages are cut to ``max_passage_tokens`` tokens (``None``: no cut). All
    candidates of a batch go to the backend in one call, which batches them.
    """

    def __init__(
        self,
        backend: LLMBackend,
        template: PromptTemplate | str = "pointwise-yes-no",
        *,
        score: ScoreMode = "margin",
        max_passage_tokens: int | None = 256,
        template_dir: Path | None = None,
    ) -> None:
        self.backend = backend
        self.template = template if isinstance(template, PromptTemplate) else load_template(template, template_dir)
        labels = self.template.labels
        if not labels or len(labels) != 2 or set(self.template.placeholders) != {"query", "passage"}:
            raise ConfigError(
                f"template {self.template.name!r} must have placeholders query, passage and two labels (yes, no)"
            )
        if score not in ("margin", "p_yes"):
            raise ConfigError(f"score must be 'margin' or 'p_yes', got {score!r}")
        self.labels = labels
        self.score_mode: ScoreMode = score
        self.max_passage_tokens = max_passage_tokens
        self.usage = UsageByQuery()

    @property
    def name(self) -> str:
        """Provenance name."""
        return "pointwise"

    def __repr__(self) -> str:
        return f"PointwiseYesNoReranker({self.backend!r}, {self.template.name!r}, score={self.score_mode!r})"

    def load(self) -> None:
        """Start the backend (shared engines start once)."""
        self.backend.ensure_loaded()

    def _passage(self, text: str) -> str:
        if self.max_passage_tokens is None:
            return text
        return self.backend.truncate(text, self.max_passage_tokens)

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Score every candidate of every ranking and re-sort."""
        prompts = [
            self.template.render(query=r.query.text, passage=self._passage(c.doc.text))
            for r in batch
            for c in r.candidates
        ]
        results = self.backend.label_logprobs(prompts, self.labels) if prompts else []
        out, start = [], 0
        yes, no = self.labels
        for r in batch:
            chunk = results[start : start + len(r.candidates)]
            start += len(r.candidates)
            self.usage.add(r.query.qid, [s.stats for s in chunk])
            if self.score_mode == "margin":
                scores = [s.logprobs[yes] - s.logprobs[no] for s in chunk]
            else:
                scores = [math.exp(s.normalized()[yes]) for s in chunk]
            out.append(rescore(r, scores, self.name))
        return out
