"""Model backends: the only package that imports torch, transformers, sentence-transformers,
vllm or openai (each lazily, when a model loads)."""

from .base import LLMBackend
from .cross_encoder import CrossEncoderModel
from .embeddings import SentenceTransformerEncoder, TextEncoder
from .factory import BackendConfig, create_backend
from .hf import HFBackend
from .http import OpenAIHTTPBackend
from .types import GenerationParams, Message, Prompt
from .vllm_offline import VLLMOfflineBackend

__all__ = [
    "BackendConfig",
    "CrossEncoderModel",
    "GenerationParams",
    "HFBackend",
    "LLMBackend",
    "Message",
    "OpenAIHTTPBackend",
    "Prompt",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "VLLMOfflineBackend",
    "create_backend",
]
