"""The LLM backend protocol: batched generation and the two scoring primitives rerankers use.

* ``generate``: text completions (+ optional top-k logprobs of generated tokens);
* ``label_logprobs``: log-probabilities of given single-token labels ("yes"/"no", "A".."T")
  as the next token after the prompt;
* ``continuation_logprobs``: per-token log-probabilities of a continuation given the prompt
  (query likelihood, surprisal);
* ``astream``: one generation as text pieces while it is produced, then the whole completion.

Every method is async; the sync names wrap the async ones (written once, in this class).
Results come back in input order, each with the :class:`CallStats` of the call it came from.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Sequence
from typing import Any, ClassVar, TypeVar

from ..cancel import CancelToken, is_cancelled
from ..errors import BackendError
from ..options import Options
from . import tokens
from .models import model_identity
from .types import (
    CallStats,
    Completion,
    ContinuationScores,
    GenerationParams,
    LabelScores,
    Ledger,
    Prompt,
    StreamChunk,
)

T = TypeVar("T")


async def cut_at_stop(pieces: AsyncIterator[str], stops: Sequence[str]) -> AsyncIterator[str]:
    """Pass text pieces through, ending before the first stop string (which may span pieces).
    Up to ``len(longest stop) - 1`` characters are held back until they cannot start a stop.
    """
    if not stops:
        async for piece in pieces:
            yield piece
        return
    hold = max(len(s) for s in stops) - 1
    pending = ""
    async for piece in pieces:
        pending += piece
        hits = [pending.index(s) for s in stops if s in pending]
        if hits:
            if min(hits):
                yield pending[: min(hits)]
            return
        if len(pending) > hold:
            cut = len(pending) - hold
            yield pending[:cut]
            pending = pending[cut:]
    if pending:
        yield pending


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, also when a loop is already running
    in this thread (notebooks): then it runs on a fresh loop in a helper thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the caller's thread below)
            box["error"] = exc

    thread = threading.Thread(target=target, name="rerankflow-run-sync")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class LLMBackend(ABC):
    """Base class of the backends. Subclasses implement the three ``_a*`` methods and
    ``load``; callers use ``generate`` / ``agenerate`` and friends.
    """

    kind: str = "backend"
    Options: ClassVar[type[Options]] = Options
    """The backend's settings (its constructor takes them as ``options`` or as keywords)."""

    def __init__(self, model: str, *, revision: str | None = None) -> None:
        self.model = model
        self.revision = revision
        self.ledger = Ledger()
        self._loaded = False
        self._load_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------
    @abstractmethod
    def load(self) -> None:
        """Load weights / open connections (called once, lazily)."""

    def ensure_loaded(self) -> None:
        """Run :meth:`load` once, thread-safely."""
        with self._load_lock:
            if not self._loaded:
                self.load()
                self._loaded = True

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release resources (engines, connections)."""

    # -- tokens (backends that hold a HF tokenizer in ``self.tokenizer``; others override) ----
    tokenizer: Any = None

    def _local_tokenizer(self, what: str) -> Any:
        """The tokenizer behind the token helpers below (loads the backend first)."""
        self.ensure_loaded()
        return self.tokenizer

    def count_tokens(self, text: str) -> int:
        """Number of tokens of ``text`` (no special tokens)."""
        return tokens.count(self._local_tokenizer("counting tokens"), text)

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` that has at most ``max_tokens`` tokens."""
        return self.truncate_many([text], max_tokens)[0]

    def truncate_many(self, texts: Sequence[str], max_tokens: int) -> list[str]:
        """:meth:`truncate` for many texts, tokenised in one call."""
        return tokens.truncate_many(self._local_tokenizer("truncating by tokens"), list(texts), max_tokens)

    def reencode_many(self, texts: Sequence[str], max_tokens: int) -> list[str]:
        """Each text encoded (special tokens included, cut to ``max_tokens``) and decoded without
        special tokens: what RankLLM's pointwise handler shows MonoT5 (characters the vocabulary
        lacks drop out, as in its prompts)."""
        tok = self._local_tokenizer("re-encoding passages")
        return [
            tok.decode(tok.encode(t, truncation=True, max_length=max_tokens), skip_special_tokens=True) for t in texts
        ]

    def count_encoded_many(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text encoded with the tokenizer's special tokens (``len(encode(t))``:
        what RankLLM's T5 handlers count when they budget a prompt)."""
        tok = self._local_tokenizer("counting encoded tokens")
        return [len(tok.encode(t)) for t in texts]

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each token of ``text``, tokenised as continuations are
        (so ``continuation_logprobs`` values line up with these spans one to one).
        """
        return tokens.offsets(self._local_tokenizer("token offsets"), text)

    # -- the three primitives (async) ----------------------------------------------------
    async def agenerate(
        self,
        prompts: Sequence[Prompt],
        params: GenerationParams | None = None,
        *,
        cancel: Sequence[CancelToken | None] | None = None,
    ) -> list[Completion]:
        """Generate one completion per prompt, in input order. ``cancel`` (one token or
        ``None`` per prompt) stops work for prompts whose request went away: a prompt already
        cancelled is not sent (its completion is empty, ``finish_reason="cancelled"``); a
        backend that decodes step by step stops it at the next step."""
        self.ensure_loaded()
        prompts, params = list(prompts), params or GenerationParams()
        flags = list(cancel) if cancel is not None else [None] * len(prompts)
        if len(flags) != len(prompts):
            raise BackendError(f"{len(flags)} cancel tokens for {len(prompts)} prompts; give one per prompt")
        live = [i for i, t in enumerate(flags) if not is_cancelled(t)]
        done = await self._agenerate_until([prompts[i] for i in live], params, [flags[i] for i in live]) if live else []
        out = [Completion("", self.stats(0, 0, 0.0), "cancelled") for _ in prompts]
        for i, completion in zip(live, done, strict=True):
            out[i] = completion
        self.ledger.add([c.stats for c in done])
        stopped = [c for c in out if c.finish_reason == "cancelled"]
        if stopped:
            self.ledger.count_cancelled(
                len(stopped), sum(max(params.max_tokens - c.stats.output_tokens, 0) for c in stopped)
            )
        return out

    async def alabel_logprobs(
        self, prompts: Sequence[Prompt], labels: Sequence[str], *, after: int = 0, context: str | None = None
    ) -> list[LabelScores]:
        """Next-token log-probabilities of ``labels`` after each prompt, in input order.

        ``after`` > 0 reads them at that position of the answer instead: after ``after`` tokens
        generated greedily (end of sequence excluded), as RankLLM reads FIRST models' identifier
        at the answer's second token, the one after the model's ``[``. ``context`` is the text
        the labels follow there (``[``): each label is then the token that continues it.
        """
        if len(set(labels)) != len(labels) or not labels:
            raise BackendError(f"labels must be distinct and non-empty, got {list(labels)}")
        if after < 0:
            raise BackendError(f"after must be >= 0, got {after}")
        self.ensure_loaded()
        out = await self._alabel_logprobs(list(prompts), list(labels), after, context)
        self.ledger.add([s.stats for s in out])
        return out

    async def acontinuation_logprobs(
        self, prompts: Sequence[Prompt], continuations: Sequence[str]
    ) -> list[ContinuationScores]:
        """Per-token log-probabilities of each continuation after its prompt, in input order."""
        if len(prompts) != len(continuations):
            raise BackendError(f"{len(prompts)} prompts but {len(continuations)} continuations; give one each")
        self.ensure_loaded()
        out = await self._acontinuation_logprobs(list(prompts), list(continuations))
        self.ledger.add([s.stats for s in out])
        return out

    async def astream(
        self, prompt: Prompt, params: GenerationParams | None = None, *, cancel: CancelToken | None = None
    ) -> AsyncGenerator[StreamChunk, None]:
        """Generate one completion, yielding text pieces as they are produced; the final chunk
        carries the :class:`Completion`. Backends without incremental output (the vLLM offline
        engine) yield the whole text as one piece. Closing the stream early (the reader went
        away) cancels the generation, as ``cancel`` does.
        """
        self.ensure_loaded()
        params, token = params or GenerationParams(), cancel or CancelToken()
        inner = self._astream(prompt, params, token)
        finished = False
        try:
            async for chunk in inner:
                if chunk.completion is not None:
                    self.ledger.add([chunk.completion.stats])
                    finished = True
                yield chunk
        finally:
            if not finished:
                token.cancel("the stream was closed before its end")
            await inner.aclose()  # lets the backend stop its generation and account for it

    async def _astream(
        self, prompt: Prompt, params: GenerationParams, cancel: CancelToken
    ) -> AsyncGenerator[StreamChunk, None]:
        """Default: generate, then yield the text once and the completion."""
        completion = (await self._agenerate_until([prompt], params, [cancel]))[0]
        yield StreamChunk(completion.text)
        yield StreamChunk("", completion)

    def _account_stopped(self, task: Any, params: GenerationParams) -> None:
        """Count a stream's generation that stopped because its reader left."""
        if task.cancelled() or task.exception() is not None:
            return
        stopped = task.result()[0]
        self.ledger.add([stopped.stats])
        self.ledger.count_cancelled(1, max(params.max_tokens - stopped.stats.output_tokens, 0))

    async def _agenerate_until(
        self, prompts: list[Prompt], params: GenerationParams, cancel: list[CancelToken | None]
    ) -> list[Completion]:
        """Generation that may stop a prompt once its token is cancelled (``finish_reason``
        ``cancelled``). Default: prompts run to their end (only unstarted ones are skipped)."""
        return await self._agenerate(prompts, params)

    @abstractmethod
    async def _agenerate(self, prompts: list[Prompt], params: GenerationParams) -> list[Completion]: ...

    @abstractmethod
    async def _alabel_logprobs(
        self, prompts: list[Prompt], labels: list[str], after: int, context: str | None
    ) -> list[LabelScores]: ...

    @abstractmethod
    async def _acontinuation_logprobs(
        self, prompts: list[Prompt], continuations: list[str]
    ) -> list[ContinuationScores]: ...

    # -- sync wrappers -----------------------------------------------------------------------
    def generate(
        self,
        prompts: Sequence[Prompt],
        params: GenerationParams | None = None,
        *,
        cancel: Sequence[CancelToken | None] | None = None,
    ) -> list[Completion]:
        """Sync :meth:`agenerate`."""
        return run_sync(self.agenerate(prompts, params, cancel=cancel))

    def label_logprobs(
        self, prompts: Sequence[Prompt], labels: Sequence[str], *, after: int = 0, context: str | None = None
    ) -> list[LabelScores]:
        """Sync :meth:`alabel_logprobs`."""
        return run_sync(self.alabel_logprobs(prompts, labels, after=after, context=context))

    def continuation_logprobs(
        self, prompts: Sequence[Prompt], continuations: Sequence[str]
    ) -> list[ContinuationScores]:
        """Sync :meth:`acontinuation_logprobs`."""
        return run_sync(self.acontinuation_logprobs(prompts, continuations))

    def stats(self, prompt_tokens: int, output_tokens: int, latency_s: float) -> CallStats:
        """A :class:`CallStats` naming this backend and model."""
        return CallStats(self.kind, self.model, prompt_tokens, output_tokens, latency_s, self.revision)

    @property
    def identity(self) -> str:
        """What this backend's outputs depend on besides the prompt (a stage-cache key part):
        the backend class and the model's identity (see ``models.model_identity``).
        """
        return f"{type(self).__name__}:{model_identity(self.model, self.revision)}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"
