"""What the conversation's query-side stages share: a model that is needed only in ``mode:
llm``, a template over the conversation (``history``) and the last message (``question``),
and the conversation shown as lines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from ..backends.base import LLMBackend
from ..errors import ConfigError
from ..options import StageOptions
from ..prompts.template import PromptTemplate, as_template
from ..stage import Transformer
from ..types import Turn


def history_block(history: Sequence[Turn], limit: int) -> str:
    """The last ``limit`` user and assistant messages, one per line (``User: ...``)."""
    shown = [t for t in history if t.role in ("user", "assistant")][-limit:] if limit > 0 else []
    return "\n".join(f"{t.role.capitalize()}: {' '.join(t.text.split())}" for t in shown)


class ConversationStage(Transformer):
    """A stage that reads the conversation, with a model in ``mode: llm`` only."""

    shown = ("mode",)
    default_template: ClassVar[str]
    """The built-in template used when none is given."""
    without_model: ClassVar[str]
    """The modes that need no model (named in the error when ``llm`` has none)."""

    def __init__(
        self,
        backend: LLMBackend | None = None,
        template: PromptTemplate | str | None = None,
        options: StageOptions | None = None,
        **settings: Any,
    ) -> None:
        built: Any = self.Options.build(options, settings, self.name)  # the subclass's options: a mode
        self.options = built
        if built.mode == "llm" and backend is None:
            raise ConfigError(f"{self.name}: mode llm needs a backend (or use mode {self.without_model})")
        t = as_template(template or self.default_template)
        if set(t.placeholders) != {"history", "question"}:
            raise ConfigError(f"template {t.name!r} must have the placeholders history and question")
        self.backend = backend
        self.template = t

    def load(self) -> None:
        """Start the backend (mode llm)."""
        if self.backend is not None and getattr(self.options, "mode", None) == "llm":
            self.backend.ensure_loaded()
