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
match the same value written as a string in JSON. Values keep their kind: a boolean never
equals a number and a number never compares with a string. On a list field, every operator
asks whether any element satisfies it. A document without the field fails every condition
except ``exists: false`` and ``ne``/``nin``.

A request's filter is checked before its work starts (:meth:`FilteredSearch.check_filter`):
against the corpus's field kinds (a value of a kind the field never holds is an error, not an
empty result) and against the server's size limits (values of ``in``/``nin``, glob length).
Evaluation costs one set lookup per document and value kind, not one comparison per value.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..cancel import CancelToken, is_cancelled
from ..errors import ConfigError, DataError
from ..types import Document

OPERATORS = ("eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "glob", "exists")
ORDERED = ("gt", "gte", "lt", "lte")
_MISSING = object()
Predicate = Callable[[Any], bool]
Key = tuple[str, Any]


def _norm(value: Any) -> Any:
    """One spelling for comparison: dates as ISO strings, everything else unchanged."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def kind_of(value: Any) -> str:
    """``bool``, ``number``, ``string`` (dates too), ``list``, ``mapping`` or ``other``."""
    value = _norm(value)
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    return "mapping" if isinstance(value, Mapping) else "other"


SCALARS = ("bool", "number", "string")


def _key(value: Any) -> Key:
    """A hashable key that equals another only for equal values of the same kind (``True`` is
    not ``1``; ``1`` is ``1.0``)."""
    kind = kind_of(value)
    return (kind, _norm(value)) if kind in SCALARS else (kind, repr(value))


def _elements(actual: Any) -> Sequence[Any]:
    """A field's values: the elements of a list field, else the value itself."""
    return actual if isinstance(actual, list | tuple) else (actual,)


def _ordered(op: str, wanted: Any, field: str) -> Predicate:
    w = _norm(wanted)
    kind = kind_of(w)
    if kind not in ("number", "string"):
        raise ConfigError(f"filter {field}.{op}: compare with a number, a string or a date, not {wanted!r}")
    compare: Callable[[Any], bool] = {
        "gt": lambda a: a > w,
        "gte": lambda a: a >= w,
        "lt": lambda a: a < w,
        "lte": lambda a: a <= w,
    }[op]

    def check(actual: Any) -> bool:  # a number against a string never matches (no silent coercion)
        return any(kind_of(a) == kind and bool(compare(_norm(a))) for a in _elements(actual))

    return check


def _as_operators(cond: Any) -> dict[str, Any]:
    """A condition as an operator mapping: a list means ``in``, a scalar ``eq``."""
    if isinstance(cond, Mapping):
        return dict(cond)
    return {"in": list(cond)} if isinstance(cond, list | tuple) else {"eq": cond}


def _values(op: str, arg: Any) -> list[Any]:
    """The values an ``eq``/``ne``/``in``/``nin`` operator compares with."""
    return list(arg) if op in ("in", "nin") and isinstance(arg, list | tuple) else [arg]


class _Limits:
    """Size limits of one filter (``None``: unlimited, as for a job's own filters)."""

    def __init__(self, max_values: int | None, max_glob_chars: int | None) -> None:
        self.max_values, self.max_glob_chars = max_values, max_glob_chars


def _condition(field: str, cond: Any, limits: _Limits) -> Predicate:
    """The predicate of one field's condition (its value ``_MISSING`` when the field is absent)."""
    ops = _as_operators(cond)
    unknown = [k for k in ops if k not in OPERATORS]
    if unknown or not ops:
        raise ConfigError(
            f"filter {field}: unknown operator {unknown[0] if unknown else '(none)'!r}; use {', '.join(OPERATORS)}"
        )
    checks = [_operator(field, str(op), arg, limits) for op, arg in ops.items()]
    return lambda v: all(c(v) for c in checks)


def _operator(field: str, op: str, arg: Any, limits: _Limits) -> Predicate:
    if op == "exists":
        if not isinstance(arg, bool):
            raise ConfigError(f"filter {field}.exists: use true or false, not {arg!r}")
        return lambda v: (v is not _MISSING) == arg
    if op in ("eq", "ne", "in", "nin"):
        values = _values(op, arg)
        if limits.max_values is not None and len(values) > limits.max_values:
            raise ConfigError(
                f"filter {field}.{op}: {len(values)} values; at most {limits.max_values} "
                "(serve.filter_max_values): filter on a shared field (a tag) instead of listing ids"
            )
        bad = next((w for w in values if kind_of(w) not in SCALARS), _MISSING)
        if bad is not _MISSING:
            raise ConfigError(
                f"filter {field}.{op}: compare with a string, a number, a boolean or a date, not {bad!r}"
                + ("; to match documents without the field use exists: false" if bad is None else "")
            )
        keys = frozenset(_key(w) for w in values)

        def hit(v: Any) -> bool:
            return v is not _MISSING and any(_key(a) in keys for a in _elements(v))

        return (lambda v: not hit(v)) if op in ("ne", "nin") else hit
    if op == "glob":
        if not isinstance(arg, str):
            raise ConfigError(f"filter {field}.glob: a pattern is a string, not {arg!r}")
        if limits.max_glob_chars is not None and len(arg) > limits.max_glob_chars:
            raise ConfigError(
                f"filter {field}.glob: the pattern has {len(arg)} characters; at most {limits.max_glob_chars} "
                "(serve.filter_max_glob_chars)"
            )
        # compiled here, once per filter: fnmatch's own cache would keep every pattern ever seen
        pattern = re.compile(fnmatch.translate(arg))
        return lambda v: (
            v is not _MISSING and any(isinstance(a, str) and pattern.match(a) is not None for a in _elements(v))
        )
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
    """A validated filter (see the module docstring); ``matches`` tests one document.

    ``max_values`` and ``max_glob_chars`` bound what a request may ask for (``None``: no
    bound, for filters a job writes itself)."""

    def __init__(
        self, spec: Mapping[str, Any], *, max_values: int | None = None, max_glob_chars: int | None = None
    ) -> None:
        if not isinstance(spec, Mapping):
            raise ConfigError(f"a filter is a mapping of field: condition, got {type(spec).__name__}")
        self.spec = dict(spec)
        limits = _Limits(max_values, max_glob_chars)
        self._checks = [(str(f), _condition(str(f), c, limits)) for f, c in self.spec.items()]
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


_PLURAL = {"bool": "booleans", "number": "numbers", "string": "strings (or dates)", "mapping": "mappings"}


class FieldKinds:
    """The kinds of value each metadata field holds across a corpus (list fields: their
    elements' kinds), to reject filter values that could never match."""

    def __init__(self, corpus: Sequence[Document]) -> None:
        kinds: dict[str, set[str]] = {"docid": {"string"}}
        for doc in corpus:
            if doc.title is not None:
                kinds.setdefault("title", set()).add("string")
            for field, value in doc.meta.items():
                if value is not None:
                    seen = kinds.setdefault(str(field), set())
                    seen.update(kind_of(v) for v in _elements(value))
        self.kinds = kinds

    def check(self, spec: Mapping[str, Any]) -> None:
        """Raise :class:`DataError` naming the field when a value's kind is one the field never
        holds (a field no document has is allowed: it matches nothing, or everything with
        ``exists: false``)."""
        for field, cond in spec.items():
            held = self.kinds.get(str(field))
            if held is None:
                continue
            for op, arg in _as_operators(cond).items():
                if op == "exists":
                    continue
                wanted = [("string", arg)] if op == "glob" else [(kind_of(w), w) for w in _values(op, arg)]
                for kind, value in wanted:
                    if kind not in held:
                        what = " and ".join(_PLURAL.get(k, k) for k in sorted(held))
                        raise DataError(
                            f"filter {field}.{op}: field {field!r} holds {what} in this index, so "
                            f"{value!r} ({'a pattern' if op == 'glob' else kind}) can never match; "
                            "compare with a value of that kind"
                        )


class MaskCache:
    """Boolean masks of a corpus by filter, the last ``size`` remembered (a filter is
    evaluated over every document once, not once per query)."""

    BLOCK = 4096
    """Documents evaluated between two checks of a request's cancel token."""

    def __init__(self, corpus: Sequence[Document], size: int = 64) -> None:
        self.corpus = corpus
        self.size = size
        self._masks: OrderedDict[str, np.ndarray] = OrderedDict()
        self._kinds: FieldKinds | None = None

    @property
    def kinds(self) -> FieldKinds:
        """The corpus's field kinds (computed on first use)."""
        if self._kinds is None:
            self._kinds = FieldKinds(self.corpus)
        return self._kinds

    def mask(self, flt: MetadataFilter, cancel: CancelToken | None = None) -> np.ndarray | None:
        """``mask[i]``: document ``i`` passes the filter (``None`` when ``cancel`` was set
        before the whole corpus was evaluated; nothing is remembered then)."""
        found = self._masks.get(flt.key)
        if found is None:
            found = np.zeros(len(self.corpus), dtype=bool)
            for start in range(0, len(self.corpus), self.BLOCK):
                if is_cancelled(cancel):
                    return None
                block = self.corpus[start : start + self.BLOCK]
                found[start : start + len(block)] = [flt.matches(d) for d in block]
            self._masks[flt.key] = found
            while len(self._masks) > self.size:
                self._masks.popitem(last=False)
        self._masks.move_to_end(flt.key)
        return found

    def allowed(self, flt: MetadataFilter) -> np.ndarray:
        """:meth:`mask` without cancellation."""
        found = self.mask(flt)
        if found is None:  # cannot happen without a token; keeps the type exact
            raise DataError("filter evaluation was cancelled")
        return found


class FilteredSearch:
    """What a retriever with metadata filters offers the server (mixed into BM25 and dense):
    a request's filter checked before its work starts, and its mask computed with the
    request's cancel token. Needs ``_masks`` (a :class:`MaskCache`) and ``options.filter``."""

    _masks: MaskCache
    options: Any

    def check_filter(self, spec: Mapping[str, Any]) -> None:
        """Raise a rerankflow error when ``spec`` cannot apply here (combined with the
        stage's own filter; values of kinds the corpus's fields never hold)."""
        combine(self.options.filter, spec)
        self._masks.kinds.check(spec)

    def prepare_filter(self, spec: Mapping[str, Any] | None, cancel: CancelToken | None) -> None:
        """Compute and remember the mask of ``spec`` now, stopping early if ``cancel`` is set."""
        flt = combine(self.options.filter, spec)
        if flt is not None:
            self._masks.mask(flt, cancel)
