"""Pairwise ranking prompting (PRP, Qin et al. 2024): the model compares two passages.

A comparison reads the next-token log-probabilities of the template's two labels (A: the
first passage is better, B: the second). With ``both_orders`` (default) it asks twice, with
the passages swapped, and averages, which cancels the model's position bias:
``P(a > b) = (P(A | a, b) + P(B | b, a)) / 2`` (``rule="soft"``, the default). ``rule="strict"``
is the reference implementation's rule (llm-rankers, Zhuang et al.): ``a`` wins only when both
orders prefer it, loses only when both prefer ``b``, and an inconsistent pair is a tie (0.5:
half a win each in ``allpairs``; in a sort the incumbent stays). The soft rule is the default
because it keeps the model's confidence, which breaks ties the strict rule leaves; the oracle
benchmark (docs/benchmarks.md) measures both. Comparisons of the same pair within a query are
made once (memoised).

Methods (``method``):

* ``allpairs``: every pair of the top ``depth`` candidates, all at once; the score of a
  candidate is its summed win probability (soft aggregation, not rank-derived). It makes
  ``depth * (depth - 1)`` calls (both orders), so ``depth`` is required.
* ``heapsort``: a binary max-heap finds the top ``top_k`` (Floyd's bottom-up sift: about one
  comparison per level, see :mod:`~rerankflow.rerankers.sorting`).
* ``bubble``: up to ``top_k`` bubble passes from the bottom of the list to the top (PRP
  sliding-k); a pass without a swap ends the sort early.

Heapsort and bubble scores are rank-derived (``1 / (rank + 1)``).

Under a budget: heapsort ends with the top extracted so far (then the rest in input order);
bubble with the order its passes reached; ``allpairs`` grows the compared head one candidate
per round (candidate ``j`` against every one above it) and a stop ranks the fully compared
head by its wins, the rest in input order.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, model_validator

from ..backends.base import LLMBackend
from ..backends.types import LabelScores
from ..errors import ConfigError
from ..prompts.template import PromptTemplate
from .base import PlannedOptions, PlannedReranker
from .budget import BudgetSpent, Work
from .scheduler import Call, LabelCall, Outcome, Plan, rank_scores
from .sorting import best_by, heap_top_k, sort_work

Method = Literal["allpairs", "heapsort", "bubble"]


class PairwiseOptions(PlannedOptions):
    """Pairwise ranking prompting (PRP): all pairs (needs depth), heapsort or bubble passes."""

    method: Method = "heapsort"
    top_k: int = Field(10, ge=1, description="heapsort/bubble: how many top candidates to find")
    both_orders: bool = Field(True, description="ask each comparison in both passage orders and average")
    rule: Literal["soft", "strict"] = Field(
        "soft", description="soft: mean probability of both orders; strict: a win only when both orders agree"
    )

    @model_validator(mode="after")
    def _strict_needs_both_orders(self) -> PairwiseOptions:
        if self.rule == "strict" and not self.both_orders:
            raise ValueError("rule 'strict' compares the answers of both orders; set both_orders: true")
        return self

    @model_validator(mode="after")
    def _allpairs_needs_depth(self) -> PairwiseOptions:
        if self.method == "allpairs" and self.depth is None:
            raise ValueError(
                "pairwise method 'allpairs' compares every pair: n * (n - 1) LLM calls for n candidates "
                "(9,900 for 100). Set depth (e.g. depth: 20) to say how many top candidates to compare"
            )
        return self


class PairwiseReranker(PlannedReranker):
    """PRP reranking (see the module docstring)."""

    stage_name = "pairwise"
    required_placeholders = frozenset({"query", "passage_a", "passage_b"})

    Options = PairwiseOptions
    options: PairwiseOptions

    def __init__(
        self,
        backend: LLMBackend,
        template: PromptTemplate | str | None = None,
        options: PairwiseOptions | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(backend, template, options, **settings)

    def default_template(self) -> str:
        """The built-in PRP template."""
        return "pairwise"

    def check_template(self, template: PromptTemplate) -> None:
        """A comparison has two labels: first passage, second passage."""
        if len(template.labels or []) != 2:
            raise ConfigError(f"template {template.name!r} needs exactly two labels (first passage, second)")

    def _calls(self, query: str, texts: Sequence[str], a: int, b: int) -> list[Call]:
        labels = tuple(self.template.labels or ())
        calls: list[Call] = [
            LabelCall(self.template.render(query=query, passage_a=texts[a], passage_b=texts[b]), labels)
        ]
        if self.options.both_orders:
            calls.append(LabelCall(self.template.render(query=query, passage_a=texts[b], passage_b=texts[a]), labels))
        return calls

    def _preference(self, replies: Sequence[object], problems: Counter[str]) -> float:
        """P(first passage of the first call wins): averaged over the orders asked (soft), or
        1 / 0 / 0.5 when both orders agree on it / agree against it / disagree (strict)."""
        first, second = self.template.labels or ["A", "B"]
        probs = []
        for i, reply in enumerate(replies):
            if not isinstance(reply, LabelScores):
                raise TypeError("a label call must return LabelScores")
            problems["unscored_labels"] += len(reply.missing)
            norm = reply.normalized()
            probs.append(math.exp(norm[first] if i == 0 else norm[second]))
        if self.options.rule == "strict":
            wins = sum(p > 0.5 for p in probs)
            return 1.0 if wins == len(probs) else 0.0 if wins == 0 else 0.5
        return sum(probs) / len(probs)

    def estimate(self, n: int) -> Work:
        """All pairs (one round per candidate under a budget), bubble passes (one round per
        comparison) or a dry run of the heapsort."""
        o = self.options
        per = 2 if o.both_orders else 1
        if o.method == "allpairs":
            return Work(n * (n - 1) // 2 * per, n - 1)
        if o.method == "bubble":
            comparisons = sum(n - 1 - done for done in range(min(o.top_k, n - 1)))
            return Work(comparisons * per, comparisons)
        return sort_work(n, o.top_k, 2, per, pairwise=True)

    def plan(self, query: str, texts: list[str], anytime: bool = False) -> Plan[Outcome]:
        """The comparisons for one query, by method."""
        n = len(texts)
        problems: Counter[str] = Counter()
        if self.options.method == "allpairs":
            return (yield from self._allpairs(query, texts, anytime, problems))

        memo: dict[tuple[int, int], float] = {}

        def beats(a: int, b: int) -> Plan[bool]:
            """Whether ``a`` wins against ``b`` (P > 0.5; a tie keeps ``b``)."""
            key = (min(a, b), max(a, b))
            if key not in memo:
                memo[key] = self._preference((yield self._calls(query, texts, key[0], key[1])), problems)
            p = memo[key] if a == key[0] else 1.0 - memo[key]
            return p > 0.5

        left: dict[str, int] = {}
        if self.options.method == "heapsort":
            order = yield from heap_top_k(
                n, self.options.top_k, 2, lambda group: best_by(group, beats), beats, left=left
            )
        else:
            order = list(range(n))
            passes = min(self.options.top_k, n - 1)
            done = 0
            try:
                for done in range(passes):
                    swapped = False
                    for i in range(n - 2, done - 1, -1):
                        if (yield from beats(order[i + 1], order[i])):
                            order[i], order[i + 1] = order[i + 1], order[i]
                            swapped = True
                    if not swapped:  # a pass without swaps: the rest is already in order
                        break
            except BudgetSpent:
                left["passes"] = passes - done
        return Outcome(rank_scores(order), rank_derived=True, problems=+problems, left=left)

    def _allpairs(self, query: str, texts: list[str], anytime: bool, problems: Counter[str]) -> Plan[Outcome]:
        """Every pair at once, or one round per candidate under a budget (see the module docstring)."""
        n = len(texts)
        per_pair = 2 if self.options.both_orders else 1
        if anytime:  # round b: candidate b against every candidate above it
            rounds = [[(a, b) for a in range(b)] for b in range(1, n)]
        else:
            rounds = [[(a, b) for a in range(n) for b in range(a + 1, n)]]
        scores = [0.0] * n
        compared = 1 if n else 0
        try:
            for batch in rounds:
                if not batch:
                    continue
                replies = yield [c for a, b in batch for c in self._calls(query, texts, a, b)]
                for j, (a, b) in enumerate(batch):
                    p = self._preference(replies[j * per_pair : (j + 1) * per_pair], problems)
                    scores[a] += p
                    scores[b] += 1.0 - p
                compared = max(b for _, b in batch) + 1
        except BudgetSpent:
            head = sorted(range(compared), key=lambda i: -scores[i])
            order = head + list(range(compared, n))
            return Outcome(rank_scores(order), True, +problems, {"candidates": n - compared})
        return Outcome(scores, rank_derived=False, problems=+problems)
