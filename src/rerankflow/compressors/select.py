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
from typing import Literal

from ..errors import ConfigError
from ..stage import Transformer
from ..types import Candidate, Ranking
from .base import Budget, Compressor, Overflow, QueryNotes, TokenCounter, require_budget

Policy = Literal["relevance", "ends", "original"]


class BudgetFilter(Compressor):
    """Keep the best candidates whose passages fit the budget (see the module docstring)."""

    stage_name = "budget"

    def __init__(
        self,
        count_tokens: TokenCounter,
        max_tokens: int | None = None,
        *,
        ratio: float | None = None,
        min_score: float | None = None,
        overflow: Overflow = "skip",
    ) -> None:
        if overflow not in ("skip", "stop"):
            raise ConfigError(f"overflow must be 'skip' or 'stop', got {overflow!r}")
        super().__init__(count_tokens, require_budget(Budget(max_tokens, ratio), "the budget filter"))
        self.min_score = min_score
        self.overflow: Overflow = overflow

    def __repr__(self) -> str:
        b = self.budget
        return (
            f"BudgetFilter(max_tokens={b.max_tokens}, ratio={b.ratio}, min_score={self.min_score}, "
            f"overflow={self.overflow!r})"
        )

    def compress(self, batch: Sequence[Ranking], notes: Sequence[QueryNotes]) -> list[list[Candidate]]:
        """Threshold, then fit the budget in rank order."""
        out = []
        for r, note in zip(batch, notes, strict=True):
            cands = list(r.candidates)
            if self.min_score is not None:
                above = [c for c in cands if c.score >= self.min_score]
                note.drop("below min_score", len(cands) - len(above))
                cands = above
            out.append(self.fit(note, cands, self.overflow))
        return out


def ends_order(n: int) -> list[int]:
    """Rank positions laid out best-at-both-ends: 0, 2, 4, ..., 5, 3, 1."""
    return list(range(0, n, 2)) + list(range(n - 1 - (n % 2 == 1), 0, -2)) if n else []


class Reorder(Transformer):
    """Order the context for the generator (see the module docstring).

    The candidates keep their scores, so the ranking is no longer sorted by score: this stage
    belongs right before generation, and its position in the list is the reading order.
    """

    def __init__(self, policy: Policy = "relevance") -> None:
        if policy not in ("relevance", "ends", "original"):
            raise ConfigError(f"policy must be relevance, ends or original, got {policy!r}")
        self.policy: Policy = policy

    @property
    def name(self) -> str:
        """Provenance name."""
        return "reorder"

    def __repr__(self) -> str:
        return f"Reorder({self.policy!r})"

    def _order(self, candidates: Sequence[Candidate]) -> list[Candidate]:
        if self.policy == "relevance":
            return list(candidates)
        if self.policy == "ends":
            return [candidates[i] for i in ends_order(len(candidates))]

        def first_score(c: Candidate) -> float:
            return c.history[0][1] if c.history else c.score

        return sorted(candidates, key=lambda c: -first_score(c))

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Reorder every ranking's candidates."""
        return [r.with_candidates(self._order(r.candidates)) for r in batch]
