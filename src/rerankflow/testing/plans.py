"""Looking inside ranking plans (tests and benchmarks)."""

from __future__ import annotations

from typing import TypeVar

from ..rerankers.scheduler import Plan

T = TypeVar("T")


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
