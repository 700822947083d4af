"""Batching helpers of the backends that score pairs (rerank endpoints, vLLM's scorer)."""

from __future__ import annotations

from collections.abc import Sequence


def query_runs(queries: Sequence[str], limit: int | None = None) -> list[tuple[int, int]]:
    """``[start, end)`` spans of consecutive equal queries (a scorer's one call per query),
    each at most ``limit`` long."""
    spans: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(queries) + 1):
        if i == len(queries) or queries[i] != queries[start] or (limit is not None and i - start == limit):
            spans.append((start, i))
            start = i
    return spans
