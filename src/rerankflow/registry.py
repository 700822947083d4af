"""The closed registry that maps YAML stage names to components.

A component is registered with the stage class it builds and the keys that name the objects
the YAML layer hands it (a backend, a template, an encoder); its config model is derived from
the two: the stage's own ``Options`` plus those keys (unknown keys are errors). A build
function turns a validated config into a stage. Names are global and registering a name
twice raises. Third-party packages add components through the ``rerankflow.stages``
entry-point group: each entry point names a module whose import registers its components.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Literal

from .errors import ConfigError
from .options import StageOptions
from .suggest import did_you_mean

if TYPE_CHECKING:
    from .stage import Transformer

log = logging.getLogger(__name__)

Kind = Literal["retriever", "reranker", "fusion", "transform", "compressor", "generator"]


"""Base of every stage's config (and options): frozen, and unknown keys are errors."""


BuildFn = Callable[..., "Transformer"]


@dataclass(frozen=True)
class Component:
    """A registered stage type."""

    name: str
    kind: Kind
    config: type[StageOptions]
    build: BuildFn
    nested: str | None = None
    """Name of the config key that holds sub-pipelines (fusion inputs), if any."""
    stage: type | None = None
    """The class the build function makes (built-in stages; its ``Options`` are part of ``config``)."""
    keys: type[StageOptions] | None = None
    """The config keys that are not the stage's options (they name its backend, template...)."""

    @property
    def location(self) -> str:
        """Where the stage's code lives: ``module.Class`` of the stage (or of its config)."""
        where = self.stage or self.config
        return f"{where.__module__}.{where.__qualname__}"

    @property
    def doc(self) -> str:
        """First line of the config model's docstring."""
        return (self.config.__doc__ or "").strip().splitlines()[0] if self.config.__doc__ else ""


_REGISTRY: dict[str, Component] = {}
_plugins_loaded = False


def yaml_config(cls: type, keys: type[StageOptions] | None = None) -> type[StageOptions]:
    """The YAML config of stage class ``cls``: its ``Options`` plus ``keys`` (which must not repeat an option)."""
    options: type[StageOptions] = getattr(cls, "Options", StageOptions)
    if keys is None:
        return options
    if options is StageOptions:  # a stage without settings of its own
        return keys
    twice = sorted(set(options.model_fields) & set(keys.model_fields))
    if twice:
        raise ConfigError(f"{keys.__name__} repeats options of {cls.__name__}: {', '.join(twice)}")
    namespace = {"__doc__": options.__doc__, "__module__": keys.__module__}
    return type(f"{cls.__name__}Config", (keys, options), namespace)  # options first in listings


def register(
    name: str,
    *,
    kind: Kind,
    stage: type | None = None,
    keys: type[StageOptions] | None = None,
    config: type[StageOptions] | None = None,
    nested: str | None = None,
) -> Callable[[BuildFn], BuildFn]:
    """Register ``build(config, ctx, inputs)`` under ``name`` (a decorator). Built-in stages
    pass their class (``stage``) and the extra ``keys``; plugins may pass a ``config`` model."""
    if stage is not None and config is None:
        cfg = yaml_config(stage, keys)
    elif stage is None and config is not None:
        cfg = config
    else:
        raise ConfigError(f"registering {name!r}: pass the stage class (with its keys) or a config model")

    def deco(build: BuildFn) -> BuildFn:
        if name in _REGISTRY:
            raise ConfigError(
                f"stage name {name!r} is registered twice ({_REGISTRY[name].build.__module__} and {build.__module__})"
            )
        _REGISTRY[name] = Component(name, kind, cfg, build, nested, stage, keys)
        return build

    return deco


def _load_components() -> None:
    """Import every module of the ``rerankflow.stages`` entry-point group once; the built-in
    stages come this way too (``builtin`` = ``rerankflow.pipelines.components``), so this
    module never imports the layers above it."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    found = entry_points(group="rerankflow.stages")
    if "builtin" not in found.names:
        raise ConfigError(
            "rerankflow's built-in stages are not registered: its package metadata is missing or stale; "
            "reinstall it (pip install -e . in a checkout)"
        )
    for ep in found:
        log.debug("loading stage plugin %s", ep.value)
        ep.load()


def get(name: str) -> Component:
    """The component registered as ``name``; the error lists the valid names."""
    _load_components()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown stage {name!r}{did_you_mean(name, names())}; valid stages: {', '.join(names())}")
    return _REGISTRY[name]


def names() -> list[str]:
    """All registered stage names, sorted."""
    _load_components()
    return sorted(_REGISTRY)


def components() -> list[Component]:
    """All registered components, sorted by name."""
    return [_REGISTRY[n] for n in names()]
