"""LangChain adapters: any pipeline as a ``BaseRetriever``, any reranker or compressor stage
as a ``BaseDocumentCompressor`` (sync and async). Needs ``pip install 'rerankflow[langchain]'``.

Documents cross over as ``page_content`` = passage text; the metadata carries the document's
own metadata (for an indexed chunk: ``doc_id``, ``source``, ``start``, ``end``, ``heading``,
``page`` and its front matter, so a chain can cite file and offsets), then ``docid``,
``title``, ``score`` (the last stage's), ``rank`` (0-based) and ``scores`` (every stage's).
Pipelines built from a YAML job come from :meth:`PipelineRetriever.from_job`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingDependencyError
from ..generators.answer import AnswerGenerator
from ..pipelines.runner import load_pipeline
from ..stage import Retriever, Transformer
from ..types import Candidate, Document, Query, Ranking
from .protocol import ranked_meta

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun, Callbacks
    from langchain_core.documents import BaseDocumentCompressor
    from langchain_core.documents import Document as LCDocument
    from langchain_core.retrievers import BaseRetriever
    from pydantic import ConfigDict, Field
except ImportError as exc:  # pragma: no cover  (the extra is part of the dev install)
    raise MissingDependencyError(exc.name or "langchain-core", "langchain") from None


def to_langchain(candidate: Candidate, rank: int, extra: dict[str, Any] | None = None) -> LCDocument:
    """A ranked candidate as a LangChain document (its own metadata kept, ``extra`` over it)."""
    meta = {**ranked_meta(candidate, rank, extra), "docid": candidate.docid, "score": candidate.score}
    return LCDocument(page_content=candidate.doc.text, metadata=meta, id=candidate.docid)


class PipelineRetriever(BaseRetriever):
    """Runs a rerankflow pipeline (first stage: a retriever) for each query; returns the
    top ``k`` of its final ranking (``k=None``: all of it). ``invoke(query, k=3)`` overrides ``k``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    pipeline: Transformer
    k: int | None = Field(None, ge=1)

    @classmethod
    def from_job(cls, job_path: str | Path, pipeline: str, k: int | None = None) -> PipelineRetriever:
        """The named pipeline of a YAML job (its dataset supplies the corpus)."""
        return cls(pipeline=load_pipeline(job_path, pipeline), k=k)

    def _rank(self, query: str, k: int | None) -> list[LCDocument]:
        (ranking,) = self.pipeline([Ranking(Query("q0", query))])
        top = ranking.candidates[: k or self.k or len(ranking.candidates)]
        return [to_langchain(c, i) for i, c in enumerate(top)]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[LCDocument]:
        return self._rank(query, k)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[LCDocument]:
        return await asyncio.to_thread(self._rank, query, k)


class StageCompressor(BaseDocumentCompressor):
    """Reranks or compresses LangChain documents with a rerankflow stage (a reranker, a
    compressor, or a chain of them). Documents come back best first with their metadata kept
    and the scores added; a compressor may shorten their text or leave some out, as it would
    in a pipeline. ``top_n`` keeps only the best ``n``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    stage: Transformer
    top_n: int | None = Field(None, ge=1)

    @classmethod
    def from_job(cls, job_path: str | Path, pipeline: str, top_n: int | None = None) -> StageCompressor:
        """The named pipeline of a YAML job (rerankers and compressors only)."""
        return cls(stage=load_pipeline(job_path, pipeline), top_n=top_n)

    def model_post_init(self, context: Any, /) -> None:
        """Refuse stages that would ignore the documents (retrievers) or answer (generators)."""
        for s in self.stage.walk():
            if isinstance(s, Retriever | AnswerGenerator):
                raise ConfigError(
                    f"{type(s).__name__} cannot compress given documents; use a reranker or compressor stage"
                )

    def _compress(self, documents: Sequence[LCDocument], query: str) -> list[LCDocument]:
        if not documents:
            return []
        titles = [d.metadata.get("title") for d in documents]
        docs = [
            Document(str(i), d.page_content, t if isinstance(t, str) else None)
            for i, (d, t) in enumerate(zip(documents, titles, strict=True))
        ]
        (ranking,) = self.stage([Ranking.from_documents(Query("q0", query), docs)])
        top = ranking.candidates[: self.top_n] if self.top_n else ranking.candidates
        out = []
        for rank, c in enumerate(top):
            original = documents[int(c.docid)]
            doc = to_langchain(c, rank, original.metadata)
            doc.metadata["docid"] = original.metadata.get("docid", original.id)
            doc.id = original.id
            out.append(doc)
        return out

    def compress_documents(
        self, documents: Sequence[LCDocument], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[LCDocument]:
        """Rerank/compress ``documents`` for ``query``."""
        return self._compress(documents, query)

    async def acompress_documents(
        self, documents: Sequence[LCDocument], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[LCDocument]:
        """The same, off the event loop."""
        return await asyncio.to_thread(self._compress, documents, query)
