"""Cascades: cheap rerankers for every query, costly ones only where the cheap ones are unsure.

A :class:`Cascade` holds an ordered list of steps (each a reranker or a small pipeline). The
first step reranks every query; after step ``i`` the rule ``escalate[i]`` looks at each
query's ranking and sends only the queries it finds uncertain on to step ``i + 1``. A
``skip`` rule, checked on the incoming ranking, returns the queries it finds certain
untouched (no step runs for them). A query's result is the ranking of the last step it
reached; the trace records how many steps ran for it (``decisions``: ``steps``,
``escalated``, ``skipped``), and each step's own records (LLM usage...) appear only for the
queries it ran on, so the cost of a cascade is what its queries used.

Rules (:class:`Rule`, all "is this ranking uncertain?"):

* ``margin``: the score gap between rank ``k`` and rank ``k + 1`` (1-based), divided by the
  score range of the whole list when ``normalize`` (default), is below ``threshold``: the
  top-``k`` boundary is a near tie;
* ``agreement``: fewer than ``threshold`` (a fraction) of the top ``k`` are also in the top
  ``k`` of the ranking the step received: the last two rankers disagree;
* ``confidence``: the top candidate's score is below ``threshold`` (a scorer's own
  confidence: a cross-encoder's logit, a pointwise log-odds);
* ``always`` / ``never``: every query / no query (the cost and quality bounds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, model_validator

from ..errors import ConfigError
from ..options import Options, StageOptions
from ..stage import Transformer
from ..types import Ranking, StageRecord

RuleName = Literal["margin", "agreement", "confidence", "always", "never"]


class Rule(Options):
    """When a ranking is uncertain (see the module docstring)."""

    rule: RuleName = "margin"
    k: int = Field(10, ge=1, description="margin: the boundary after rank k; agreement: the top k compared")
    threshold: float = Field(0.1, description="below it the ranking is uncertain (margin, agreement, confidence)")
    normalize: bool = Field(True, description="margin: divide the gap by the list's score range")

    def uncertain(self, ranking: Ranking, before: Ranking | None) -> bool:
        """Whether ``ranking`` (whose previous version was ``before``) is uncertain."""
        if self.rule in ("always", "never"):
            return self.rule == "always"
        scores = [c.score for c in ranking.candidates]
        if not scores:
            return False
        if self.rule == "confidence":
            return scores[0] < self.threshold
        if self.rule == "margin":
            if len(scores) <= self.k:
                return False  # no boundary below rank k: nothing to decide
            gap = scores[self.k - 1] - scores[self.k]
            spread = scores[0] - scores[-1]
            if self.normalize:
                gap = gap / spread if spread > 0 else 0.0
            return gap < self.threshold
        if before is None:
            raise ConfigError("the agreement rule compares two rankings; it cannot be the skip rule")
        k = min(self.k, len(ranking.candidates))
        shared = set(ranking.docids[:k]) & set(before.docids[:k])
        return len(shared) / max(k, 1) < self.threshold


class CascadeOptions(StageOptions):
    """A cascade of rerankers (the sub-pipelines under 'steps'): each step runs only on the
    queries the rule before it finds uncertain."""

    escalate: list[Rule] = Field(
        default_factory=list,
        description="one rule per step after the first: the queries it finds uncertain go on (default: margin)",
    )
    skip: Rule | None = Field(
        None, description="checked on the incoming ranking: queries it finds certain are returned untouched"
    )

    @model_validator(mode="after")
    def _skip_has_no_previous(self) -> CascadeOptions:
        if self.skip is not None and self.skip.rule == "agreement":
            raise ValueError("skip: the agreement rule needs two rankings; use margin, confidence, always or never")
        return self


class Cascade(Transformer):
    """Run ``steps`` in turn, each on the queries its rule escalates (see the module docstring)."""

    stage_name = "cascade"

    Options = CascadeOptions
    options: CascadeOptions

    def __init__(self, steps: Sequence[Transformer], options: CascadeOptions | None = None, **settings: Any) -> None:
        self.options = CascadeOptions.build(options, settings, "cascade")
        if len(steps) < 2:
            raise ConfigError(f"a cascade needs at least two steps, got {len(steps)}")
        rules = list(self.options.escalate) or [Rule()] * (len(steps) - 1)
        if len(rules) != len(steps) - 1:
            raise ConfigError(
                f"cascade: {len(steps)} steps need {len(steps) - 1} escalate rules (one between each two steps), "
                f"got {len(rules)}"
            )
        self.steps = list(steps)
        self.rules = rules

    def children(self) -> list[Transformer]:
        """The steps."""
        return list(self.steps)

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Each step on the queries that reach it; results in input order."""
        current = list(batch)
        previous: list[Ranking | None] = [None] * len(batch)
        skip = self.options.skip
        active = [i for i, r in enumerate(batch) if skip is None or skip.uncertain(r, None)]
        ran = [0] * len(batch)
        for s, step in enumerate(self.steps):
            if s > 0:
                rule = self.rules[s - 1]
                active = [i for i in active if rule.uncertain(current[i], previous[i])]
            if not active:
                break
            outs = step([current[i] for i in active])
            for i, out in zip(active, outs, strict=True):
                previous[i], current[i] = current[i], out
                ran[i] += 1
        return [
            r.recorded(StageRecord(self.name, decisions={"steps": str(n), "escalated": n > 1, "skipped": n == 0}))
            for r, n in zip(current, ran, strict=True)
        ]

    def __repr__(self) -> str:
        return f"cascade({', '.join(repr(s) for s in self.steps)})"
