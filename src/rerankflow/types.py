"""The shared vocabulary: queries, documents, scored candidates and rankings.

All types are frozen. A :class:`Ranking` keeps its candidates sorted by descending score and
the rank of a candidate is its index in that tuple, so ranks are **0-based** (``FIRST_RANK``).
TREC run files are 1-based; the writer adds one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal, Protocol

FIRST_RANK = 0
"""Rank of the best candidate of a ranking (ranks are tuple indices)."""

EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Turn:
    """One earlier message of a conversation: ``role`` is ``system``, ``user`` or ``assistant``."""

    role: str
    text: str


@dataclass(frozen=True, slots=True)
class Query:
    """A query (topic) with its identifier.

    ``filter`` restricts what retrievers may return for this query (a metadata filter, see
    ``rerankflow.retrievers.filters``; a chat request's ``filter``); it adds to a retriever's own.
    In a conversation, ``history`` holds the messages before this one, oldest first; after a
    ``condense`` stage ``text`` is the standalone query that was searched and ``original`` the
    message as the user wrote it.
    """

    qid: str
    text: str
    filter: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    history: tuple[Turn, ...] = ()
    original: str | None = None
    deadline: float | None = field(default=None, compare=False, hash=False)
    """When a request's time runs out, on this process's ``time.monotonic()`` clock (a served
    request's ``budget_ms``); anytime rerankers return their best ranking by then."""

    @property
    def asked(self) -> str:
        """The message as the user wrote it (``text`` unless a stage rewrote the query)."""
        return self.text if self.original is None else self.original


@dataclass(frozen=True, slots=True)
class Document:
    """A passage or document. Scores never live here; see :class:`Candidate`."""

    docid: str
    text: str
    title: str | None = None
    meta: Mapping[str, Any] = field(default_factory=lambda: EMPTY, compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A document with the score the latest stage gave it.

    ``history`` keeps the provenance: ``(stage_name, score)`` pairs of every earlier stage
    that scored this candidate, oldest first (the current score is not repeated there).
    ``rank_derived`` says the score only encodes a rank (e.g. ``1/(rank+1)`` of a listwise
    reranker) and carries no calibrated relevance.
    """

    doc: Document
    score: float
    stage: str = ""
    history: tuple[tuple[str, float], ...] = ()
    rank_derived: bool = False

    @property
    def docid(self) -> str:
        """Identifier of the underlying document."""
        return self.doc.docid

    @property
    def text(self) -> str:
        """Text of the underlying document."""
        return self.doc.text

    def rescored(self, score: float, stage: str, *, rank_derived: bool = False) -> Candidate:
        """Return this candidate with a new score from ``stage``, pushing the old one to history."""
        history = (*self.history, (self.stage, self.score)) if self.stage else self.history
        return Candidate(self.doc, float(score), stage, history, rank_derived)

    def scores(self) -> dict[str, float]:
        """All scores this candidate received, by stage name (the latest included)."""
        out = dict(self.history)
        if self.stage:
            out[self.stage] = self.score
        return out


@dataclass(frozen=True, slots=True)
class Citation:
    """A citation marker ``[number]`` of an answer and the document it points to.

    ``number`` is 1-based, as printed in the prompt's context; ``docid`` is ``None`` when the
    model cited a number that was not in the context (kept, so nothing is silently dropped).
    """

    number: int
    docid: str | None


@dataclass(frozen=True, slots=True)
class Answer:
    """A generated answer with its provenance.

    ``context`` holds the passages actually sent, in prompt order (``context[n-1]`` is
    passage ``[n]``); ``citations`` the markers found in ``text``, in order of first use.
    """

    text: str
    citations: tuple[Citation, ...] = ()
    context: tuple[Document, ...] = ()
    prompt: str = ""
    prompt_tokens: int = 0
    context_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str | None = None

    @property
    def cited_docids(self) -> list[str]:
        """Distinct valid cited document ids, in order of first citation."""
        seen: dict[str, None] = {}
        for c in self.citations:
            if c.docid is not None:
                seen.setdefault(c.docid, None)
        return list(seen)


class CallCost(Protocol):
    """What a backend call reports about its cost (``backends.types.CallStats`` has it)."""

    @property
    def prompt_tokens(self) -> int: ...  # noqa: D102
    @property
    def output_tokens(self) -> int: ...  # noqa: D102
    @property
    def latency_s(self) -> float: ...  # noqa: D102


@dataclass(frozen=True, slots=True)
class LLMUsage:
    """LLM calls one stage made for one query: count, tokens, summed call latency."""

    calls: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0

    @classmethod
    def of(cls, calls: Iterable[CallCost]) -> LLMUsage:
        """The usage of these finished calls."""
        n = p = o = 0
        t = 0.0
        for c in calls:
            n, p, o, t = n + 1, p + c.prompt_tokens, o + c.output_tokens, t + c.latency_s
        return cls(n, p, o, t)

    def __add__(self, other: LLMUsage) -> LLMUsage:
        return LLMUsage(
            self.calls + other.calls,
            self.prompt_tokens + other.prompt_tokens,
            self.output_tokens + other.output_tokens,
            self.latency_s + other.latency_s,
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "latency_s": self.latency_s,
        }


@dataclass(frozen=True, slots=True)
class Compression:
    """What a compressor did to one query's context (tokens counted with the generator's
    tokenizer); ``dropped`` counts passages left out, by reason (``budget``, ``duplicate``...)."""

    tokens_in: int = 0
    tokens_out: int = 0
    passages_in: int = 0
    passages_out: int = 0
    dropped: Mapping[str, int] = field(default_factory=lambda: EMPTY)

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        return {
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "passages_in": self.passages_in,
            "passages_out": self.passages_out,
            "dropped": dict(self.dropped),
        }


CacheUse = Literal["hit", "computed", "corrupt"]
"""How the stage cache answered a query: from disk, computed, or recomputed over a corrupt entry."""


@dataclass(frozen=True, slots=True)
class BudgetUse:
    """How a budget shaped one query's reranking: the head it reranked (``depth``, chosen to
    fit the budget), what ended the work early (``stopped``: ``seconds``, ``calls``, ``tokens``
    or ``None`` when it finished), the work left undone by kind (``windows``, ``blocks``,
    ``extractions``, ``passes``, ``candidates``), and whether the result depended on the clock
    (``timed``: a seconds budget or a request deadline; such results are never cached)."""

    depth: int
    stopped: str | None = None
    left: Mapping[str, int] = field(default_factory=lambda: EMPTY)
    timed: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        return {"depth": self.depth, "stopped": self.stopped, "left": dict(self.left), "timed": self.timed}


@dataclass(frozen=True, slots=True)
class StageRecord:
    """What one stage learned about one query, kept in :attr:`Ranking.trace`.

    ``usage`` is set by stages that call an LLM (zero calls included), ``repairs`` by stages
    that repair model output (an empty mapping: nothing needed repair; ``None``: the stage
    never repairs), ``compression`` by compressors, ``cache`` by the stage cache, ``decisions``
    by query-side stages (``condense``, ``gate``) and cascades, ``budget`` by rerankers under a budget.
    """

    stage: str
    usage: LLMUsage | None = None
    repairs: Mapping[str, int] | None = None
    compression: Compression | None = None
    cache: CacheUse | None = None
    decisions: Mapping[str, str | bool] | None = None
    """What a query-side stage decided: the query it searched, whether retrieval runs."""
    budget: BudgetUse | None = None
    """Set by a reranker that ran under a budget."""


@dataclass(frozen=True, slots=True)
class Ranking:
    """A query with its candidates, best first. ``candidates[i]`` has rank ``i`` (0-based).

    After a generator stage, ``answer`` holds the generated answer (``None`` before).
    A stage placed after a context-reordering stage sees candidates in reading order.
    ``trace`` holds what the stages learned about this query (usage, repairs, compression,
    cache use), one :class:`StageRecord` per reporting stage, in execution order.
    """

    query: Query
    candidates: tuple[Candidate, ...] = ()
    answer: Answer | None = None
    trace: tuple[StageRecord, ...] = ()

    @classmethod
    def from_documents(cls, query: Query, documents: Iterable[Document], stage: str = "input") -> Ranking:
        """``documents`` as the candidates of ``query`` in the order given (scores descend from
        the number of documents, so the order is the ranking's)."""
        docs = list(documents)
        n = len(docs)
        return cls(query, tuple(Candidate(d, float(n - i), stage) for i, d in enumerate(docs)))

    def __len__(self) -> int:
        return len(self.candidates)

    @property
    def docids(self) -> list[str]:
        """Document ids in rank order."""
        return [c.doc.docid for c in self.candidates]

    def top(self, k: int) -> Ranking:
        """The first ``k`` candidates."""
        return replace(self, candidates=self.candidates[:k])

    def with_candidates(self, candidates: Iterable[Candidate]) -> Ranking:
        """Same query (and answer), new candidates (kept in the given order)."""
        return replace(self, candidates=tuple(candidates))

    def with_answer(self, answer: Answer) -> Ranking:
        """Same query and candidates, with a generated answer."""
        return replace(self, answer=answer)

    def recorded(self, *records: StageRecord) -> Ranking:
        """This ranking with ``records`` appended to its trace."""
        return replace(self, trace=(*self.trace, *records))

    @property
    def retrieval_skipped(self) -> bool:
        """A ``gate`` stage decided this query needs no search (retrievers pass it through)."""
        return any(r.decisions is not None and r.decisions.get("retrieve") is False for r in self.trace)


def document_text(doc: Document) -> str:
    """The text models and indexes see for a document: title, newline, text (or just text)."""
    return f"{doc.title}\n{doc.text}" if doc.title else doc.text


def one_line(text: str) -> str:
    """Collapse all whitespace (newlines included) to single spaces, so a passage is one line."""
    return " ".join(text.split())


def sort_candidates(candidates: Iterable[Candidate]) -> tuple[Candidate, ...]:
    """Sort by descending score; ties keep their incoming order (stable sort)."""
    return tuple(sorted(candidates, key=lambda c: -c.score))


def rescore(ranking: Ranking, scores: Iterable[float], stage: str, *, rank_derived: bool = False) -> Ranking:
    """Give each candidate of ``ranking`` its new score (same order as the candidates) and sort."""
    scored = [c.rescored(s, stage, rank_derived=rank_derived) for c, s in zip(ranking.candidates, scores, strict=True)]
    return ranking.with_candidates(sort_candidates(scored))


def as_rankings(topics: Iterable[Ranking | Query | str]) -> list[Ranking]:
    """Topics as rankings: rankings as they are, queries with no candidates, strings as
    queries with ids ``q0``, ``q1``... (by position)."""
    out = []
    for i, t in enumerate(topics):
        if isinstance(t, str):
            t = Query(f"q{i}", t)
        out.append(t if isinstance(t, Ranking) else Ranking(t))
    return out
