"""Usage accounting: LLM calls, tokens and latency per stage and per query."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from .backends.base import CallStats


@dataclass
class Usage:
    """Totals of some backend calls."""

    calls: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0

    def add(self, stats: Iterable[CallStats]) -> None:
        """Count finished calls."""
        for s in stats:
            self.calls += 1
            self.prompt_tokens += s.prompt_tokens
            self.output_tokens += s.output_tokens
            self.latency_s += s.latency_s

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        return asdict(self)


class UsageByQuery:
    """Usage of one stage, per query id (thread-safe)."""

    def __init__(self) -> None:
        self.by_query: dict[str, Usage] = {}
        self._lock = threading.Lock()

    def add(self, qid: str, stats: Iterable[CallStats]) -> None:
        """Count calls made for query ``qid``."""
        with self._lock:
            self.by_query.setdefault(qid, Usage()).add(stats)

    def total(self) -> Usage:
        """Sum over queries."""
        out = Usage()
        for u in self.by_query.values():
            out.calls += u.calls
            out.prompt_tokens += u.prompt_tokens
            out.output_tokens += u.output_tokens
            out.latency_s += u.latency_s
        return out


@runtime_checkable
class ReportsUsage(Protocol):
    """A stage that calls an LLM and records its usage per query."""

    usage: UsageByQuery

    @property
    def name(self) -> str:
        """Stage name used in reports."""
        ...
