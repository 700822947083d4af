"""Cross-encoders (sequence-classification rerankers: ms-marco MiniLM, bge-reranker...) on vLLM's
pooling runner: ``LLM.score(query, documents)``, one engine per model, loaded lazily."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from .batching import query_runs
from .models import model_identity
from .vllm_offline import shutdown_engine, start_engine

log = logging.getLogger(__name__)


class VLLMScoreModel:
    """One relevance score per (query, passage) pair from ``vllm.LLM.score`` (the model's
    classification head with the activation vLLM applies, a sigmoid for one label: the same
    scores as sentence-transformers' ``CrossEncoder``, tested on one random-weight classifier).
    Pairs of one query go in one call. ``engine_kwargs`` pass to ``vllm.LLM``."""

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.9,
        enforce_eager: bool = False,
        trust_remote_code: bool = False,
        engine_kwargs: dict[str, Any] | None = None,
        **more: Any,
    ) -> None:
        self.model = model
        self.engine_args: dict[str, Any] = {
            "dtype": dtype,
            "gpu_memory_utilization": gpu_memory_utilization,
            "enforce_eager": enforce_eager,
            "trust_remote_code": trust_remote_code,
            **(engine_kwargs or {}),
            **more,  # any other vllm.LLM option (hf_overrides, max_model_len...)
        }
        self.llm: Any = None

    def load(self) -> None:
        """Start the engine (once)."""
        if self.llm is None:
            self.llm = start_engine(self.model, self.engine_args, kv_cache_gib="1", runner="pooling")

    def close(self) -> None:
        """Shut the engine down."""
        if self.llm is not None:
            shutdown_engine(self.llm)
        self.llm = None

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One score per (query, passage) pair, in input order (higher is more relevant)."""
        if not pairs:
            return []
        self.load()
        out: list[float] = []
        for a, b in query_runs([q for q, _ in pairs]):
            results = self.llm.score(pairs[a][0], [p for _, p in pairs[a:b]], use_tqdm=False)
            out.extend(float(r.outputs.score) for r in results)
        return out

    @property
    def identity(self) -> str:
        """What the scores depend on (a stage-cache key part)."""
        return f"vllm-score:{model_identity(self.model)}"

    def __repr__(self) -> str:
        return f"VLLMScoreModel({self.model!r})"
