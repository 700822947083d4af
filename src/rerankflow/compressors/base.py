"""What every compressor shares: the token budget, per-query accounting, and unit selection.

A compressor is a stage between reranking and generation. It receives rankings and returns
them with fewer candidates and/or shorter passages; kept candidates keep their document id,
score and history, so citations of the generated answer still point at the source passage.
Tokens are counted with the generator's tokenizer (``tokenizer=``: its backend, or anything
with ``count_tokens`` and ``truncate``) over what the generator will read:
:func:`~rerankflow.types.document_text` (title and text).

The budget is ``max_tokens`` and/or ``ratio`` (a fraction of the incoming context's tokens);
with both, the smaller limit applies. Every compressor takes the same shape: its models
positionally, then ``tokenizer=``, ``max_tokens=``/``ratio=`` and its own settings (or an
``options`` object of its ``Options``).
"""

from __future__ import annotations

import math
import threading
from abc import abstractmethod
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

from pydantic import Field, model_validator

from ..errors import DataError
from ..options import StageOptions
from ..stage import Transformer
from ..types import CallCost, Candidate, Compression, Document, LLMUsage, Ranking, StageRecord, document_text

Overflow = Literal["skip", "stop"]
K = TypeVar("K")
V = TypeVar("V")


class Tokenizes(Protocol):
    """What a compressor counts and cuts tokens with (every LLM backend has both)."""

    def count_tokens(self, text: str) -> int:
        """Number of tokens of ``text``."""
        ...

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` with at most ``max_tokens`` tokens."""
        ...


class CompressorOptions(StageOptions):
    """The token budget every compressor takes (counted with the generator's tokenizer)."""

    max_tokens: int | None = Field(None, ge=1, description="keep at most this many context tokens")
    ratio: float | None = Field(None, gt=0, le=1, description="keep at most this fraction of the incoming tokens")

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


class BudgetedOptions(CompressorOptions):
    """Options of compressors that only make sense with a budget."""

    @model_validator(mode="after")
    def _has_budget(self) -> BudgetedOptions:
        if self.unlimited:
            raise ValueError("needs a budget: set max_tokens (tokens kept) and/or ratio (fraction kept)")
        return self


class Memo(Generic[K, V]):
    """A bounded, thread-safe memo (least recently used entries go first), for answers keyed
    by text that a compressor would otherwise ask the model again (a budget sweep re-runs
    the same passages). Not per-query state: any query may read any entry."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V:
        """The value stored under ``key`` (a KeyError when absent)."""
        with self._lock:
            self._items.move_to_end(key)
            return self._items[key]

    def values(self) -> list[V]:
        """The stored values, least recently used first."""
        with self._lock:
            return list(self._items.values())

    def put(self, key: K, value: V) -> None:
        """Store ``value``, evicting the least recently used entry past ``max_entries``."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)


class QueryNotes:
    """What a compressor notes about one query during one call: the incoming tokens, the
    limit they give, passages dropped by reason, LLM calls made and outputs repaired.
    Local to one :meth:`Compressor.transform` call; the results go to the ranking's trace.
    """

    def __init__(self, tokens_in: int, limit: int | None) -> None:
        self.tokens_in = tokens_in
        self.limit = limit
        self.drops: Counter[str] = Counter()
        self.calls: list[CallCost] = []
        self.repairs: Counter[str] = Counter()

    def drop(self, reason: str, n: int = 1) -> None:
        """Record ``n`` passages left out for ``reason``."""
        if n:
            self.drops[reason] += n


class Compressor(Transformer):
    """Base class: subclasses implement :meth:`compress`; this class counts tokens in and
    out and the passages dropped (by reason) per query, and appends them to each ranking's
    trace (with the LLM usage of ``calls_llm`` compressors and the repairs of
    ``repairs_output`` ones).
    """

    stage_name = "compressor"
    calls_llm: ClassVar[bool] = False
    repairs_output: ClassVar[bool] = False
    Options: ClassVar[type[CompressorOptions]] = CompressorOptions
    options: CompressorOptions

    def __init__(self, tokenizer: Tokenizes, options: CompressorOptions | None, settings: dict[str, Any]) -> None:
        self.options = self.Options.build(options, settings, self.stage_name)
        self.tokenizer = tokenizer

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` (the generator's tokenizer)."""
        return self.tokenizer.count_tokens(text)

    def context_tokens(self, candidates: Sequence[Candidate]) -> int:
        """Tokens the generator would read for these passages."""
        return sum(self.count_tokens(document_text(c.doc)) for c in candidates)

    def fit(self, notes: QueryNotes, candidates: Sequence[Candidate], overflow: Overflow = "skip") -> list[Candidate]:
        """Keep candidates in order while they fit the query's limit (``None``: all). A passage
        that does not fit is skipped (``skip``: later, shorter ones may fit) or ends the
        selection (``stop``); either way it is counted as dropped for ``budget``.
        """
        if notes.limit is None:
            return list(candidates)
        kept, used = [], 0
        for i, c in enumerate(candidates):
            size = self.count_tokens(document_text(c.doc))
            if used + size > notes.limit:
                if overflow == "stop":
                    notes.drop("budget", len(candidates) - i)
                    break
                notes.drop("budget")
                continue
            kept.append(c)
            used += size
        return kept

    @abstractmethod
    def compress(self, batch: Sequence[Ranking], notes: Sequence[QueryNotes]) -> list[list[Candidate]]:
        """The kept (possibly shortened) candidates of each ranking, in reading order;
        ``notes[i]`` is where ranking ``i``'s limit is read and its drops and calls recorded."""

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
        notes = []
        for r in batch:
            tokens_in = self.context_tokens(r.candidates)
            notes.append(QueryNotes(tokens_in, self.options.limit(tokens_in)))
        kept_lists = self.compress(batch, notes)
        return [
            r.with_candidates(kept).recorded(self._record(r, kept, n))
            for r, kept, n in zip(batch, kept_lists, notes, strict=True)
        ]

    def _record(self, ranking: Ranking, kept: Sequence[Candidate], notes: QueryNotes) -> StageRecord:
        compression = Compression(
            notes.tokens_in, self.context_tokens(kept), len(ranking.candidates), len(kept), dict(notes.drops)
        )
        return StageRecord(
            self.name,
            usage=LLMUsage.of(notes.calls) if self.calls_llm else None,
            repairs=dict(notes.repairs) if self.repairs_output else None,
            compression=compression,
        )


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
    totals = Counter(u.passage for u in units)
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

    Options: ClassVar[type[CompressorOptions]] = BudgetedOptions

    @abstractmethod
    def score_units(self, batch: Sequence[Ranking], notes: Sequence[QueryNotes]) -> list[list[Unit]]:
        """The units of every ranking's passages, with scores (higher: keep first)."""

    def compress(self, batch: Sequence[Ranking], notes: Sequence[QueryNotes]) -> list[list[Candidate]]:
        """Select units per query within its limit and rebuild the passages."""
        scored = self.score_units(batch, notes)
        return [self._select(r, units, n) for r, units, n in zip(batch, scored, notes, strict=True)]

    def _select(self, ranking: Ranking, units: list[Unit], notes: QueryNotes) -> list[Candidate]:
        cands = ranking.candidates
        limit = notes.limit
        if not units or limit is None:
            notes.drop("no text", len(cands))
            return []
        titles = [self.count_tokens(c.doc.title) if c.doc.title else 0 for c in cands]
        kept = select_units(units, titles, limit)
        if not kept:
            return self._cut_best(ranking, units, limit, notes)
        out = assemble(cands, units, kept)
        used = self.context_tokens(out)
        while used > limit and len(kept) > 1:
            kept.remove(min(kept, key=lambda i: (units[i].score, -i)))
            out = assemble(cands, units, kept)
            used = self.context_tokens(out)
        if used > limit:  # one unit and its title still too long together
            return self._cut_best(ranking, units, limit, notes)
        notes.drop("budget", len(cands) - len(out))
        return out

    def _cut_best(self, ranking: Ranking, units: list[Unit], limit: int, notes: QueryNotes) -> list[Candidate]:
        best = min(range(len(units)), key=lambda i: (-units[i].score, i))
        u = units[best]
        c = ranking.candidates[u.passage]
        text = self.tokenizer.truncate(c.doc.text[u.start : u.end].strip(), limit)
        meta = {**c.doc.meta, "compressed": {"spans": [(u.start, u.end)], "cut": True, "source_chars": len(c.doc.text)}}
        notes.drop("budget", len(ranking.candidates) - 1)
        return [replace(c, doc=Document(c.doc.docid, text, None, meta))]
