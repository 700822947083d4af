"""Context compressors: stages between reranking and generation that fit a token budget."""

from .base import CompressorOptions, Tokenizes
from .dedup import NearDuplicateFilter
from .llm import LLMExtractor, LLMFilter
from .select import BudgetFilter, Reorder
from .sentences import SentenceExtractor
from .surprisal import SurprisalPruner

__all__ = [
    "BudgetFilter",
    "CompressorOptions",
    "LLMExtractor",
    "LLMFilter",
    "NearDuplicateFilter",
    "Reorder",
    "SentenceExtractor",
    "SurprisalPruner",
    "Tokenizes",
]
