"""What every compressor shares: the token budget, per-query accounting, and unit selection.

A compressor is a stage between reranking and generation. It receives rankings and returns
them with fewer candidates and/or shorter passages; kept candidates keep their document id,
score and history, so citations of the generated answer still point at the source passage.
Tokens are counted with the generator's tokenizer (``count_tokens``, from its backend) over
what the generator will read: :func:`~rerankflow.types.document_text` (title and text).

The budget is ``max_tokens`` and/or ``ratio`` (a fraction of the incoming context's tokens);
with both, the smaller limit applies.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from ..errors import ConfigError, DataError
from ..stage import Transformer
from ..types import Candidate, Document, Query, Ranking, document_text

Counter = Callable[[str], int]
Truncator = Callable[[str, int], str]
Overflow = Literal["skip", "stop"]


@dataclass(frozen=True)
class Budget:
    """A token limit: ``max_tokens``, ``ratio`` of the incoming tokens, or both (the smaller wins)."""

    max_tokens: int | None = None
    ratio: float | None = None

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.ratio is not None and not 0 < self.ratio <= 1:
            raise ConfigError(f"ratio must be in (0, 1], got {self.ratio}")

    @property
    def unlimited(self) -> bool:
        """True when neither limit is set."""
        return self.max_tokens is None and self.ratio is None

    def limit(self, tokens_in: int) -> int | None:
        """The token limit for a context of ``tokens_in`` tokens (``None``: no limit)."""
        limits = []
        if self.max_tokens is not None:
            limits.append(self.max_tokens)
        if self.ratio is not None:
            limits.append(max(1, math.floor(self.ratio * tokens_in)))
        return min(limits) if limits else None


def require_budget(budget: Budget, who: str) -> Budget:
    """``budget`` if it sets a limit; else a ConfigError saying how to set one."""
    if budget.unlimited:
        raise ConfigError(f"{who} needs a budget: set max_tokens (tokens kept) and/or ratio (fraction kept)")
    return budget


@dataclass
class QueryCompression:
    """What a compressor did to one query's context."""

    tokens_in: int = 0
    tokens_out: int = 0
    passages_in: int = 0
    passages_out: int = 0
    dropped: dict[str, int] | None = None
    """Passages left out, by reason (e.g. ``budget``, ``duplicate``, ``not relevant``)."""

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        return {
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "passages_in": self.passages_in,
            "passages_out": self.passages_out,
            "dropped": dict(self.dropped or {}),
        }


