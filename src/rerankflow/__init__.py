"""rerankflow: declarative retrieval, LLM reranking and RAG pipelines.

Core names are re-exported here; importing this package loads no model and no heavy library.
"""

from .errors import ConfigError, DataError, PipelineTypeError, RerankflowError
from .stage import ConvexFusion, Cutoff, Identity, Retriever, RRFFusion, Sequential, Stage, Transformer, rrf
from .types import FIRST_RANK, Candidate, Document, Query, Ranking

__version__ = "0.1.0"

__all__ = [
    "FIRST_RANK",
    "Candidate",
    "ConfigError",
    "ConvexFusion",
    "Cutoff",
    "DataError",
    "Document",
    "Identity",
    "PipelineTypeError",
    "Query",
    "RRFFusion",
    "Ranking",
    "RerankflowError",
    "Retriever",
    "Sequential",
    "Stage",
    "Transformer",
    "rrf",
]
