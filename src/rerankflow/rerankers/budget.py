"""Budgets for LLM rerankers: how much one query may cost, and what happens when it runs out.

A :class:`Budget` (``budget: {seconds, calls, tokens}`` on any LLM reranker) is per query.
The stage spends it in two ways:

1. **Before it starts**, it shrinks the reranked head to the deepest one whose expected work
   fits (:func:`fitted_depth`): calls counted from the strategy's own call plan, rounds (calls
   that wait on each other) priced with the seconds per round this stage has measured so far,
   calls priced with the tokens per call it has measured so far. Candidates below that head
   keep their incoming order, as they do below ``depth``.
2. **While it runs**, an :class:`Allowance` per query stops the plan once the deadline passes
   (the budget's ``seconds`` from the stage's start, or a request's deadline, whichever comes
   first), before a step that would exceed ``calls``, or once ``tokens`` are spent; calls in
   flight are cancelled, and the strategy returns the best ranking it has (each strategy's
   order is in its module docstring and docs/rerankers.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import Field

from ..backends.types import CallStats
from ..options import Options
from ..types import Ranking


class Budget(Options):
    """What one query may spend in one reranker (each limit optional)."""

    seconds: float | None = Field(None, gt=0, description="wall-clock seconds from the stage's start")
    calls: int | None = Field(None, ge=0, description="LLM calls (a step that would exceed it is not sent)")
    tokens: int | None = Field(None, ge=0, description="prompt + output tokens (checked as replies arrive)")


class BudgetSpent(Exception):
    """Thrown into a plan when its query's budget is spent; ``reason`` names the limit."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Allowance:
    """One query's budget while its plan runs: the limits and what is spent."""

    deadline: float | None = None
    """``time.monotonic()`` value after which no work is done."""
    calls: int | None = None
    tokens: int | None = None
    used_calls: int = 0
    used_tokens: int = 0
    stopped: str | None = None

    def seconds_left(self) -> float | None:
        """Seconds until the deadline (``None``: no deadline; never below 0)."""
        return None if self.deadline is None else max(self.deadline - time.monotonic(), 0.0)

    def exhausted(self) -> str | None:
        """``seconds`` once the deadline passed, ``tokens`` once they are spent, else ``None``."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "seconds"
        if self.tokens is not None and self.used_tokens >= self.tokens:
            return "tokens"
        return None

    def admit(self, calls: int) -> str | None:
        """Why a step of ``calls`` calls may not start (``None``: it may; the calls are counted)."""
        if reason := self.exhausted():
            return reason
        if self.calls is not None and self.used_calls + calls > self.calls:
            return "calls"
        self.used_calls += calls
        return None

    def spend(self, stats: CallStats) -> str | None:
        """Count a finished call's tokens; ``"tokens"`` once the token budget is spent."""
        self.used_tokens += stats.prompt_tokens + stats.output_tokens
        if self.tokens is not None and self.used_tokens >= self.tokens:
            return "tokens"
        return None


def deadline_of(budget: Budget | None, ranking: Ranking, start: float) -> float | None:
    """The earlier of the budget's ``seconds`` after ``start`` and the query's own deadline."""
    ends = [ranking.query.deadline] if ranking.query.deadline is not None else []
    if budget is not None and budget.seconds is not None:
        ends.append(start + budget.seconds)
    return min(ends) if ends else None


def allowance(budget: Budget | None, ranking: Ranking, start: float) -> Allowance | None:
    """The allowance of one query (``None``: unlimited)."""
    deadline = deadline_of(budget, ranking, start)
    if deadline is None and (budget is None or (budget.calls is None and budget.tokens is None)):
        return None
    return Allowance(deadline, budget.calls if budget else None, budget.tokens if budget else None)


@dataclass
class Pace:
    """What a stage has measured about its own calls, to price work before it starts: seconds
    per round (a step of calls that run together) and tokens per call, as moving averages."""

    round_seconds: float | None = None
    call_tokens: float | None = None
    weight: float = 0.5

    def observe(self, rounds: int, seconds: float, calls: Sequence[CallStats]) -> None:
        """Add one finished plan: its rounds, its wall time and its calls."""
        if rounds > 0 and seconds > 0:
            self.round_seconds = self._mixed(self.round_seconds, seconds / rounds)
        if calls:
            tokens = sum(c.prompt_tokens + c.output_tokens for c in calls) / len(calls)
            self.call_tokens = self._mixed(self.call_tokens, tokens)

    def _mixed(self, old: float | None, new: float) -> float:
        return new if old is None else self.weight * new + (1 - self.weight) * old


@dataclass(frozen=True)
class Work:
    """The expected work of reranking a head of a given size."""

    calls: int
    rounds: int


def fitted_depth(n: int, work: Callable[[int], Work], limit: Allowance | None, pace: Pace) -> int:
    """The largest head ``d <= n`` whose ``work(d)`` fits ``limit``: calls within the call
    budget, calls times the measured tokens per call within the token budget, rounds times the
    measured seconds per round within the time left (limits without a measurement yet are
    enforced only while the plan runs). ``work`` must grow with ``d``; a head of fewer than two
    candidates needs no calls."""
    if limit is None:
        return n
    seconds = limit.seconds_left()

    def fits(d: int) -> bool:
        w = work(d)
        if limit.calls is not None and w.calls > limit.calls:
            return False
        if limit.tokens is not None and pace.call_tokens is not None and w.calls * pace.call_tokens > limit.tokens:
            return False
        return not (seconds is not None and pace.round_seconds is not None and w.rounds * pace.round_seconds > seconds)

    if fits(n):
        return n
    low, high = 1, n  # fits(low) holds (no calls), fits(high) does not
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low if low >= 2 else 0


def slotted(order_scored: Sequence[int], n: int) -> list[int]:
    """The anytime order of a partly scored list: the scored indices (``order_scored``, best
    first) fill the input positions they occupy, and every unscored index keeps its position.
    Scoring the top of the input first makes this the scored head sorted, then the rest."""
    slots = sorted(order_scored)
    out = list(range(n))
    for slot, index in zip(slots, order_scored, strict=True):
        out[slot] = index
    return out


def rounds_for(count: int, per_round: int) -> int:
    """Rounds needed for ``count`` items at ``per_round`` a round."""
    return math.ceil(count / per_round) if count else 0
