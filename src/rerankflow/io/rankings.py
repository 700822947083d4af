"""Rankings as plain JSON data and back, losslessly (scores, history, answers, citations).

Used by the stage cache and by executors that move rankings between processes. Floats
survive the round trip exactly (JSON keeps ``repr`` precision; infinities and NaN are written
as ``Infinity``/``NaN``, which Python's ``json`` reads back). ``Document.meta`` must hold JSON
values; anything else is written as its ``str``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import DataError
from ..types import Answer, Candidate, Citation, Document, Query, Ranking


def document_to_dict(doc: Document) -> dict[str, Any]:
    """Plain data of a document (``meta`` only when it is not empty)."""
    out: dict[str, Any] = {"docid": doc.docid, "text": doc.text, "title": doc.title}
    if doc.meta:
        out["meta"] = dict(doc.meta)
    return out


def document_from_dict(data: Mapping[str, Any]) -> Document:
    """Inverse of :func:`document_to_dict`."""
    return Document(data["docid"], data["text"], data.get("title"), dict(data.get("meta") or {}))


def ranking_to_dict(ranking: Ranking) -> dict[str, Any]:
    """Plain data of a ranking: query, candidates (score, stage, history), answer."""
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
        return Ranking(Query(data["qid"], data["query"]), candidates, answer)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"not a serialised ranking ({type(exc).__name__}: {exc})") from None
