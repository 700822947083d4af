"""Answer generation from a ranking's passages."""

from .answer import AnswerGenerator, GenerateOptions

__all__ = ["AnswerGenerator", "GenerateOptions"]
