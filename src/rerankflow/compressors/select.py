"""Passage-level compression: keep the best candidates within a token budget, and order the context.

* :class:`BudgetFilter` walks each ranking best first and keeps a candidate while the kept
  passages fit the budget (``max_tokens`` and/or ``ratio`` of the incoming tokens, counted
  with the generator's tokenizer through its backend), optionally only candidates scoring at
  least ``min_score``. A passage that does not fit is
  skipped and later, shorter ones may still fit (``skip`` policy) or selection stops at the
  first that does not (``stop``). Kept candidates keep their scores; the rest are dropped
  from the ranking, and how many were dropped, and why, is recorded in each ranking's trace.
* :class:`Reorder` puts the kept passages in the order the generator will read them:
  ``relevance`` (best first), ``ends`` (best at both ends, weakest in the middle, against
  "lost in the middle", Liu et al. 2024) or ``original`` (the first stage's order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from ..options import StageOptions
from ..stage import Transformer
from ..types import Candidate, Ranking
from .base import BudgetedOptions, Compressor, Overflow, QueryNotes, Tokenizes

Policy = Literal["relevance", "ends", "original"]


class BudgetFilterOptions(BudgetedOptions):
    """Keep the best candidates whose passages fit a token budget of the generator's tokenizer."""

    min_score: float | None = Field(None, description="also drop candidates scoring below this")
    overflow: Overflow = Field("skip", description="skip a passage that does not fit, or stop there")


class BudgetFilter(Compressor):
    """Keep the best candidates whose passages fit the budget (see the module docstring)."""

    stage_name = "budget"
    Options = BudgetFilterOptions
    options: BudgetFilterOptions

    def __init__(self, *, tokenizer: Tokenizes, options: BudgetFilterOptions | None = None, **settings: Any) -> None:
        super().__init__(tokenizer, options, settings)

    def compress(self, batch: Sequence[Ranking], notes: Sequence[QueryNotes]) -> list[list[Candidate]]:
        """Threshold, then fit the budget in rank order."""
        out = []
        for r, note in zip(batch, notes, strict=True):
            cands = list(r.candidates)
            if self.options.min_score is not None:
                above = [c for c in cands if c.score >= self.options.min_score]
                note.drop("below min_score", len(cands) - len(above))
                cands = above
            out.append(self.fit(note, cands, self.options.overflow))
        return out


def ends_order(n: int) -> list[int]:
    """Rank positions laid out best-at-both-ends: 0, 2, 4, ..., 5, 3, 1."""
    return list(range(0, n, 2)) + list(range(n - 1 - (n % 2 == 1), 0, -2)) if n else []


class ReorderOptions(StageOptions):
    """Order the context for the generator: relevance, best at both ends, or first-stage order."""

    policy: Policy = "relevance"


class Reorder(Transformer):
    """Order the context for the generator (see the module docstring).

    The candidates keep their scores, so the ranking is no longer sorted by score: this stage
    belongs right before generation, and its position in the list is the reading order.
    ``Reorder("ends")`` names the policy; ``options`` may carry it instead.
    """

    stage_name = "reorder"

    Options = ReorderOptions

    def __init__(self, policy: Policy | None = None, *, options: ReorderOptions | None = None) -> None:
        self.options = ReorderOptions.build(options, {"policy": policy} if policy is not None else {}, "reorder")

    def _order(self, candidates: Sequence[Candidate]) -> list[Candidate]:
        if self.options.policy == "relevance":
            return list(candidates)
        if self.options.policy == "ends":
            return [candidates[i] for i in ends_order(len(candidates))]

        def first_score(c: Candidate) -> float:
            return c.history[0][1] if c.history else c.score

        return sorted(candidates, key=lambda c: -first_score(c))

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Reorder every ranking's candidates."""
        return [r.with_candidates(self._order(r.candidates)) for r in batch]
