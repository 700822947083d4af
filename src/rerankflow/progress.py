"""Progress bars for long work (indexing, encoding, reranking), silenced by ``--quiet``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_quiet = os.environ.get("RERANKFLOW_QUIET", "") not in ("", "0")


def set_quiet(quiet: bool) -> None:
    """Turn progress bars off (``True``) or on."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    """Whether progress bars are off."""
    return _quiet


def progress(items: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Iterate ``items`` with a tqdm bar on stderr unless quiet."""
    if _quiet:
        yield from items
        return
    from tqdm.auto import tqdm

    yield from tqdm(items, desc=desc, total=total, unit=unit, leave=False, mininterval=0.5)
