"""Per-request traces: OpenTelemetry spans for a chat request and each stage it passed.

The request's span (``chat PIPELINE``) holds the totals: LLM calls, input and output tokens,
the cost under the job's price table (``cost:``), whether retrieval ran and what was searched.
Each stage adds a child span (``stage NAME``) with the candidates in and out, the requests
merged into its batch, its LLM calls, tokens, cost and stage-cache use. Spans cost nothing when
OpenTelemetry is not installed or no SDK is configured (the API's no-op tracer); ``rerankflow
serve`` exports them over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import MissingDependencyError
from ..eval.trace import Price
from ..types import LLMUsage, Ranking, StageRecord


def get_tracer(provider: Any = None) -> Any:
    """A tracer from ``provider`` (default: the global one), or ``None`` without OpenTelemetry."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace.get_tracer("rerankflow", tracer_provider=provider)


def context_of(span: Any) -> Any:
    """The context whose current span is ``span`` (children are started in it)."""
    from opentelemetry import trace

    return trace.set_span_in_context(span)


def otlp_provider() -> Any:
    """A tracer provider exporting over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set
    (``None`` otherwise)."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "opentelemetry-sdk", "otel") from None
    provider = TracerProvider(resource=Resource.create({"service.name": "rerankflow"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def record_stage(
    tracer: Any, context: Any, name: str, start_ns: int, end_ns: int, attributes: Callable[[], Mapping[str, Any]]
) -> None:
    """A child span of ``context`` for a stage that ran from ``start_ns`` to ``end_ns``;
    ``attributes`` is called only when the span records (an SDK is set up)."""
    span = tracer.start_span(f"stage {name}", context=context, start_time=start_ns)
    if span.is_recording():
        span.set_attributes(dict(attributes()))
    span.end(end_time=end_ns)


def usage_attributes(usage: LLMUsage, cost: float | None) -> dict[str, Any]:
    """Span attributes of LLM use (OpenTelemetry's gen_ai names for the token counts)."""
    out: dict[str, Any] = {
        "rerankflow.llm.calls": usage.calls,
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
    }
    if cost is not None:
        out["rerankflow.cost_usd"] = cost
    return out


def stage_attributes(
    name: str, before: Ranking, after: Ranking, merged: int, model: str | None, prices: Mapping[str, Price]
) -> dict[str, Any]:
    """What one stage did for one request: its records added to the trace, summed."""
    new: tuple[StageRecord, ...] = after.trace[len(before.trace) :]
    out: dict[str, Any] = {
        "rerankflow.stage": name,
        "rerankflow.candidates.in": len(before),
        "rerankflow.candidates.out": len(after),
        "rerankflow.batch.requests": merged,
    }
    used = [r.usage for r in new if r.usage is not None]
    if used:
        total = sum(used, LLMUsage())
        price = prices.get(model) if model else None
        out.update(usage_attributes(total, price.of(total) if price else None))
        if model:
            out["gen_ai.request.model"] = model
    caches = [r.cache for r in new if r.cache is not None]
    if caches:
        out["rerankflow.cache"] = caches[-1]
    return out


def request_attributes(ranking: Ranking, summary: Mapping[str, Any]) -> dict[str, Any]:
    """The request's totals (from :func:`~rerankflow.eval.trace.usage_summary`)."""
    total = summary["total"]
    out: dict[str, Any] = {
        "rerankflow.retrieved": not ranking.retrieval_skipped,
        "rerankflow.llm.calls": total["calls"],
        "gen_ai.usage.input_tokens": total["prompt_tokens"],
        "gen_ai.usage.output_tokens": total["output_tokens"],
    }
    if not ranking.retrieval_skipped:
        out["rerankflow.searched"] = ranking.query.text
    if "cost" in total:
        out["rerankflow.cost_usd"] = total["cost"]
    return out


class RequestSpan:
    """A request's span, started at construction (nothing without a tracer). :meth:`finish`
    records the totals and ends it; :meth:`fail` marks it failed and ends it; as a context
    manager, an exception leaving the block fails it. Ending twice does nothing."""

    def __init__(self, tracer: Any, name: str, rid: str, stream: bool) -> None:
        self.tracer = tracer
        self.span: Any = None
        self.context: Any = None
        if tracer is not None:
            from opentelemetry.trace import SpanKind

            attributes = {"rerankflow.request_id": rid, "rerankflow.stream": stream}
            self.span = tracer.start_span(name, kind=SpanKind.SERVER, attributes=attributes)
            self.context = context_of(self.span)
        self._ended = False

    def __enter__(self) -> RequestSpan:
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.fail(exc)

    def stage(self, name: str, start_ns: int, end_ns: int, attributes: Callable[[], Mapping[str, Any]]) -> None:
        """A child span for a stage that ran from ``start_ns`` to ``end_ns``."""
        if self.tracer is not None and not self._ended:
            record_stage(self.tracer, self.context, name, start_ns, end_ns, attributes)

    def finish(self, ranking: Ranking, summary: Mapping[str, Any]) -> None:
        """Record the request's totals and end the span."""
        if self.span is not None and not self._ended:
            self.span.set_attributes(request_attributes(ranking, summary))
            self._end()

    def fail(self, exc: BaseException) -> None:
        """Mark the span failed (the error's type and message) and end it."""
        if self.span is not None and not self._ended:
            from opentelemetry.trace import Status, StatusCode

            self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            self._end()

    def _end(self) -> None:
        self._ended = True
        self.span.end()
