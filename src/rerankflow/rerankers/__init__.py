"""Rerankers: stages that rescore the candidates they are given."""

from .base import PassageOptions, PlannedOptions
from .biencoder import BiEncoderReranker
from .budget import Budget
from .cascade import Cascade, Rule
from .crossencoder import CrossEncoderReranker
from .documents import DocumentAggregator
from .listwise import ListwiseOptions, ListwiseReranker
from .pairwise import PairwiseOptions, PairwiseReranker
from .pointwise import PointwiseOptions, PointwiseReranker
from .setwise import SetwiseOptions, SetwiseReranker

__all__ = [
    "BiEncoderReranker",
    "Budget",
    "Cascade",
    "CrossEncoderReranker",
    "DocumentAggregator",
    "ListwiseOptions",
    "ListwiseReranker",
    "PairwiseOptions",
    "PairwiseReranker",
    "PassageOptions",
    "PlannedOptions",
    "PointwiseOptions",
    "PointwiseReranker",
    "Rule",
    "SetwiseOptions",
    "SetwiseReranker",
]
