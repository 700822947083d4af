"""The HTTP server: OpenAI-compatible chat completions, Cohere/Jina rerank, health and readiness.

Guards, in the order a request meets them: the body-size limit (413) and the API key (401)
in an ASGI middleware, request validation (400), readiness (503 while models load), the
concurrency limit (429 when ``max_concurrent`` requests are in progress), and the
per-request time limit (504). Every error has OpenAI's shape:
``{"error": {"message", "type", "param", "code"}}``. See docs/serving.md.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..backends.types import GenerationParams
from ..cancel import CancelToken
from ..errors import BackendError, DataError, RerankflowError
from ..pipelines.job import ServeSpec
from ..types import Query, Ranking
from .protocol import (
    ChatRequest,
    RerankRequest,
    chat_chunk,
    chat_completion,
    finish_reason,
    new_id,
    passages,
    rerank_response,
    usage,
)
from .served import ServedPipeline, input_ranking

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ApiError(Exception):
    """An error answered in OpenAI's JSON shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # OpenAI's field name
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """``{"error": {...}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        """As a JSON response."""
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_from(exc: RerankflowError) -> ApiError:
    """The HTTP answer to a pipeline failure: bad request data 400, model backend 502, else 500."""
    if isinstance(exc, DataError):
        return ApiError(400, str(exc))
    if isinstance(exc, BackendError):
        return ApiError(502, f"model backend failed: {exc}", type="backend_error", code="backend_error")
    return ApiError(500, str(exc), type="server_error", code="pipeline_error")


OPEN_PATHS = ("/healthz", "/readyz")
"""Paths that answer without the API key (probes of orchestrators); everything else needs it."""


class Guard:
    """ASGI middleware: the API key (every path but :data:`OPEN_PATHS`) and the body limit."""

    def __init__(self, app: ASGIApp, *, api_key: str | None, key_env: str, max_body: int) -> None:
        self.app, self.api_key, self.key_env, self.max_body = app, api_key, key_env, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the key and read the body (at most ``max_body`` bytes), then call the app."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.api_key is not None and scope["path"] not in OPEN_PATHS and not self._authorized(headers):
            err = ApiError(
                401,
                f"missing or wrong API key: send the header 'Authorization: Bearer <key>' "
                f"(the server reads the key from ${self.key_env})",
                type="authentication_error",
                code="invalid_api_key",
            )
            await _send_error(send, err)
            return
        too_big = ApiError(
            413,
            f"request body is larger than {self.max_body} bytes (serve.max_body_bytes)",
            code="request_too_large",
        )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            await _send_error(send, too_big)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body.extend(message.get("body", b""))
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                await _send_error(send, too_big)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # disconnect notifications pass through

        await self.app(scope, replay, send)

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return (
            scheme.lower() == "bearer" and self.api_key is not None and hmac.compare_digest(token.strip(), self.api_key)
        )


async def _send_error(send: Send, err: ApiError) -> None:
    payload = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


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
        """The counters in Prometheus' text format."""
        rows = [
            ("rerankflow_requests_in_flight", "gauge", "requests in progress", [("", self.in_flight)]),
            (
                "rerankflow_requests_cancelled_total",
                "counter",
                "requests whose work was cancelled, by reason",
                [(f'{{reason="{r}"}}', n) for r, n in self.cancelled.items()],
            ),
        ]
        per_pipeline = [
            ("rerankflow_queue_depth", "gauge", "requests waiting for the next batch", lambda p: p.queue_depth),
            (
                "rerankflow_dropped_before_start_total",
                "counter",
                "cancelled requests dropped before their batch ran",
                lambda p: p.counts.dropped_in_queue,
            ),
            (
                "rerankflow_stages_skipped_total",
                "counter",
                "cancelled requests that left the pipeline between stages",
                lambda p: p.counts.stages_skipped,
            ),
            (
                "rerankflow_tokens_not_generated_total",
                "counter",
                "tokens not generated for cancelled requests (max_tokens minus what was generated)",
                lambda p: p.tokens_not_generated,
            ),
        ]
        for name, kind, help_, value in per_pipeline:
            rows.append((name, kind, help_, [(f'{{pipeline="{p.name}"}}', value(p)) for p in self.pipelines.values()]))
        lines = []
        for name, kind, help_, samples in rows:
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
            lines += [f"{name}{labels} {value}" for labels, value in samples]
        return "\n".join(lines) + "\n"

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


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def create_app(pipelines: Mapping[str, ServedPipeline], spec: ServeSpec | None = None) -> FastAPI:
    """The FastAPI application serving ``pipelines`` with the limits of ``spec``."""
    spec = spec or ServeSpec()
    state = ServerState(pipelines, spec)

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

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request", "type": ""}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        param = ".".join(loc) or None
        if first.get("type") == "extra_forbidden":
            message = f"unrecognized request argument: {param}"
        elif first.get("type") == "json_invalid":
            message = f"request body is not valid JSON: {first.get('msg')}"
        else:
            msg = str(first.get("msg")).removeprefix("Value error, ")
            message = f"{param}: {msg}" if param else msg
        return ApiError(400, message, param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", type=kind).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected failure on %s", request.url.path)
        return ApiError(500, "internal server error; see the server log", type="server_error").response()

    async def check_filter(served: ServedPipeline, spec_: dict[str, Any]) -> None:
        """400 naming the problem when a request's filter cannot run (before it joins a batch)."""
        try:
            await asyncio.to_thread(
                served.check_filter,
                spec_,
                max_values=spec.filter_max_values,
                max_glob_chars=spec.filter_max_glob_chars,
            )
        except RerankflowError as exc:
            raise ApiError(400, str(exc), param="filter") from None

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

    def model_card(p: ServedPipeline) -> dict[str, Any]:
        return {
            "id": p.name,
            "object": "model",
            "created": state.created,
            "owned_by": "rerankflow",
            "rerankflow": p.describe(),
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(p) for p in state.pipelines.values()]}

    @app.get("/v1/models/{name}")
    async def model(name: str) -> dict[str, Any]:
        if name not in state.pipelines:
            raise ApiError(
                404, f"no pipeline named {name!r}; served: {', '.join(state.pipelines)}", code="model_not_found"
            )
        return model_card(state.pipelines[name])

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest, request: Request) -> dict[str, Any] | StreamingResponse:
        served = state.pipeline(body.model, "chat")
        query = body.query()
        if not query.strip():
            raise ApiError(
                400, "no user message with text: the query is the last message with role 'user'", param="messages"
            )
        state.require_ready()
        if served.generator is None:  # state.pipeline checked `chats`; this keeps the types honest
            raise ApiError(500, f"pipeline {served.name!r} has no generator", type="server_error")
        params = body.params(served.generator.params, spec.max_tokens)
        if body.filter:
            await check_filter(served, body.filter)
        rid = new_id("chatcmpl")
        ranking = Ranking(Query(rid, query, body.filter))
        release = state.admit()
        token = CancelToken()
        if not body.stream:
            done = await state.within_limit(state.start(served.answer(ranking, params, token), release), token, request)
            if done.answer is None:
                raise ApiError(500, f"pipeline {served.name!r} returned no answer", type="server_error")
            return chat_completion(rid, served.name, done, done.answer)
        # the passages are chosen before the response starts, so their failures get a status code
        started = time.monotonic()
        preparing = state.start(served.prepare(ranking, token), lambda: None)
        try:
            prepared = await state.within_limit(preparing, token, request)
        except BaseException:
            preparing.add_done_callback(lambda _: release())  # the slot is free once the work ends
            raise
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        left = spec.timeout_s - (time.monotonic() - started)
        return StreamingResponse(
            _chat_events(served, prepared, params, rid, include_usage, left, release, token, state.cancel),
            media_type="text/event-stream",
            background=BackgroundTask(release),
        )

    @app.post("/v1/rerank")
    async def rerank(body: RerankRequest, request: Request) -> dict[str, Any]:
        served = state.pipeline(body.model, "rerank")
        if len(body.documents) > spec.max_documents:
            raise ApiError(
                400,
                f"{len(body.documents)} documents; at most {spec.max_documents} per request (serve.max_documents)",
                param="documents",
            )
        state.require_ready()
        rid = new_id("rerank")
        docs = body.as_documents()
        if not docs:
            return {"id": rid, "model": served.name, "results": []}
        release = state.admit()
        token = CancelToken()
        work = served.prepare(input_ranking(rid, body.query, docs), token)
        done = await state.within_limit(state.start(work, release), token, request)
        return rerank_response(rid, served.name, body, done)

    return app


