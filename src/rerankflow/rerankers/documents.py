"""Passage scores to document scores: MaxP, FirstP, SumP (Dai & Callan, SIGIR 2019).

Candidates that are chunks of one document (same ``doc_id`` in their metadata, as the indexer
writes; a candidate without one is its own document) become one candidate whose document id is
the document's and whose score is

* ``maxp``: the best passage score;
* ``firstp``: the score of the document's earliest passage among the candidates (lowest
  ``chunk`` number; Dai & Callan score the document's first passage, which here is the first one
  retrieved);
* ``sump``: the sum of its passages' scores (assumes non-negative scores; with log-probabilities
  use ``maxp``).

The new candidate carries the text and metadata of its best passage (so a generator cites the
document and that passage's offsets) and lists every passage under ``meta["passages"]``.
Ties keep the order of each document's first appearance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from pydantic import Field

from ..options import StageOptions
from ..stage import Transformer
from ..types import Candidate, Document, Ranking, sort_candidates

Method = Literal["maxp", "firstp", "sump"]


class DocumentsOptions(StageOptions):
    """Aggregate passage candidates into document candidates."""

    method: Method = Field("maxp", description="maxp: best passage; firstp: earliest passage; sump: sum of passages")
    k: int | None = Field(None, ge=1, description="documents kept per query (default: all)")


def document_of(c: Candidate) -> str:
    """The id of the document a candidate belongs to (its own id when it is not a chunk)."""
    return str(c.doc.meta.get("doc_id", c.docid))


class DocumentAggregator(Transformer):
    """Turns a passage ranking into a document ranking (see the module docstring)."""

    Options = DocumentsOptions

    def __init__(self, options: DocumentsOptions | None = None, **settings: object) -> None:
        self.options = DocumentsOptions.build(options, settings, "documents")

    @property
    def name(self) -> str:
        """Provenance name."""
        return f"documents:{self.options.method}"

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """One document candidate per document, sorted by the aggregated score."""
        return [self._one(r) for r in batch]

    def _one(self, ranking: Ranking) -> Ranking:
        groups: dict[str, list[Candidate]] = {}
        for c in ranking.candidates:
            groups.setdefault(document_of(c), []).append(c)
        out = []
        for doc_id, passages in groups.items():
            best = passages[0]  # candidates arrive best first
            method = self.options.method
            if method == "maxp":
                score = best.score
            elif method == "firstp":
                score = min(passages, key=lambda c: int(c.doc.meta.get("chunk", 0))).score
            else:
                score = sum(c.score for c in passages)
            listed = [
                {"docid": c.docid, "score": c.score, "start": c.doc.meta.get("start"), "end": c.doc.meta.get("end")}
                for c in passages
            ]
            doc = Document(doc_id, best.doc.text, best.doc.title, {**best.doc.meta, "passages": listed})
            out.append(replace(best, doc=doc).rescored(score, self.name))
        ranked = sort_candidates(out)
        if self.options.k is not None:
            ranked = ranked[: self.options.k]
        return replace(ranking, candidates=ranked)
