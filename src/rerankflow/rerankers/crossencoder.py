"""Cross-encoder reranker: a model reads query and passage together and outputs a score."""

from __future__ import annotations

from collections.abc import Sequence

from ..backends.cross_encoder import CrossEncoderModel
from ..backends.rerank_http import RerankEndpointModel
from ..backends.vllm_score import VLLMScoreModel
from ..stage import Transformer
from ..types import Ranking, document_text, rescore


class CrossEncoderReranker(Transformer):
    """Rescore every candidate with a :class:`CrossEncoderModel` (sentence-transformers), a
    :class:`VLLMScoreModel` (vLLM's pooling runner) or a :class:`RerankEndpointModel` (a served
    reranker); all pairs of a batch go in one call."""

    def __init__(self, model: CrossEncoderModel | VLLMScoreModel | RerankEndpointModel) -> None:
        self.model = model

    @property
    def name(self) -> str:
        """Provenance name."""
        return "crossencoder"

    def __repr__(self) -> str:
        return f"CrossEncoderReranker({self.model!r})"

    def load(self) -> None:
        """Load the model."""
        self.model.load()

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Rescore and re-sort every ranking."""
        pairs = [(r.query.text, document_text(c.doc)) for r in batch for c in r.candidates]
        scores = self.model.score(pairs)
        out, start = [], 0
        for r in batch:
            n = len(r.candidates)
            out.append(rescore(r, scores[start : start + n], self.name))
            start += n
        return out
