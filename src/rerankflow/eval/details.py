"""Per-query details of an experiment, for the report's drill-down: ``details.json``.

For every system and query: the top ``depth`` candidates with their score history (every
stage's score, :meth:`Candidate.scores`), the full order of document ids (so a report can say
where a document sits in another system's list), and for RAG runs the answer with its
citations and the context actually sent (compressed passages keep the character spans they
were cut from). Query texts, gold answers and the judged grades of the documents shown are
stored once; passage texts once per document (the original text when the corpus is known,
cut to ``TEXT_CHARS`` characters outside answer contexts).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..io.trec import Qrels
from ..types import Document, Ranking

DETAILS_FORMAT = 1
DEPTH = 20
"""Candidates per query and system kept with their texts and score histories."""
TEXT_CHARS = 2000


def details(
    systems: Mapping[str, Sequence[Ranking]],
    qrels: Qrels,
    answers: Mapping[str, Sequence[str]],
    documents: Mapping[str, Document] | None = None,
    depth: int = DEPTH,
) -> dict[str, Any]:
    """The ``details.json`` content for these systems' rankings (see the module docstring)."""
    originals = documents or {}
    queries: dict[str, dict[str, Any]] = {}
    texts: dict[str, dict[str, Any]] = {}
    shown: dict[str, set[str]] = {}
    out: dict[str, dict[str, Any]] = {}
    for name, rankings in systems.items():
        per_query: dict[str, Any] = {}
        for r in rankings:
            qid = r.query.qid
            queries.setdefault(qid, {"text": r.query.text, "gold": list(answers.get(qid, []))})
            top = r.candidates[:depth]
            entry: dict[str, Any] = {
                "ranking": [
                    {
                        "docid": c.docid,
                        "score": _finite(c.score),
                        "scores": {k: _finite(v) for k, v in c.scores().items()},
                    }
                    for c in top
                ],
            }
            if len(r.candidates) > depth:
                entry["order"] = list(r.docids)
            for c in top:
                _keep(texts, c.doc, originals, whole=False)
                shown.setdefault(qid, set()).add(c.docid)
            if r.answer is not None:
                entry["answer"] = _answer(r, texts, originals)
                shown.setdefault(qid, set()).update(d.docid for d in r.answer.context)
            per_query[qid] = entry
        out[name] = per_query
    for qid, q in queries.items():
        judged = qrels.get(qid)
        q["judged"] = judged is not None
        q["grades"] = {d: judged[d] for d in sorted(shown.get(qid, ())) if judged and d in judged}
    return {"format": DETAILS_FORMAT, "depth": depth, "queries": queries, "documents": texts, "systems": out}


def _finite(x: float) -> float | None:
    """``x``, or ``None`` when it is not finite (JSON has no infinities; browsers reject them)."""
    return x if math.isfinite(x) else None


def _answer(r: Ranking, texts: dict[str, dict[str, Any]], originals: Mapping[str, Document]) -> dict[str, Any]:
    assert r.answer is not None
    context = []
    for doc in r.answer.context:
        source = _keep(texts, doc, originals, whole=True)
        compressed = doc.meta.get("compressed") if isinstance(doc.meta, Mapping) else None
        spans = None
        # the spans index the original only when the compressor cut that very text
        if isinstance(compressed, Mapping) and source is not None and compressed.get("source_chars") == len(source):
            spans = [list(s) for s in compressed.get("spans", [])]
        context.append({"docid": doc.docid, "text": doc.text, "spans": spans})
    return {
        "text": r.answer.text,
        "citations": [[c.number, c.docid] for c in r.answer.citations],
        "context": context,
    }


def _keep(
    texts: dict[str, dict[str, Any]], doc: Document, originals: Mapping[str, Document], *, whole: bool
) -> str | None:
    """Store the document's original text (when known) once; returns it (``None`` if only a
    compressed version was seen)."""
    original = originals.get(doc.docid)
    compressed = isinstance(doc.meta, Mapping) and "compressed" in doc.meta
    source = original if original is not None else (None if compressed else doc)
    entry = texts.get(doc.docid)
    if source is None:
        if entry is None:
            texts[doc.docid] = {"title": doc.title, "text": doc.text, "compressed_only": True}
        return None
    if entry is None or entry.get("compressed_only") or (whole and entry.get("cut")):
        cut = not whole and len(source.text) > TEXT_CHARS
        texts[doc.docid] = {"title": source.title, "text": source.text[:TEXT_CHARS] if cut else source.text}
        if cut:
            texts[doc.docid]["cut"] = True
    return source.text
