"""Where rerankflow keeps caches: ``$RERANKFLOW_HOME`` or ``~/.cache/rerankflow``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

from .types import Document


def cache_home() -> Path:
    """Root of rerankflow's caches (created on demand)."""
    root = os.environ.get("RERANKFLOW_HOME")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "rerankflow"


def resolve_path(path: str | Path, base_dir: Path | None) -> Path:
    """``path`` with ``~`` expanded, relative to ``base_dir`` (a job's folder) unless absolute."""
    p = Path(path).expanduser()
    return p if p.is_absolute() or base_dir is None else base_dir / p


class LocalPath:
    """Field metadata: the value may name a file or folder, relative to the job's folder."""


JobPath = Annotated[str, LocalPath()]
"""A config field that is a path (or a name that may be one, such as a model)."""
OptionalJobPath = Annotated[str | None, LocalPath()]


def leaves_base(path: str) -> bool:
    """True when relative ``path`` climbs out of its base folder (``../x``, ``a/../../x``).
    Lexical: absolute and ``~`` paths never do; symbolic links are not followed.
    """
    p = Path(path).expanduser()
    return not p.is_absolute() and os.path.normpath(p).split(os.sep)[0] == ".."


def paths_outside(config: Any, where: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """``(yaml_path, value)`` of every path field of a pydantic ``config`` (nested models
    included) whose relative value leaves the job's folder.
    """
    for name, info in type(config).model_fields.items():
        value = getattr(config, name)
        if isinstance(value, str) and any(isinstance(m, LocalPath) for m in info.metadata) and leaves_base(value):
            yield (*where, name), value
        elif hasattr(type(value), "model_fields"):
            yield from paths_outside(value, (*where, name))


def corpus_fingerprint(docs: Iterable[Document]) -> str:
    """SHA-256 over every document's id, title and text, in order."""
    h = hashlib.sha256()
    for d in docs:
        for part in (d.docid, d.title or "", d.text):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        h.update(b"\x01")
    return h.hexdigest()
