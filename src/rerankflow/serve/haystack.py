"""Haystack adapters (haystack-ai 3.x): a job's pipeline as a retriever component and a
reranking pipeline as a ranker component, each built from a YAML job and a pipeline name, so
``to_dict``/``from_dict`` (and Haystack's YAML) carry them; loading a saved pipeline needs
``allowed_modules=["rerankflow.serve.haystack"]`` (Haystack's allowlist of trusted modules).
Needs ``pip install haystack-ai``.

Documents cross over with ``id`` = the document id, ``content`` = the passage text, ``score``
= the last stage's score, and ``meta`` = the document's own metadata (for an indexed chunk:
``doc_id``, ``source``, ``start``, ``end``, ``heading``, ``page``) plus ``title``, ``rank``
(0-based) and ``scores`` (every stage's). A ranker keeps a Haystack document's own ``meta``;
the documents it is given enter in their order as the stage ``input`` (their scores from an
earlier component are in the incoming ``meta``, not in ``scores``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingDependencyError
from ..pipelines.runner import load_pipeline
from ..stage import Retriever, Transformer
from ..types import Candidate, Document, Query, Ranking
from .protocol import ranked_meta

try:
    from haystack import Document as HaystackDocument
    from haystack import component, default_from_dict, default_to_dict
except ImportError as exc:  # pragma: no cover  (the extra is part of the dev install)
    raise MissingDependencyError(exc.name or "haystack-ai", "haystack") from None


def to_haystack(candidate: Candidate, rank: int, meta: dict[str, Any] | None = None) -> HaystackDocument:
    """A ranked candidate as a Haystack document."""
    return HaystackDocument(
        id=candidate.docid, content=candidate.doc.text, meta=ranked_meta(candidate, rank, meta), score=candidate.score
    )


class _FromJob:
    """A component made from a job file and one of its pipelines (what it serialises)."""

    def __init__(self, job: str, pipeline: str, top_k: int | None = None) -> None:
        if top_k is not None and top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        self.job, self.pipeline_name, self.top_k = str(job), pipeline, top_k
        self.pipeline: Transformer = load_pipeline(Path(job), pipeline)

    def warm_up(self) -> None:
        """Load the pipeline's models and index now (Haystack calls it before the first run)."""
        self.pipeline.warm_up()

    def to_dict(self) -> dict[str, Any]:
        """Haystack's serialised form: the job file, the pipeline name and ``top_k``."""
        return default_to_dict(self, job=self.job, pipeline=self.pipeline_name, top_k=self.top_k)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Inverse of :meth:`to_dict`."""
        return default_from_dict(cls, data)

    def _top(self, ranking: Ranking, top_k: int | None) -> list[Candidate]:
        k = top_k or self.top_k
        return list(ranking.candidates[:k] if k else ranking.candidates)


@component
class RerankflowRetriever(_FromJob):
    """A job's pipeline that starts with a retriever: ``run(query, top_k)`` → documents, best first."""

    def __init__(self, job: str, pipeline: str, top_k: int | None = None) -> None:
        _FromJob.__init__(self, job, pipeline, top_k)  # @component remakes the class: no zero-argument super()
        if not any(isinstance(s, Retriever) for s in self.pipeline.walk()):
            raise ConfigError(f"pipeline {pipeline!r} retrieves nothing; a ranker (RerankflowRanker) reranks documents")

    @component.output_types(documents=list[HaystackDocument])
    def run(self, query: str, top_k: int | None = None) -> dict[str, list[HaystackDocument]]:
        """Search ``query``."""
        (ranking,) = self.pipeline([Ranking(Query("q0", query))])
        return {"documents": [to_haystack(c, i) for i, c in enumerate(self._top(ranking, top_k))]}


@component
class RerankflowRanker(_FromJob):
    """A job's reranking pipeline (no retriever): ``run(query, documents, top_k)`` → the
    documents reordered and scored, best first (a compressor may return fewer)."""

    def __init__(self, job: str, pipeline: str, top_k: int | None = None) -> None:
        _FromJob.__init__(self, job, pipeline, top_k)  # @component remakes the class: no zero-argument super()
        if any(isinstance(s, Retriever) for s in self.pipeline.walk()):
            raise ConfigError(f"pipeline {pipeline!r} retrieves; a ranker reranks the documents it is given")

    @component.output_types(documents=list[HaystackDocument])
    def run(
        self, query: str, documents: list[HaystackDocument], top_k: int | None = None
    ) -> dict[str, list[HaystackDocument]]:
        """Rerank ``documents`` for ``query`` (ids are kept; documents without one are numbered)."""
        docs = [Document(d.id or str(i), d.content or "", d.meta.get("title")) for i, d in enumerate(documents)]
        if len({d.docid for d in docs}) != len(docs):
            raise ConfigError("documents must have distinct ids (Haystack derives ids from content: drop duplicates)")
        own = {d.docid: dict(h.meta) for d, h in zip(docs, documents, strict=True)}
        if not docs:
            return {"documents": []}
        (ranking,) = self.pipeline([Ranking.from_documents(Query("q0", query), docs)])
        return {"documents": [to_haystack(c, i, own.get(c.docid)) for i, c in enumerate(self._top(ranking, top_k))]}
