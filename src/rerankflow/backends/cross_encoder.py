"""Sentence-transformers ``CrossEncoder``: one relevance score per (query, passage) pair, loaded lazily."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import BackendError, MissingDependencyError
from .models import model_identity


class CrossEncoderModel:
    """Scores text pairs with a cross-encoder (a local folder or a HF id such as
    ``cross-encoder/ms-marco-MiniLM-L6-v2``; no cross-encoder ships on PyPI, so offline use
    needs a local folder). ``trust_remote_code`` stays off unless asked for.
    """

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        batch_size: int = 32,
        max_length: int | None = 512,
        trust_remote_code: bool = False,
    ) -> None:
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.trust_remote_code = trust_remote_code
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
                self.model, device=self.device, max_length=self.max_length, trust_remote_code=self.trust_remote_code
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
        scores = self._ce.predict(list(pairs), batch_size=self.batch_size, show_progress_bar=False)
        return [float(s) for s in scores]

    @property
    def identity(self) -> str:
        """What the scores depend on (a stage-cache key part)."""
        return f"cross-encoder:{model_identity(self.model)}:max_length={self.max_length}"

    def __repr__(self) -> str:
        return f"CrossEncoderModel({self.model!r})"
