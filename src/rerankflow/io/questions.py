"""Question-answering files (NQ-open style) and multi-document contexts built from them.

A questions file is JSONL (optionally ``.gz``), one object a line:
``{"question": str, "answers": [str, ...], "ctxs": [{"title", "text", "id"?}, ...]}``;
``qid``/``id`` name the question (default: its 0-based line index among questions, as
``q<index>``). ``ctxs`` are optional; when present they become the question's initial
candidates in file order (scores n, n-1, ..., 1). Without an ``id`` a passage is named
``<qid>-<index>``; an explicit ``id`` keeps its value, so passages shared across questions
keep one name.

:func:`mix_distractors` builds "lost in the middle" contexts (Liu et al. 2024): each
question's passages plus passages drawn from other questions, shuffled (seeded).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..types import Document, Query, Ranking
from .files import numbered_lines
from .jsonl import json_object


@dataclass(frozen=True)
class QARecord:
    """One question with its gold answers and its own passages (``passages[0]`` first)."""

    query: Query
    answers: tuple[str, ...]
    passages: tuple[Document, ...] = ()


def read_questions(path: str | Path) -> list[QARecord]:
    """Read a questions file (see the module docstring); bad lines are errors naming the line."""
    out: list[QARecord] = []
    seen: set[str] = set()
    for lineno, line in numbered_lines(path, what="questions"):
        if not line.strip():
            continue
        obj = json_object(line, Path(path), lineno)
        question, answers = obj.get("question"), obj.get("answers")
        if not isinstance(question, str) or not question.strip():
            raise DataError("each line needs a non-empty 'question' string", file=path, line=lineno)
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
            raise DataError("'answers' must be a non-empty list of strings", file=path, line=lineno)
        qid = str(obj.get("qid", obj.get("id", f"q{len(out)}")))
        if qid in seen:
            raise DataError(f"duplicate question id {qid!r}", file=path, line=lineno)
        seen.add(qid)
        ctxs = obj.get("ctxs") or []
        if not isinstance(ctxs, list):
            raise DataError("'ctxs' must be a list of passages", file=path, line=lineno)
        docs = []
        for i, ctx in enumerate(ctxs):
            if not isinstance(ctx, dict) or not isinstance(ctx.get("text"), str):
                raise DataError(f"ctxs[{i}] needs a 'text' string", file=path, line=lineno)
            title = ctx.get("title")
            meta = {k: v for k, v in ctx.items() if k not in ("id", "text", "title")}
            docid = str(ctx["id"]) if "id" in ctx else f"{qid}-{i}"
            docs.append(Document(docid, ctx["text"], str(title) if title else None, meta))
        out.append(QARecord(Query(qid, question), tuple(answers), tuple(docs)))
    if not out:
        raise DataError("the questions file has no questions", file=path)
    return out


def own_contexts(records: Sequence[QARecord]) -> list[Ranking]:
    """Each question with its own passages as candidates, in file order."""
    return [Ranking.from_documents(r.query, r.passages) for r in records]


def mix_distractors(records: Sequence[QARecord], distractors: int, seed: int = 0) -> list[Ranking]:
    """Each question's own first passage plus ``distractors`` first passages of other
    questions, in a seeded random order (the gold position is uniform). Candidates score
    n, n-1, ..., 1 in that order, so the order carries no relevance signal.
    """
    pool = [(i, r.passages[0]) for i, r in enumerate(records) if r.passages]
    if distractors < 0:
        raise DataError(f"distractors must be >= 0, got {distractors}")
    if distractors >= len(pool):
        raise DataError(f"{distractors} distractors need at least {distractors + 1} questions with passages")
    rng = random.Random(seed)
    out = []
    for i, r in enumerate(records):
        if not r.passages:
            raise DataError(f"question {r.query.qid!r} has no passage to mix distractors with")
        others: list[Document] = []
        while len(others) < distractors:
            j, doc = pool[rng.randrange(len(pool))]
            if j != i and all(d.docid != doc.docid for d in others):
                others.append(doc)
        docs = [r.passages[0], *others]
        rng.shuffle(docs)
        out.append(Ranking.from_documents(r.query, docs))
    return out
