"""rerankflow: declarative retrieval, LLM reranking and RAG pipelines.

The common names are re-exported here (``from rerankflow import BM25Retriever, rrf``);
importing this package loads no model and no heavy library (models load on first use).
"""

from .backends import HFBackend, OpenAIHTTPBackend, SentenceTransformerEncoder, VLLMOfflineBackend
from .compressors import (
    BudgetFilter,
    LLMExtractor,
    LLMFilter,
    NearDuplicateFilter,
    Reorder,
    SentenceExtractor,
    SurprisalPruner,
)
from .errors import ConfigError, DataError, PipelineTypeError, RerankflowError
from .eval import Experiment, evaluate, experiment
from .generators import AnswerGenerator, Condenser, RetrievalGate
from .index import IndexSettings, open_index, update_index
from .io import demo_dataset, read_qrels, read_topics
from .ops import ConvexFusion, Cutoff, Identity, RRFFusion, Sequential, rrf
from .pipelines import Reranker, load_job, load_pipeline, rerank, run_job
from .rerankers import (
    BiEncoderReranker,
    Budget,
    Cascade,
    CrossEncoderReranker,
    DocumentAggregator,
    ListwiseReranker,
    PairwiseReranker,
    PointwiseReranker,
    Rule,
    SetwiseReranker,
)
from .retrievers import BM25Retriever, DenseRetriever
from .stage import Retriever, Stage, Transformer
from .types import FIRST_RANK, Answer, Candidate, Document, Query, Ranking, StageRecord, Turn

__version__ = "0.1.0"

__all__ = [
    "FIRST_RANK",
    "Answer",
    "AnswerGenerator",
    "BM25Retriever",
    "BiEncoderReranker",
    "Budget",
    "BudgetFilter",
    "Candidate",
    "Cascade",
    "Condenser",
    "ConfigError",
    "ConvexFusion",
    "CrossEncoderReranker",
    "Cutoff",
    "DataError",
    "DenseRetriever",
    "Document",
    "DocumentAggregator",
    "Experiment",
    "HFBackend",
    "Identity",
    "IndexSettings",
    "LLMExtractor",
    "LLMFilter",
    "ListwiseReranker",
    "NearDuplicateFilter",
    "OpenAIHTTPBackend",
    "PairwiseReranker",
    "PipelineTypeError",
    "PointwiseReranker",
    "Query",
    "RRFFusion",
    "Ranking",
    "Reorder",
    "Reranker",
    "RerankflowError",
    "RetrievalGate",
    "Retriever",
    "Rule",
    "SentenceExtractor",
    "SentenceTransformerEncoder",
    "Sequential",
    "SetwiseReranker",
    "Stage",
    "StageRecord",
    "SurprisalPruner",
    "Transformer",
    "Turn",
    "VLLMOfflineBackend",
    "demo_dataset",
    "evaluate",
    "experiment",
    "load_job",
    "load_pipeline",
    "open_index",
    "read_qrels",
    "read_topics",
    "rerank",
    "rrf",
    "run_job",
    "update_index",
]
