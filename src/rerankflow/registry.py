"""The closed registry that maps YAML stage names to components.

A component is registered with a pydantic config model (unknown keys are errors) and a build
function that turns a validated config into a stage. Names are global and registering a name
twice raises. Third-party packages add components through the ``rerankflow.stages``
entry-point group: each entry point names a module whose import registers its components.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from .errors import ConfigError
from .paths import resolve_path
from .types import Document

if TYPE_CHECKING:
    from .pipelines.cache import StageCache
    from .stage import Transformer

log = logging.getLogger(__name__)

Kind = Literal["retriever", "reranker", "fusion", "transform", "compressor", "generator"]


class StageConfig(BaseModel):
    """Base of every stage's config: frozen, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ResourcePool:
    """Heavy objects shared by the stages of one job (one encoder or engine per model)."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, ...], Any] = {}

    def get(self, key: tuple[str, ...], create: Callable[[], Any]) -> Any:
        """Return the object stored under ``key``, creating it on first request."""
        if key not in self._items:
            self._items[key] = create()
        return self._items[key]


@dataclass
class BuildContext:
    """What a build function may use: the dataset's corpus, the job folder, shared resources,
    and the stage cache that model stages are wrapped in (``None``: no caching).
    """

    corpus: Sequence[Document] | None = None
    base_dir: Path = field(default_factory=Path.cwd)
    resources: ResourcePool = field(default_factory=ResourcePool)
    cache: StageCache | None = None

    def require_corpus(self, stage: str) -> Sequence[Document]:
        """The corpus, or a clear error saying the stage needs one."""
        if self.corpus is None:
            raise ConfigError(
                f"stage {stage!r} retrieves from a corpus, but the dataset names none; add dataset.corpus"
            )
        return self.corpus

    def resolve(self, path: str) -> Path:
        """A path from the job, relative to the job file's folder unless absolute."""
        return resolve_path(path, self.base_dir)


BuildFn = Callable[..., "Transformer"]


@dataclass(frozen=True)
class Component:
    """A registered stage type."""

    name: str
    kind: Kind
    config: type[StageConfig]
    build: BuildFn
    nested: str | None = None
    """Name of the config key that holds sub-pipelines (fusion inputs), if any."""

    @property
    def doc(self) -> str:
        """First line of the config model's docstring."""
        return (self.config.__doc__ or "").strip().splitlines()[0] if self.config.__doc__ else ""


_REGISTRY: dict[str, Component] = {}
_plugins_loaded = False


def register(
    name: str, *, kind: Kind, config: type[StageConfig], nested: str | None = None
) -> Callable[[BuildFn], BuildFn]:
    """Register ``build(config, ctx, inputs)`` under ``name`` (a decorator)."""

    def deco(build: BuildFn) -> BuildFn:
        if name in _REGISTRY:
            raise ConfigError(
                f"stage name {name!r} is registered twice ({_REGISTRY[name].build.__module__} and {build.__module__})"
            )
        _REGISTRY[name] = Component(name, kind, config, build, nested)
        return build

    return deco


def _load_components() -> None:
    global _plugins_loaded
    from .pipelines import components  # noqa: F401  (registers the built-in stages)

    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group="rerankflow.stages"):
        log.debug("loading stage plugin %s", ep.value)
        ep.load()


def get(name: str) -> Component:
    """The component registered as ``name``; the error lists the valid names."""
    _load_components()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown stage {name!r}; valid stages: {', '.join(names())}")
    return _REGISTRY[name]


def names() -> list[str]:
    """All registered stage names, sorted."""
    _load_components()
    return sorted(_REGISTRY)


def components() -> list[Component]:
    """All registered components, sorted by name."""
    return [_REGISTRY[n] for n in names()]
