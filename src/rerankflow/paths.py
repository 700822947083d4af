"""Where rerankflow keeps caches: ``$RERANKFLOW_HOME`` or ``~/.cache/rerankflow``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
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


class PathOptions:
    """Field metadata: a mapping of options (a backend's) in which the values of
    :data:`PATH_OPTION_KEYS` may be paths, relative to the job's folder when written as such."""


PATH_OPTION_KEYS = frozenset({"tokenizer", "download_dir"})
"""Backend options that may name a local file or folder (nested option mappings included)."""


def is_explicit_path(value: str) -> bool:
    """Whether an option value is written as a path (``./x``, ``../x``, ``~/x``, ``/x``) rather
    than a name that may also be one (``Qwen/Qwen3-0.6B`` is a hub id unless it exists locally)."""
    return value in (".", "..") or value.startswith(("./", "../", "~", "/"))


def option_paths(
    options: Mapping[str, Any], where: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """``(yaml_path, value)`` of every path-like option written as a path (nested mappings too)."""
    for key, value in options.items():
        if isinstance(value, Mapping):
            yield from option_paths(value, (*where, str(key)))
        elif key in PATH_OPTION_KEYS and isinstance(value, str) and is_explicit_path(value):
            yield (*where, str(key)), value


def located_options(options: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
    """``options`` with their path-like values written as paths made relative to ``base_dir``."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, Mapping):
            out[key] = located_options(value, base_dir)
        elif key in PATH_OPTION_KEYS and isinstance(value, str) and is_explicit_path(value):
            out[key] = str(resolve_path(value, base_dir))
        else:
            out[key] = value
    return out


def _path_values(info: Any, value: Any, where: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """The path values of one pydantic field (a path field, or path options)."""
    if isinstance(value, str) and any(isinstance(m, LocalPath) for m in info.metadata):
        yield where, value
    elif isinstance(value, Mapping) and any(isinstance(m, PathOptions) for m in info.metadata):
        yield from option_paths(value, where)


def missing_paths(
    config: Any, base_dir: Path, where: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], Path]]:
    """``(yaml_path, resolved path)`` of every path option of ``config`` (nested models too)
    written as a path that does not exist relative to ``base_dir``."""
    for name, info in type(config).model_fields.items():
        value = getattr(config, name)
        if isinstance(value, Mapping) and any(isinstance(m, PathOptions) for m in info.metadata):
            for path, text in option_paths(value, (*where, name)):
                resolved = resolve_path(text, base_dir)
                if not resolved.exists():
                    yield path, resolved
        elif hasattr(type(value), "model_fields"):
            yield from missing_paths(value, base_dir, (*where, name))


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
        yield from ((path, v) for path, v in _path_values(info, value, (*where, name)) if leaves_base(v))
        if hasattr(type(value), "model_fields"):
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
