"""Setwise reranking (Zhuang et al. 2024): the model picks the best of a small set.

Heapsort over a ``num_child``-ary max-heap: every sift step shows a node and its children
(``num_child + 1`` passages labelled A, B, C, ...) in one prompt and asks for the best one.
The pick comes from the labels' next-token log-probabilities (``scorer="labels"``, one
forward pass) or from a generated answer (``scorer="generate"``: the first label the answer
names; an answer naming none keeps the node where it is and is counted as ``unparseable``).
Scores are rank-derived (``1 / (rank + 1)``): the top ``top_k`` found, then the others in
their input order.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ..backends.base import LLMBackend
from ..backends.types import GenerationParams
from ..errors import ConfigError
from ..prompts.template import PromptTemplate
from .base import PlannedReranker, SchedulerMode, passage_block
from .scheduler import Outcome, Plan, ask_generate, ask_labels, rank_scores
from .sorting import heap_top_k


class SetwiseReranker(PlannedReranker):
    """Setwise heapsort (see the module docstring)."""

    stage_name = "setwise"
    required_placeholders = frozenset({"query", "num", "passages"})

    def __init__(
        self,
        backend: LLMBackend,
        template: PromptTemplate | str | None = None,
        *,
        num_child: int = 3,
        top_k: int = 10,
        scorer: Literal["labels", "generate"] = "labels",
        depth: int | None = None,
        max_passage_tokens: int | None = 256,
        scheduler: SchedulerMode = "concurrent",
        max_concurrency: int = 64,
        max_candidates: int | None = 1000,
        template_dir: Path | None = None,
    ) -> None:
        if num_child < 1:
            raise ConfigError(f"num_child must be at least 1, got {num_child}")
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        if scorer not in ("labels", "generate"):
            raise ConfigError(f"scorer must be 'labels' or 'generate', got {scorer!r}")
        super().__init__(
            backend,
            template or "setwise",
            depth=depth,
            max_passage_tokens=max_passage_tokens,
            scheduler=scheduler,
            max_concurrency=max_concurrency,
            max_candidates=max_candidates,
            template_dir=template_dir,
        )
        if len(self.template.labels or []) < num_child + 1:
            raise ConfigError(
                f"template {self.template.name!r} has {len(self.template.labels or [])} labels; "
                f"num_child={num_child} shows {num_child + 1} passages per prompt and needs one label each"
            )
        if scorer == "generate" and not self.template.output_regex:
            raise ConfigError(f"template {self.template.name!r} needs an output_regex for scorer 'generate'")
        self.num_child = num_child
        self.top_k = top_k
        self.scorer = scorer

    def __repr__(self) -> str:
        return (
            f"SetwiseReranker({self.backend!r}, num_child={self.num_child}, top_k={self.top_k}, scorer={self.scorer!r})"
        )

    def plan(self, query: str, texts: list[str]) -> Plan[Outcome]:
        """Heapsort for one query; each sift step is one prompt."""
        problems: Counter[str] = Counter()

        def best_of(group: Sequence[int]) -> Plan[int]:
            labels = tuple((self.template.labels or [])[: len(group)])
            block = passage_block(labels, [texts[i] for i in group])
            prompt = self.template.render(query=query, num=str(len(group)), passages=block)
            if self.scorer == "labels":
                scores = yield from ask_labels(prompt, labels)
                if scores.missing:
                    problems["unscored_labels"] += len(scores.missing)
                return group[max(range(len(group)), key=lambda i: (scores.logprobs[labels[i]], -i))]
            reply = yield from ask_generate(prompt, GenerationParams(max_tokens=8))
            picked = self._picked(reply.text, labels)
            if picked is None:
                problems["unparseable"] += 1
                return group[0]
            return group[picked]

        order = yield from heap_top_k(len(texts), self.top_k, self.num_child, best_of)
        return Outcome(rank_scores(order), rank_derived=True, problems=problems)

    def _picked(self, text: str, labels: Sequence[str]) -> int | None:
        """Index of the first of ``labels`` the answer names (by the template's output regex)."""
        for match in re.finditer(self.template.output_regex or "", text):
            value = next((g for g in match.groups() if g is not None), match.group(0))
            if value in labels:
                return list(labels).index(value)
        return None
