"""Datasets by their ir_datasets id (``msmarco-passage/trec-dl-2019/judged``, ``beir/scifact/test``):
queries, qrels and documents read through ``ir_datasets`` (``pip install ir_datasets``), from
its cache (``$IR_DATASETS_HOME``, default ``~/.ir_datasets``); when the files are not cached
ir_datasets downloads them, and when that fails (offline) the error says how to get them.
"""

from __future__ import annotations

from typing import Any

from ..errors import DataError, MissingDependencyError
from ..types import Document, Query
from .trec import Qrels


def _dataset(name: str) -> Any:
    try:
        import ir_datasets
    except ImportError as exc:
        raise MissingDependencyError("ir_datasets", "ir_datasets") from exc
    try:
        return ir_datasets.load(name)
    except KeyError:
        raise DataError(
            f"ir_datasets has no dataset {name!r}; see https://ir-datasets.com for the ids "
            "(e.g. msmarco-passage/trec-dl-2019/judged, beir/scifact/test)"
        ) from None


def _read(name: str, what: str, read: Any) -> Any:
    """``read()``, with download and file failures turned into one clear error."""
    try:
        return read()
    except (OSError, ConnectionError, RuntimeError) as exc:
        raise DataError(
            f"ir_datasets could not read the {what} of {name!r} ({type(exc).__name__}: {exc}). They are not in "
            "its cache and could not be downloaded (offline?): on a connected machine run "
            f"`python -c \"import ir_datasets; ds = ir_datasets.load('{name}'); list(ds.{what}_iter())\"`, "
            "then copy ~/.ir_datasets (or set IR_DATASETS_HOME to a copy)"
        ) from None


def _text(item: Any) -> str:
    default = getattr(item, "default_text", None)
    return str(default() if callable(default) else item.text)


def read_ir_dataset(name: str) -> tuple[list[Document] | None, list[Query], Qrels | None]:
    """Documents (``None`` if the dataset has none), queries and qrels (``None`` if none)."""
    ds = _dataset(name)
    queries = (
        _read(name, "queries", lambda: [Query(str(q.query_id), _text(q)) for q in ds.queries_iter()])
        if ds.has_queries()
        else []
    )
    qrels: Qrels | None = None
    if ds.has_qrels():

        def judgments() -> Qrels:
            out: Qrels = {}
            for j in ds.qrels_iter():
                out.setdefault(str(j.query_id), {})[str(j.doc_id)] = int(j.relevance)
            return out

        qrels = _read(name, "qrels", judgments)
    docs = None
    if ds.has_docs():
        docs = _read(
            name,
            "docs",
            lambda: [Document(str(d.doc_id), str(getattr(d, "text", None) or _text(d)), getattr(d, "title", None) or None)
                     for d in ds.docs_iter()],
        )  # fmt: skip
    return docs, queries, qrels
