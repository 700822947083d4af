"""Passage-level compression: keep the best candidates within a token budget, and order the context.

* :class:`BudgetFilter` walks each ranking best first and keeps a candidate while the kept
  passages fit ``max_tokens`` (counted with the generator's tokenizer through its backend),
  optionally only candidates scoring at least ``min_score``. A passage that does not fit is
  skipped and later, shorter ones may still fit (``skip`` policy) or selection stops at the
  first that does not (``stop``). Kept candidates keep their scores; the rest are dropped
  from the ranking, and how many were dropped is counted per query (``dropped``).
* :class:`Reorder` puts the kept passages in the order the generator will read them:
  ``relevance`` (best first), ``ends`` (best at both ends, weakest in the middle, against
  "lost in the middle", Liu et al. 2024) or ``original`` (the first stage's order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from ..errors import ConfigError
from ..stage import Transformer
from ..types import Candidate, Ranking, document_text

Counter = Callable[[str], int]
Policy = Literal["relevance", "ends", "original"]


class BudgetFilter(Transformer):
    """Keep the best candidates whose passages fit ``max_tokens`` (see the module docstring)."""

    def __init__(
        self,
        count_tokens: Counter,
        max_tokens: int,
        *,
        min_score: float | None = None,
        overflow: Literal["skip", "stop"] = "skip",
    ) -> None:
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be at least 1, got {max_tokens}")
        if overflow not in ("skip", "stop"):
            raise ConfigError(f"overflow must be 'skip' or 'stop', got {overflow!r}")
        self.count_tokens = count_tokens
        self.max_tokens = max_tokens
        self.min_score = min_score
        self.overflow = overflow
        self.dropped: dict[str, int] = {}
        """Candidates left out, per query id (budget or threshold)."""

    @property
    def name(self) -> str:
        """Provenance name."""
        return "budget"

    def __repr__(self) -> str:
        return f"BudgetFilter(max_tokens={self.max_tokens}, min_score={self.min_score}, overflow={self.overflow!r})"

    def _keep(self, candidates: Sequence[Candidate]) -> list[Candidate]:
        kept, used = [], 0
        for c in candidates:
            if self.min_score is not None and c.score < self.min_score:
                continue
            size = self.count_tokens(document_text(c.doc))
            if used + size > self.max_tokens:
                if self.overflow == "stop":
                    break
                continue
            kept.append(c)
            used += size
        return kept

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Filter every ranking; kept candidates stay in rank order with their scores."""
        out = []
        for r in batch:
            kept = self._keep(r.candidates)
            self.dropped[r.query.qid] = len(r.candidates) - len(kept)
            out.append(r.with_candidates(kept))
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
