"""Safe YAML loading that remembers where every key is, and pydantic errors as ConfigErrors.

Aliases (``*name``) let a few bytes of YAML stand for an exponentially large document (the
"billion laughs"): every document is parsed once into its node graph, whose size with every
alias written out is counted (each node once, so the count itself is linear) and refused
above :data:`MAX_NODES` before anything walks or copies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError
from .suggest import did_you_mean

MAX_NODES = 100_000
"""Most values (scalars, lists, mappings) a YAML document may hold once its aliases are
written out; real jobs hold hundreds."""


def expanded_size(root: yaml.Node, file: str | None = None) -> int:
    """Values in the document under ``root`` with every alias written out (a
    :class:`ConfigError` for a recursive alias or more than :data:`MAX_NODES`)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        kids: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            kids = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            kids = list(node.value)
        if children_done:
            open_.discard(key)
            sizes[key] = 1 + sum(sizes[id(k)] for k in kids)
            if sizes[key] > MAX_NODES:
                raise ConfigError(
                    f"the YAML holds more than {MAX_NODES:,} values once its aliases (*name) are expanded; "
                    "write the values out instead of nesting aliases",
                    file=file,
                    line=node.start_mark.line + 1,
                )
            continue
        if key in open_:
            raise ConfigError("a YAML alias refers to itself (a recursive structure)", file=file)
        open_.add(key)
        stack.append((node, True))
        for kid in kids:
            if id(kid) in open_:
                raise ConfigError(
                    "a YAML alias refers to a value that contains it (a recursive structure)",
                    file=file,
                    line=kid.start_mark.line + 1,
                )
            stack.append((kid, False))
    return sizes[id(root)]


def load_bounded(text: str, file: str | None = None) -> tuple[yaml.Node | None, Any]:
    """``(node graph, data)`` of one YAML document, parsed once with the safe loader and
    refused when its aliases expand past :data:`MAX_NODES` (:func:`expanded_size`)."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        expanded_size(root, file)
        return root, loader.construct_document(root)
    except RecursionError:
        raise ConfigError("the YAML is nested too deeply (hundreds of levels); flatten it", file=file) from None
    finally:
        loader.dispose()


class YamlDocument:
    """A parsed YAML document plus the node tree used to find line numbers."""

    def __init__(self, text: str, file: str | Path | None = None) -> None:
        self.file = str(file) if file is not None else None
        try:
            self.root, self.data = load_bounded(text, self.file)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            line = mark.line + 1 if mark is not None else None
            context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
            if context and context_mark is not None and context_mark.line + 1 != line:
                problem += f" ({context} started on line {context_mark.line + 1})"
            raise ConfigError(f"invalid YAML: {problem}", file=self.file, line=line) from None
        if self.root is not None:
            _check_duplicate_keys(self.root, (), self.file, set())

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


def _check_duplicate_keys(node: yaml.Node, path: tuple[str | int, ...], file: str | None, seen: set[int]) -> None:
    """Raise on a mapping with a key twice; every node is checked once (an alias points at a
    node already checked)."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key, value in node.value:
            k = str(key.value)
            if k in lines:
                raise ConfigError(
                    f"key {k!r} appears twice (first on line {lines[k]}); remove one",
                    path=path,
                    file=file,
                    line=key.start_mark.line + 1,
                )
            lines[k] = key.start_mark.line + 1
            _check_duplicate_keys(value, (*path, k), file, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, (*path, i), file, seen)


def validation_to_config_error(
    exc: ValidationError, model: type[BaseModel], prefix: tuple[str | int, ...] = ()
) -> ConfigError:
    """Turn pydantic's first error into a :class:`ConfigError` with path and valid choices."""
    err = exc.errors(include_url=False)[0]
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        valid = _valid_keys(model, loc[:-1])
        hint = did_you_mean(str(loc[-1]), valid)
        msg = f"unknown key {loc[-1]!r}{hint}; valid keys: {', '.join(valid) if valid else '(none)'}"
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
        models = [a for a in (ann, *get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not models:  # an optional model (``Budget | None``) counts as the model
            return []
        current = models[0]
    return list(current.model_fields)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
