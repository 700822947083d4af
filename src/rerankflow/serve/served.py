"""A pipeline as the server runs it: requests merged into batches, generation split off.

Requests that arrive while a batch of the same pipeline is running are merged into the next
batch (the stage contract is batch in, batch out, so retrievers, rerankers and the generator
all see several queries at once). A pipeline whose last stage is ``generate`` answers chat
requests; its earlier stages (the *prefix*) also run alone for streamed answers, which are
then generated request by request. A pipeline without a retriever reranks the documents a
request sends (``/v1/rerank``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass

from ..backends.batching import Coalescer
from ..backends.types import GenerationParams
from ..errors import PipelineTypeError
from ..generators.answer import AnswerChunk, AnswerGenerator
from ..stage import Retriever, Transformer, chain
from ..types import Candidate, Document, Query, Ranking


@dataclass(frozen=True)
class _Work:
    """One request inside a merged batch: its ranking, and its generation settings when the
    generator should run (``None``: stop after the prefix)."""

    ranking: Ranking
    params: GenerationParams | None


def input_ranking(qid: str, query: str, documents: Sequence[Document]) -> Ranking:
    """A ranking of ``documents`` in the order given (scores descend from ``len(documents)``)."""
    n = len(documents)
    return Ranking(Query(qid, query), tuple(Candidate(d, float(n - i), "input") for i, d in enumerate(documents)))


class ServedPipeline:
    """One named pipeline behind the server."""

    def __init__(self, name: str, pipeline: Transformer) -> None:
        self.name = name
        self.pipeline = pipeline
        stages = pipeline.walk(chain=True)
        last = stages[-1]
        self.generator: AnswerGenerator | None = last if isinstance(last, AnswerGenerator) else None
        self.prefix: Transformer | None = pipeline
        if self.generator is not None:
            self.prefix = chain(stages[:-1]) if len(stages) > 1 else None
        self.retrieves = any(isinstance(s, Retriever) for s in pipeline.walk())
        self._batches: Coalescer[_Work, Ranking] = Coalescer(self._run_batch)

    @property
    def chats(self) -> bool:
        """Answers chat requests (the last stage generates)."""
        return self.generator is not None

    @property
    def reranks(self) -> bool:
        """Reranks given documents (no stage retrieves, none generates)."""
        return not self.retrieves and self.generator is None

    def describe(self) -> dict[str, object]:
        """What ``/v1/models`` says about this pipeline."""
        return {"chat": self.chats, "rerank": self.reranks, "pipeline": repr(self.pipeline)}

    def warm_up(self) -> None:
        """Load every model and index now."""
        self.pipeline.warm_up()

    def _run_batch(self, items: list[_Work]) -> list[Ranking]:
        """Run one merged batch: the prefix on everything, then generation grouped by settings.
        Stages keep nothing per request: what they record travels in the returned rankings."""
        batch = [w.ranking for w in items]
        out = self.prefix(batch) if self.prefix is not None else batch
        if self.generator is None:
            return out
        groups: dict[GenerationParams, list[int]] = {}
        for i, w in enumerate(items):
            if w.params is not None:
                groups.setdefault(w.params, []).append(i)
        for params, idx in groups.items():
            answered = self.generator.answer([out[i] for i in idx], params)
            for i, r in zip(idx, answered, strict=True):
                out[i] = r
        return out

    async def answer(self, ranking: Ranking, params: GenerationParams) -> Ranking:
        """The whole pipeline for one chat request (merged with concurrent ones)."""
        return (await self._batches.submit([_Work(ranking, params)]))[0]

    async def prepare(self, ranking: Ranking) -> Ranking:
        """Everything before generation (for streaming), or the whole of a reranking pipeline."""
        return (await self._batches.submit([_Work(ranking, None)]))[0]

    async def stream(self, ranking: Ranking, params: GenerationParams) -> AsyncGenerator[AnswerChunk, None]:
        """Generate the answer for a prepared ranking piece by piece."""
        if self.generator is None:
            raise PipelineTypeError(f"pipeline {self.name!r} does not end in 'generate'; it cannot stream answers")
        async for chunk in self.generator.astream(ranking, params):
            yield chunk


def serve_pipelines(
    pipelines: Mapping[str, Transformer], names: Sequence[str] | None = None
) -> dict[str, ServedPipeline]:
    """Wrap the chosen pipelines (all by default) for serving."""
    chosen = list(names) if names else list(pipelines)
    return {n: ServedPipeline(n, pipelines[n]) for n in chosen}
