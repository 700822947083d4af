"""The server's state: served pipelines, readiness, admission (the concurrency limit), the
per-request time limit, cancellation of work whose request went away, and the counters."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from fastapi import Request

from ..cancel import CancelToken
from ..errors import RerankflowError
from ..pipelines.job import ServeSpec
from ..types import Ranking
from .errors import ApiError, error_from
from .served import ServedPipeline

log = logging.getLogger(__name__)


class ServerState:
    """Served pipelines, readiness, and the requests in progress."""

    def __init__(self, pipelines: Mapping[str, ServedPipeline], spec: ServeSpec) -> None:
        self.pipelines = dict(pipelines)
        self.spec = spec
        self.status = "loading"
        self.error: str | None = None
        self.in_flight = 0
        self.created = int(time.time())
        self.cancelled: dict[str, int] = {"client disconnected": 0, "timed out": 0, "queue timeout": 0}
        """Requests whose work was cancelled, by reason."""

    def cancel(self, token: CancelToken, reason: str) -> None:
        """Cancel a request's work, count it and log it."""
        if not token.cancelled:
            token.cancel(reason)
            self.cancelled[reason] = self.cancelled.get(reason, 0) + 1
            log.info("request cancelled (%s); its work stops", reason)

    def metrics(self) -> str:
        """The counters in Prometheus' text format (prometheus-client, from a collector that
        reads them when scraped)."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Counters(self))
        return generate_latest(registry).decode("utf-8")

    def warm_up(self) -> None:
        """Load every pipeline's models (in a worker thread, at start-up)."""
        try:
            for p in self.pipelines.values():
                p.warm_up()
        except Exception as exc:  # reported through /readyz and every request
            log.exception("loading the pipelines failed")
            self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"
            return
        self.status = "ready"
        log.info("ready: %s", ", ".join(self.pipelines))

    def require_ready(self) -> None:
        """503 while models load or after loading failed."""
        if self.status == "ready":
            return
        if self.status == "failed":
            raise ApiError(503, f"the server could not load its models: {self.error}", type="server_error")
        raise ApiError(
            503,
            "models are still loading; retry when /readyz says ready",
            type="server_error",
            headers={"Retry-After": "5"},
        )

    def pipeline(self, name: str | None, purpose: str) -> ServedPipeline:
        """The pipeline a request names, checked to serve ``purpose`` (``chat`` or ``rerank``)."""
        able = [p for p in self.pipelines.values() if (p.chats if purpose == "chat" else p.reranks)]
        if name is None:
            if len(able) == 1:
                return able[0]
            raise ApiError(400, f"set 'model' to one of: {', '.join(p.name for p in able) or '(none)'}", param="model")
        served = self.pipelines.get(name)
        if served is None:
            raise ApiError(
                404,
                f"no pipeline named {name!r}; served: {', '.join(self.pipelines)}",
                code="model_not_found",
                param="model",
            )
        if served not in able:
            what = (
                "end in a 'generate' stage"
                if purpose == "chat"
                else "rerank given documents (no retriever, no generator)"
            )
            raise ApiError(
                400,
                f"pipeline {name!r} cannot serve {purpose} requests; those that {what}: "
                f"{', '.join(p.name for p in able) or '(none)'}",
                param="model",
            )
        return served

    def deadline(self, budget_ms: int | None, arrived: float) -> float | None:
        """A request's deadline on the monotonic clock: its ``budget_ms`` (or ``serve.budget_ms``),
        cut to ``serve.max_budget_ms``, after ``arrived``; ``None`` without a budget."""
        ms = budget_ms if budget_ms is not None else self.spec.budget_ms
        if ms is None:
            return None
        if self.spec.max_budget_ms is not None:
            ms = min(ms, self.spec.max_budget_ms)
        return arrived + ms / 1000

    def admit(self) -> Callable[[], None]:
        """Take a slot for a request (429 when all are taken); returns the release function."""
        if self.in_flight >= self.spec.max_concurrent:
            raise ApiError(
                429,
                f"server busy: {self.in_flight} requests in progress (serve.max_concurrent); retry shortly",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": "1"},
            )
        self.in_flight += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.in_flight -= 1

        return release

    def start(self, work: Awaitable[Ranking], release: Callable[[], None]) -> asyncio.Future[Ranking]:
        """Run ``work`` as a task that keeps its slot until it really ends (even past a timeout)."""
        task = asyncio.ensure_future(work)

        def done(t: asyncio.Future[Ranking]) -> None:
            release()
            if not t.cancelled():
                t.exception()  # retrieved here so a timed-out failure is not reported as unhandled

        task.add_done_callback(done)
        return task

    async def within_limit(
        self, task: asyncio.Future[Ranking], cancel: CancelToken | None = None, request: Request | None = None
    ) -> Ranking:
        """Wait for ``task`` up to the request time limit (504 after it); failures become API
        errors. With ``cancel``: the work is cancelled when the limit passes, when it has not
        started within ``serve.queue_timeout_s`` (503), or when the client of ``request``
        disconnects (the work stops; nobody is left to answer)."""
        watch = asyncio.ensure_future(self._watch(cancel, request)) if cancel is not None else None
        try:
            waiting: set[asyncio.Future[Any]] = {task} if watch is None else {task, watch}
            await asyncio.wait(waiting, timeout=self.spec.timeout_s, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            if cancel is not None and cancel.reason == "queue timeout":
                raise ApiError(
                    503,
                    f"the request waited {self.spec.queue_timeout_s:g} s for its turn (serve.queue_timeout_s); retry later",
                    type="server_error",
                    headers={"Retry-After": "5"},
                )
            if watch is not None and watch.done():
                raise ApiError(499, "client closed the request", type="client_closed_request")
            if cancel is not None:
                self.cancel(cancel, "timed out")
            raise ApiError(
                504, f"request took longer than {self.spec.timeout_s:g} s (serve.timeout_s)", type="timeout_error"
            )
        except RerankflowError as exc:
            raise error_from(exc) from exc
        finally:
            if watch is not None:
                watch.cancel()

    async def _watch(self, cancel: CancelToken, request: Request | None) -> None:
        """Return once the work must stop: its client left, or it did not start in time."""
        deadline = time.monotonic() + self.spec.queue_timeout_s
        while not cancel.cancelled:
            if request is not None and await request.is_disconnected():
                self.cancel(cancel, "client disconnected")
                return
            if not cancel.started and time.monotonic() > deadline:
                self.cancel(cancel, "queue timeout")
                return
            await asyncio.sleep(0.05)

    async def check_filter(self, served: ServedPipeline, spec: dict[str, Any]) -> None:
        """400 naming the problem when a request's filter cannot run (before it joins a batch)."""
        try:
            await asyncio.to_thread(
                served.check_filter,
                spec,
                max_values=self.spec.filter_max_values,
                max_glob_chars=self.spec.filter_max_glob_chars,
            )
        except RerankflowError as exc:
            raise ApiError(400, str(exc), param="filter") from None

    def model_card(self, p: ServedPipeline) -> dict[str, Any]:
        """What ``/v1/models`` says about a pipeline."""
        return {
            "id": p.name,
            "object": "model",
            "created": self.created,
            "owned_by": "rerankflow",
            "rerankflow": p.describe(),
        }


class _Counters:
    """The server's counters as Prometheus metric families (read at each scrape)."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        """Gauges and counters: requests in flight and cancelled, and per pipeline the queue,
        requests dropped before their batch, requests that left between stages, and the tokens
        not generated for cancelled requests."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        state = self.state
        yield GaugeMetricFamily("rerankflow_requests_in_flight", "requests in progress", value=state.in_flight)
        cancelled = CounterMetricFamily(
            "rerankflow_requests_cancelled", "requests whose work was cancelled, by reason", labels=["reason"]
        )
        for reason, n in state.cancelled.items():
            cancelled.add_metric([reason], n)
        yield cancelled
        per_pipeline: list[tuple[Any, Callable[[ServedPipeline], int]]] = [
            (GaugeMetricFamily("rerankflow_queue_depth", "requests waiting for the next batch", labels=["pipeline"]),
             lambda p: p.queue_depth),
            (CounterMetricFamily("rerankflow_dropped_before_start", "cancelled requests dropped before their batch ran",
                                 labels=["pipeline"]), lambda p: p.counts.dropped_in_queue),
            (CounterMetricFamily("rerankflow_stages_skipped", "cancelled requests that left the pipeline between stages",
                                 labels=["pipeline"]), lambda p: p.counts.stages_skipped),
            (CounterMetricFamily("rerankflow_tokens_not_generated",
                                 "tokens not generated for cancelled requests (max_tokens minus what was generated)",
                                 labels=["pipeline"]), lambda p: p.tokens_not_generated),
        ]  # fmt: skip
        for family, value in per_pipeline:
            for p in state.pipelines.values():
                family.add_metric([p.name], value(p))
            yield family
