"""Turn validated stage specs into runnable stages."""

from __future__ import annotations

from collections.abc import Sequence

from .. import registry
from ..errors import ConfigError, PipelineTypeError
from ..ops import chain
from ..stage import Transformer
from .cache import CachedStage
from .context import BuildContext
from .job import Pipeline, StageSpec

CACHED_KINDS = ("reranker", "compressor", "generator")
"""Stages whose per-query outputs go to the stage cache (retrievers and fusion are cheap
to rerun, and dense retrieval caches its corpus embeddings itself)."""


def build_stage(spec: StageSpec, ctx: BuildContext, path: tuple[str | int, ...] = ()) -> Transformer:
    """Build one stage (and its sub-pipelines), wrapped in the stage cache if ``ctx`` has one."""
    comp = registry.get(spec.name)
    nested = comp.nested or "inputs"
    inputs = [build_pipeline(p, ctx, (*path, spec.name, nested, i)) for i, p in enumerate(spec.inputs)]
    try:
        stage = comp.build(spec.config, ctx, inputs)
    except (ConfigError, PipelineTypeError) as exc:
        if isinstance(exc, ConfigError) and exc.path:
            raise
        raise ConfigError(str(exc), path=(*path, spec.name)) from None
    if ctx.cache is not None and comp.kind in CACHED_KINDS and comp.nested is None:  # a cascade's steps cache alone
        identity = {"stage": spec.name, "config": spec.config.model_dump(mode="json")}
        return CachedStage(stage, ctx.cache, identity)
    return stage


def build_pipeline(
    specs: Sequence[StageSpec] | Pipeline, ctx: BuildContext, path: tuple[str | int, ...] = ()
) -> Transformer:
    """Build a list of stages into one ``a >> b >> ...`` pipeline."""
    return chain([build_stage(s, ctx, (*path, i)) for i, s in enumerate(specs)])
