"""Sentence-level extractive compression with a sentence embedder.

Passages are split into sentences (:func:`split_sentences`); the question and every sentence
are embedded (sentence-transformers, e.g. MiniLM) and sentences are kept by cosine similarity
to the question, best first, until the token budget is full. Kept sentences stay in their
source order inside their own passage, so each passage keeps its document id (the citation
target) and passages keep their incoming order. ``min_similarity`` also drops sentences
below a cosine threshold (the best one is always offered to the budget).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field

from ..backends.embeddings import TextEncoder
from ..types import Ranking
from .base import BudgetedOptions, QueryNotes, Tokenizes, Unit, UnitCompressor

# A sentence ends at . ! or ? (and any closing quotes/brackets) followed by whitespace and a
# character that can start a sentence. Abbreviations and initials are rejoined afterwards.
_BOUNDARY = re.compile(r"[.!?][\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "al",
        "fig",
        "no",
        "vol",
        "ca",
        "approx",
        "inc",
        "ltd",
        "co",
        "corp",
        "u.s",
        "u.k",
        "dept",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
    ]
)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text`` (whitespace around them excluded).

    Every non-space character belongs to exactly one span and spans are in text order.
    A period after a known abbreviation ("Dr.", "e.g.", "U.S.") or a single capital
    letter (an initial) does not end a sentence.
    """
    spans, start = [], 0
    for m in _BOUNDARY.finditer(text):
        head = text[start : m.start() + 1]
        last_word = head.split()[-1].rstrip(".").lower() if head.split() else ""
        if text[m.start()] == "." and (last_word in _ABBREVIATIONS or (len(last_word) == 1 and last_word.isalpha())):
            continue
        spans.append((start, m.end()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for a, b in spans:
        piece = text[a:b]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            out.append((a + lead, a + len(piece.rstrip())))
    return out


class SentencesOptions(BudgetedOptions):
    """Keep the sentences most similar to the question (embeddings) within the budget, in source order."""

    min_similarity: float | None = Field(None, ge=-1, le=1, description="also drop sentences below this cosine")


class SentenceExtractor(UnitCompressor):
    """Keep the sentences most similar to the question within the budget (see module docstring)."""

    stage_name = "sentences"

    Options = SentencesOptions
    options: SentencesOptions

    def __init__(
        self, encoder: TextEncoder, *, tokenizer: Tokenizes, options: SentencesOptions | None = None, **settings: Any
    ) -> None:
        super().__init__(tokenizer, options, settings)
        self.encoder = encoder

    def score_units(self, batch: Sequence[Ranking], notes: Sequence[QueryNotes]) -> list[list[Unit]]:
        """Sentences of every passage, scored by cosine similarity to the query."""
        spans = [[split_sentences(c.doc.text) for c in r.candidates] for r in batch]
        texts = [r.query.text for r in batch]
        texts += [
            c.doc.text[a:b]
            for r, s in zip(batch, spans, strict=True)
            for c, ss in zip(r.candidates, s, strict=True)
            for a, b in ss
        ]
        vectors = self.encoder.encode(texts, desc="sentences") if texts else np.zeros((0, 1))
        queries, sentences = vectors[: len(batch)], vectors[len(batch) :]
        out, row = [], 0
        for qi, (r, per_passage) in enumerate(zip(batch, spans, strict=True)):
            units: list[Unit] = []
            for p, (c, ss) in enumerate(zip(r.candidates, per_passage, strict=True)):
                for a, b in ss:
                    sim = float(sentences[row] @ queries[qi])
                    row += 1
                    units.append(Unit(p, a, b, sim, self.count_tokens(c.doc.text[a:b])))
            out.append(self._threshold(units))
        return out

    def _threshold(self, units: list[Unit]) -> list[Unit]:
        if self.options.min_similarity is None or not units:
            return units
        best = max(units, key=lambda u: u.score)
        return [u for u in units if u.score >= self.options.min_similarity or u is best]
