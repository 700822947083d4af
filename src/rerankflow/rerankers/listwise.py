"""Listwise LLM reranking: the model sees several passages at once and orders them.

Methods (``method``):

* ``sliding``: windows of ``window`` passages moved from the bottom of the list to the top by
  ``stride`` (default ``window // 2``; RankGPT, Sun et al. 2023); each window waits for the previous one.
* ``single_pass``: one window holding every candidate, when the prompt fits ``max_prompt_tokens``.
* ``jointrank``: overlapping blocks ranked independently (all at once, one round), turned
  into pairwise wins and aggregated by win rate (default) or PageRank (JointRank, Dedov,
  ICTIR 2025). Designs (``design``):

  - ``covering`` (default): groups of ``window // 2``, every pair of groups ranked together,
    so every two candidates meet (45 blocks for 100 candidates, window 20);
  - ``equireplicate`` (the paper's configuration with ``replicas=4``, window 20 and
    ``aggregate="pagerank"``): ``ceil(replicas * n / window)`` blocks of ``window``
    candidates; a seeded shuffle of all candidates is cut into blocks and a short last block
    is padded to full size with candidates drawn from the others, then a new shuffle starts,
    so every candidate sits in ``replicas`` blocks (20 blocks for 100 candidates);
  - ``latin``: the candidates (input order) fill a ``k x k`` grid, ``k = ceil(sqrt(n))``
    (``k <= window``), and each row and each column is a block (a Latin-square lattice, the
    paper's design for two replicas: 20 blocks of 10 for 100 candidates);
  - ``replicated``: ``replicas`` partitions (input order, then seeded shuffles), no padding.

How a window is ranked (``scorer``):

* ``generate``: the model writes a permutation like ``[2] > [1] > [3]``, parsed losslessly
  (:func:`~rerankflow.rerankers.permutation.parse_permutation`);
* ``first_token``: the passages are labelled with the template's single-token labels
  (A, B, ...) and ordered by the log-probability of each label as the first generated token
  (FIRST, Reddy et al. 2024). One forward pass per window, nothing to parse.

``shuffles=k`` (permutation self-consistency, Tang et al., NAACL 2024) ranks every window
``k`` times, in the input order and in ``k - 1`` seeded shuffles, and orders it by the mean
position (a Borda aggregate; the paper uses a Kemeny-style central ranking): ``k`` times the
calls, the same number of rounds. It counters a model's preference for early or late positions.

Scores are rank-derived (``1 / (rank + 1)``) except JointRank's, which are the aggregated
PageRank values or win rates.
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
from ..prompts import rankllm_style
from ..prompts.template import PromptTemplate
from ..types import Candidate
from .base import PlannedOptions, PlannedReranker, passage_block
from .budget import BudgetSpent, Work, rounds_for, slotted
from .permutation import parse_permutation, sliding_windows
from .scheduler import Outcome, Plan, ask_generate, ask_labels, gather, rank_scores

Method = Literal["sliding", "single_pass", "jointrank"]
Scorer = Literal["generate", "first_token"]
WindowResult = tuple[list[int], Counter[str]]
DEFAULT_TEMPLATES = {"generate": "listwise", "first_token": "listwise-first"}
ANYTIME_WAVES = 4
"""Rounds JointRank's blocks are split into under a budget (a stop keeps the finished rounds)."""


def covering_blocks(n: int, window: int) -> list[list[int]]:
    """Blocks of at most ``window`` indices in which every pair of ``range(n)`` meets."""
    if n <= window:
        return [list(range(n))] if n >= 2 else []
    size = window // 2
    groups = [list(range(i, min(i + size, n))) for i in range(0, n, size)]
    return [groups[a] + groups[b] for a in range(len(groups)) for b in range(a + 1, len(groups))]


def equireplicate_blocks(n: int, window: int, replicas: int, seed: int) -> list[list[int]]:
    """JointRank's equi-replicate design: every candidate in ``replicas`` blocks of ``window``
    (seeded shuffles; a short block padded with candidates it lacks)."""
    if n < 2:
        return []
    rng = random.Random(seed)
    if n <= window:
        return [rng.sample(range(n), n) for _ in range(replicas)]
    count = math.ceil(replicas * n / window)
    pool = rng.sample(range(n), n)
    blocks: list[list[int]] = []
    while len(blocks) < count:
        if len(pool) >= window:
            blocks.append(pool[:window])
            pool = pool[window:]
            continue
        absent = sorted(set(range(n)) - set(pool))
        extra = rng.sample(absent, window - len(pool))
        blocks.append(pool + extra)
        taken = set(extra)
        pool = [i for i in range(n) if i not in taken]
        rng.shuffle(pool)
    return blocks


