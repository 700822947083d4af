"""Safe YAML loading that remembers where every key and value is (for error lines)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError


class YamlDocument:
    """A parsed YAML document plus the node tree used to find line numbers."""

    def __init__(self, text: str, file: str | Path | None = None) -> None:
        self.file = str(file) if file is not None else None
        try:
            self.root = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data: Any = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            line = mark.line + 1 if mark is not None else None
            context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
            if context and context_mark is not None and context_mark.line + 1 != line:
                problem += f" ({context} started on line {context_mark.line + 1})"
            raise ConfigError(f"invalid YAML: {problem}", file=self.file, line=line) from None
        if self.root is not None:
            _check_duplicate_keys(self.root, (), self.file)

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """1-based line of the deepest node along ``path`` that exists (``None`` if unknown)."""
        node = self.root
        if node is None:
            return None
        line = node.start_mark.line + 1
        for part in path:
            child = None
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if key.value == str(part):
                        line = key.start_mark.line + 1
                        child = value
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                child = node.value[part]
                line = child.start_mark.line + 1
            if child is None:
                break
            node = child
        return line

    def locate(self, err: ConfigError) -> ConfigError:
        """The same error, naming this file and the line of its YAML path."""
        return err.located(self.file, self.line_of(err.path) if err.path else None)


def _check_duplicate_keys(node: yaml.Node, path: tuple[str | int, ...], file: str | None) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            k = str(key.value)
            if k in seen:
                raise ConfigError(
                    f"key {k!r} appears twice (first on line {seen[k]}); remove one",
                    path=path,
                    file=file,
                    line=key.start_mark.line + 1,
                )
            seen[k] = key.start_mark.line + 1
            _check_duplicate_keys(value, (*path, k), file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, (*path, i), file)
