"""Passages and queries shown the way RankLLM shows them (``passage_style: rankllm``), so that a
checkpoint trained on RankLLM's prompts (RankZephyr, RankVicuna) gets exactly that input.

RankLLM 0.25.7 (``rank_llm.rerank.inference_handler``): a passage with a title reads
``Title: <title> Content: <text>``; the text is stripped and repaired with ftfy's ``fix_text``,
cut to its first ``300 * 20 / w`` whitespace-separated words for a window of ``w`` passages,
and every bracketed number ``[n]`` in it (and in the query) becomes ``(n)`` so it cannot be
mistaken for a passage identifier. ``tests/test_presets.py`` compares the prompts with
RankLLM's own handler.

Not reproduced: when a prompt exceeds the model's context, RankLLM lowers the word limit until
it fits (measured with the model's tokenizer); rerankflow keeps the limit and the backend
rejects or truncates an over-long prompt as for any other template.
"""

from __future__ import annotations

import re

from ..errors import MissingDependencyError
from ..types import Document

_BRACKETED_NUMBER = re.compile(r"\[(\d+)\]")


def without_identifiers(text: str) -> str:
    """``[n]`` written as ``(n)``."""
    return _BRACKETED_NUMBER.sub(r"(\1)", text)


def content(doc: Document) -> str:
    """The passage before the word limit: title and text, stripped, ftfy-repaired."""
    try:
        from ftfy import fix_text
    except ImportError as exc:  # a core dependency; only a broken install lacks it
        raise MissingDependencyError("ftfy", "core") from exc
    text = f"Title: {doc.title} Content: {doc.text}" if doc.title else doc.text
    return str(fix_text(text.strip()))


def word_limit(window: int) -> int:
    """RankLLM's passage length in words for a window of ``window`` passages."""
    return int(300 * (20 / window))


def shown(text: str, window: int) -> str:
    """A passage's :func:`content` as it appears in a window of ``window`` passages."""
    return shown_words(text, word_limit(window))


def shown_words(text: str, words: int) -> str:
    """A passage's :func:`content` cut to its first ``words`` words (joined by single spaces),
    ``[n]`` written ``(n)``."""
    return without_identifiers(" ".join(text.split()[:words]))
