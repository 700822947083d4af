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
from collections.abc import Iterable, Sequence

from ..errors import DataError

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
