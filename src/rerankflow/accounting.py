"""Usage accounting: LLM calls, tokens and latency per stage and per query."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from .backends.base import CallStats, Usage


class UsageByQuery:
    """Usage of one stage, per query id (thread-safe)."""

    def __init__(self) -> None:
        self.by_query: dict[str, Usage] = {}
        self._lock = threading.Lock()

    def add(self, qid: str, stats: Iterable[CallStats]) -> None:
        """Count calls made for query ``qid``."""
        with self._lock:
            self.by_query.setdefault(qid, Usage()).add(stats)

    def restore(self, qid: str, usage: Usage) -> None:
        """Set the record of query ``qid`` (a stage-cache hit brings back the original usage)."""
        with self._lock:
            self.by_query[qid] = usage

    def forget(self, qids: Iterable[str]) -> None:
        """Drop the records of these queries."""
        with self._lock:
            for q in qids:
                self.by_query.pop(q, None)

    def total(self) -> Usage:
        """Sum over queries."""
        out = Usage()
        for u in self.by_query.values():
            out.merge(u)
        return out


@runtime_checkable
class ReportsUsage(Protocol):
    """A stage that calls an LLM and records its usage per query."""

    usage: UsageByQuery

    @property
    def name(self) -> str:
        """Stage name used in reports."""
        ...


@runtime_checkable
class ReportsCacheUse(Protocol):
    """A stage answered partly from the stage cache (``pipelines.cache.CachedStage``)."""

    def cache_report(self) -> dict[str, Any]:
        """Counts of cache hits, computed queries and corrupt entries."""
        ...
