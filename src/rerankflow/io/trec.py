"""TREC formats: topics (``qid<TAB>text``), qrels (``qid iter docid rel``), runs
(``qid Q0 docid rank score tag``). Runs written here use 1-based ranks, as trec_eval expects.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..errors import DataError
from ..types import Ranking
from .files import atomic_write, numbered_lines

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]


def read_topics(path: str | Path) -> list[tuple[str, str]]:
    """Read ``qid<TAB>query`` lines (blank lines skipped); empty queries are errors."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for lineno, line in numbered_lines(path, what="topics"):
        if not line.strip():
            continue
        qid, sep, text = line.partition("\t")
        if not sep:
            raise DataError("expected 'qid<TAB>query'; no tab found", file=path, line=lineno)
        qid = qid.strip()
        if not qid:
            raise DataError("empty query id", file=path, line=lineno)
        if not text.strip():
            raise DataError(f"query {qid!r} is empty", file=path, line=lineno)
        if qid in seen:
            raise DataError(f"duplicate query id {qid!r}", file=path, line=lineno)
        seen.add(qid)
        out.append((qid, text.strip()))
    if not out:
        raise DataError("no topics found", file=path)
    return out


def read_qrels(path: str | Path) -> Qrels:
    """Read TREC qrels (4 whitespace-separated columns; graded integer relevance)."""
    qrels: Qrels = {}
    for lineno, line in numbered_lines(path, what="qrels"):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            raise DataError(f"expected 4 columns 'qid iter docid rel', got {len(parts)}", file=path, line=lineno)
        qid, _, docid, rel = parts
        try:
            qrels.setdefault(qid, {})[docid] = int(rel)
        except ValueError:
            raise DataError(f"relevance must be an integer, got {rel!r}", file=path, line=lineno) from None
    if not qrels:
        raise DataError("no judgments found", file=path)
    return qrels


def read_qrels_tsv(path: str | Path) -> Qrels:
    """Read BEIR ``qrels/*.tsv`` (``query-id<TAB>corpus-id<TAB>score`` with a header line)."""
    qrels: Qrels = {}
    for lineno, line in numbered_lines(path, what="qrels"):
        parts = line.split("\t")
        if lineno == 1 and not parts[-1].strip().lstrip("-").isdigit():
            continue  # header
        if not line.strip():
            continue
        if len(parts) != 3:
            raise DataError(
                f"expected 3 tab-separated columns 'query-id corpus-id score', got {len(parts)}",
                file=path,
                line=lineno,
            )
        try:
            qrels.setdefault(parts[0].strip(), {})[parts[1].strip()] = int(parts[2])
        except ValueError:
            raise DataError(f"score must be an integer, got {parts[2]!r}", file=path, line=lineno) from None
    if not qrels:
        raise DataError("no judgments found", file=path)
    return qrels


def read_run(path: str | Path) -> Run:
    """Read a TREC run file into ``{qid: {docid: score}}``."""
    run: Run = {}
    for lineno, line in numbered_lines(path, what="run"):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise DataError(
                f"expected 6 columns 'qid Q0 docid rank score tag', got {len(parts)}",
                file=path,
                line=lineno,
            )
        qid, _, docid, _rank, score, _tag = parts
        try:
            value = float(score)
        except ValueError:
            raise DataError(f"score must be a number, got {score!r}", file=path, line=lineno) from None
        docs = run.setdefault(qid, {})
        if docid in docs:
            raise DataError(f"document {docid!r} appears twice for query {qid!r}", file=path, line=lineno)
        docs[docid] = value
    if not run:
        raise DataError("the run is empty", file=path)
    return run


def rankings_to_run(rankings: Iterable[Ranking]) -> Run:
    """Scores of rankings as a run dict (what ir-measures and pytrec_eval take)."""
    return {r.query.qid: {c.docid: c.score for c in r.candidates} for r in rankings}


def write_run(rankings: Iterable[Ranking], path: str | Path, *, tag: str = "rerankflow") -> None:
    """Write rankings as a TREC run (1-based ranks), atomically."""
    if not tag or any(ch.isspace() for ch in tag):
        raise DataError(f"run tag must be one word, got {tag!r}")
    with atomic_write(path) as fh:
        for r in rankings:
            for rank, c in enumerate(r.candidates, start=1):
                fh.write(f"{r.query.qid} Q0 {c.docid} {rank} {c.score:.6f} {tag}\n")