def latin_blocks(n: int, window: int) -> list[list[int]]:
    """Rows and columns of the ``k x k`` grid that holds ``range(n)`` in order, ``k = ceil(sqrt(n))``."""
    if n < 2:
        return []
    k = math.isqrt(n - 1) + 1
    if k > window:
        raise DataError(
            f"the latin design needs blocks of {k} for {n} candidates, more than window={window}; "
            f"set depth to at most {window * window} or use design: equireplicate"
        )
    rows = [list(range(r * k, min(r * k + k, n))) for r in range(k)]
    columns = [[r * k + c for r in range(k) if r * k + c < n] for c in range(k)]
    return [b for b in rows + columns if len(b) >= 2]


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


def preferences(wins: np.ndarray) -> np.ndarray:
    """``P[a, b]``: the fraction of co-ranked blocks in which ``a`` was above ``b`` (NaN if they never met)."""
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


def win_counts(n: int, rankings: Sequence[Sequence[int]]) -> np.ndarray:
    """``W[a, b]``: how many blocks ranked ``a`` above ``b``."""
    wins = np.zeros((n, n))
    for order in rankings:
        for i, a in enumerate(order):
            for b in order[i + 1 :]:
                wins[a, b] += 1
    return wins


def pagerank(wins: np.ndarray, damping: float = 0.85, tolerance: float = 1e-6, limit: int = 100) -> list[float]:
    """PageRank over the win graph as JointRank aggregates it (through evalica's ``pagerank``,
    whose computation this follows: tests compare the two): every loss is a link from the loser
    to the winner weighted by the count; a candidate that never lost links to all alike; the
    damped matrix is power-iterated with L2 normalisation until the change is below
    ``tolerance`` (at most ``limit`` steps); the scores sum to 1."""
    n = len(wins)
    if n == 0:
        return []
    links = wins.T.astype(float)  # links[loser, winner]
    out = links.sum(axis=1)
    links[out == 0] = 1.0 / n
    links /= links.sum(axis=1, keepdims=True)
    google = damping * links + (1 - damping) / n
    scores = np.full(n, 1.0 / n)
    for _ in range(limit):
        updated = google.T @ scores
        updated /= np.linalg.norm(updated) or 1.0
        done = np.linalg.norm(updated - scores) < tolerance
        scores = updated
        if done:
            break
    return [float(x) for x in scores / np.abs(scores).sum()]


