"""Merge requests that arrive concurrently into one call (continuous-ish batching): engines,
and the server's merged pipeline batches.

A scheduler submits many small requests (one window, one pair) at once; running each as its
own engine call would serialise them. :class:`Coalescer` queues requests per event loop and,
while one batch runs in a worker thread, collects the next, so the engine always receives
everything that is waiting. Engine calls are serialised by a thread lock. A request whose
waiter was cancelled before its batch started (a query whose budget ran out) is left out.

Latency is accounted as each item's share of the run time of the batch that held it, split by
a weight (its tokens, where the engine says how to count them): the shares of a batch sum to
its wall time, so per-query sums show which queries cost more and never count a batch twice.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


def shares(total: float, weights: Sequence[float]) -> list[float]:
    """``total`` split in proportion to ``weights`` (equally when they are all zero)."""
    mass = float(sum(weights))
    if mass <= 0:
        return [total / max(len(weights), 1)] * len(weights)
    return [total * w / mass for w in weights]


class Coalescer(Generic[In, Out]):
    """Runs ``run_batch(items) -> results`` (same length, same order) over merged submissions;
    ``weight(item, result)`` (default 1) splits a batch's run time over its items."""

    def __init__(
        self,
        run_batch: Callable[[list[In]], list[Out]],
        lock: threading.Lock | None = None,
        weight: Callable[[In, Out], float] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._weight = weight
        self.lock = lock or threading.Lock()
        """Serialises engine calls (shared with other users of the same engine)."""
        # keyed weakly: every asyncio.run() (each sync call) makes a new loop, which must not be kept
        self._pending: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, list[tuple[list[In], asyncio.Future[tuple[list[Out], list[float]]]]]
        ] = weakref.WeakKeyDictionary()
        self._loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._tasks: set[asyncio.Task[None]] = set()

    def waiting(self) -> int:
        """Items queued for the next batch (all event loops)."""
        return sum(len(items) for queue in list(self._pending.values()) for items, _ in queue)

    async def submit(self, items: list[In]) -> list[Out]:
        """Queue ``items``; returns their results once the batch that holds them has run."""
        return (await self.submit_timed(items))[0]

    async def submit_timed(self, items: list[In]) -> tuple[list[Out], list[float]]:
        """:meth:`submit`, plus each item's share of its batch's run time (seconds)."""
        if not items:
            return [], []
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[list[Out], list[float]]] = loop.create_future()
        queue = self._pending.setdefault(loop, [])
        queue.append((items, fut))
        if len(queue) == 1:
            task = loop.create_task(self._drain(loop))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await fut

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        lock = self._loop_locks.setdefault(loop, asyncio.Lock())
        async with lock:  # one batch in flight per loop; later arrivals wait and merge
            batch = [(items, fut) for items, fut in self._pending.pop(loop, []) if not fut.done()]
            if not batch:  # nothing queued, or every waiter was cancelled before its batch ran
                return
            flat = [x for items, _ in batch for x in items]
            try:
                results, seconds = await asyncio.to_thread(self._locked, flat)
                if len(results) != len(flat):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(flat)} inputs")
            except BaseException as exc:  # every waiter gets the failure, then it propagates
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise  # cancellation and exits propagate after the waiters are told
                return
            weight = self._weight or (lambda item, result: 1.0)
            spent = shares(seconds, [weight(x, r) for x, r in zip(flat, results, strict=True)])
            start = 0
            for items, fut in batch:
                if not fut.done():
                    fut.set_result((results[start : start + len(items)], spent[start : start + len(items)]))
                start += len(items)

    def _locked(self, items: list[In]) -> tuple[list[Out], float]:
        """The batch's results and its run time (waiting for the lock not counted)."""
        with self.lock:
            start = time.perf_counter()
            return self._run_batch(items), time.perf_counter() - start
