"""What a YAML stage's build function may use: the dataset's corpus, the job folder, the
job's shared resources and its stage cache."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..backends.base import LLMBackend
from ..backends.factory import BackendConfig, shared_backend
from ..errors import ConfigError
from ..index.store import OpenIndex, open_index
from ..paths import resolve_path
from ..prompts.template import PromptTemplate, as_template
from ..resources import ResourcePool
from ..types import Document
from .cache import StageCache


@dataclass
class BuildContext:
    """What a build function may use: the dataset's corpus, the job folder, shared resources,
    and the stage cache that model stages are wrapped in (``None``: no caching).
    """

    corpus: Sequence[Document] | None = None
    base_dir: Path = field(default_factory=Path.cwd)
    resources: ResourcePool = field(default_factory=ResourcePool)
    cache: StageCache | None = None
    index: OpenIndex | None = None
    """The dataset's index (``dataset.index``): retrievers search its prebuilt structures."""

    def require_corpus(self, stage: str) -> Sequence[Document]:
        """The corpus, or a clear error saying the stage needs one."""
        if self.index is not None:
            return self.index.chunks
        if self.corpus is None:
            raise ConfigError(
                f"stage {stage!r} retrieves from a corpus, but the dataset names none; add dataset.corpus or dataset.index"
            )
        return self.corpus

    def resolve(self, path: str) -> Path:
        """A path from the job, relative to the job file's folder unless absolute."""
        return resolve_path(path, self.base_dir)

    def backend(self, cfg: BackendConfig) -> LLMBackend:
        """The job's backend for ``cfg`` (one per identical configuration), with local paths
        relative to the job's folder."""
        return shared_backend(cfg.at(self.base_dir), self.resources)

    def template(self, name_or_file: str | None) -> PromptTemplate | None:
        """A job's ``template`` key loaded: a built-in name, or a YAML file relative to the
        job's folder (``None``: the stage's own default)."""
        return as_template(name_or_file, self.base_dir) if name_or_file else None


def job_index(path: str | None, base_dir: Path) -> OpenIndex | None:
    """The index a dataset names (``dataset.index``), opened; ``None`` when it names none."""
    return open_index(resolve_path(path, base_dir)) if path else None
