"""The HTTP server: OpenAI-compatible chat completions, Cohere/Jina rerank, health and readiness.

Guards, in the order a request meets them: the body-size limit (413) and the API key (401)
in an ASGI middleware (:mod:`.guard`), request validation (400), readiness (503 while models
load), the concurrency limit (429 when ``max_concurrent`` requests are in progress), and the
per-request time limit (504) (:mod:`.state`). Every error has OpenAI's shape (:mod:`.errors`).
Streams: :mod:`.streaming`. See docs/serving.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.background import BackgroundTask

from ..cancel import CancelToken
from ..eval.trace import Price
from ..pipelines.job import ServeSpec
from ..types import Document, Query, Ranking
from .errors import ApiError, install_error_handlers
from .guard import Guard
from .protocol import (
    ChatRequest,
    RerankRequest,
    RerankV2Request,
    TEIRerankRequest,
    chat_completion,
    new_id,
    rerank_response,
    rerank_v2_response,
    tei_rerank_response,
)
from .served import ServedPipeline
from .state import ServerState
from .streaming import chat_events
from .tracing import RequestSpan, get_tracer

log = logging.getLogger(__name__)


def create_app(
    pipelines: Mapping[str, ServedPipeline],
    spec: ServeSpec | None = None,
    prices: Mapping[str, Price] | None = None,
    tracer_provider: Any = None,
) -> FastAPI:
    """The FastAPI application serving ``pipelines`` with the limits of ``spec``; ``prices``
    (a job's ``cost``) price the LLM use in responses and spans; spans go to
    ``tracer_provider`` (default: OpenTelemetry's global provider, a no-op unless set up)."""
    spec = spec or ServeSpec()
    state = ServerState(pipelines, spec)
    tracer = get_tracer(tracer_provider)
    for served in pipelines.values():
        served.prices, served.tracer = dict(prices or {}), tracer

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.ensure_future(asyncio.to_thread(state.warm_up)) if spec.warm_up else None
        if loading is None:
            state.status = "ready"
        yield
        if loading is not None and not loading.done():
            log.info("shutting down while models load; waiting for the loader thread")

    app = FastAPI(title="rerankflow", lifespan=lifespan)
    app.state.rerankflow = state
    api_key = os.environ.get(spec.api_key_env) or None
    app.add_middleware(Guard, api_key=api_key, key_env=spec.api_key_env, max_body=spec.max_body_bytes)
    install_error_handlers(app)
    _probe_routes(app, state)
    _model_routes(app, state)
    _work_routes(app, state, tracer)
    return app


def _probe_routes(app: FastAPI, state: ServerState) -> None:
    """``/healthz``, ``/readyz`` (open to probes) and ``/metrics``."""

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "ready": state.status == "ready",
            "in_flight": state.in_flight,
            "cancelled": dict(state.cancelled),
            "queue_depth": sum(p.queue_depth for p in state.pipelines.values()),
        }

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(state.metrics(), media_type="text/plain; version=0.0.4")

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        body = {"ready": state.status == "ready", "status": state.status, "error": state.error}
        return JSONResponse(body, status_code=200 if state.status == "ready" else 503)


def _model_routes(app: FastAPI, state: ServerState) -> None:
    """``/v1/models`` and ``/v1/models/{name}``: the served pipelines."""

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [state.model_card(p) for p in state.pipelines.values()]}

    @app.get("/v1/models/{name}")
    async def model(name: str) -> dict[str, Any]:
        if name not in state.pipelines:
            raise ApiError(
                404, f"no pipeline named {name!r}; served: {', '.join(state.pipelines)}", code="model_not_found"
            )
        return state.model_card(state.pipelines[name])


