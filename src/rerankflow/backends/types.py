"""The plain data of backend calls: prompts, generation settings, call records, results and
usage totals. No heavy imports; everything that talks to a model imports this module."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from ..errors import BackendError
from ..types import LLMUsage

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat turn."""

    role: Role
    content: str


Repair = Literal["ftfy", "drop_unk"]
"""Text repairs applied to a whole rendered prompt: ``ftfy`` (ftfy's ``fix_text``, as RankLLM
repairs its listwise prompts after the chat template), ``drop_unk`` (a literal ``<unk>`` removed,
as RankLLM's T5 handlers do)."""


@dataclass(frozen=True, slots=True)
class TokenCap:
    """Encode ``text[start:end]`` apart from the text around it and keep at most ``max_tokens``
    tokens in all (the middle part is cut): how Qwen3-Reranker's card builds its input."""

    start: int
    end: int
    max_tokens: int


@dataclass(frozen=True, slots=True)
class Prompt:
    """Chat messages (the backend applies the model's chat template) or raw text (sent as is).

    How the engine encodes it: ``repairs`` apply to the whole rendered text (after the chat
    template) in order; ``special_tokens`` says whether the tokenizer adds its special tokens
    (BOS) to the rendered text (``None``: yes for raw text, as a completions server does; no
    for chat, whose template holds its own); ``cap`` (raw text only) encodes a middle part apart
    and cuts it (:class:`TokenCap`).
    """

    messages: tuple[Message, ...] = ()
    text: str | None = None
    repairs: tuple[Repair, ...] = ()
    special_tokens: bool | None = None
    cap: TokenCap | None = None

    def __post_init__(self) -> None:
        if (self.text is None) == (not self.messages):
            raise BackendError("a Prompt has either messages or text, not both and not neither")
        if self.cap is not None and (self.text is None or not 0 <= self.cap.start <= self.cap.end <= len(self.text)):
            raise BackendError("a token cap needs raw text and a span inside it")

    @classmethod
    def chat(cls, user: str, system: str | None = None) -> Prompt:
        """A prompt of an optional system message and one user message."""
        msgs = ((Message("system", system),) if system else ()) + (Message("user", user),)
        return cls(messages=msgs)

    @classmethod
    def raw(cls, text: str) -> Prompt:
        """A prompt used verbatim (no chat template)."""
        return cls(text=text)

    @property
    def adds_special_tokens(self) -> bool:
        """Whether the tokenizer's special tokens are added to the rendered text."""
        return self.text is not None if self.special_tokens is None else self.special_tokens


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


@runtime_checkable
class PairScorer(Protocol):
    """One relevance score per (query, passage) pair: a cross-encoder, vLLM's pooling scorer,
    a rerank endpoint (what the ``crossencoder`` stage runs)."""

    def load(self) -> None:
        """Load the model or check the connection."""

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Scores in input order (higher is more relevant)."""
        ...

    @property
    def identity(self) -> str:
        """What the scores depend on (a stage-cache key part)."""
        ...


@dataclass
class Ledger:
    """A backend's running totals, safe to update from several threads: its finished calls
    (``total``, the usage record stages keep per query, :class:`rerankflow.types.LLMUsage`)
    and, besides them, ``cancelled`` generations (stopped or skipped because their request went
    away), ``tokens_not_generated`` (their ``max_tokens`` minus what they had generated), and
    ``decoded_tokens``, which grows at every decoding step of a running generation (one per
    sequence in the batch; backends that decode step by step count it)."""

    total: LLMUsage = field(default_factory=LLMUsage)
    cancelled: int = 0
    tokens_not_generated: int = 0
    decoded_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def calls(self) -> int:
        """Finished calls."""
        return self.total.calls

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens of the finished calls."""
        return self.total.prompt_tokens

    @property
    def output_tokens(self) -> int:
        """Output tokens of the finished calls."""
        return self.total.output_tokens

    @property
    def latency_s(self) -> float:
        """Summed latency of the finished calls."""
        return self.total.latency_s

    def as_dict(self) -> dict[str, Any]:
        """The finished calls' totals as plain data."""
        return self.total.as_dict()

    def add(self, stats: Iterable[CallStats]) -> None:
        """Count finished calls."""
        usage = LLMUsage.of(stats)
        with self._lock:
            self.total = self.total + usage

    def count_cancelled(self, calls: int, tokens_not_generated: int) -> None:
        """Count generations that stopped (or never started) because they were cancelled."""
        with self._lock:
            self.cancelled += calls
            self.tokens_not_generated += tokens_not_generated

    def count_decoded(self, tokens: int) -> None:
        """Count tokens decoded by a running generation."""
        with self._lock:
            self.decoded_tokens += tokens
