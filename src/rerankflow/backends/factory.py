"""Backends from configuration, shared per (kind, model, options) within a job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError
from ..paths import JobPath, PathOptions, is_explicit_path, located_options, resolve_path
from ..resources import ResourcePool
from ..yamlio import validation_to_config_error
from .base import LLMBackend

BackendKind = Literal["vllm", "http", "hf", "hf_seq2seq"]


class BackendConfig(BaseModel):
    """Which engine serves a model: ``vllm`` (offline engine), ``http`` (any OpenAI-compatible
    server) or ``hf`` (transformers). ``options`` go to the backend's constructor.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: BackendKind = "vllm"
    model: JobPath = Field(..., description="packaged name (smollm2-135m-instruct), HF id or local folder")
    revision: str | None = None
    options: Annotated[dict[str, Any], PathOptions()] = Field(
        default_factory=dict,
        description="the backend's constructor options; a tokenizer or folder written as ./x or ../x is relative "
        "to the job's folder",
    )

    def at(self, base_dir: Path) -> BackendConfig:
        """This configuration with its local paths made relative to ``base_dir`` (a job's
        folder): a model folder that exists there, and options written as paths."""
        model = self.model
        if is_explicit_path(model) or (base_dir / model).exists():
            model = str(resolve_path(model, base_dir))
        return self.model_copy(update={"model": model, "options": located_options(self.options, base_dir)})


def backend_class(kind: str) -> type[LLMBackend]:
    """The class behind a backend kind (imported lazily: heavy libraries load on use)."""
    if kind == "vllm":
        from .vllm_offline import VLLMOfflineBackend

        return VLLMOfflineBackend
    if kind == "http":
        from .http import OpenAIHTTPBackend

        return OpenAIHTTPBackend
    if kind == "hf":
        from .hf import HFBackend

        return HFBackend
    if kind == "hf_seq2seq":
        from .hf_seq2seq import HFSeq2SeqBackend

        return HFSeq2SeqBackend
    raise ConfigError(f"unknown backend kind {kind!r}; valid: vllm, http, hf, hf_seq2seq")


def create_backend(cfg: BackendConfig) -> LLMBackend:
    """A new backend; its ``options`` are validated by the backend's own ``Options`` model
    (an unknown option is an error that lists the valid ones)."""
    cls = backend_class(cfg.kind)
    try:
        options = cls.Options.model_validate(cfg.options)
    except ValidationError as exc:
        err = validation_to_config_error(exc, cls.Options, ("backend", "options"))
        raise ConfigError(f"{cfg.kind} backend: {err.message}", path=err.path) from None
    return cls(cfg.model, revision=cfg.revision, options=options)  # type: ignore[call-arg]  # the four kinds take options


def backend_key(cfg: BackendConfig) -> tuple[str, ...]:
    """The resource-pool key under which a configuration's backend is shared."""
    return ("llm", cfg.kind, cfg.model, str(cfg.revision), json.dumps(cfg.options, sort_keys=True, default=str))


def shared_backend(cfg: BackendConfig, resources: ResourcePool) -> LLMBackend:
    """One backend (one engine) per identical configuration within a job."""
    backend: LLMBackend = resources.get(backend_key(cfg), lambda: create_backend(cfg))
    return backend
