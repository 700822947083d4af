"""Near-duplicate removal: a passage whose embedding is too close to a better one is dropped.

Candidates are walked best first; a candidate is kept unless its cosine similarity to an
already kept candidate reaches ``threshold`` (so of two near-copies the better-ranked one
stays). An optional budget then keeps the survivors in rank order while they fit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..backends.embeddings import TextEncoder
from ..errors import ConfigError
from ..types import Candidate, Ranking, document_text
from .base import Budget, Compressor, QueryNotes, TokenCounter


class NearDuplicateFilter(Compressor):
    """Drop candidates with cosine similarity >= ``threshold`` to a better kept one."""

    stage_name = "dedup"

    def __init__(
        self, encoder: TextEncoder, count_tokens: TokenCounter, *, threshold: float = 0.95, budget: Budget | None = None
    ) -> None:
        if not -1.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
        super().__init__(count_tokens, budget)
        self.encoder = encoder
        self.threshold = threshold

    def __repr__(self) -> str:
        return f"NearDuplicateFilter(threshold={self.threshold}, {self.budget})"

    def compress(self, batch: Sequence[Ranking], notes: Sequence[QueryNotes]) -> list[list[Candidate]]:
        """Remove near-duplicates per ranking, then fit the budget."""
        texts = [document_text(c.doc) for r in batch for c in r.candidates]
        vectors = self.encoder.encode(texts, desc="dedup") if texts else np.zeros((0, 1))
        out, row = [], 0
        for r, note in zip(batch, notes, strict=True):
            n = len(r.candidates)
            vecs = vectors[row : row + n]
            row += n
            kept: list[int] = []
            for i in range(n):
                if kept and float(np.max(vecs[kept] @ vecs[i])) >= self.threshold:
                    continue
                kept.append(i)
            note.drop("duplicate", n - len(kept))
            survivors = [r.candidates[i] for i in kept]
            out.append(self.fit(note, survivors))
        return out
