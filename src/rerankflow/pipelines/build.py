"""Turn validated stage specs into runnable stages."""

from __future__ import annotations

from collections.abc import Sequence

from .. import registry
from ..errors import ConfigError, PipelineTypeError
from ..registry import BuildContext
from ..stage import Transformer, chain
from .job import Pipeline, StageSpec


def build_stage(spec: StageSpec, ctx: BuildContext, path: tuple[str | int, ...] = ()) -> Transformer:
    """Build one stage (and its sub-pipelines)."""
    comp = registry.get(spec.name)
    nested = comp.nested or "inputs"
    inputs = [build_pipeline(p, ctx, (*path, spec.name, nested, i)) for i, p in enumerate(spec.inputs)]
    try:
        return comp.build(spec.config, ctx, inputs)
    except (ConfigError, PipelineTypeError) as exc:
        if isinstance(exc, ConfigError) and exc.path:
            raise
        raise ConfigError(str(exc), path=(*path, spec.name)) from None


def build_pipeline(
    specs: Sequence[StageSpec] | Pipeline, ctx: BuildContext, path: tuple[str | int, ...] = ()
) -> Transformer:
    """Build a list of stages into one ``a >> b >> ...`` pipeline."""
    return chain([build_stage(s, ctx, (*path, i)) for i, s in enumerate(specs)])
