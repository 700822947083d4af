"""JSONL documents and the ``{"query", "hits": [...]}`` reranking format (rank_llm's)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..types import Candidate, Document, Query, Ranking
from .files import atomic_write, numbered_lines

ID_KEYS = ("docid", "_id", "id", "pid")
TEXT_KEYS = ("text", "contents", "content", "passage")


def _pick(obj: dict[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        if key in obj:
            return obj[key]
    return None


def read_documents(path: str | Path) -> list[Document]:
    """Read a JSONL corpus: one object a line with an id (``docid``/``_id``/``id``/``pid``),
    text (``text``/``contents``/``content``/``passage``) and optional ``title``; other keys go
    to ``meta``. Blank lines are skipped; duplicate ids are errors.
    """
    docs: list[Document] = []
    seen: dict[str, int] = {}
    for lineno, line in numbered_lines(path, what="corpus"):
        if not line.strip():
            continue
        obj = json_object(line, path, lineno)
        docid, text = _pick(obj, ID_KEYS), _pick(obj, TEXT_KEYS)
        if docid is None or text is None:
            raise DataError(
                f"each line needs an id ({'/'.join(ID_KEYS)}) and a text ({'/'.join(TEXT_KEYS)}); found keys {sorted(obj)}",
                file=path,
                line=lineno,
            )
        if not isinstance(text, str):
            raise DataError(f"text must be a string, got {type(text).__name__}", file=path, line=lineno)
        docid = str(docid)
        if docid in seen:
            raise DataError(
                f"duplicate document id {docid!r} (first on line {seen[docid]})",
                file=path,
                line=lineno,
            )
        seen[docid] = lineno
        title = obj.get("title") or None
        meta = {k: v for k, v in obj.items() if k not in (*ID_KEYS, *TEXT_KEYS, "title")}
        docs.append(Document(docid, text, str(title) if title is not None else None, meta))
    if not docs:
        raise DataError("the corpus is empty: no documents found", file=path)
    return docs


def write_documents(path: str | Path, docs: Iterable[Document]) -> None:
    """Write documents as JSONL (``docid``, ``text``, ``title``, plus ``meta`` keys)."""
    with atomic_write(path) as fh:
        for d in docs:
            obj: dict[str, Any] = {"docid": d.docid, "text": d.text}
            if d.title is not None:
                obj["title"] = d.title
            obj.update(d.meta)
            fh.write(json.dumps(obj, ensure_ascii=False) + "\n")


def read_queries_jsonl(path: str | Path) -> list[Query]:
    """Read BEIR-style ``queries.jsonl`` (``_id``/``id``/``qid`` and ``text``)."""
    out = []
    for lineno, line in numbered_lines(path, what="queries"):
        if not line.strip():
            continue
        obj = json_object(line, path, lineno)
        qid, text = _pick(obj, ("_id", "qid", "id")), obj.get("text", obj.get("query"))
        if qid is None or not isinstance(text, str):
            raise DataError("each line needs an id (_id/qid/id) and a text string", file=path, line=lineno)
        if not text.strip():
            raise DataError(f"query {qid!r} is empty", file=path, line=lineno)
        out.append(Query(str(qid), text))
    if not out:
        raise DataError("no queries found", file=path)
    return out


def read_json(path: Path) -> Any:
    """A whole JSON document; bad JSON or bad UTF-8 is a :class:`DataError` naming file and line."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON: {exc.msg}", file=path, line=exc.lineno) from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"not valid UTF-8 ({exc.reason})", file=path) from exc


def read_hits(path: str | Path) -> list[Ranking]:
    """Read the JSON reranking format: a list of ``{"query": str, "hits": [{"qid", "docid",
    "content", "score", "rank"}, ...]}`` (as in ``../shared/data/trec-dl/bm25_dl19.json``).
    Hits keep their file order; scores come from the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("hits file not found", file=path)
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError('expected a JSON list of {"query": ..., "hits": [...]} objects', file=path)
    rankings = []
    for i, item in enumerate(data):
        where = f"entry {i}"
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("query"), str)
            or not isinstance(item.get("hits"), list)
        ):
            raise DataError(f'{where}: needs "query" (string) and "hits" (list)', file=path)
        if not item["query"].strip():
            raise DataError(f"{where}: the query is empty", file=path)
        hits = item["hits"]
        qid = str(hits[0].get("qid", i)) if hits and isinstance(hits[0], dict) else str(item.get("qid", i))
        cands = []
        for j, hit in enumerate(hits):
            text = hit.get("content", hit.get("text")) if isinstance(hit, dict) else None
            if not isinstance(hit, dict) or "docid" not in hit or not isinstance(text, str):
                raise DataError(f'{where}, hit {j}: needs "docid" and "content" (a string)', file=path)
            score = hit.get("score", -float(j))
            cands.append(Candidate(Document(str(hit["docid"]), text), float(score), "input"))
        rankings.append(Ranking(Query(qid, item["query"]), tuple(cands)))
    return rankings


def json_object(line: str, path: str | Path, lineno: int) -> dict[str, Any]:
    """The JSON object on line ``lineno`` of ``path`` (anything else is a DataError naming the line)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON: {exc.msg} (column {exc.colno})", file=path, line=lineno) from exc
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}", file=path, line=lineno)
    return obj
