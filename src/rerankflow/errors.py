"""The one error hierarchy of rerankflow.

Every user-facing failure is a :class:`RerankflowError`; the CLI prints its message on one
line and exits with status 2. Messages say what is wrong, where (file, line, YAML path) and
how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class RerankflowError(Exception):
    """Base class of every error rerankflow raises on purpose."""


class ConfigError(RerankflowError):
    """A job, stage configuration or parameter is invalid.

    ``path`` is the location inside the YAML document (e.g. ``pipelines.hybrid[0].rrf.k``),
    ``file``/``line`` locate it on disk when known (1-based line).
    """

    def __init__(
        self,
        message: str,
        *,
        path: Sequence[str | int] = (),
        file: str | Path | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.path = tuple(path)
        self.file = str(file) if file is not None else None
        self.line = line
        super().__init__(self._render())

    def located(self, file: str | Path | None, line: int | None) -> ConfigError:
        """Return a copy of this error that also names the file and line."""
        return ConfigError(self.message, path=self.path, file=file, line=line)

    def _render(self) -> str:
        key = f"{format_path(self.path)}: " if self.path else ""
        return f"{_where(self.file, self.line)}{key}{self.message}"


class DataError(RerankflowError):
    """An input file (topics, qrels, run, corpus) is missing, empty or malformed."""

    def __init__(self, message: str, *, file: str | Path | None = None, line: int | None = None) -> None:
        self.file = str(file) if file is not None else None
        self.line = line
        super().__init__(_where(self.file, line) + message)


class PipelineTypeError(RerankflowError):
    """Stages were composed or called in a way their contract does not allow."""


class BackendError(RerankflowError):
    """A model backend failed to load or to answer."""


class ParseError(RerankflowError):
    """An LLM's output could not be parsed and the policy says to raise."""


class MissingDependencyError(RerankflowError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package} is not installed; install it with: pip install 'rerankflow[{extra}]'")


def _where(file: str | None, line: int | None) -> str:
    """``file:line: `` (or ``file: ``, or nothing) in front of a message."""
    if file is None:
        return ""
    return file + (f":{line}" if line is not None else "") + ": "


class RepairWarning(UserWarning):
    """A model's answer had to be repaired (an identifier missing or repeated, an unreadable
    answer): the result holds, but part of the order is the input's."""


def format_path(path: Sequence[str | int]) -> str:
    """Render a YAML location as ``a.b[0].c``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def one_line(text: object) -> str:
    """``text`` safe to print on one line of a message (control characters escaped), so a file
    name or a value from elsewhere cannot forge lines of output."""
    value = str(text)
    return value if value.isprintable() else value.encode("unicode_escape").decode("ascii")
