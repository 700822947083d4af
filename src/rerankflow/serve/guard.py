"""The ASGI guard every request meets first: the API key and the request body limit."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping

from .errors import ApiError, Message, Receive, Scope, Send, send_error

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


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
            await send_error(send, err)
            return
        too_big = ApiError(
            413,
            f"request body is larger than {self.max_body} bytes (serve.max_body_bytes)",
            code="request_too_large",
        )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            await send_error(send, too_big)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body.extend(message.get("body", b""))
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                await send_error(send, too_big)
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
