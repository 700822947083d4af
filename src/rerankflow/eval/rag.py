"""Answer metrics for retrieval-augmented generation.

Normalisation follows the SQuAD / NQ-open convention: lowercase, drop punctuation, drop the
articles a/an/the, collapse whitespace.

* best-subspan exact match (Liu et al. 2024, "Lost in the Middle"; Kandpal et al. 2023):
  1 if any normalised gold answer occurs in the normalised prediction;
* token F1: the best over gold answers of the F1 between normalised token bags;
* answer in context: 1 if any normalised gold answer occurs in the (normalised) context.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..errors import DataError
from ..types import Ranking, document_text

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, strip punctuation and articles, collapse whitespace."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def _golds(answers: Sequence[str]) -> list[str]:
    if isinstance(answers, str) or not answers:
        raise DataError(f"gold answers must be a non-empty list of strings, got {answers!r}")
    return [g for g in (normalize_answer(a) for a in answers) if g]


def best_subspan_em(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if a normalised gold answer is a substring of the normalised prediction."""
    pred = normalize_answer(prediction)
    return float(any(g in pred for g in _golds(answers)))


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """Best token-level F1 against the gold answers."""
    pred = normalize_answer(prediction).split()
    best = 0.0
    for gold in _golds(answers):
        tokens = gold.split()
        common = sum((Counter(pred) & Counter(tokens)).values())
        if common:
            precision, recall = common / len(pred), common / len(tokens)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def answer_in_context(passages: Iterable[str], answers: Sequence[str]) -> float:
    """1.0 if a normalised gold answer occurs in the normalised, concatenated passages."""
    context = normalize_answer(" ".join(passages))
    return float(any(g in context for g in _golds(answers)))


RAG_MEASURES = ("EM", "F1", "InContext", "Ratio", "CtxTokens", "Saved")
"""Per-query RAG values, in table order: best-subspan EM and token F1 of the answer, answer in
the final context, compression ratio (context tokens out / in over the compressors), context
tokens sent, and tokens saved by compression (in - out)."""


@dataclass(frozen=True)
class ContextFlow:
    """Context tokens of one query before the first compressor and after the last one."""

    tokens_in: int
    tokens_out: int


def rag_per_query(
    rankings: Sequence[Ranking],
    answers: Mapping[str, Sequence[str]],
    flow: Mapping[str, ContextFlow],
    count_context: Callable[[Ranking], int] | None = None,
) -> dict[str, dict[str, float]]:
    """``{measure: {qid: value}}`` for the queries that have gold answers.

    EM/F1 need a generated answer (``Ranking.answer``) and are left out for systems without
    one; ``Ratio``/``Saved`` need compressors (``flow``); ``CtxTokens`` is the generator's
    count of the passages it sent, or ``count_context`` of the final ranking without a generator.
    """
    out: dict[str, dict[str, float]] = {m: {} for m in RAG_MEASURES}
    for r in rankings:
        gold = answers.get(r.query.qid)
        if not gold:
            continue
        qid = r.query.qid
        docs = r.answer.context if r.answer is not None else tuple(c.doc for c in r.candidates)
        out["InContext"][qid] = answer_in_context([document_text(d) for d in docs], gold)
        if r.answer is not None:
            out["EM"][qid] = best_subspan_em(r.answer.text, gold)
            out["F1"][qid] = token_f1(r.answer.text, gold)
            out["CtxTokens"][qid] = float(r.answer.context_tokens)
        elif count_context is not None:
            out["CtxTokens"][qid] = float(count_context(r))
        f = flow.get(qid)
        if f is not None:
            out["Ratio"][qid] = f.tokens_out / f.tokens_in if f.tokens_in else 1.0
            out["Saved"][qid] = float(f.tokens_in - f.tokens_out)
    return {m: v for m, v in out.items() if v}
