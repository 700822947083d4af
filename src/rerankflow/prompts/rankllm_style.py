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
from collections.abc import Callable

from ..errors import MissingDependencyError
from ..types import Document

T5_CONTEXT = 512
"""The input length RankLLM's MonoT5 and DuoT5 budget their prompts to (``context_size``)."""
T5_RESERVE = 64
"""Tokens RankLLM's T5 handlers keep free for the output (``reserved_for_output``)."""

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


def t5_passage_budget(empty_prompt: str, passages: int, count_encoded: Callable[[list[str]], list[int]]) -> int:
    """Tokens (and words) each passage of a MonoT5/DuoT5 prompt may take, as RankLLM 0.25.7
    computes it per query: ``512 - 64`` minus the prompt without its passages and minus the empty
    few-shot part, both counted with the tokenizer's special tokens (T5's ``</s>``: one token
    even for the empty text), split over the prompt's ``passages`` (``//``). ``count_encoded``
    counts texts with special tokens. Never below 1 (RankLLM's arithmetic would go negative for
    a query of hundreds of tokens)."""
    prompt_tokens, fewshot_tokens = count_encoded([empty_prompt, ""])
    return max((T5_CONTEXT - T5_RESERVE - prompt_tokens - fewshot_tokens) // passages, 1)
