"""Answer generation from a ranking's passages, and the conversation's query-side stages."""

from .answer import AnswerGenerator, GenerateOptions
from .condense import Condenser
from .gate import RetrievalGate

__all__ = ["AnswerGenerator", "Condenser", "GenerateOptions", "RetrievalGate"]
