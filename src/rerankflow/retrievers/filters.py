"""Metadata filters applied inside retrieval, so ``k`` matching results still come back.

A filter is a mapping from a metadata field to a condition; every condition must hold (AND).
Fields are the keys of ``Document.meta`` (front matter, a JSONL record's extra keys, and what
the indexer adds: ``source``, ``doc_id``, ``heading``, ``page``) plus ``docid`` and ``title``.

* a scalar: the field equals it, or (list field) contains it — ``tags: release``
* a list: any of its values matches — ``lang: [en, de]``
* a mapping of operators: ``eq``, ``ne``, ``in``, ``nin``, ``gt``, ``gte``, ``lt``, ``lte``,
  ``glob`` (shell pattern, ``*`` crosses ``/``), ``exists`` (true/false) —
  ``date: {gte: 2024-01-01}``, ``source: {glob: "guides/*"}``

Dates and datetimes (YAML parses ``2024-01-01`` as a date) compare as ISO strings, so they
match the same value written as a string in JSON. A document without the field fails every
condition except ``exists: false`` and ``ne``/``nin``.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..types import Document

OPERATORS = ("eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "glob", "exists")
_MISSING = object()
Predicate = Callable[[Any], bool]


def _norm(value: Any) -> Any:
    """One spelling for comparison: dates as ISO strings, everything else unchanged."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def _equals(actual: Any, wanted: Any) -> bool:
    if isinstance(actual, list | tuple):
        return any(_norm(a) == _norm(wanted) for a in actual)
    return _norm(actual) == _norm(wanted)


def _ordered(op: str, wanted: Any, field: str) -> Predicate:
    w = _norm(wanted)
    if not isinstance(w, int | float | str) or isinstance(w, bool):
        raise ConfigError(f"filter {field}.{op}: compare with a number, a string or a date, not {wanted!r}")

    def check(actual: Any) -> bool:
        a = _norm(actual)
        if isinstance(w, str) != isinstance(a, str) or a is None or isinstance(a, bool):
            return False  # a number against a string never matches (no silent coercion)
        if op == "gt":
            return bool(a > w)
        if op == "gte":
            return bool(a >= w)
        if op == "lt":
            return bool(a < w)
        return bool(a <= w)

    return check


def _as_operators(cond: Any) -> dict[str, Any]:
    """A condition as an operator mapping: a list means ``in``, a scalar ``eq``."""
    if isinstance(cond, Mapping):
        return dict(cond)
    return {"in": list(cond)} if isinstance(cond, list | tuple) else {"eq": cond}


def _condition(field: str, cond: Any) -> Predicate:
    """The predicate of one field's condition (its value ``_MISSING`` when the field is absent)."""
    ops = _as_operators(cond)
    unknown = [k for k in ops if k not in OPERATORS]
    if unknown or not ops:
        raise ConfigError(
            f"filter {field}: unknown operator {unknown[0] if unknown else '(none)'!r}; use {', '.join(OPERATORS)}"
        )
    checks = [_operator(field, str(op), arg) for op, arg in ops.items()]
    return lambda v: all(c(v) for c in checks)


def _operator(field: str, op: str, arg: Any) -> Predicate:
    if op == "exists":
        wanted = bool(arg)
        return lambda v: (v is not _MISSING) == wanted
    if op in ("ne", "nin"):
        values = list(arg) if op == "nin" and isinstance(arg, list | tuple) else [arg]
        return lambda v: v is _MISSING or not any(_equals(v, w) for w in values)
    if op in ("eq", "in"):
        values = list(arg) if op == "in" and isinstance(arg, list | tuple) else [arg]
        return lambda v: v is not _MISSING and any(_equals(v, w) for w in values)
    if op == "glob":
        pattern = str(arg)
        return lambda v: v is not _MISSING and isinstance(v, str) and fnmatch.fnmatchcase(v, pattern)
    check = _ordered(op, arg, field)
    return lambda v: v is not _MISSING and check(v)


def field_value(doc: Document, field: str) -> Any:
    """A document's value for a filter field (``_MISSING`` when absent)."""
    if field == "docid":
        return doc.docid
    if field == "title":
        return doc.title if doc.title is not None else _MISSING
    value = doc.meta.get(field, _MISSING)
    return _MISSING if value is None else value


class MetadataFilter:
    """A validated filter (see the module docstring); ``matches`` tests one document."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        if not isinstance(spec, Mapping):
            raise ConfigError(f"a filter is a mapping of field: condition, got {type(spec).__name__}")
        self.spec = dict(spec)
        self._checks = [(str(f), _condition(str(f), c)) for f, c in self.spec.items()]
        self.key = json.dumps(self.spec, sort_keys=True, default=str)

    def matches(self, doc: Document) -> bool:
        """Whether every condition holds for ``doc``."""
        return all(check(field_value(doc, f)) for f, check in self._checks)

    def __repr__(self) -> str:
        return f"MetadataFilter({self.key})"


def combine(*specs: Mapping[str, Any] | None) -> MetadataFilter | None:
    """One filter requiring every given one (a stage's own and a request's); ``None`` if none."""
    given = [s for s in specs if s]
    if not given:
        return None
    if len(given) == 1:
        return MetadataFilter(given[0])
    merged: dict[str, Any] = {}
    for spec in given:
        for field, cond in spec.items():
            if field in merged:
                merged[field] = _both(merged[field], cond)
            else:
                merged[field] = cond
    return MetadataFilter(merged)


def _both(a: Any, b: Any) -> dict[str, Any]:
    """Two conditions on one field as one operator mapping that needs both."""
    left, right = _as_operators(a), _as_operators(b)
    clash = set(left) & set(right)
    if clash:
        op = sorted(clash)[0]
        raise ConfigError(f"the request's filter sets {op!r} again on a field the stage already filters on")
    return {**left, **right}


class MaskCache:
    """Boolean masks of a corpus by filter, the last ``size`` remembered (a filter is
    evaluated over every document once, not once per query)."""

    def __init__(self, corpus: Sequence[Document], size: int = 64) -> None:
        self.corpus = corpus
        self.size = size
        self._masks: OrderedDict[str, np.ndarray] = OrderedDict()

    def mask(self, flt: MetadataFilter) -> np.ndarray:
        """``mask[i]``: document ``i`` passes the filter."""
        found = self._masks.get(flt.key)
        if found is None:
            found = np.fromiter((flt.matches(d) for d in self.corpus), dtype=bool, count=len(self.corpus))
            self._masks[flt.key] = found
            while len(self._masks) > self.size:
                self._masks.popitem(last=False)
        self._masks.move_to_end(flt.key)
        return found