def _work_routes(app: FastAPI, state: ServerState, tracer: Any) -> None:
    """``/v1/chat/completions`` (plain and streamed), and reranking in three shapes:
    ``/v1/rerank`` (Cohere v1, Jina), ``/v2/rerank`` (Cohere v2), ``/rerank`` (TEI)."""

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest, request: Request) -> dict[str, Any] | StreamingResponse:
        arrived = time.monotonic()
        served = state.pipeline(body.model, "chat")
        query = body.query()
        if not query.strip():
            raise ApiError(
                400, "no user message with text: the query is the last message with role 'user'", param="messages"
            )
        state.require_ready()
        if served.generator is None:  # state.pipeline checked `chats`; this keeps the types honest
            raise ApiError(500, f"pipeline {served.name!r} has no generator", type="server_error")
        params = body.params(served.generator.params, state.spec.max_tokens)
        if body.filter:
            await state.check_filter(served, body.filter)
        rid = new_id("chatcmpl")
        history = body.history(system=state.spec.allow_system_messages)
        ranking = Ranking(Query(rid, query, body.filter, history, deadline=state.deadline(body.budget_ms, arrived)))
        release = state.admit()
        token = CancelToken()
        span = RequestSpan(tracer, f"chat {served.name}", rid, body.stream)
        if not body.stream:
            with span:
                work = served.answer(ranking, params, token, span.context)
                done = await state.within_limit(state.start(work, release), token, request)
                if done.answer is None:
                    raise ApiError(500, f"pipeline {served.name!r} returned no answer", type="server_error")
                summary = served.usage(done)
                span.finish(done, summary)
            return chat_completion(rid, served.name, done, done.answer, summary)
        # the passages are chosen before the response starts, so their failures get a status code
        started = time.monotonic()
        preparing = state.start(served.prepare(ranking, token, span.context), lambda: None)
        try:
            prepared = await state.within_limit(preparing, token, request)
        except BaseException as exc:
            preparing.add_done_callback(lambda _: release())  # the slot is free once the work ends
            span.fail(exc)
            raise
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        left = state.spec.timeout_s - (time.monotonic() - started)
        return StreamingResponse(
            chat_events(served, prepared, params, rid, include_usage, left, release, token, state.cancel, span),
            media_type="text/event-stream",
            background=BackgroundTask(release),
        )

    async def reranked(
        body: RerankRequest | RerankV2Request | TEIRerankRequest,
        docs: list[Document],
        rid: str,
        request: Request,
        param: str,
    ) -> tuple[str, Ranking]:
        """The pipeline's name and the ranking it gives ``docs`` (the same guards for every API shape)."""
        arrived = time.monotonic()
        served = state.pipeline(body.model, "rerank")
        if len(docs) > state.spec.max_documents:
            raise ApiError(
                400,
                f"{len(docs)} documents; at most {state.spec.max_documents} per request (serve.max_documents)",
                param=param,
            )
        state.require_ready()
        if not docs:
            return served.name, Ranking(Query(rid, body.query))
        release = state.admit()
        token = CancelToken()
        query = Query(rid, body.query, deadline=state.deadline(body.budget_ms, arrived))
        work = served.prepare(Ranking.from_documents(query, docs), token)
        return served.name, await state.within_limit(state.start(work, release), token, request)

    @app.post("/v1/rerank")
    async def rerank(body: RerankRequest, request: Request) -> dict[str, Any]:
        rid = new_id("rerank")
        name, done = await reranked(body, body.as_documents(), rid, request, "documents")
        return rerank_response(rid, name, body, done)

    @app.post("/v2/rerank")
    async def rerank_v2(body: RerankV2Request, request: Request) -> dict[str, Any]:
        rid = new_id("rerank")
        _, done = await reranked(body, body.as_documents(), rid, request, "documents")
        return rerank_v2_response(rid, body, done)

    @app.post("/rerank")
    async def rerank_tei(body: TEIRerankRequest, request: Request) -> list[dict[str, Any]]:
        _, done = await reranked(body, body.as_documents(), new_id("rerank"), request, "texts")
        return tei_rerank_response(body, done)
