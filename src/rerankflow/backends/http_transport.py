"""JSON over HTTP for the backends that call servers (OpenAI-compatible LLMs, rerank endpoints).

Requests run concurrently up to ``max_concurrency``; connection errors, timeouts, 429 and 5xx
are retried with exponential backoff and jitter (tenacity) within ``max_retries`` and
``retry_budget_s``, never other 4xx. The API key is read from the environment variable named by
``api_key_env``, sent as a bearer token, never logged, and blanked out of error messages (a
server may echo a refused key).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from ..errors import BackendError, MissingDependencyError
from ..options import Options

Check = Callable[[str, Any], None]
"""Validates a decoded answer (``url``, JSON); raises :class:`BackendError` naming what is wrong."""


class RetryableHTTPError(BackendError):
    """A 429 or 5xx answer (retried)."""


class TransportOptions(Options):
    """How to reach one server: address, key, concurrency, timeouts and retries (every backend
    that calls a server extends these)."""

    base_url: str = Field("http://127.0.0.1:8000/v1", description="server address")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="environment variable holding the API key (sent as a bearer token)"
    )
    max_concurrency: int = Field(16, ge=1, description="requests in flight at once")
    timeout_s: float = Field(60.0, gt=0, description="seconds per request")
    connect_timeout_s: float = Field(5.0, gt=0, description="seconds to open a connection")
    max_retries: int = Field(4, ge=0, description="retries of a failed request (5xx, 429, transport errors)")
    backoff_initial_s: float = Field(0.5, gt=0, description="first retry's wait (exponential, with jitter)")
    backoff_max_s: float = Field(8.0, gt=0, description="longest wait between retries")
    retry_budget_s: float = Field(120.0, gt=0, description="seconds one request may spend retrying")

    @field_validator("base_url")
    @classmethod
    def _no_password(cls, v: str) -> str:
        if urlsplit(v).password is not None:
            raise ValueError(
                "base_url holds a password; put the credential in an environment variable and name it in api_key_env"
            )
        return v.rstrip("/")


class HTTPTransport:
    """POST JSON bodies to one server (see the module docstring); settings: ``options``."""

    def __init__(self, options: TransportOptions) -> None:
        self.options = options

    @property
    def base_url(self) -> str:
        """The server address (no trailing slash)."""
        return self.options.base_url

    @staticmethod
    def check_installed() -> None:
        """The HTTP libraries are there (they come with the ``serve`` extra)."""
        try:
            import httpx  # noqa: F401
            import tenacity  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError("httpx and tenacity", "serve") from exc

    def api_key(self) -> str | None:
        """The key from the environment variable ``api_key_env`` names (``None``: no key)."""
        if not self.options.api_key_env:
            return None
        return os.environ.get(self.options.api_key_env) or None

    def headers(self) -> dict[str, str]:
        """JSON content type, and the bearer token when there is a key."""
        headers = {"Content-Type": "application/json"}
        key = self.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    @contextmanager
    def key_blanked(self) -> Iterator[None]:
        """Re-raise a :class:`BackendError` that shows the API key with the key blanked out
        (servers may echo a refused key in their answer); other errors pass unchanged."""
        try:
            yield
        except BackendError as exc:
            key = self.api_key()
            if not key or key not in str(exc):
                raise
            raise BackendError(str(exc).replace(key, "***")) from None

    async def post_all(self, path: str, bodies: list[dict[str, Any]], check: Check) -> list[tuple[Any, float]]:
        """POST every body to ``base_url + path`` (bounded concurrency, retries); the checked
        answers and their latencies, in order."""
        import httpx

        timeout = httpx.Timeout(self.options.timeout_s, connect=self.options.connect_timeout_s)
        limits = httpx.Limits(max_connections=self.options.max_concurrency)
        sem = asyncio.Semaphore(self.options.max_concurrency)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, headers=self.headers()) as client:

            async def one(body: dict[str, Any]) -> tuple[Any, float]:
                async with sem:
                    start = time.perf_counter()
                    data = await self._post_with_retries(client, path, body, check)
                    return data, time.perf_counter() - start

            with self.key_blanked():
                return list(await asyncio.gather(*(one(b) for b in bodies)))

    async def _post_with_retries(self, client: Any, path: str, body: dict[str, Any], check: Check) -> Any:
        import httpx
        from tenacity import (
            AsyncRetrying,
            RetryError,
            retry_if_exception_type,
            stop_after_attempt,
            stop_after_delay,
            wait_exponential_jitter,
        )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.options.max_retries + 1) | stop_after_delay(self.options.retry_budget_s),
            wait=wait_exponential_jitter(multiplier=self.options.backoff_initial_s, max=self.options.backoff_max_s),
            retry=retry_if_exception_type((httpx.TransportError, RetryableHTTPError)),
            reraise=False,
        )
        url = f"{self.base_url}{path}"
        try:
            async for attempt in retrying:
                with attempt:
                    response = await client.post(url, json=body)
                    return self.decode(response, check)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            raise BackendError(
                f"{url} failed after {exc.last_attempt.attempt_number} attempts: {describe_error(last)}"
            ) from last
        raise BackendError(f"{url}: no attempt was made")  # unreachable: tenacity runs at least once

    def decode(self, response: Any, check: Check) -> Any:
        """The answer's JSON: 429/5xx raise :class:`RetryableHTTPError`, other 4xx and bodies that
        are not JSON or fail ``check`` raise :class:`BackendError`."""
        status = response.status_code
        if status == 429 or status >= 500:
            raise RetryableHTTPError(f"HTTP {status}: {error_text(response)}")
        if status >= 400:
            raise BackendError(
                f"{response.request.url} answered HTTP {status}: {error_text(response)} (not retried: the request itself was refused)"
            )
        try:
            data = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BackendError(
                f"{response.request.url} answered HTTP {status} with a body that is not JSON: {response.text[:120]!r}"
            ) from None
        check(str(response.request.url), data)
        return data


def error_text(response: Any) -> str:
    """The message of an error answer (OpenAI's ``error.message``, else the body), cut short."""
    try:
        data = response.json()
        err = data.get("error", data) if isinstance(data, dict) else data
        msg = err.get("message", err) if isinstance(err, dict) else err
        return str(msg)[:200]
    except (ValueError, UnicodeDecodeError):
        return response.text[:200]


def describe_error(exc: BaseException | None) -> str:
    """An exception as ``Type: message``."""
    if exc is None:
        return "unknown error"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
