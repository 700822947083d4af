"""Where rerankflow keeps caches: ``$RERANKFLOW_HOME`` or ``~/.cache/rerankflow``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from .types import Document


def cache_home() -> Path:
    """Root of rerankflow's caches (created on demand)."""
    root = os.environ.get("RERANKFLOW_HOME")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "rerankflow"


def resolve_path(path: str | Path, base_dir: Path | None) -> Path:
    """``path`` with ``~`` expanded, relative to ``base_dir`` (a job's folder) unless absolute."""
    p = Path(path).expanduser()
    return p if p.is_absolute() or base_dir is None else base_dir / p


def corpus_fingerprint(docs: Iterable[Document]) -> str:
    """SHA-256 over every document's id, title and text, in order."""
    h = hashlib.sha256()
    for d in docs:
        for part in (d.docid, d.title or "", d.text):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        h.update(b"\x01")
    return h.hexdigest()
