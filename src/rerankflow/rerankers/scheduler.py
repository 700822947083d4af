"""Strategies as plans of LLM calls, and the scheduler that runs them.

A ranking strategy never calls the backend itself. For one query it is a *plan*: a generator
that yields a *step* (a list of independent calls), receives the replies in the same order,
and finally returns an :class:`Outcome`. That makes every strategy's call graph explicit and
lets one scheduler decide how calls run:

* ``sequential``: one query after another, one call at a time (the reference loop of most
  reranking libraries, and the baseline of ``bench/schedule.py``);
* ``concurrent`` (default): the plans of all queries advance independently. The calls of a
  step are submitted together, and a query's next step is submitted as soon as its previous
  replies are back (window level, not lockstep across queries). At most ``max_concurrency``
  calls are in flight; backends merge concurrent calls into engine batches.

Plans compose with ``yield from`` (a sliding window is a loop over window rankings) and
:func:`gather` runs sub-plans side by side inside one plan (JointRank blocks, both orders
of a pairwise comparison).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from ..backends.base import LLMBackend, run_sync
from ..backends.types import CallStats, Completion, GenerationParams, LabelScores, Prompt
from ..cancel import CancelToken
from ..errors import ConfigError, RerankflowError
from .budget import Allowance, BudgetSpent

T = TypeVar("T")


@dataclass(frozen=True)
class GenerateCall:
    """Generate text after ``prompt``."""

    prompt: Prompt
    params: GenerationParams


@dataclass(frozen=True)
class LabelCall:
    """Next-token log-probabilities of single-token ``labels`` after ``prompt``."""

    prompt: Prompt
    labels: tuple[str, ...]
    after: int = 0
    """Read the labels after this many greedily generated answer tokens (see ``alabel_logprobs``)."""
    context: str | None = None
    """The text the labels follow in the answer (see ``alabel_logprobs``)."""


Call = GenerateCall | LabelCall
Reply = Completion | LabelScores
Plan = Generator[list[Call], list[Reply], T]


@dataclass
class Outcome:
    """What a plan returns for one query: one score per input candidate (input order).

    ``rank_derived`` marks scores that only encode the final rank; ``problems`` counts
    repaired model outputs by kind (duplicates, missing ids, unparseable answers...).
    """

    scores: list[float]
    rank_derived: bool
    problems: Counter[str] = field(default_factory=Counter)
    left: dict[str, int] = field(default_factory=dict)
    """Work a budget left undone, by kind (``windows``, ``extractions``...); empty when finished."""


def rank_scores(order: Sequence[int]) -> list[float]:
    """Scores for a ranking given as input indices, best first: ``1 / (rank + 1)``."""
    scores = [0.0] * len(order)
    for rank, index in enumerate(order):
        scores[index] = 1.0 / (rank + 1)
    return scores


def gather(plans: Sequence[Plan[T]]) -> Plan[list[T]]:
    """Run sub-plans side by side: each round merges their pending steps into one step."""
    results: list[Any] = [None] * len(plans)
    pending: dict[int, list[Call]] = {}
    for i, plan in enumerate(plans):
        try:
            pending[i] = next(plan)
        except StopIteration as stop:
            results[i] = stop.value
    while pending:
        replies = yield [call for step in pending.values() for call in step]
        advanced: dict[int, list[Call]] = {}
        start = 0
        for i, step in pending.items():
            part = replies[start : start + len(step)]
            start += len(step)
            try:
                advanced[i] = plans[i].send(part)
            except StopIteration as stop:
                results[i] = stop.value
        pending = advanced
    return results


def counted(plan: Plan[T], rounds: list[int]) -> Plan[T]:
    """``plan`` unchanged, appending to ``rounds`` how many steps it yielded: its rounds of calls
    that wait on each other's answers (the parallel depth of a ranking method)."""
    rounds.append(0)
    try:
        step = next(plan)
        while True:
            rounds[-1] += 1
            step = plan.send((yield step))
    except StopIteration as stop:
        return stop.value


def ask_labels(prompt: Prompt, labels: Sequence[str], after: int = 0, context: str | None = None) -> Plan[LabelScores]:
    """A plan of one label call that returns its scores."""
    (reply,) = yield [LabelCall(prompt, tuple(labels), after, context)]
    if not isinstance(reply, LabelScores):
        raise RerankflowError(f"a label call got {type(reply).__name__} back (a bug in the scheduler)")
    return reply


def ask_generate(prompt: Prompt, params: GenerationParams) -> Plan[Completion]:
    """A plan of one generation call that returns its completion."""
    (reply,) = yield [GenerateCall(prompt, params)]
    if not isinstance(reply, Completion):
        raise RerankflowError(f"a generate call got {type(reply).__name__} back (a bug in the scheduler)")
    return reply


@dataclass
class PlanResult:
    """A finished plan: its outcome, the stats of every call it made, its rounds and wall
    time, and the limit that stopped it (``None``: it ran to its end). ``outcome`` is ``None``
    when a stopped plan had no ranking to give (its input order stands)."""

    outcome: Outcome | None
    stats: list[CallStats]
    rounds: int = 0
    seconds: float = 0.0
    stopped: str | None = None


