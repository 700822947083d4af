"""First-stage retrievers: BM25 (two engines), dense, and hybrid via fusion."""

from .bm25 import BM25Index, BM25Options, BM25Retriever
from .dense import DenseOptions, DenseRetriever
from .tokenize import Tokenizer

__all__ = ["BM25Index", "BM25Options", "BM25Retriever", "DenseOptions", "DenseRetriever", "Tokenizer"]
