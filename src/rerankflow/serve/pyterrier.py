"""PyTerrier, both ways (PyTerrier's core package, no Java): any rerankflow stage or pipeline
as a ``pt.Transformer`` (DataFrame in and out with ``qid``, ``query``, ``docno``, ``text``,
``score``, ``rank``), and any PyTerrier transformer as a rerankflow stage. Needs
``pip install pyterrier``.

A frame without ``docno`` holds queries only (what a retriever takes); a frame of results is
read by :func:`~rerankflow.io.frames.rankings_from_frame` (by ``rank``, else by ``score``), so
a query with no results leaves the frame. Queries keep what rerankflow knows of them (filters,
conversation) when a PyTerrier transformer runs inside a rerankflow pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..errors import MissingDependencyError
from ..io.frames import rankings_from_frame, rankings_to_frame
from ..stage import Transformer
from ..types import Candidate, Query, Ranking

try:
    import pandas as pd
    import pyterrier as pt
except ImportError as exc:  # pragma: no cover  (the extra is part of the dev install)
    raise MissingDependencyError(exc.name or "pyterrier", "pyterrier") from None


def _rankings(frame: pd.DataFrame, stage: str) -> list[Ranking]:
    """A PyTerrier frame as rankings (queries only when it has no ``docno``)."""
    if "docno" not in frame.columns:
        seen = frame.drop_duplicates("qid")
        return [Ranking(Query(str(q), str(t))) for q, t in zip(seen["qid"], seen["query"], strict=True)]
    return rankings_from_frame(frame, stage)


class RerankflowTransformer(pt.Transformer):
    """A rerankflow stage (or pipeline) as a PyTerrier transformer."""

    def __init__(self, stage: Transformer) -> None:
        self.stage = stage

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """Run the stage on the frame's queries (and their results)."""
        return rankings_to_frame(self.stage(_rankings(inp, "input")))

    def __repr__(self) -> str:
        return f"RerankflowTransformer({self.stage!r})"


class PyTerrierStage(Transformer):
    """A PyTerrier transformer as a rerankflow stage: the batch goes in as a frame (queries
    only when no ranking has candidates) and comes back as rankings, one per query, same order."""

    def __init__(self, transformer: Any, name: str = "pyterrier") -> None:
        self.transformer = transformer
        self._name = name

    @property
    def name(self) -> str:
        """The stage's name in score provenance (``pyterrier`` unless given)."""
        return self._name

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Run the PyTerrier transformer; queries it returned nothing for keep no candidates."""
        if any(len(r) for r in batch):
            frame = rankings_to_frame(batch)
        else:
            frame = pd.DataFrame({"qid": [r.query.qid for r in batch], "query": [r.query.text for r in batch]})
        found = {r.query.qid: r for r in rankings_from_frame(self.transformer(frame), self.name)}
        return [replace(r, candidates=_continued(r, found[r.query.qid]) if r.query.qid in found else ()) for r in batch]


def _continued(before: Ranking, after: Ranking) -> tuple[Candidate, ...]:
    """The PyTerrier stage's candidates; a document that was already a candidate keeps its
    document (metadata included) and its score history."""
    old = {c.docid: c for c in before.candidates}
    return tuple(
        replace(c, doc=old[c.docid].doc, history=(*old[c.docid].history, (old[c.docid].stage, old[c.docid].score)))
        if c.docid in old
        else c
        for c in after.candidates
    )


def as_pyterrier(stage: Transformer) -> RerankflowTransformer:
    """``stage`` as a PyTerrier transformer (``bm25 >> as_pyterrier(reranker)`` in PyTerrier)."""
    return RerankflowTransformer(stage)


def from_pyterrier(transformer: Any, name: str = "pyterrier") -> PyTerrierStage:
    """A PyTerrier transformer as a rerankflow stage."""
    return PyTerrierStage(transformer, name)
