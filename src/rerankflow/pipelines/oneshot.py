"""``rerankflow.rerank``: rerank a handful of documents for one query in one call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from .. import registry
from ..backends.base import LLMBackend
from ..backends.factory import BackendConfig, create_backend
from ..errors import ConfigError
from ..types import Document, Query, Ranking
from ..yamlio import validation_to_config_error
from . import components  # noqa: F401  (registers the built-in stages)
from .context import BuildContext
from .presets import preset_names, resolve


def rerank(
    query: str,
    documents: Sequence[str | Document],
    model: str | None = None,
    *,
    preset: str | None = None,
    backend: LLMBackend | str | Mapping[str, Any] | None = None,
    top_k: int | None = None,
    **settings: Any,
) -> Ranking:
    """``documents`` reranked for ``query`` by ``model`` with its published configuration.

    The preset is the one named, else the one that lists ``model`` (``rerankflow presets
    list``); nothing is guessed from a model's name. ``backend`` is a backend object, a kind
    (``"vllm"``, ``"hf"``, ``"http"``, ``"hf_seq2seq"``) or a backend config mapping (default: the
    kind the preset names, else ``"vllm"``); ``settings`` override the
    preset's stage settings. Returns a :class:`Ranking` (best first; ``top_k`` keeps the first
    ``k``); strings become documents ``d0``, ``d1``... in the order given.
    """
    chosen = resolve(None, preset, model)
    if chosen is None:
        raise ConfigError(
            f"no preset names the model {model!r}; pass preset= one of {', '.join(preset_names())} "
            "(listwise_instruct or pointwise_yes_no for any instruction-tuned chat model)"
        )
    docs = [d if isinstance(d, Document) else Document(f"d{i}", d) for i, d in enumerate(documents)]
    first = Ranking.from_documents(Query("q0", query), docs)
    if chosen.stage == "crossencoder":  # built as a YAML stage: the registry wires its scorer
        if model is None:
            raise ConfigError("rerank() with a cross-encoder preset needs model= (a local folder or HF id)")
        comp = registry.get("crossencoder")
        try:
            cfg = comp.config.model_validate({"model": model, "preset": chosen.name, **settings})
        except ValidationError as exc:
            raise validation_to_config_error(exc, comp.config) from None
        (out,) = comp.build(cfg, BuildContext(), [])([first])
        return out if top_k is None else out.with_candidates(out.candidates[:top_k])
    if isinstance(backend, LLMBackend):
        llm = backend
    else:
        backend = backend or chosen.backend_kind or "vllm"
        spec = {"kind": backend} if isinstance(backend, str) else dict(backend)
        if model is None and "model" not in spec:
            raise ConfigError("rerank() needs model= (or a backend object or config that names one)")
        llm = create_backend(BackendConfig.model_validate({"model": model, **spec}))
    stage_class = registry.get(chosen.stage).stage
    assert stage_class is not None  # LLM rerankers register their stage class
    stage = stage_class(llm, chosen.template, **{**chosen.settings, **settings})
    (out,) = stage([first])
    return out if top_k is None else out.with_candidates(out.candidates[:top_k])
