"""A pipeline as the server runs it: requests merged into batches, generation split off.

Requests that arrive while a batch of the same pipeline is running are merged into the next
batch (the stage contract is batch in, batch out, so retrievers, rerankers and the generator
all see several queries at once). A pipeline whose last stage is ``generate`` answers chat
requests; its earlier stages (the *prefix*) also run alone for streamed answers, which are
then generated request by request. A pipeline without a retriever reranks the documents a
request sends (``/v1/rerank``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from ..backends.types import GenerationParams
from ..cancel import CancelToken, is_cancelled
from ..coalesce import Coalescer
from ..errors import BackendError, PipelineTypeError, RerankflowError
from ..eval.trace import Price, backend_model, stage_models, usage_summary
from ..generators.answer import AnswerChunk, AnswerGenerator
from ..retrievers.filters import FilteredSearch, MetadataFilter
from ..stage import Retriever, Transformer
from ..types import Ranking
from .tracing import record_stage, stage_attributes

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class _Work:
    """One request inside a merged batch: its ranking, its generation settings when the
    generator should run (``None``: stop after the prefix), and its cancel token."""

    ranking: Ranking
    params: GenerationParams | None
    cancel: CancelToken | None = None
    parent: Any = None
    """The request's trace context (its stages' spans are its children), or ``None``."""


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


def isolated(run: Callable[[list[T]], list[R]], items: list[T]) -> list[R | Exception]:
    """``run(items)``, but an item whose work raises fails alone: when the batch raises, its
    halves run again separately (down to single items) and each failing item gets its own
    exception in its place. A :class:`BackendError` (the model backend failing, which no
    request causes) fails every item at once, without retries here."""
    try:
        return list(run(items))
    except BackendError:
        raise
    except Exception as exc:  # any failure of one request's work must stay its own
        if len(items) == 1:
            expected = isinstance(exc, RerankflowError)
            log.warning("a request failed alone: %s: %s", type(exc).__name__, exc, exc_info=None if expected else exc)
            return [exc]
    half = len(items) // 2
    return [*isolated(run, items[:half]), *isolated(run, items[half:])]


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
        self._batches: Coalescer[_Work, Ranking | Exception] = Coalescer(self._run_batch)
        self.filtered: list[FilteredSearch] = [s for s in pipeline.walk() if isinstance(s, FilteredSearch)]
        """The retrievers that apply metadata filters (a request's filter is checked by each)."""
        self.counts = CancelCounts()
        self.models = stage_models(pipeline)
        """The model behind each LLM stage, by report name (for costs)."""
        self.prices: Mapping[str, Price] = {}
        self.tracer: Any = None

    def usage(self, ranking: Ranking) -> dict[str, Any]:
        """A request's LLM use per stage and in total, with costs under :attr:`prices`."""
        return usage_summary(ranking, self.models, self.prices)

    def trace_stage(self, items: list[_Work], idx: list[int], step: Transformer, spans: tuple[int, int],
                    before: list[Ranking], out: list[Ranking | Exception]) -> None:  # fmt: skip
        """One span per traced request for a stage that ran from ``spans[0]`` to ``spans[1]``
        (nanoseconds): the request's records from that stage, the batch it was merged into."""
        if self.tracer is None:
            return
        model = backend_model(step)
        for i, old in zip(idx, before, strict=True):
            if items[i].parent is not None:
                attributes = partial(self.stage_attributes, step, old, out[i], len(idx), model)
                record_stage(self.tracer, items[i].parent, step.name, *spans, attributes)

    def stage_attributes(
        self, step: Transformer, before: Ranking, after: Ranking | Exception, merged: int, model: str | None
    ) -> dict[str, Any]:
        """A stage's span attributes for one request (its error, when the stage failed it)."""
        if isinstance(after, Exception):
            return {"rerankflow.error": f"{type(after).__name__}: {after}"}
        return stage_attributes(step.name, before, after, merged, model, self.prices)

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

    def check_filter(self, spec: dict[str, Any], *, max_values: int | None, max_glob_chars: int | None) -> None:
        """Raise a rerankflow error naming the problem when a request's filter cannot run here:
        malformed, over the size limits, clashing with a stage's own filter, or comparing a
        field with values of a kind it never holds. Runs before the request joins a batch."""
        MetadataFilter(spec, max_values=max_values, max_glob_chars=max_glob_chars)
        for stage in self.filtered:
            stage.check_filter(spec)

    def _run_batch(self, items: list[_Work]) -> list[Ranking | Exception]:
        """Run one merged batch: the stages on everything, one after another, then generation
        grouped by settings. A request that went away is dropped before the batch starts and
        between stages (its ranking comes back as it was when it left; nobody reads it), and
        its generation stops at the next decoding step. A request whose work raises fails
        alone (:func:`isolated`): the others in the batch go on. Stages keep nothing per
        request: what they record travels in the returned rankings."""
        out: list[Ranking | Exception] = [w.ranking for w in items]
        idx = self._live(items, list(range(len(items))))
        for i in idx:
            token = items[i].cancel
            if token is not None:
                token.started = True
        self.counts.add(dropped_in_queue=len(items) - len(idx))
        idx = self._prepare_filters(items, idx, out)
        for step in self.steps:
            if not idx:
                break
            before = [_ranking(out[i]) for i in idx]
            started = time.time_ns()
            self._apply(out, idx, isolated(step, before))
            self.trace_stage(items, idx, step, (started, time.time_ns()), before, out)
            idx = [i for i in idx if not isinstance(out[i], Exception)]
            live = self._live(items, idx)
            self.counts.add(stages_skipped=len(idx) - len(live))
            idx = live
        if self.generator is None:
            return out
        generator = self.generator
        groups: dict[GenerationParams, list[int]] = {}
        for i in idx:
            params = items[i].params
            if params is not None:
                groups.setdefault(params, []).append(i)
        for params, group in groups.items():

            def answer(positions: list[int], params: GenerationParams = params) -> list[Ranking]:
                batch = [_ranking(out[i]) for i in positions]
                return generator.answer(batch, params, [items[i].cancel for i in positions])

            before = [_ranking(out[i]) for i in group]
            started = time.time_ns()
            self._apply(out, group, isolated(answer, group))
            self.trace_stage(items, group, generator, (started, time.time_ns()), before, out)
        return out

    @staticmethod
    def _apply(out: list[Ranking | Exception], idx: list[int], results: list[Any]) -> None:
        for i, r in zip(idx, results, strict=True):
            out[i] = r

    def _prepare_filters(self, items: list[_Work], idx: list[int], out: list[Ranking | Exception]) -> list[int]:
        """Compute each live request's filter masks with its own cancel token, so a costly
        filter stops when its request goes away (the retrievers then find them remembered).
        A filter that cannot run fails its own request; the positions still running."""
        for i in idx:
            query = items[i].ranking.query
            try:
                for stage in self.filtered if query.filter else []:
                    stage.prepare_filter(query.filter, items[i].cancel)
            except RerankflowError as exc:
                out[i] = exc
        running = [i for i in idx if not isinstance(out[i], Exception)]
        live = self._live(items, running)
        self.counts.add(stages_skipped=len(running) - len(live))
        return live

    async def _submit(self, work: _Work) -> Ranking:
        result = (await self._batches.submit([work]))[0]
        if isinstance(result, Exception):
            raise result
        return result

    async def answer(
        self, ranking: Ranking, params: GenerationParams, cancel: CancelToken | None = None, parent: Any = None
    ) -> Ranking:
        """The whole pipeline for one chat request (merged with concurrent ones); ``parent``:
        the request's trace context."""
        return await self._submit(_Work(ranking, params, cancel, parent))

    async def prepare(self, ranking: Ranking, cancel: CancelToken | None = None, parent: Any = None) -> Ranking:
        """Everything before generation (for streaming), or the whole of a reranking pipeline."""
        return await self._submit(_Work(ranking, None, cancel, parent))

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


def _ranking(item: Ranking | Exception) -> Ranking:
    """A live request's ranking (failed requests are no longer in the running set)."""
    if isinstance(item, Exception):
        raise item
    return item


def serve_pipelines(
    pipelines: Mapping[str, Transformer], names: Sequence[str] | None = None
) -> dict[str, ServedPipeline]:
    """Wrap the chosen pipelines (all by default) for serving."""
    chosen = list(names) if names else list(pipelines)
    return {n: ServedPipeline(n, pipelines[n]) for n in chosen}
