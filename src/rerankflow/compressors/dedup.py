"""Near-duplicate removal: a passage whose embedding is too close to a better one is dropped.

Candidates are walked best first; a candidate is kept unless its cosine similarity to an
already kept candidate reaches ``threshold`` (so of two near-copies the better-ranked one
stays). An optional budget then keeps the survivors in rank order while they fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field

from ..backends.embeddings import TextEncoder
from ..types import Candidate, Ranking, document_text
from .base import Compressor, CompressorOptions, QueryNotes, Tokenizes


class DedupOptions(CompressorOptions):
    """Drop passages whose embedding cosine to a better-ranked kept passage reaches threshold."""

    threshold: float = Field(0.95, ge=-1, le=1, description="cosine similarity that makes a near-duplicate")


class NearDuplicateFilter(Compressor):
    """Drop candidates with cosine similarity >= ``threshold`` to a better kept one."""

    stage_name = "dedup"
    Options = DedupOptions
    options: DedupOptions

    def __init__(
        self, encoder: TextEncoder, *, tokenizer: Tokenizes, options: DedupOptions | None = None, **settings: Any
    ) -> None:
        super().__init__(tokenizer, options, settings)
        self.encoder = encoder

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
                if kept and float(np.max(vecs[kept] @ vecs[i])) >= self.options.threshold:
                    continue
                kept.append(i)
            note.drop("duplicate", n - len(kept))
            survivors = [r.candidates[i] for i in kept]
            out.append(self.fit(note, survivors))
        return out
