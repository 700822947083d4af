"""Sentence-transformers ``CrossEncoder``: one relevance score per (query, passage) pair, loaded lazily."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from ..errors import BackendError, MissingDependencyError
from ..options import Options
from .models import model_identity


class CrossEncoderModelOptions(Options):
    """How sentence-transformers' ``CrossEncoder`` runs a model."""

    device: str | None = Field(None, description="cpu, cuda, ... (default: best available)")
    batch_size: int = Field(32, ge=1, description="pairs per forward pass")
    max_length: int | None = Field(512, ge=8, description="truncate query + passage to this many tokens")
    trust_remote_code: bool = Field(False, description="run code shipped with the model (off unless you trust it)")


class CrossEncoderModel:
    """Scores text pairs with a cross-encoder (a local folder or a HF id such as
    ``cross-encoder/ms-marco-MiniLM-L6-v2``; no cross-encoder ships on PyPI, so offline use
    needs a local folder). ``trust_remote_code`` stays off unless asked for.
    """

    Options = CrossEncoderModelOptions
    options: CrossEncoderModelOptions

    def __init__(self, model: str, *, options: CrossEncoderModelOptions | None = None, **settings: Any) -> None:
        self.model = model
        self.options = CrossEncoderModelOptions.build(options, settings, f"cross-encoder {model!r}", BackendError)
        self._ce: Any = None

    def load(self) -> None:
        """Load the model (once)."""
        if self._ce is not None:
            return
        try:
            from sentence_transformers import CrossEncoder
        except ImportError as exc:
            raise MissingDependencyError("sentence-transformers", "hf") from exc
        try:
            self._ce = CrossEncoder(
                self.model,
                device=self.options.device,
                max_length=self.options.max_length,
                trust_remote_code=self.options.trust_remote_code,
            )
        except (OSError, ValueError) as exc:
            raise BackendError(
                f"could not load cross-encoder {self.model!r}: {exc} (give a local folder when offline)"
            ) from exc

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One score per (query, passage) pair, in input order (higher is more relevant)."""
        if not pairs:
            return []
        self.load()
        scores = self._ce.predict(list(pairs), batch_size=self.options.batch_size, show_progress_bar=False)
        return [float(s) for s in scores]

    @property
    def identity(self) -> str:
        """What the scores depend on (a stage-cache key part)."""
        return f"cross-encoder:{model_identity(self.model)}:max_length={self.options.max_length}"

    def __repr__(self) -> str:
        return f"CrossEncoderModel({self.model!r})"
