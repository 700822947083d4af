"""``rerankflow.Reranker`` and ``rerankflow.rerank``: a published reranker loaded once, or in one call."""

from __future__ import annotations

import json
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from .. import registry
from ..backends.base import LLMBackend
from ..backends.factory import BackendConfig, create_backend
from ..errors import ConfigError, RepairWarning
from ..stage import Transformer
from ..types import Document, Query, Ranking
from ..yamlio import validation_to_config_error
from . import components  # noqa: F401  (registers the built-in stages)
from .context import BuildContext
from .presets import Preset, preset_names, resolve


class Reranker:
    """A published reranker with its published configuration, loaded once and used for many
    queries: ``Reranker(model, preset=...).rank(query, documents)``.

    The preset is the one named, else the one that lists ``model`` (``rerankflow presets
    list``); nothing is guessed from a model's name. ``backend`` is a backend object, a kind
    (``"vllm"``, ``"hf"``, ``"http"``, ``"hf_seq2seq"``) or a backend config mapping (default: the
    kind the preset names, else ``"vllm"``); ``settings`` override the preset's stage settings.
    The model loads on the first :meth:`rank`.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        preset: str | None = None,
        backend: LLMBackend | str | Mapping[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        chosen = resolve(None, preset, model)
        if chosen is None:
            raise ConfigError(
                f"no preset names the model {model!r}; pass preset= one of {', '.join(preset_names())} "
                "(listwise_instruct or pointwise_yes_no for any instruction-tuned chat model)"
            )
        self.preset = chosen
        self.stage = _stage(chosen, model, backend, settings)

    def rank(self, query: str, documents: Sequence[str | Document], top_k: int | None = None) -> Ranking:
        """``documents`` ranked for ``query`` (best first; ``top_k`` keeps the first ``k``);
        strings become documents ``d0``, ``d1``... in the order given. When the model's answer
        had to be repaired (an identifier missing or repeated, an unreadable answer), a
        :class:`~rerankflow.errors.RepairWarning` says so: part of the order is then the input's."""
        docs = [d if isinstance(d, Document) else Document(f"d{i}", d) for i, d in enumerate(documents)]
        (out,) = self.stage([Ranking.from_documents(Query("q0", query), docs)])
        repaired = {k: v for record in out.trace for k, v in (record.repairs or {}).items() if v}
        if repaired:
            warnings.warn(
                f"the model's answer was repaired ({', '.join(f'{k}: {v}' for k, v in sorted(repaired.items()))}); "
                "the candidates it did not rank keep their input order",
                RepairWarning,
                stacklevel=2,
            )
        return out if top_k is None else out.top(top_k)

    def __repr__(self) -> str:
        return f"Reranker({self.stage!r}, preset={self.preset.name!r})"


def _stage(chosen: Preset, model: str | None, backend: Any, settings: Mapping[str, Any]) -> Transformer:
    """The preset's stage: a cross-encoder built as its YAML stage (the registry wires the
    scorer), an LLM reranker on the given or configured backend."""
    if chosen.stage == "crossencoder":
        if model is None:
            raise ConfigError("a cross-encoder preset needs model= (a local folder or HF id)")
        comp = registry.get("crossencoder")
        try:
            cfg = comp.config.model_validate({"model": model, "preset": chosen.name, **settings})
        except ValidationError as exc:
            raise validation_to_config_error(exc, comp.config) from None
        return comp.build(cfg, BuildContext(), [])
    if isinstance(backend, LLMBackend):
        llm = backend
    else:
        backend = backend or chosen.backend_kind or "vllm"
        spec = {"kind": backend} if isinstance(backend, str) else dict(backend)
        if model is None and "model" not in spec:
            raise ConfigError("a reranker needs model= (or a backend object or config that names one)")
        llm = create_backend(BackendConfig.model_validate({"model": model, **spec}))
    stage_class = registry.get(chosen.stage).stage
    if stage_class is None:
        raise ConfigError(f"preset {chosen.name!r} names stage {chosen.stage!r}, which has no class to build")
    stage: Transformer = stage_class(llm, chosen.template, **{**chosen.settings, **settings})
    return stage


_LOADED: OrderedDict[str, Reranker] = OrderedDict()
_KEEP = 4
"""Rerankers :func:`rerank` keeps loaded (the last used), so repeated calls load the model once."""


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
    """``documents`` reranked for ``query`` by ``model`` with its published configuration, in
    one call (arguments as :class:`Reranker`; ``top_k`` as :meth:`Reranker.rank`). The last
    four rerankers stay loaded: a second call with the same model and settings reuses it."""
    key = json.dumps(
        [model, preset, id(backend) if isinstance(backend, LLMBackend) else backend, settings],
        sort_keys=True,
        default=repr,
    )
    reranker = _LOADED.pop(key, None) or Reranker(model, preset=preset, backend=backend, **settings)
    _LOADED[key] = reranker
    while len(_LOADED) > _KEEP:
        _LOADED.popitem(last=False)
    return reranker.rank(query, documents, top_k)
