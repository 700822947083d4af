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
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from ..errors import BackendError

T = TypeVar("T")
Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat turn."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Prompt:
    """Chat messages (the backend applies the model's chat template) or raw text (sent as is)."""

    messages: tuple[Message, ...] = ()
    text: str | None = None

    def __post_init__(self) -> None:
        if (self.text is None) == (not self.messages):
            raise BackendError("a Prompt has either messages or text, not both and not neither")

    @classmethod
    def chat(cls, user: str, system: str | None = None) -> Prompt:
        """A prompt of an optional system message and one user message."""
        msgs = ((Message("system", system),) if system else ()) + (Message("user", user),)
        return cls(messages=msgs)

    @classmethod
    def raw(cls, text: str) -> Prompt:
        """A prompt used verbatim (no chat template)."""
        return cls(text=text)


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Sampling settings; the defaults are greedy and deterministic."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    logprobs: int | None = None
    seed: int | None = 0


@dataclass(frozen=True, slots=True)
class CallStats:
    """Provenance of one backend call (one prompt)."""

    backend: str
    model: str
    prompt_tokens: int
    output_tokens: int
    latency_s: float
    revision: str | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """A generated text."""

    text: str
    stats: CallStats
    finish_reason: str | None = None
    top_logprobs: tuple[dict[str, float], ...] | None = None


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """A piece of streamed output; the last chunk of a stream carries the whole ``completion``
    (its text is the concatenation of the pieces) and has empty ``text``.
    """

    text: str
    completion: Completion | None = None


LOGPROB_FLOOR = -1e4
"""What a non-finite label log-probability is replaced by (vLLM reports -9999 for "none")."""


def _finite_logprob(value: float) -> float:
    """``value`` if finite; ``+inf`` becomes 0, ``-inf`` and NaN become ``LOGPROB_FLOOR``."""
    if math.isfinite(value):
        return value
    return 0.0 if value == math.inf else LOGPROB_FLOOR


@dataclass(frozen=True, slots=True)
class LabelScores:
    """Next-token log-probabilities of each label (full-vocabulary normalisation).

    ``missing`` names labels the backend could not score exactly (an HTTP server that only
    returns its top-k); they hold the smallest returned log-probability, an upper bound.
    Values that are not finite (a probability that underflowed to ``-inf``, a server's NaN)
    become ``LOGPROB_FLOOR`` (``+inf`` becomes 0), so scores derived from them stay ordered.
    """

    logprobs: dict[str, float]
    stats: CallStats
    missing: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) for v in self.logprobs.values()):
            object.__setattr__(self, "logprobs", {k: _finite_logprob(v) for k, v in self.logprobs.items()})

    def normalized(self) -> dict[str, float]:
        """Log-probabilities renormalised over the labels only (a log-softmax)."""
        top = max(self.logprobs.values())
        z = top + math.log(sum(math.exp(v - top) for v in self.logprobs.values()))
        return {k: v - z for k, v in self.logprobs.items()}


@dataclass(frozen=True, slots=True)
class ContinuationScores:
    """Log-probability of each continuation token given the prompt and earlier tokens."""

    token_logprobs: tuple[float, ...]
    stats: CallStats

    @property
    def total(self) -> float:
        """Sum of token log-probabilities."""
        return float(sum(self.token_logprobs))

    @property
    def mean(self) -> float:
        """Mean token log-probability (0 tokens: 0.0)."""
        return self.total / len(self.token_logprobs) if self.token_logprobs else 0.0


@dataclass
class Usage:
    """Totals of some backend calls: count, tokens, latency."""

    calls: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0

    def add(self, stats: Iterable[CallStats]) -> None:
        """Count finished calls."""
        for s in stats:
            self.calls += 1
            self.prompt_tokens += s.prompt_tokens
            self.output_tokens += s.output_tokens
            self.latency_s += s.latency_s

    def merge(self, other: Usage) -> None:
        """Add another total to this one."""
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.output_tokens += other.output_tokens
        self.latency_s += other.latency_s

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "latency_s": self.latency_s,
        }


@dataclass
class Ledger(Usage):
    """A backend's running totals, safe to update from several threads."""

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, stats: Iterable[CallStats]) -> None:
        """Count finished calls."""
        with self._lock:
            super().add(stats)


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
        from . import tokens

        return tokens.count(self._local_tokenizer("counting tokens"), text)

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` that has at most ``max_tokens`` tokens."""
        return self.truncate_many([text], max_tokens)[0]

    def truncate_many(self, texts: Sequence[str], max_tokens: int) -> list[str]:
        """:meth:`truncate` for many texts, tokenised in one call."""
        from . import tokens

        return tokens.truncate_many(self._local_tokenizer("truncating by tokens"), list(texts), max_tokens)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each token of ``text``, tokenised as continuations are
        (so ``continuation_logprobs`` values line up with these spans one to one).
        """
        from . import tokens

        return tokens.offsets(self._local_tokenizer("token offsets"), text)

    # -- the three primitives (async) ----------------------------------------------------
    async def agenerate(self, prompts: Sequence[Prompt], params: GenerationParams | None = None) -> list[Completion]:
        """Generate one completion per prompt, in input order."""
        self.ensure_loaded()
        out = await self._agenerate(list(prompts), params or GenerationParams())
        self.ledger.add([c.stats for c in out])
        return out

    async def alabel_logprobs(self, prompts: Sequence[Prompt], labels: Sequence[str]) -> list[LabelScores]:
        """Next-token log-probabilities of ``labels`` after each prompt, in input order."""
        if len(set(labels)) != len(labels) or not labels:
            raise BackendError(f"labels must be distinct and non-empty, got {list(labels)}")
        self.ensure_loaded()
        out = await self._alabel_logprobs(list(prompts), list(labels))
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

    async def astream(self, prompt: Prompt, params: GenerationParams | None = None) -> AsyncIterator[StreamChunk]:
        """Generate one completion, yielding text pieces as they are produced; the final chunk
        carries the :class:`Completion`. Backends without incremental output (the vLLM offline
        engine) yield the whole text as one piece.
        """
        self.ensure_loaded()
        async for chunk in self._astream(prompt, params or GenerationParams()):
            if chunk.completion is not None:
                self.ledger.add([chunk.completion.stats])
            yield chunk

    async def _astream(self, prompt: Prompt, params: GenerationParams) -> AsyncIterator[StreamChunk]:
        """Default: generate, then yield the text once and the completion."""
        completion = (await self._agenerate([prompt], params))[0]
        yield StreamChunk(completion.text)
        yield StreamChunk("", completion)

    @abstractmethod
    async def _agenerate(self, prompts: list[Prompt], params: GenerationParams) -> list[Completion]: ...

    @abstractmethod
    async def _alabel_logprobs(self, prompts: list[Prompt], labels: list[str]) -> list[LabelScores]: ...

    @abstractmethod
    async def _acontinuation_logprobs(
        self, prompts: list[Prompt], continuations: list[str]
    ) -> list[ContinuationScores]: ...

    # -- sync wrappers -----------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], params: GenerationParams | None = None) -> list[Completion]:
        """Sync :meth:`agenerate`."""
        return run_sync(self.agenerate(prompts, params))

    def label_logprobs(self, prompts: Sequence[Prompt], labels: Sequence[str]) -> list[LabelScores]:
        """Sync :meth:`alabel_logprobs`."""
        return run_sync(self.alabel_logprobs(prompts, labels))

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
        from .models import model_identity

        return f"{type(self).__name__}:{model_identity(self.model, self.revision)}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"