class Compressor(Transformer):
    """Base class: subclasses implement :meth:`compress`; this class counts tokens in and
    out and the passages dropped (by reason) per query, in ``compression``.
    """

    stage_name = "compressor"

    def __init__(self, count_tokens: Counter, budget: Budget | None = None) -> None:
        self.count_tokens = count_tokens
        self.budget = budget or Budget()
        self.compression: dict[str, QueryCompression] = {}
        self._drops: dict[str, Tally[str]] = {}
        self._tokens_in: dict[str, int] = {}

    @property
    def name(self) -> str:
        """Provenance name."""
        return self.stage_name

    def forget(self, queries: Sequence[Query]) -> None:
        """Drop the compression records of these queries."""
        for q in queries:
            for records in (self.compression, self._drops, self._tokens_in):
                records.pop(q.qid, None)

    def context_tokens(self, candidates: Sequence[Candidate]) -> int:
        """Tokens the generator would read for these passages."""
        return sum(self.count_tokens(document_text(c.doc)) for c in candidates)

    def limit(self, ranking: Ranking) -> int | None:
        """The token limit for this ranking's incoming context (counted once, in :meth:`transform`)."""
        return self.budget.limit(self._tokens_in[ranking.query.qid])

    def drop(self, qid: str, reason: str, n: int = 1) -> None:
        """Record ``n`` passages of query ``qid`` left out for ``reason``."""
        if n:
            self._drops.setdefault(qid, Tally())[reason] += n

    def fit(
        self, qid: str, candidates: Sequence[Candidate], limit: int | None, overflow: Overflow = "skip"
    ) -> list[Candidate]:
        """Keep candidates in order while they fit ``limit`` tokens (``None``: all). A passage
        that does not fit is skipped (``skip``: later, shorter ones may fit) or ends the
        selection (``stop``); either way it is counted as dropped for ``budget``.
        """
        if limit is None:
            return list(candidates)
        kept, used = [], 0
        for i, c in enumerate(candidates):
            size = self.count_tokens(document_text(c.doc))
            if used + size > limit:
                if overflow == "stop":
                    self.drop(qid, "budget", len(candidates) - i)
                    break
                self.drop(qid, "budget")
                continue
            kept.append(c)
            used += size
        return kept

    @abstractmethod
    def compress(self, batch: Sequence[Ranking]) -> list[list[Candidate]]:
        """The kept (possibly shortened) candidates of each ranking, in reading order."""

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Compress every ranking and record what was kept. A passage whose text (or title)
        is not a string is a DataError naming the query and document.
        """
        for r in batch:
            for c in r.candidates:
                if not isinstance(c.doc.text, str) or not isinstance(c.doc.title, str | None):
                    raise DataError(
                        f"{self.name}: query {r.query.qid!r}, document {c.docid!r} has a "
                        f"{type(c.doc.text).__name__} text and a {type(c.doc.title).__name__} title; "
                        "compressors need passages as strings (text, optional title)"
                    )
            self._drops[r.query.qid] = Tally()
            self._tokens_in[r.query.qid] = self.context_tokens(r.candidates)
        kept_lists = self.compress(batch)
        out = []
        for r, kept in zip(batch, kept_lists, strict=True):
            qid = r.query.qid
            self.compression[qid] = QueryCompression(
                self._tokens_in[qid],
                self.context_tokens(kept),
                len(r.candidates),
                len(kept),
                dict(self._drops.get(qid, {})),
            )
            out.append(r.with_candidates(kept))
        return out


@dataclass(frozen=True)
class Unit:
    """A piece of a passage that can be kept or dropped: a sentence, a word or a phrase."""

    passage: int
    start: int
    end: int
    score: float
    tokens: int


def select_units(units: Sequence[Unit], title_tokens: Sequence[int], limit: int) -> list[int]:
    """Indices of the units to keep: best score first while they fit ``limit`` tokens; a
    passage's title costs its tokens once, with the first unit kept from that passage.
    Ties keep source order. Units that do not fit are skipped (later, smaller ones may fit).
    """
    order = sorted(range(len(units)), key=lambda i: (-units[i].score, i))
    kept, used, opened = [], 0, set()
    for i in order:
        u = units[i]
        cost = u.tokens + (0 if u.passage in opened else title_tokens[u.passage])
        if used + cost <= limit:
            kept.append(i)
            used += cost
            opened.add(u.passage)
    return kept


def assemble(candidates: Sequence[Candidate], units: Sequence[Unit], kept: Sequence[int]) -> list[Candidate]:
    """Passages rebuilt from their kept units (source order, joined by spaces); passages
    with no kept unit are left out. Each shortened document records what it came from in
    ``meta["compressed"]``: the unit spans kept and the original text length.
    """
    by_passage: dict[int, list[Unit]] = {}
    for i in sorted(kept, key=lambda i: (units[i].passage, units[i].start)):
        by_passage.setdefault(units[i].passage, []).append(units[i])
    totals = Tally(u.passage for u in units)
    out = []
    for p, c in enumerate(candidates):
        parts = by_passage.get(p)
        if not parts:
            continue
        text = " ".join(c.doc.text[u.start : u.end].strip() for u in parts)
        meta = {
            **c.doc.meta,
            "compressed": {
                "spans": [(u.start, u.end) for u in parts],
                "units_kept": len(parts),
                "units": totals[p],
                "source_chars": len(c.doc.text),
            },
        }
        out.append(replace(c, doc=Document(c.doc.docid, text, c.doc.title, meta)))
    return out


class UnitCompressor(Compressor):
    """Base of compressors that keep parts of passages (sentences, words) within a budget.

    Subclasses give each query's units with scores (:meth:`score_units`). Selection is
    greedy by score; the assembled context is then counted exactly and, while it exceeds the
    limit (token counts of joined pieces are not always additive), the lowest-scored kept
    unit is removed. When not even the best unit fits, the best unit's passage is kept with
    that unit alone, without its title, cut to the limit (``meta["compressed"]["cut"]``).
    """

    def __init__(self, count_tokens: Counter, truncate: Truncator, budget: Budget) -> None:
        super().__init__(count_tokens, require_budget(budget, type(self).__name__))
        self.truncate = truncate

    @abstractmethod
    def score_units(self, batch: Sequence[Ranking]) -> list[list[Unit]]:
        """The units of every ranking's passages, with scores (higher: keep first)."""

    def compress(self, batch: Sequence[Ranking]) -> list[list[Candidate]]:
        """Select units per query within its limit and rebuild the passages."""
        return [self._select(r, units) for r, units in zip(batch, self.score_units(batch), strict=True)]

    def _select(self, ranking: Ranking, units: list[Unit]) -> list[Candidate]:
        cands = ranking.candidates
        limit = self.limit(ranking)
        if not units or limit is None:
            self.drop(ranking.query.qid, "no text", len(cands))
            return []
        titles = [self.count_tokens(c.doc.title) if c.doc.title else 0 for c in cands]
        kept = select_units(units, titles, limit)
        if not kept:
            return self._cut_best(ranking, units, limit)
        out = assemble(cands, units, kept)
        used = self.context_tokens(out)
        while used > limit and len(kept) > 1:
            kept.remove(min(kept, key=lambda i: (units[i].score, -i)))
            out = assemble(cands, units, kept)
            used = self.context_tokens(out)
        if used > limit:  # one unit and its title still too long together
            return self._cut_best(ranking, units, limit)
        self.drop(ranking.query.qid, "budget", len(cands) - len(out))
        return out

    def _cut_best(self, ranking: Ranking, units: list[Unit], limit: int) -> list[Candidate]:
        best = min(range(len(units)), key=lambda i: (-units[i].score, i))
        u = units[best]
        c = ranking.candidates[u.passage]
        text = self.truncate(c.doc.text[u.start : u.end].strip(), limit)
        meta = {**c.doc.meta, "compressed": {"spans": [(u.start, u.end)], "cut": True, "source_chars": len(c.doc.text)}}
        self.drop(ranking.query.qid, "budget", len(ranking.candidates) - 1)
        return [replace(c, doc=Document(c.doc.docid, text, None, meta))]
