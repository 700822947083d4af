"""A pipeline as the server runs it: requests merged into batches, generation split off.

Requests that arrive while a batch of the same pipeline is running are merged into the next
batch (the stage contract is batch in, batch out, so retrievers, rerankers and the generator
all see several queries at once). A pipeline whose last stage is ``generate`` answers chat
requests; its earlier stages (the *prefix*) also run alone for streamed answers, which are
then generated request by request. A pipeline without a retriever reranks the documents a
request sends (``/v1/rerank``).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field

from ..backends.batching import Coalescer
from ..backends.types import GenerationParams
from ..cancel import CancelToken, is_cancelled
from ..errors import PipelineTypeError
from ..generators.answer import AnswerChunk, AnswerGenerator
from ..stage import Retriever, Transformer
from ..types import Candidate, Document, Query, Ranking


@dataclass(frozen=True)
class _Work:
    """One request inside a merged batch: its ranking, its generation settings when the
    generator should run (``None``: stop after the prefix), and its cancel token."""

    ranking: Ranking
    params: GenerationParams | None
    cancel: CancelToken | None = None


@dataclass
class CancelCounts:
    """Work of requests that went away: requests dropped before their batch ran, and
    requests that left between stages (thread-safe counters, for ``/metrics``)."""

    dropped_in_queue: int = 0
    stages_skipped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, *, dropped_in_queue: int = 0, stages_skipped: int = 0) -> None:
        """Add to the counters."""
        with self._lock:
            self.dropped_in_queue += dropped_in_queue
            self.stages_skipped += stages_skipped


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
        self.steps = stages[:-1] if self.generator is not None else stages
        """The stages before generation (the prefix), run one by one so cancelled requests
        leave between them."""
        self.retrieves = any(isinstance(s, Retriever) for s in pipeline.walk())
        self._batches: Coalescer[_Work, Ranking] = Coalescer(self._run_batch)
        self.counts = CancelCounts()

    @property
    def chats(self) -> bool:
        """Answers chat requests (the last stage generates)."""
        return self.generator is not None

    @property
    def reranks(self) -> bool:
        """Reranks given documents (no stage retrieves, none generates)."""
        return not self.retrieves and self.generator is None

    @property
    def queue_depth(self) -> int:
        """Requests waiting for the next batch of this pipeline."""
        return self._batches.waiting()

    @property
    def tokens_not_generated(self) -> int:
        """Tokens the generator's backend did not generate for requests that went away."""
        return self.generator.backend.ledger.tokens_not_generated if self.generator is not None else 0

    def describe(self) -> dict[str, object]:
        """What ``/v1/models`` says about this pipeline."""
        return {"chat": self.chats, "rerank": self.reranks, "pipeline": repr(self.pipeline)}

    def warm_up(self) -> None:
        """Load every model and index now."""
        self.pipeline.warm_up()

    def _live(self, items: list[_Work], idx: list[int]) -> list[int]:
        """The positions of ``idx`` whose request is still there."""
        return [i for i in idx if not is_cancelled(items[i].cancel)]

    def _run_batch(self, items: list[_Work]) -> list[Ranking]:
        """Run one merged batch: the stages on everything, one after another, then generation
        grouped by settings. A request that went away is dropped before the batch starts and
        between stages (its ranking comes back as it was when it left; nobody reads it), and
        its generation stops at the next decoding step. Stages keep nothing per request: what
        they record travels in the returned rankings."""
        out = [w.ranking for w in items]
        idx = self._live(items, list(range(len(items))))
        for i in idx:
            token = items[i].cancel
            if token is not None:
                token.started = True
        self.counts.add(dropped_in_queue=len(items) - len(idx))
        for step in self.steps:
            if not idx:
                break
            for i, r in zip(idx, step([out[i] for i in idx]), strict=True):
                out[i] = r
            live = self._live(items, idx)
            self.counts.add(stages_skipped=len(idx) - len(live))
            idx = live
        if self.generator is None:
            return out
        groups: dict[GenerationParams, list[int]] = {}
        for i in idx:
            params = items[i].params
            if params is not None:
                groups.setdefault(params, []).append(i)
        for params, group in groups.items():
            answered = self.generator.answer([out[i] for i in group], params, [items[i].cancel for i in group])
            for i, r in zip(group, answered, strict=True):
                out[i] = r
        return out

    async def answer(self, ranking: Ranking, params: GenerationParams, cancel: CancelToken | None = None) -> Ranking:
        """The whole pipeline for one chat request (merged with concurrent ones)."""
        return (await self._batches.submit([_Work(ranking, params, cancel)]))[0]

    async def prepare(self, ranking: Ranking, cancel: CancelToken | None = None) -> Ranking:
        """Everything before generation (for streaming), or the whole of a reranking pipeline."""
        return (await self._batches.submit([_Work(ranking, None, cancel)]))[0]

    async def stream(
        self, ranking: Ranking, params: GenerationParams, cancel: CancelToken | None = None
    ) -> AsyncGenerator[AnswerChunk, None]:
        """Generate the answer for a prepared ranking piece by piece (closing the stream, or
        ``cancel``, stops the generation at its next step)."""
        if self.generator is None:
            raise PipelineTypeError(f"pipeline {self.name!r} does not end in 'generate'; it cannot stream answers")
        async with aclosing(self.generator.astream(ranking, params, cancel)) as chunks:
            async for chunk in chunks:
                yield chunk


def serve_pipelines(
    pipelines: Mapping[str, Transformer], names: Sequence[str] | None = None
) -> dict[str, ServedPipeline]:
    """Wrap the chosen pipelines (all by default) for serving."""
    chosen = list(names) if names else list(pipelines)
    return {n: ServedPipeline(n, pipelines[n]) for n in chosen}
