"""Errors in OpenAI's JSON shape: ``{"error": {"message", "type", "param", "code"}}``, and how
pipeline failures map to them (bad request data 400, model backend 502, else 500)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import BackendError, DataError, RerankflowError

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


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


async def send_error(send: Send, err: ApiError) -> None:
    """Answer an ASGI request with ``err`` (before the application has seen it)."""
    payload = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def install_error_handlers(app: FastAPI) -> None:
    """Answer every failure in OpenAI's shape: API errors as raised, request validation as 400
    naming the argument, routing errors with their status, anything unexpected as 500 (logged)."""

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
