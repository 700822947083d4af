"""Heavy objects shared within a job: one encoder, engine or index per model and settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class ResourcePool:
    """Heavy objects shared by the stages of one job (one encoder or engine per model)."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, ...], Any] = {}

    def get(self, key: tuple[str, ...], create: Callable[[], Any]) -> Any:
        """Return the object stored under ``key``, creating it on first request."""
        if key not in self._items:
            self._items[key] = create()
        return self._items[key]
