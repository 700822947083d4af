"""Top-k selection by heapsort, written as a plan: the comparisons are LLM calls.

:func:`heap_top_k` builds an ``arity``-ary max-heap, then extracts ``k`` items. Setwise
reranking sifts with ``best_of`` (one prompt shows a node and its children). Pairwise
reranking passes ``beats`` (one comparison) and gets Floyd's bottom-up sift on a binary
heap: it follows the better child down to a leaf (one comparison per level) and climbs back
to where the sifted item belongs, which for an item taken from the bottom of the heap is
usually one or two steps, instead of two comparisons per level.

Calls saved on top: the last extraction needs only the best of the root and its children,
not a full sift. Result: the top ``k`` found, then the other items in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .scheduler import Plan

BestOf = Callable[[Sequence[int]], Plan[int]]
Beats = Callable[[int, int], Plan[bool]]


def heap_top_k(n: int, k: int, arity: int, best_of: BestOf, beats: Beats | None = None) -> Plan[list[int]]:
    """The ``k`` best of ``range(n)`` (best first), then the rest in input order."""
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
    for root in range((n - 2) // arity, -1, -1):
        yield from sift(root, n)
    top: list[int] = []
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
    chosen = set(top)
    return top + [i for i in range(n) if i not in chosen]
