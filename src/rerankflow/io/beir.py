"""BEIR folders: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ..types import Document, Query
from .jsonl import read_documents, read_queries_jsonl
from .trec import Qrels, read_qrels_tsv


def read_beir(folder: str | Path, split: str = "test") -> tuple[list[Document], list[Query], Qrels]:
    """Corpus, the queries judged in ``split``, and that split's qrels."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("BEIR folder not found", file=folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise DataError(f"no qrels for split {split!r}; available splits: {splits or 'none'}", file=qrels_path)
    corpus = read_documents(folder / "corpus.jsonl")
    qrels = read_qrels_tsv(qrels_path)
    queries = [q for q in read_queries_jsonl(folder / "queries.jsonl") if q.qid in qrels]
    return corpus, queries, qrels
