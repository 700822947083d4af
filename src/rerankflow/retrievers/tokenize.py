"""The one tokenizer every BM25 engine uses: lowercase, Unicode word split, stopwords, stemming."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

# Lucene's English stop set (EnglishAnalyzer.ENGLISH_STOP_WORDS_SET), as used by Anserini/Pyserini.
LUCENE_ENGLISH_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "if",
        "in",
        "into",
        "is",
        "it",
        "no",
        "not",
        "of",
        "on",
        "or",
        "such",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "will",
        "with",
    ]
)

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Tokenizer:
    """Split text into index terms.

    Words are maximal runs of Unicode word characters (letters, digits, underscore in any
    script). ``stopwords="english"`` drops Lucene's 33 English stop words; ``stemmer`` is a
    Snowball algorithm name from PyStemmer (``"porter"``, ``"english"``, ...) or ``"none"``.
    """

    lowercase: bool = True
    stopwords: Literal["english", "none"] = "english"
    stemmer: str = "porter"

    @cached_property
    def _stem(self) -> Any:
        if self.stemmer == "none":
            return None
        import Stemmer  # PyStemmer, a core dependency

        return Stemmer.Stemmer(self.stemmer)

    def __call__(self, text: str) -> list[str]:
        """Tokens of one text, in order."""
        if self.lowercase:
            text = text.lower()
        words = _WORD.findall(text)
        if self.stopwords == "english":
            words = [w for w in words if w not in LUCENE_ENGLISH_STOPWORDS]
        stem = self._stem
        return list(stem.stemWords(words)) if stem is not None else words

    def many(self, texts: Iterable[str]) -> list[list[str]]:
        """Tokens of each text."""
        return [self(t) for t in texts]
