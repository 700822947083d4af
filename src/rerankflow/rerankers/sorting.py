"""Top-k selection by heapsort, written as a plan: the comparisons are LLM calls.

:func:`heap_top_k` builds an ``arity``-ary max-heap, then extracts ``k`` items. Setwise
reranking sifts with ``best_of`` (one prompt shows a node and its children). Pairwise
reranking passes ``beats`` (one comparison) and gets Floyd's bottom-up sift on a binary
heap: it follows the better child down to a leaf (one comparison per level) and climbs back
to where the sifted item belongs, which for an item taken from the bottom of the heap is
usually one or two steps, instead of two comparisons per level.

Calls saved on top: the last extraction needs only the best of the root and its children,
not a full sift. Result: the top ``k`` found, then the other items in input order. A budget
that runs out (:class:`~rerankflow.rerankers.budget.BudgetSpent`) ends the sort with the top
extracted so far, then the others in input order (nothing extracted: the input order).

:func:`sort_work` prices a sort before it runs: a dry run with seeded random answers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Sequence
from typing import Any

from .budget import BudgetSpent, Work
from .scheduler import Plan

BestOf = Callable[[Sequence[int]], Plan[int]]
Beats = Callable[[int, int], Plan[bool]]


def best_by(group: Sequence[int], beats: Beats) -> Plan[int]:
    """The best of ``group`` by pairwise comparisons: each challenger against the best so far."""
    best = group[0]
    for challenger in group[1:]:
        if (yield from beats(challenger, best)):
            best = challenger
    return best


def heap_top_k(
    n: int, k: int, arity: int, best_of: BestOf, beats: Beats | None = None, left: dict[str, int] | None = None
) -> Plan[list[int]]:
    """The ``k`` best of ``range(n)`` (best first), then the rest in input order; when a
    budget stops it, ``left["extractions"]`` is set to the top places not found."""
    if beats is not None and arity != 2:
        raise ValueError("the bottom-up sift (beats) works on a binary heap (arity 2)")
    heap = list(range(n))

    def children(node: int, size: int) -> list[int]:
        return [c for c in range(arity * node + 1, arity * node + 1 + arity) if c < size]

    def sift_down(root: int, size: int) -> Plan[None]:
        while kids := children(root, size):
            best = yield from best_of([heap[root]] + [heap[c] for c in kids])
            if best == heap[root]:
                return
            child = next(c for c in kids if heap[c] == best)
            heap[root], heap[child] = heap[child], heap[root]
            root = child

    def sift_bottom_up(root: int, size: int) -> Plan[None]:
        if beats is None:
            raise ValueError("bottom-up sift needs beats")
        leaf = root
        while kids := children(leaf, size):
            leaf = kids[0] if len(kids) == 1 or (yield from beats(heap[kids[0]], heap[kids[1]])) else kids[1]
        item = heap[root]
        while leaf != root and (yield from beats(item, heap[leaf])):
            leaf = (leaf - 1) // 2
        path = []
        node = leaf
        while node != root:
            path.append(node)
            node = (node - 1) // 2
        for node in reversed(path):  # the items above the landing place move up one level
            heap[(node - 1) // 2] = heap[node]
        if path:
            heap[leaf] = item

    sift = sift_bottom_up if beats is not None else sift_down
    top: list[int] = []
    try:
        for root in range((n - 2) // arity, -1, -1):
            yield from sift(root, n)
        size = n
        while size and len(top) < k:
            top.append(heap[0])
            size -= 1
            heap[0] = heap[size]
            if size > 1 and len(top) == k - 1:  # only the best of the root and its children is still needed
                best = yield from best_of([heap[0]] + [heap[c] for c in children(0, size)])
                top.append(best)
                break
            if size > 1 and len(top) < k:
                yield from sift(0, size)
    except BudgetSpent:
        if left is not None:
            left["extractions"] = min(k, n) - len(top)
    chosen = set(top)
    return top + [i for i in range(n) if i not in chosen]


def _dry(plan: Generator[list[Any], Any, Any]) -> Work:
    """Drive a plan whose steps are placeholders: its calls and rounds."""
    calls = rounds = 0
    try:
        step = next(plan)
        while True:
            calls, rounds = calls + len(step), rounds + 1
            step = plan.send([None] * len(step))
    except StopIteration:
        return Work(calls, rounds)


def sort_work(n: int, k: int, arity: int, per_comparison: int, pairwise: bool, trials: int = 8) -> Work:
    """Calls and rounds :func:`heap_top_k` over ``n`` items may need: the most over ``trials``
    dry runs where every comparison is ``per_comparison`` calls in one round and answers at
    random (seeded), pairs remembered as the pairwise reranker remembers them. The count
    varies by about 15% between answer sequences (87 to 103 calls for setwise c=2, top 10,
    n=100), so the largest is taken: a head fitted to it rarely needs a stop mid-sort."""
    runs = [_sort_trial(n, k, arity, per_comparison, pairwise, seed) for seed in range(trials)]
    return Work(max(w.calls for w in runs), max(w.rounds for w in runs))


def _sort_trial(n: int, k: int, arity: int, per_comparison: int, pairwise: bool, seed: int) -> Work:
    rng = random.Random(f"{seed}:{n}:{k}:{arity}")
    memo: dict[tuple[int, int], bool] = {}

    def best_of(group: Sequence[int]) -> Plan[int]:
        yield [None] * per_comparison  # type: ignore[list-item]
        return rng.choice(list(group))

    def beats(a: int, b: int) -> Plan[bool]:
        key = (min(a, b), max(a, b))
        if key not in memo:
            yield [None] * per_comparison  # type: ignore[list-item]
            memo[key] = rng.random() < 0.5
        return memo[key] if a == key[0] else not memo[key]

    if pairwise:
        return _dry(heap_top_k(n, k, 2, lambda group: best_by(group, beats), beats))
    return _dry(heap_top_k(n, k, arity, best_of))
