"""Safe YAML loading that remembers where every key is, and pydantic errors as ConfigErrors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError


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


def validation_to_config_error(
    exc: ValidationError, model: type[BaseModel], prefix: tuple[str | int, ...] = ()
) -> ConfigError:
    """Turn pydantic's first error into a :class:`ConfigError` with path and valid choices."""
    err = exc.errors(include_url=False)[0]
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        valid = _valid_keys(model, loc[:-1])
        msg = f"unknown key {loc[-1]!r}; valid keys: {', '.join(valid) if valid else '(none)'}"
    elif err["type"] == "missing":
        msg = "required key is missing"
    else:
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] not in ("value_error", "assertion_error") and "input" in err:
            msg += f" (got {_short(err['input'])})"
    return ConfigError(msg, path=(*prefix, *loc))


def _valid_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    current: Any = model
    for part in loc:
        field = current.model_fields.get(part) if isinstance(part, str) and hasattr(current, "model_fields") else None
        ann = field.annotation if field is not None else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            current = ann
        else:
            return []
    return list(current.model_fields)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
