"""Listwise LLM reranking: the model sees several passages at once and orders them.

Methods (``method``):

* ``sliding``: windows of ``window`` passages moved from the bottom of the list to the top by
  ``stride`` (default ``window // 2``; RankGPT, Sun et al. 2023); each window waits for the previous one.
* ``single_pass``: one window holding every candidate, when the prompt fits ``max_prompt_tokens``.
* ``jointrank``: overlapping blocks ranked independently (all at once), turned into pairwise
  wins and aggregated by win rate or PageRank (JointRank, Dedov 2025). ``design="covering"``
  splits the list into groups of ``window // 2`` and ranks every pair of groups together, so
  every two candidates meet at least once (45 blocks for 100 candidates, window 20);
  ``design="replicated"`` ranks ``replicas`` partitions (input order, then seeded shuffles),
  cheaper (``replicas * ceil(n / window)`` blocks) but some pairs never meet.

How a window is ranked (``scorer``):

* ``generate``: the model writes a permutation like ``[2] > [1] > [3]``, parsed losslessly
  (:func:`~rerankflow.rerankers.permutation.parse_permutation`);
* ``first_token``: the passages are labelled with the template's single-token labels
  (A, B, ...) and ordered by the log-probability of each label as the first generated token
  (FIRST, Reddy et al. 2024). One forward pass per window, nothing to parse.

Scores are rank-derived (``1 / (rank + 1)``) except JointRank's, which are the aggregated
win rates or PageRank values.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from ..backends.base import LLMBackend
from ..backends.types import GenerationParams
from ..errors import ConfigError, DataError
from ..prompts.template import PromptTemplate
from .base import PlannedOptions, PlannedReranker, passage_block
from .permutation import parse_permutation, sliding_windows
from .scheduler import Outcome, Plan, ask_generate, ask_labels, gather, rank_scores

Method = Literal["sliding", "single_pass", "jointrank"]
Scorer = Literal["generate", "first_token"]
WindowResult = tuple[list[int], Counter[str]]
DEFAULT_TEMPLATES = {"generate": "listwise", "first_token": "listwise-first"}


def covering_blocks(n: int, window: int) -> list[list[int]]:
    """Blocks of at most ``window`` indices in which every pair of ``range(n)`` meets."""
    if n <= window:
        return [list(range(n))] if n >= 2 else []
    size = window // 2
    groups = [list(range(i, min(i + size, n))) for i in range(0, n, size)]
    return [groups[a] + groups[b] for a in range(len(groups)) for b in range(a + 1, len(groups))]


def replicated_blocks(n: int, window: int, replicas: int, seed: int) -> list[list[int]]:
    """``replicas`` partitions of ``range(n)`` into consecutive blocks (the first in input order)."""
    if n <= window:
        return [list(range(n))] if n >= 2 else []
    out: list[list[int]] = []
    rng = random.Random(seed)
    for r in range(replicas):
        order = list(range(n))
        if r:
            rng.shuffle(order)
        out.extend(order[i : i + window] for i in range(0, n, window) if len(order[i : i + window]) >= 2)
    return out


def pairwise_preferences(n: int, rankings: Sequence[Sequence[int]]) -> np.ndarray:
    """``P[a, b]``: the fraction of co-ranked blocks in which ``a`` was above ``b`` (NaN if they never met)."""
    wins = np.zeros((n, n))
    for order in rankings:
        for i, a in enumerate(order):
            for b in order[i + 1 :]:
                wins[a, b] += 1
    met = wins + wins.T
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(met > 0, wins / met, np.nan)


def win_rate(prefs: np.ndarray) -> list[float]:
    """Mean preference against the candidates each one met (0.5 for one that met nobody)."""
    out = []
    for row in prefs:
        met = row[~np.isnan(row)]
        out.append(float(met.mean()) if met.size else 0.5)
    return out


def pagerank(prefs: np.ndarray, damping: float = 0.85, iterations: int = 100) -> list[float]:
    """PageRank where each candidate passes its weight to those that beat it (by preference)."""
    n = len(prefs)
    losses = np.nan_to_num(prefs.T)  # losses[a, b] = P(b beats a): a links to b
    out_weight = losses.sum(axis=1, keepdims=True)
    transition = np.where(out_weight > 0, losses / np.where(out_weight > 0, out_weight, 1), 1.0 / n)
    rank = np.full(n, 1.0 / n)
    for _ in range(iterations):
        updated = (1 - damping) / n + damping * transition.T @ rank
        if np.abs(updated - rank).sum() < 1e-12:
            rank = updated
            break
        rank = updated
    return [float(x) for x in rank]


class ListwiseOptions(PlannedOptions):
    """Listwise LLM reranking: sliding window, single pass or JointRank; permutation or FIRST scoring."""

    method: Method = "sliding"
    scorer: Scorer = Field(
        "generate", description="generate a permutation, or order by first-token label logprobs (FIRST)"
    )
    window: int = Field(20, ge=2)
    stride: int | None = Field(None, ge=1, description="sliding only (default: window // 2)")
    design: Literal["covering", "replicated"] = Field("covering", description="jointrank only: block design")
    replicas: int = Field(2, ge=1, description="jointrank replicated design: partitions ranked")
    aggregate: Literal["winrate", "pagerank"] = Field("winrate", description="jointrank only")
    seed: int = Field(0, description="jointrank replicated design: shuffle seed")
    max_prompt_tokens: int = Field(4096, ge=16, description="single_pass only: longest prompt allowed")
    max_output_tokens: int | None = Field(None, ge=1, description="generate only (default: 5 per passage + 8)")

    @model_validator(mode="after")
    def _stride_fits(self) -> ListwiseOptions:
        stride = self.window // 2 if self.stride is None else self.stride
        if self.method == "sliding" and not 1 <= stride <= self.window:
            raise ValueError(
                f"need 1 <= stride <= window for the sliding method, got window={self.window}, stride={stride}"
            )
        return self


class ListwiseReranker(PlannedReranker):
    """Listwise reranking (see the module docstring for methods and scorers)."""

    stage_name = "listwise"
    required_placeholders = frozenset({"query", "num", "passages"})

    Options = ListwiseOptions
    options: ListwiseOptions

    def __init__(
        self,
        backend: LLMBackend,
        template: PromptTemplate | str | None = None,
        options: ListwiseOptions | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(backend, template, options, **settings)
        o = self.options
        self.method: Method = o.method
        self.scorer: Scorer = o.scorer
        self.window, self.stride = o.window, o.window // 2 if o.stride is None else o.stride
        self.design, self.replicas, self.aggregate, self.seed = o.design, o.replicas, o.aggregate, o.seed
        self.max_prompt_tokens = o.max_prompt_tokens
        self.max_output_tokens = o.max_output_tokens

    def default_template(self) -> str:
        """The scorer's template."""
        return DEFAULT_TEMPLATES[self.options.scorer]

    def check_template(self, template: PromptTemplate) -> None:
        """FIRST scoring needs one single-token label per passage of a window."""
        o, labels = self.options, template.labels or []
        if o.scorer == "first_token" and len(labels) < (o.window if o.method != "single_pass" else 2):
            raise ConfigError(
                f"template {template.name!r} has {len(labels)} labels; the first_token scorer needs one "
                f"single-token label per passage of a window ({o.window})"
            )

    def __repr__(self) -> str:
        return (
            f"ListwiseReranker({self.backend!r}, method={self.method!r}, scorer={self.scorer!r}, "
            f"window={self.window}, stride={self.stride})"
        )

    # -- one window -------------------------------------------------------------------------
    def rank_window(self, query: str, texts: Sequence[str]) -> Plan[WindowResult]:
        """Order ``texts`` (input indices, best first) with one call."""
        n = len(texts)
        if self.scorer == "first_token":
            labels = tuple((self.template.labels or [])[:n])
            prompt = self.template.render(query=query, num=str(n), passages=passage_block(labels, texts))
            scores = yield from ask_labels(prompt, labels)
            order = sorted(range(n), key=lambda i: -scores.logprobs[labels[i]])  # ties keep input order
            return order, Counter({"unscored_labels": len(scores.missing)} if scores.missing else {})
        numbers = [str(i + 1) for i in range(n)]
        prompt = self.template.render(query=query, num=str(n), passages=passage_block(numbers, texts))
        max_tokens = self.max_output_tokens or 5 * n + 8
        reply = yield from ask_generate(prompt, GenerationParams(max_tokens=max_tokens))
        parsed = parse_permutation(reply.text, n)
        problems = Counter({k: v for k, v in parsed.problems().items() if v})
        return list(parsed.order), problems

    # -- methods ------------------------------------------------------------------------------
    def plan(self, query: str, texts: list[str]) -> Plan[Outcome]:
        """The calls for one query, by method."""
        if self.method == "jointrank":
            return (yield from self._jointrank(query, texts))
        if self.method == "single_pass":
            self._check_fits(query, texts)
            windows = [(0, len(texts))] if len(texts) >= 2 else []
        else:
            windows = sliding_windows(len(texts), self.window, self.stride)
        order = list(range(len(texts)))
        problems: Counter[str] = Counter()
        for start, end in windows:
            ids = order[start:end]
            local, found = yield from self.rank_window(query, [texts[i] for i in ids])
            order[start:end] = [ids[i] for i in local]
            problems.update(found)
        return Outcome(rank_scores(order), rank_derived=True, problems=problems)

    def _check_fits(self, query: str, texts: Sequence[str]) -> None:
        labels = (self.template.labels or [])[: len(texts)] if self.scorer == "first_token" else None
        block = passage_block(labels or [str(i + 1) for i in range(len(texts))], texts)
        prompt = self.template.render(query=query, num=str(len(texts)), passages=block)
        used = sum(self.backend.count_tokens(m.content) for m in prompt.messages)
        if used > self.max_prompt_tokens:
            raise DataError(
                f"single-pass listwise prompt for query {query[:60]!r} has {used} tokens, over max_prompt_tokens="
                f"{self.max_prompt_tokens}; use method: sliding or jointrank, a smaller depth, or lower max_passage_tokens"
            )
        if self.scorer == "first_token" and len(texts) > len(self.template.labels or []):
            raise DataError(
                f"{len(texts)} candidates but template {self.template.name!r} has {len(self.template.labels or [])} "
                "labels; first_token single pass needs one label per candidate (set depth)"
            )

    def _jointrank(self, query: str, texts: list[str]) -> Plan[Outcome]:
        n = len(texts)
        if self.design == "covering":
            blocks = covering_blocks(n, self.window)
        else:
            blocks = replicated_blocks(n, self.window, self.replicas, self.seed)
        results = yield from gather([self.rank_window(query, [texts[i] for i in block]) for block in blocks])
        problems: Counter[str] = Counter()
        rankings = []
        for block, (local, found) in zip(blocks, results, strict=True):
            rankings.append([block[i] for i in local])
            problems.update(found)
        prefs = pairwise_preferences(n, rankings)
        scores = win_rate(prefs) if self.aggregate == "winrate" else pagerank(prefs)
        # Equal aggregate scores keep the incoming order (the stable sort in the stage).
        return Outcome([s if math.isfinite(s) else 0.0 for s in scores], rank_derived=False, problems=problems)
