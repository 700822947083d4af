"""Sentence-transformers text encoder, loaded lazily, normalised float32 embeddings."""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from pydantic import Field

from ..errors import BackendError, MissingDependencyError
from ..options import Options
from ..progress import is_quiet
from .models import model_identity, resolve_embedder

log = logging.getLogger(__name__)


class TextEncoder(Protocol):
    """What dense stages need from an encoder (:class:`SentenceTransformerEncoder` is one)."""

    @property
    def identity(self) -> str:
        """A string that changes whenever the embeddings would."""
        ...

    def encode(self, texts: Sequence[str], *, desc: str = ...) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text."""
        ...


class EncoderOptions(Options):
    """How a sentence-transformers encoder runs (a dense retriever's, a bi-encoder's, the indexer's)."""

    device: str | None = Field(None, description="cpu, cuda, cuda:1, ... (default: best available)")
    batch_size: int = Field(64, ge=1, description="texts per forward pass")
    max_length: int | None = Field(None, ge=8, description="truncate inputs to this many tokens")
    memo_size: int = Field(50_000, ge=0, description="distinct texts remembered (a job encodes each once); 0: off")
    dtype: str | None = Field(None, description="float16, bfloat16 or float32 (default: sentence-transformers')")


class SentenceTransformerEncoder:
    """Encodes texts with a sentence-transformers model.

    ``model`` is a packaged short name (``all-minilm-l6-v2``), a local folder or a HF id.
    Embeddings are L2-normalised so inner product equals cosine similarity. The last
    ``memo_size`` distinct texts are remembered, so stages that share this encoder (a
    reranker and a hybrid built on it, say) encode each passage once per job; 0 turns it off.
    ``dtype`` ("float16", "bfloat16", "float32") sets the weights' precision; None keeps
    sentence-transformers' default (float32).
    """

    Options = EncoderOptions
    options: EncoderOptions

    def __init__(
        self, model: str = "all-minilm-l6-v2", *, options: EncoderOptions | None = None, **settings: Any
    ) -> None:
        self.model = model
        self.options = EncoderOptions.build(options, settings, f"encoder {model!r}", BackendError)
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._st: Any = None
        self._lock = threading.RLock()  # pipelines served side by side share one encoder

    @property
    def identity(self) -> str:
        """What the embeddings depend on (cache key part)."""
        key = f"st:{model_identity(self.model)}:max_length={self.options.max_length}"
        return key if self.options.dtype is None else f"{key}:dtype={self.options.dtype}"

    def load(self) -> None:
        """Load the model (once, thread-safely)."""
        with self._lock:
            self._load()

    def _load(self) -> None:
        if self._st is not None:
            return
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingDependencyError("sentence-transformers", "hf") from exc
        if is_quiet():
            _silence_hf_progress()
        path = resolve_embedder(self.model)
        if os.path.isdir(path):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            options = {"dtype": self.options.dtype} if self.options.dtype else None
            self._st = SentenceTransformer(path, device=self.options.device, model_kwargs=options)
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load embedding model {self.model!r}: {exc}") from exc
        if self.options.max_length is not None:
            self._st.max_seq_length = self.options.max_length
        # One tiny call pays torch's one-time start-up costs here rather than in the first batch.
        self._st.encode(["warm up"], show_progress_bar=False)
        log.info("loaded encoder %s on %s", self.model, self._st.device)

    def encode(self, texts: Sequence[str], *, desc: str = "encoding") -> np.ndarray:
        """Embeddings of ``texts`` as a ``(len(texts), dim)`` float32 array (one call at a time)."""
        with self._lock:
            return self._encode_memo(texts)

    def _encode_memo(self, texts: Sequence[str]) -> np.ndarray:
        self._load()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        todo = list(dict.fromkeys(t for t in texts if t not in self._memo))
        fresh = self._encode(todo) if todo else np.zeros((0, self.dimension), dtype=np.float32)
        known = dict(zip(todo, fresh, strict=True))
        out = np.stack([known[t] if t in known else self._memo[t] for t in texts])
        if self.options.memo_size > 0:
            for t in texts:
                self._memo[t] = known[t] if t in known else self._memo[t]
                self._memo.move_to_end(t)
            while len(self._memo) > self.options.memo_size:
                self._memo.popitem(last=False)
        return out

    def _encode(self, texts: list[str]) -> np.ndarray:
        show = not is_quiet() and len(texts) > self.options.batch_size
        emb = self._st.encode(
            texts,
            batch_size=self.options.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show,
        )
        return np.asarray(emb, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` for this model's tokenizer (special tokens not counted); what the
        indexer's chunker measures chunks with."""
        with self._lock:
            self._load()
            return len(self._st.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def count_tokens_many(self, texts: list[str]) -> list[int]:
        """:meth:`count_tokens` of each text, counted in batches of 10,000 by the fast
        tokenizer's Rust core (about 4x the per-text speed of the Python wrapper on short
        texts), with truncation and padding off for the call and restored after it."""
        with self._lock:
            self._load()
            tok = self._st.tokenizer
            core = getattr(tok, "backend_tokenizer", None) if getattr(tok, "is_fast", False) else None
            if core is None:
                ids = tok(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
                return [len(x) for x in ids]
            truncation, padding = core.truncation, core.padding
            core.no_truncation()
            core.no_padding()
            try:
                out: list[int] = []
                for start in range(0, len(texts), 10_000):
                    out.extend(
                        len(e.ids) for e in core.encode_batch(texts[start : start + 10_000], add_special_tokens=False)
                    )
                return out
            finally:
                if truncation is not None:
                    core.enable_truncation(**truncation)
                if padding is not None:
                    core.enable_padding(**padding)

    @property
    def max_tokens(self) -> int:
        """The longest input the model reads (longer inputs are truncated)."""
        self.load()
        return int(self._st.max_seq_length)

    @property
    def dimension(self) -> int:
        """Embedding size."""
        self.load()
        get_dim = getattr(self._st, "get_embedding_dimension", None) or self._st.get_sentence_embedding_dimension
        return int(get_dim())

    def __repr__(self) -> str:
        return f"SentenceTransformerEncoder({self.model!r})"


def _silence_hf_progress() -> None:
    """Turn off transformers' and huggingface_hub's own progress bars (``--quiet``)."""
    try:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    disable_progress_bars()
    hf_logging.disable_progress_bar()
