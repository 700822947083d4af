"""Cross-encoder reranker: a model reads query and passage together and outputs a score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from ..backends.types import PairScorer
from ..options import StageOptions
from ..stage import Transformer
from ..types import Ranking, document_text, rescore


class CrossEncoderOptions(StageOptions):
    """Rerank with a cross-encoder (a model reading query and passage as one pair); how the two are written."""

    query_format: str = Field("{query}", description="the query side, with {query} (e.g. a model card's prefix)")
    document_format: str = Field("{document}", description="the passage side, with {document} (title and text)")

    @field_validator("query_format", "document_format")
    @classmethod
    def _one_field(cls, v: str, info: ValidationInfo) -> str:
        name = "query" if info.field_name == "query_format" else "document"
        try:
            v.format(**{name: ""})
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"{info.field_name} may use only {{{name}}} (write braces as {{{{ }}}}): {exc}") from None
        if f"{{{name}}}" not in v:
            raise ValueError(f"{info.field_name} must contain {{{name}}}")
        return v


class CrossEncoderReranker(Transformer):
    """Rescore every candidate with a :class:`~rerankflow.backends.types.PairScorer`: a
    ``CrossEncoderModel`` (sentence-transformers), a ``VLLMScoreModel`` (vLLM's pooling runner) or
    a ``RerankEndpointModel`` (a served reranker); all pairs of a batch go in one call. Settings:
    :class:`CrossEncoderOptions`."""

    stage_name = "crossencoder"
    shown = ("model",)

    Options = CrossEncoderOptions

    def __init__(
        self,
        model: PairScorer,
        options: CrossEncoderOptions | None = None,
        **settings: Any,
    ) -> None:
        self.model = model
        self.options = CrossEncoderOptions.build(options, settings, "crossencoder")

    def load(self) -> None:
        """Load the model."""
        self.model.load()

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Rescore and re-sort every ranking."""
        q, d = self.options.query_format, self.options.document_format
        pairs = [
            (q.format(query=r.query.text), d.format(document=document_text(c.doc))) for r in batch for c in r.candidates
        ]
        scores = self.model.score(pairs)
        out, start = [], 0
        for r in batch:
            n = len(r.candidates)
            out.append(rescore(r, scores[start : start + n], self.name))
            start += n
        return out
