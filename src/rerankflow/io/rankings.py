"""Rankings as plain JSON data and back, losslessly (scores, history, answers, citations, trace).

Used by the stage cache and by executors that move rankings between processes. Floats
survive the round trip exactly (JSON keeps ``repr`` precision; infinities and NaN are written
as ``Infinity``/``NaN``, which Python's ``json`` reads back). ``Document.meta`` must hold JSON
values; anything else is written as its ``str``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import DataError
from ..types import (
    Answer,
    BudgetUse,
    Candidate,
    Citation,
    Compression,
    Document,
    LLMUsage,
    Query,
    Ranking,
    StageRecord,
    Turn,
)


def document_to_dict(doc: Document) -> dict[str, Any]:
    """Plain data of a document (``meta`` only when it is not empty)."""
    out: dict[str, Any] = {"docid": doc.docid, "text": doc.text, "title": doc.title}
    if doc.meta:
        out["meta"] = dict(doc.meta)
    return out


def document_from_dict(data: Mapping[str, Any]) -> Document:
    """Inverse of :func:`document_to_dict`."""
    return Document(data["docid"], data["text"], data.get("title"), dict(data.get("meta") or {}))


def record_to_dict(record: StageRecord) -> dict[str, Any]:
    """Plain data of a trace record (only the fields that are set)."""
    out: dict[str, Any] = {"stage": record.stage}
    if record.usage is not None:
        out["usage"] = record.usage.as_dict()
    if record.repairs is not None:
        out["repairs"] = dict(record.repairs)
    if record.compression is not None:
        out["compression"] = record.compression.as_dict()
    if record.cache is not None:
        out["cache"] = record.cache
    if record.decisions is not None:
        out["decisions"] = dict(record.decisions)
    if record.budget is not None:
        out["budget"] = record.budget.as_dict()
    return out


def record_from_dict(data: Mapping[str, Any]) -> StageRecord:
    """Inverse of :func:`record_to_dict` (malformed data raises KeyError/TypeError/ValueError)."""
    usage = data.get("usage")
    compression = data.get("compression")
    repairs = data.get("repairs")
    budget = data.get("budget")
    return StageRecord(
        str(data["stage"]),
        LLMUsage(**usage) if usage is not None else None,
        {str(k): int(v) for k, v in repairs.items()} if repairs is not None else None,
        Compression(**{**compression, "dropped": dict(compression["dropped"])}) if compression is not None else None,
        data.get("cache"),
        dict(data["decisions"]) if data.get("decisions") is not None else None,
        BudgetUse(
            int(budget["depth"]),
            budget.get("stopped"),
            {str(k): int(v) for k, v in budget["left"].items()},
            bool(budget.get("timed", False)),
        )
        if budget is not None
        else None,
    )


def ranking_to_dict(ranking: Ranking, *, trace: bool = True) -> dict[str, Any]:
    """Plain data of a ranking: query, candidates (score, stage, history), answer, and its
    trace unless ``trace`` is false (the stage cache keys inputs without it)."""
    out: dict[str, Any] = {
        "qid": ranking.query.qid,
        "query": ranking.query.text,
        "candidates": [
            {
                "doc": document_to_dict(c.doc),
                "score": c.score,
                "stage": c.stage,
                "history": [[s, v] for s, v in c.history],
                "rank_derived": c.rank_derived,
            }
            for c in ranking.candidates
        ],
    }
    if ranking.query.filter:
        out["filter"] = dict(ranking.query.filter)
    if ranking.query.history:
        out["history"] = [[t.role, t.text] for t in ranking.query.history]
    if ranking.query.original is not None:
        out["original"] = ranking.query.original
    a = ranking.answer
    if a is not None:
        out["answer"] = {
            "text": a.text,
            "citations": [[c.number, c.docid] for c in a.citations],
            "context": [document_to_dict(d) for d in a.context],
            "prompt": a.prompt,
            "prompt_tokens": a.prompt_tokens,
            "context_tokens": a.context_tokens,
            "output_tokens": a.output_tokens,
            "latency_s": a.latency_s,
            "finish_reason": a.finish_reason,
        }
    if trace and ranking.trace:
        out["trace"] = [record_to_dict(r) for r in ranking.trace]
    return out


def ranking_from_dict(data: Mapping[str, Any]) -> Ranking:
    """Inverse of :func:`ranking_to_dict`; malformed data is a :class:`DataError`."""
    try:
        candidates = tuple(
            Candidate(
                document_from_dict(c["doc"]),
                float(c["score"]),
                c["stage"],
                tuple((s, float(v)) for s, v in c["history"]),
                bool(c["rank_derived"]),
            )
            for c in data["candidates"]
        )
        answer = None
        if data.get("answer") is not None:
            a = data["answer"]
            answer = Answer(
                a["text"],
                tuple(Citation(int(n), d) for n, d in a["citations"]),
                tuple(document_from_dict(d) for d in a["context"]),
                a["prompt"],
                int(a["prompt_tokens"]),
                int(a["context_tokens"]),
                int(a["output_tokens"]),
                float(a["latency_s"]),
                a["finish_reason"],
            )
        records = tuple(record_from_dict(r) for r in data.get("trace") or ())
        history = tuple(Turn(str(role), str(text)) for role, text in data.get("history") or ())
        query = Query(data["qid"], data["query"], data.get("filter"), history, data.get("original"))
        return Ranking(query, candidates, answer, records)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"not a serialised ranking ({type(exc).__name__}: {exc})") from None
