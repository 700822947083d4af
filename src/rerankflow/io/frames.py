"""Rankings and result tables as pandas DataFrames, in PyTerrier's column names, which is how
IR researchers inspect results: one row per (query, document) with ``qid``, ``query``,
``docno``, ``text``, ``score`` and ``rank`` (0-based, as PyTerrier counts), plus ``title``
when a document has one. pandas is imported on use (``pip install pandas``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..errors import DataError, MissingDependencyError
from ..types import Candidate, Document, Query, Ranking

COLUMNS = ("qid", "query", "docno", "text", "score", "rank")


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:
        raise MissingDependencyError("pandas", "frames") from exc
    return pandas


def rankings_to_frame(rankings: Sequence[Ranking]) -> Any:
    """One row per candidate, best first within each query, queries in the given order."""
    rows: list[dict[str, Any]] = []
    titled = any(c.doc.title for r in rankings for c in r.candidates)
    for r in rankings:
        for rank, c in enumerate(r.candidates):
            row = {"qid": r.query.qid, "query": r.query.text, "docno": c.docid, "text": c.doc.text,
                   "score": c.score, "rank": rank}  # fmt: skip
            if titled:
                row["title"] = c.doc.title
            rows.append(row)
    return _pandas().DataFrame(rows, columns=[*COLUMNS, *(["title"] if titled else [])])


def rankings_from_frame(frame: Any, stage: str = "frame") -> list[Ranking]:
    """Rankings from a frame with ``qid``, ``query`` and ``docno`` (``text``, ``title``,
    ``score`` and ``rank`` when present): queries in order of first appearance; candidates
    ordered by ``rank`` when given, else by descending ``score``, else as they appear (then
    scored by position). A query with no documents is a row whose ``docno`` is missing."""
    missing = [c for c in ("qid", "query", "docno") if c not in frame.columns]
    if missing:
        raise DataError(f"the frame lacks the columns {missing}; it needs qid, query and docno (PyTerrier's names)")
    order: list[str] = []
    groups: dict[str, list[dict[str, Any]]] = {}
    texts: dict[str, str] = {}
    for row in frame.to_dict("records"):
        qid = str(row["qid"])
        if qid not in groups:
            order.append(qid)
            groups[qid] = []
            texts[qid] = str(row["query"])
        elif str(row["query"]) != texts[qid]:
            raise DataError(f"query {qid!r} has two texts: {texts[qid]!r} and {row['query']!r}")
        if not _missing(row["docno"]):
            groups[qid].append(row)
    out = []
    for qid in order:
        rows = groups[qid]
        if "rank" in frame.columns:
            rows = sorted(rows, key=lambda r: r["rank"])
        elif "score" in frame.columns:
            rows = sorted(rows, key=lambda r: -r["score"])
        candidates = []
        for i, row in enumerate(rows):
            text = "" if _missing(row.get("text")) else str(row["text"])
            title = None if _missing(row.get("title")) else str(row["title"])
            score = float(row["score"]) if "score" in row and not _missing(row["score"]) else float(len(rows) - i)
            candidates.append(Candidate(Document(str(row["docno"]), text, title), score, stage))
        out.append(Ranking(Query(qid, texts[qid]), tuple(candidates)))
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