class Scheduler:
    """Runs plans against one backend (see the module docstring for the two modes)."""

    def __init__(
        self,
        backend: LLMBackend,
        *,
        mode: Literal["concurrent", "sequential"] = "concurrent",
        max_concurrency: int = 64,
    ) -> None:
        if mode not in ("concurrent", "sequential"):
            raise ConfigError(f"scheduler mode must be 'concurrent' or 'sequential', got {mode!r}")
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.backend = backend
        self.mode = mode
        self.max_concurrency = max_concurrency

    def run(
        self, plans: Sequence[Plan[Outcome]], allowances: Sequence[Allowance | None] | None = None
    ) -> list[PlanResult]:
        """Run every plan to its end or its allowance's limit; results in input order."""
        return run_sync(self.arun(plans, allowances))

    async def arun(
        self, plans: Sequence[Plan[Outcome]], allowances: Sequence[Allowance | None] | None = None
    ) -> list[PlanResult]:
        """Async :meth:`run`. A plan whose allowance runs out gets :class:`BudgetSpent` thrown
        in at the step it waits on (its calls in flight cancelled) and returns its best ranking."""
        limit = asyncio.Semaphore(1 if self.mode == "sequential" else self.max_concurrency)
        budgets = list(allowances) if allowances is not None else [None] * len(plans)
        if len(budgets) != len(plans):
            raise RerankflowError(f"{len(budgets)} allowances for {len(plans)} plans (a bug in the stage)")
        if self.mode == "sequential":
            return [await self._drive(plan, limit, budget) for plan, budget in zip(plans, budgets, strict=True)]
        drives = (self._drive(plan, limit, budget) for plan, budget in zip(plans, budgets, strict=True))
        return list(await asyncio.gather(*drives))

    async def _drive(self, plan: Plan[Outcome], limit: asyncio.Semaphore, budget: Allowance | None) -> PlanResult:
        stats: list[CallStats] = []
        start, rounds, stopped = time.monotonic(), 0, None
        token = CancelToken()
        try:
            step = next(plan)
            while True:
                if not step:
                    raise RerankflowError("a ranking plan yielded an empty step (a bug in the strategy)")
                reason = budget.admit(len(step)) if budget is not None else None
                replies: list[Reply] | None = None
                if reason is None:
                    rounds += 1
                    replies, reason = await self._step(step, limit, budget, token, stats)
                if replies is None:
                    stopped = reason or "seconds"
                    if budget is not None:
                        budget.stopped = stopped
                    plan.throw(BudgetSpent(stopped))
                    raise RerankflowError("a ranking plan went on after its budget was spent (a bug in the strategy)")
                step = plan.send(replies)
        except StopIteration as stop:
            return PlanResult(stop.value, stats, rounds, time.monotonic() - start, stopped)
        except BudgetSpent:
            return PlanResult(None, stats, rounds, time.monotonic() - start, stopped)

    async def _step(
        self,
        step: list[Call],
        limit: asyncio.Semaphore,
        budget: Allowance | None,
        token: CancelToken,
        stats: list[CallStats],
    ) -> tuple[list[Reply] | None, str | None]:
        """The replies of one step in call order, or ``(None, reason)`` when the allowance ran
        out before the step finished (a step whose last reply spends the tokens is still used):
        the calls still in flight are cancelled (generations stop at their next
        decoding step; calls not yet started never reach the engine), the finished calls'
        stats are kept."""
        groups = [[call] for call in step] if self.mode == "sequential" else [step]
        replies: list[Reply] = []
        for n, group in enumerate(groups):
            if n and budget is not None and (reason := budget.exhausted()):
                return None, reason  # a sequential step's next call would start past the budget
            tasks = [asyncio.ensure_future(self._call(call, limit, token)) for call in group]
            pending: set[asyncio.Future[Reply]] = set(tasks)
            reason = None
            try:
                while pending and reason is None:
                    wait = budget.seconds_left() if budget is not None else None
                    done, pending = await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                    if not done:
                        reason = "seconds"
                    for task in done:
                        reply = task.result()
                        spent = budget.spend(reply.stats) if budget is not None else None
                        if spent and pending:  # cut the step; a finished step is used, the next one not sent
                            reason = reason or spent
            finally:
                if pending:
                    token.cancel("the query's budget is spent")
                    for task in pending:
                        task.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
            stats.extend(t.result().stats for t in tasks if t.done() and not t.cancelled() and t.exception() is None)
            if reason is not None:
                return None, reason
            replies.extend(t.result() for t in tasks)
        return replies, None

    async def _call(self, call: Call, limit: asyncio.Semaphore, token: CancelToken | None = None) -> Reply:
        async with limit:
            if isinstance(call, GenerateCall):
                return (await self.backend.agenerate([call.prompt], call.params, cancel=[token]))[0]
            return (
                await self.backend.alabel_logprobs([call.prompt], call.labels, after=call.after, context=call.context)
            )[0]
