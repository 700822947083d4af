"""Test support: a scripted backend for control-flow tests and a judge that answers from
relevance judgments (with controlled noise) for checking ranking algorithms."""

from .fake import FakeBackend, prompt_text
from .oracle import OracleJudge

__all__ = ["FakeBackend", "OracleJudge", "prompt_text"]
