"""The one tokenizer every BM25 engine uses: lowercase, Unicode word split, stopwords, stemming."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import Field, field_validator

from ..options import Options

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


class TokenizerOptions(Options):
    """How text becomes index terms (a BM25 stage's YAML keys, an index's manifest)."""

    lowercase: bool = True
    stopwords: Literal["english", "none"] = Field("english", description="drop Lucene's English stop words, or none")
    stemmer: str = Field("porter", description="PyStemmer algorithm (porter, english, ...) or none")

    @field_validator("stemmer")
    @classmethod
    def _known_stemmer(cls, v: str) -> str:
        import Stemmer  # PyStemmer, a core dependency

        valid = ["none", *Stemmer.algorithms()]
        if v not in valid:
            raise ValueError(f"unknown stemmer {v!r}; valid: {', '.join(valid)}")
        return v


_STEMMERS = threading.local()
"""PyStemmer objects by algorithm, one set per thread (a Stemmer is not safe to share)."""


def _stemmer(name: str) -> Any:
    found = getattr(_STEMMERS, "by_name", None)
    if found is None:
        found = _STEMMERS.by_name = {}
    if name not in found:
        import Stemmer

        found[name] = Stemmer.Stemmer(name)
    return found[name]


class Tokenizer(TokenizerOptions):
    """Split text into index terms (its settings: :class:`TokenizerOptions`).

    Words are maximal runs of Unicode word characters (letters, digits, underscore in any
    script). ``stopwords="english"`` drops Lucene's 33 English stop words; ``stemmer`` is a
    Snowball algorithm name from PyStemmer (``"porter"``, ``"english"``, ...) or ``"none"``.
    """

    def __call__(self, text: str) -> list[str]:
        """Tokens of one text, in order."""
        if self.lowercase:
            text = text.lower()
        words = _WORD.findall(text)
        if self.stopwords == "english":
            words = [w for w in words if w not in LUCENE_ENGLISH_STOPWORDS]
        return list(_stemmer(self.stemmer).stemWords(words)) if self.stemmer != "none" else words

    def many(self, texts: Iterable[str]) -> list[list[str]]:
        """Tokens of each text."""
        return [self(t) for t in texts]
