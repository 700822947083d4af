"""Bi-encoder reranker: cosine similarity of query and passage embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..backends.embeddings import TextEncoder
from ..stage import Transformer
from ..types import Ranking, document_text, rescore


class BiEncoderReranker(Transformer):
    """Rescore each ranking's candidates by cosine(query, passage) with a dense encoder.

    All passages of a batch are encoded in one call (the encoder batches internally).
    """

    stage_name = "biencoder"
    shown = ("encoder",)

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder = encoder

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Rescore and re-sort every ranking."""
        texts = [document_text(c.doc) for r in batch for c in r.candidates]
        pemb = self.encoder.encode(texts, desc="biencoder: encoding passages")
        qemb = self.encoder.encode([r.query.text for r in batch], desc="biencoder: encoding queries")
        out, start = [], 0
        for i, r in enumerate(batch):
            n = len(r.candidates)
            scores = pemb[start : start + n] @ qemb[i] if n else np.zeros(0)
            start += n
            out.append(rescore(r, scores.tolist(), self.name))
        return out
