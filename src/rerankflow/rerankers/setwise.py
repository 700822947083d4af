"""Setwise reranking (Zhuang et al. 2024): the model picks the best of a small set.

Heapsort over a ``num_child``-ary max-heap: every sift step shows a node and its children
(``num_child + 1`` passages labelled A, B, C, ...) in one prompt and asks for the best one.
The pick comes from the labels' next-token log-probabilities (``scorer="labels"``, one
forward pass) or from a generated answer (``scorer="generate"``: the first label the answer
names; an answer naming none keeps the node where it is and is counted as ``unparseable``).
``both_orders`` (labels scorer) shows each set twice, as given and reversed, in one round,
and picks the passage with the highest mean label log-probability (which cancels a position
bias that is linear in the logits): twice the calls, against a model's preference for the
first (or last) label.

Scores are rank-derived (``1 / (rank + 1)``): the top ``top_k`` found, then the others in
their input order. A budget that runs out ends the sort with the top extracted so far.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, model_validator

from ..backends.base import LLMBackend
from ..backends.types import GenerationParams, Prompt
from ..errors import ConfigError
from ..prompts.template import PromptTemplate
from .base import PlannedOptions, PlannedReranker, passage_block
from .budget import Work
from .permutation import read_label
from .scheduler import Outcome, Plan, ask_generate, ask_labels, gather, rank_scores
from .sorting import heap_top_k, sort_work


class SetwiseOptions(PlannedOptions):
    """Setwise heapsort: each prompt shows a node and num_child children and asks for the best."""

    num_child: int = Field(3, ge=1)
    top_k: int = Field(10, ge=1)
    scorer: Literal["labels", "generate"] = "labels"
    both_orders: bool = Field(
        False, description="labels scorer: ask each set as given and reversed, average the log-probabilities"
    )

    @model_validator(mode="after")
    def _both_orders_reads_labels(self) -> SetwiseOptions:
        if self.both_orders and self.scorer != "labels":
            raise ValueError("both_orders averages label probabilities; it needs scorer: labels")
        return self


class SetwiseReranker(PlannedReranker):
    """Setwise heapsort (see the module docstring)."""

    stage_name = "setwise"
    required_placeholders = frozenset({"query", "num", "passages"})

    Options = SetwiseOptions
    options: SetwiseOptions

    def __init__(
        self,
        backend: LLMBackend,
        template: PromptTemplate | str | None = None,
        options: SetwiseOptions | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(backend, template, options, **settings)

    def default_template(self) -> str:
        """The built-in setwise template."""
        return "setwise"

    def check_template(self, template: PromptTemplate) -> None:
        """One label per passage shown; an output regex to read generated answers."""
        o, labels = self.options, template.labels or []
        if len(labels) < o.num_child + 1:
            raise ConfigError(
                f"template {template.name!r} has {len(labels)} labels; "
                f"num_child={o.num_child} shows {o.num_child + 1} passages per prompt and needs one label each"
            )
        if o.scorer == "generate" and not template.output_regex:
            raise ConfigError(f"template {template.name!r} needs an output_regex for scorer 'generate'")

    def estimate(self, n: int) -> Work:
        """A dry run of the heapsort (see :func:`~rerankflow.rerankers.sorting.sort_work`)."""
        o = self.options
        return sort_work(n, o.top_k, o.num_child, 2 if o.both_orders else 1, pairwise=False)

    def plan(self, query: str, texts: list[str], anytime: bool = False) -> Plan[Outcome]:
        """Heapsort for one query; each sift step is one prompt. A budget ends it with the top
        extracted so far, then the rest in input order."""
        problems: Counter[str] = Counter()

        def shown(group: Sequence[int]) -> tuple[Prompt, tuple[str, ...]]:
            labels = tuple((self.template.labels or [])[: len(group)])
            block = passage_block(labels, [texts[i] for i in group])
            return self.template.render(query=query, num=str(len(group)), passages=block), labels

        def best_of(group: Sequence[int]) -> Plan[int]:
            prompt, labels = shown(group)
            if self.options.both_orders:
                back, _ = shown(group[::-1])
                given, reverse = yield from gather([ask_labels(prompt, labels), ask_labels(back, labels)])
                problems["unscored_labels"] += len(given.missing) + len(reverse.missing)
                p, q = given.normalized(), reverse.normalized()
                m = len(group)
                mean = [p[labels[i]] + q[labels[m - 1 - i]] for i in range(m)]
                return group[max(range(m), key=lambda i: (mean[i], -i))]
            if self.options.scorer == "labels":
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

        left: dict[str, int] = {}
        order = yield from heap_top_k(len(texts), self.options.top_k, self.options.num_child, best_of, left=left)
        return Outcome(rank_scores(order), rank_derived=True, problems=problems, left=left)

    def _picked(self, text: str, labels: Sequence[str]) -> int | None:
        """Index of the first of ``labels`` the answer names (see :func:`read_label`)."""
        return read_label(text, self.template.output_regex or "", labels)