class ListwiseOptions(PlannedOptions):
    """Listwise LLM reranking: sliding window, single pass or JointRank; permutation or FIRST scoring."""

    method: Method = "sliding"
    scorer: Scorer = Field(
        "generate", description="generate a permutation, or order by first-token label logprobs (FIRST)"
    )
    window: int = Field(20, ge=2)
    stride: int | None = Field(None, ge=1, description="sliding only (default: window // 2)")
    window_schedule: Literal["full", "rankllm"] = Field(
        "full",
        description="sliding only: full (the top window is always full) or rankllm (RankLLM's loop: the last window "
        "is cut at the top, so n = 25 with 20/10 gives windows of 20 and 15)",
    )
    design: Literal["covering", "equireplicate", "latin", "replicated"] = Field(
        "covering", description="jointrank only: block design (the paper's: equireplicate, replicas 4, pagerank)"
    )
    replicas: int = Field(4, ge=1, description="jointrank equireplicate/replicated: blocks each candidate is in")
    aggregate: Literal["winrate", "pagerank"] = Field("winrate", description="jointrank only")
    seed: int = Field(0, description="shuffle seed (jointrank designs, shuffles)")
    shuffles: int = Field(
        1, ge=1, description="rank each window this many times in shuffled orders, aggregate by mean rank"
    )
    max_prompt_tokens: int = Field(4096, ge=16, description="single_pass only: longest prompt allowed")
    max_output_tokens: int | None = Field(None, ge=1, description="generate only (default: 5 per passage + 8)")

    @model_validator(mode="after")
    def _stride_fits(self) -> ListwiseOptions:
        if self.method == "sliding" and not 1 <= self.step <= self.window:
            raise ValueError(
                f"need 1 <= stride <= window for the sliding method, got window={self.window}, stride={self.step}"
            )
        return self

    @property
    def step(self) -> int:
        """The sliding window's stride (``stride``, default ``window // 2``)."""
        return self.window // 2 if self.stride is None else self.stride


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

    def passages(self, candidates: Sequence[Candidate], query: str) -> list[str]:
        """As every planned reranker shows them, except ``passage_style: rankllm``: RankLLM's
        content uncut, cut per window (its word budget depends on the window's size)."""
        if self.template.passage_style == "rankllm":
            return [rankllm_style.content(c.doc) for c in candidates]
        return super().passages(candidates, query)

    def default_template(self) -> str:
        """The scorer's template."""
        return DEFAULT_TEMPLATES[self.options.scorer]

    def check_template(self, template: PromptTemplate) -> None:
        """FIRST scoring needs one single-token label per passage of a window; a template with
        labels (letters) names every passage of a window by one, whatever the scorer (RankLLM
        runs past ``Z`` into ``[``, ``\\``...; here that is an error)."""
        o, labels = self.options, template.labels or []
        needed = o.window if o.method != "single_pass" else 2
        if (o.scorer == "first_token" or labels) and len(labels) < needed:
            kind = "single-token label" if o.scorer == "first_token" else "label"
            raise ConfigError(
                f"template {template.name!r} has {len(labels)} labels; a window of {o.window} passages needs one "
                f"{kind} per passage (a smaller window, or a template with more labels)"
            )

    # -- one window -------------------------------------------------------------------------
    def rank_window(self, query: str, texts: Sequence[str]) -> Plan[WindowResult]:
        """Order ``texts`` (input indices, best first): one call, or ``shuffles`` calls at once
        aggregated by mean position."""
        n = len(texts)
        if self.options.shuffles == 1 or n < 2:
            return (yield from self._rank_once(query, texts))
        rng = random.Random(f"{self.options.seed}:{query}:{n}")
        orders = [list(range(n))] + [rng.sample(range(n), n) for _ in range(self.options.shuffles - 1)]
        results = yield from gather([self._rank_once(query, [texts[i] for i in order]) for order in orders])
        position = [0.0] * n
        problems: Counter[str] = Counter()
        for order, (local, found) in zip(orders, results, strict=True):
            for rank, i in enumerate(local):
                position[order[i]] += rank
            problems.update(found)
        return sorted(range(n), key=lambda i: position[i]), problems  # ties keep input order

    def _rank_once(self, query: str, texts: Sequence[str]) -> Plan[WindowResult]:
        """Order ``texts`` with one call."""
        n = len(texts)
        if self.template.passage_style == "rankllm":  # the query came through shown_query already
            texts = [rankllm_style.shown(t, n) for t in texts]
        if self.options.scorer == "first_token":
            labels = tuple((self.template.labels or [])[:n])
            prompt = self.template.render(query=query, num=str(n), passages=passage_block(labels, texts))
            t = self.template
            scores = yield from ask_labels(prompt, labels, t.label_after, t.label_context)
            order = sorted(range(n), key=lambda i: -scores.logprobs[labels[i]])  # ties keep input order
            return order, Counter({"unscored_labels": len(scores.missing)} if scores.missing else {})
        names = self.template.labels  # a letter template shows and reads letters: [C] > [A] > [B]
        ids = list(names[:n]) if names else [str(i + 1) for i in range(n)]
        prompt = self.template.render(query=query, num=str(n), passages=passage_block(ids, texts))
        max_tokens = self.options.max_output_tokens or 5 * n + 8
        reply = yield from ask_generate(prompt, GenerationParams(max_tokens=max_tokens))
        parsed = parse_permutation(reply.text, n, labels=names)
        problems = Counter({k: v for k, v in parsed.problems().items() if v})
        return list(parsed.order), problems

    # -- methods ------------------------------------------------------------------------------
    def plan(self, query: str, texts: list[str], anytime: bool = False) -> Plan[Outcome]:
        """The calls for one query, by method. A budget stops sliding windows after the last
        window that finished (the order so far: windows run from the bottom of the list up,
        so the top of the input is what a stop leaves unjudged; the stage sizes the head to
        the budget first so the windows reach the top)."""
        if self.options.method == "jointrank":
            return (yield from self._jointrank(query, texts, anytime))
        if self.options.method == "single_pass":
            self._check_fits(query, texts)
            windows = [(0, len(texts))] if len(texts) >= 2 else []
        else:
            windows = self._windows(len(texts))
        order = list(range(len(texts)))
        problems: Counter[str] = Counter()
        done = 0
        try:
            for start, end in windows:
                ids = order[start:end]
                local, found = yield from self.rank_window(query, [texts[i] for i in ids])
                order[start:end] = [ids[i] for i in local]
                problems.update(found)
                done += 1
        except BudgetSpent:
            return Outcome(rank_scores(order), True, problems, {"windows": len(windows) - done})
        return Outcome(rank_scores(order), rank_derived=True, problems=problems)

    def _windows(self, n: int) -> list[tuple[int, int]]:
        o = self.options
        return sliding_windows(n, o.window, o.step, o.window_schedule)

    def estimate(self, n: int) -> Work:
        """Windows (times ``shuffles``) and rounds: sliding windows wait on each other, a single
        pass is one round, JointRank's blocks go in up to four rounds under a budget."""
        o = self.options
        if o.method == "jointrank":
            blocks = len(self._blocks(n))
            return Work(blocks * o.shuffles, min(blocks, ANYTIME_WAVES))
        windows = 1 if o.method == "single_pass" else len(self._windows(n))
        return Work(windows * o.shuffles, windows)

    def _check_fits(self, query: str, texts: Sequence[str]) -> None:
        labels = (self.template.labels or [])[: len(texts)] if self.options.scorer == "first_token" else None
        block = passage_block(labels or [str(i + 1) for i in range(len(texts))], texts)
        prompt = self.template.render(query=query, num=str(len(texts)), passages=block)
        used = sum(self.backend.count_tokens(m.content) for m in prompt.messages)
        if used > self.options.max_prompt_tokens:
            raise DataError(
                f"single-pass listwise prompt for query {query[:60]!r} has {used} tokens, over max_prompt_tokens="
                f"{self.options.max_prompt_tokens}; use method: sliding or jointrank, a smaller depth, or lower max_passage_tokens"
            )
        if (self.options.scorer == "first_token" or self.template.labels) and len(texts) > len(
            self.template.labels or []
        ):
            raise DataError(
                f"{len(texts)} candidates but template {self.template.name!r} has {len(self.template.labels or [])} "
                "labels; first_token single pass needs one label per candidate (set depth)"
            )

    def _blocks(self, n: int) -> list[list[int]]:
        o = self.options
        if o.design == "equireplicate":
            return equireplicate_blocks(n, o.window, o.replicas, o.seed)
        if o.design == "latin":
            return latin_blocks(n, o.window)
        if o.design == "covering":
            return covering_blocks(n, o.window)
        return replicated_blocks(n, o.window, o.replicas, o.seed)

    def _jointrank(self, query: str, texts: list[str], anytime: bool) -> Plan[Outcome]:
        """All blocks in one round; under a budget in up to four rounds (blocks in design
        order: the covering design's first blocks hold the top of the input), and a stop
        aggregates the blocks that finished: the candidates they hold are ordered by that
        aggregate within the positions they occupy, the others keep theirs."""
        n = len(texts)
        blocks = self._blocks(n)
        waves = min(len(blocks), ANYTIME_WAVES) if anytime else 1
        size = rounds_for(len(blocks), waves) if blocks else 1
        problems: Counter[str] = Counter()
        rankings: list[list[int]] = []
        try:
            for first in range(0, len(blocks), size):
                wave = blocks[first : first + size]
                results = yield from gather([self.rank_window(query, [texts[i] for i in block]) for block in wave])
                for block, (local, found) in zip(wave, results, strict=True):
                    rankings.append([block[i] for i in local])
                    problems.update(found)
        except BudgetSpent:
            scores = self._aggregate(n, rankings)
            judged = sorted({i for block in rankings for i in block}, key=lambda i: -scores[i])
            order = slotted(judged, n)
            return Outcome(rank_scores(order), True, problems, {"blocks": len(blocks) - len(rankings)})
        # Equal aggregate scores keep the incoming order (the stable sort in the stage).
        return Outcome(self._aggregate(n, rankings), rank_derived=False, problems=problems)

    def _aggregate(self, n: int, rankings: Sequence[Sequence[int]]) -> list[float]:
        wins = win_counts(n, rankings)
        scores = win_rate(preferences(wins)) if self.options.aggregate == "winrate" else pagerank(wins)
        return [s if math.isfinite(s) else 0.0 for s in scores]