async def _chat_events(
    served: ServedPipeline,
    prepared: Ranking,
    params: GenerationParams,
    rid: str,
    include_usage: bool,
    seconds: float,
    release: Callable[[], None],
    token: CancelToken,
    cancel: Callable[[CancelToken, str], None],
) -> AsyncIterator[str]:
    """SSE ``chat.completion.chunk`` events: the role, text deltas, the finish with the
    ``rerankflow`` extension, usage when asked, ``[DONE]``. Failures become an error event.
    When the client disconnects, the server stops this generator and closing it stops the
    generation (at its next decoding step)."""
    created = int(time.time())
    deadline = asyncio.get_running_loop().time() + seconds
    pieces = served.stream(prepared, params, token)
    step: asyncio.Future[Any] | None = None
    ended = False
    try:
        yield _sse(
            chat_chunk(rid, served.name, created, delta={"role": "assistant", "content": ""}, with_usage=include_usage)
        )
        while True:
            left = deadline - asyncio.get_running_loop().time()
            step = asyncio.ensure_future(anext(pieces))
            done, _ = await asyncio.wait({step}, timeout=max(left, 0.0))
            if not done:
                raise asyncio.TimeoutError
            step = None
            try:
                chunk = done.pop().result()
            except StopAsyncIteration:
                break
            if chunk.answer is None:
                if chunk.text:
                    delta = {"content": chunk.text}
                    yield _sse(chat_chunk(rid, served.name, created, delta=delta, with_usage=include_usage))
                continue
            answer = chunk.answer
            extra = {"rerankflow": passages(prepared.with_answer(answer))}
            yield _sse(
                chat_chunk(
                    rid,
                    served.name,
                    created,
                    delta={},
                    finish=finish_reason(answer),
                    extra=extra,
                    with_usage=include_usage,
                )
            )
            if include_usage:
                yield _sse(chat_chunk(rid, served.name, created, extra={"usage": usage(answer)}))
        ended = True
    except asyncio.TimeoutError:
        ended = True
        cancel(token, "timed out")
        yield _sse(
            ApiError(504, "request took longer than the time limit (serve.timeout_s)", type="timeout_error").body()
        )
    except RerankflowError as exc:
        ended = True
        yield _sse(error_from(exc).body())
    except Exception:  # the stream has started: the client gets an error event
        ended = True
        log.exception("stream of %s failed", rid)
        yield _sse(ApiError(500, "internal server error; see the server log", type="server_error").body())
    finally:
        if not ended and not token.cancelled:  # closed by the server: the client went away
            cancel(token, "client disconnected")
        release()
        if step is not None and not step.done():  # a piece was awaited: stop that wait first
            step.cancel()
            with suppress(BaseException):
                await step
        await pieces.aclose()
    yield _sse("[DONE]")
