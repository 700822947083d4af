"""Streamed chat answers: server-sent ``chat.completion.chunk`` events."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from functools import partial
from typing import Any

from ..backends.types import GenerationParams
from ..cancel import CancelToken
from ..errors import RerankflowError
from ..eval.trace import backend_model
from ..types import Ranking
from .errors import ApiError, error_from
from .protocol import chat_chunk, finish_reason, passages, usage
from .served import ServedPipeline
from .tracing import RequestSpan

log = logging.getLogger(__name__)


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


async def chat_events(
    served: ServedPipeline,
    prepared: Ranking,
    params: GenerationParams,
    rid: str,
    include_usage: bool,
    seconds: float,
    release: Callable[[], None],
    token: CancelToken,
    cancel: Callable[[CancelToken, str], None],
    span: RequestSpan,
) -> AsyncIterator[str]:
    """SSE ``chat.completion.chunk`` events: the role, text deltas, the finish with the
    ``rerankflow`` extension, usage when asked, ``[DONE]``. Failures become an error event.
    When the client disconnects, the server stops this generator and closing it stops the
    generation (at its next decoding step)."""
    created = int(time.time())
    started = time.time_ns()
    deadline = asyncio.get_running_loop().time() + seconds
    pieces = served.stream(prepared, params, token)
    step: asyncio.Future[Any] | None = None
    ended = False
    try:
        yield sse(
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
                    yield sse(chat_chunk(rid, served.name, created, delta=delta, with_usage=include_usage))
                continue
            answer = chunk.answer
            answered = chunk.ranking or prepared.with_answer(answer)
            summary = served.usage(answered)
            if served.generator is not None:
                generator = served.generator
                attributes = partial(
                    served.stage_attributes, generator, prepared, answered, 1, backend_model(generator)
                )
                span.stage(generator.name, started, time.time_ns(), attributes)
            span.finish(answered, summary)
            extra = {"rerankflow": passages(answered, summary)}
            yield sse(
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
                yield sse(chat_chunk(rid, served.name, created, extra={"usage": usage(answer)}))
        ended = True
    except asyncio.TimeoutError as exc:
        ended = True
        span.fail(exc)
        cancel(token, "timed out")
        yield sse(
            ApiError(504, "request took longer than the time limit (serve.timeout_s)", type="timeout_error").body()
        )
    except RerankflowError as exc:
        ended = True
        span.fail(exc)
        yield sse(error_from(exc).body())
    except Exception as exc:  # the stream has started: the client gets an error event
        ended = True
        span.fail(exc)
        log.exception("stream of %s failed", rid)
        yield sse(ApiError(500, "internal server error; see the server log", type="server_error").body())
    finally:
        if not ended and not token.cancelled:  # closed by the server: the client went away
            cancel(token, "client disconnected")
        span.fail(asyncio.CancelledError("the stream ended before its answer"))  # no-op once finished
        release()
        if step is not None and not step.done():  # a piece was awaited: stop that wait first
            step.cancel()
            with suppress(BaseException):
                await step
        await pieces.aclose()
    yield sse("[DONE]")
