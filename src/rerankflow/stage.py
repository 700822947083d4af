"""The stage protocol: the base class every stage derives from, the contract checked on every
call, and retrievers.

A stage maps a batch of rankings to a list of rankings of the same length and order
(PyTerrier's transformer contract). Retrievers are stages that ignore the incoming
candidates and produce new ones from the query. The operators (``a >> b``, ``a % k``,
``a + b``, ``w * a``) build the stages of :mod:`rerankflow.ops`, imported when used (that
module derives from this one).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from .errors import DataError, PipelineTypeError
from .options import Options, StageOptions
from .types import Query, Ranking, as_rankings

if TYPE_CHECKING:
    from .ops import ConvexFusion, Sequential, Weighted


@runtime_checkable
class Stage(Protocol):
    """Anything that maps a batch of rankings to a same-length list of rankings, order kept."""

    def __call__(self, batch: Sequence[Ranking], /) -> list[Ranking]:
        """Transform ``batch``."""
        ...


class Transformer(ABC):
    """Base class of every built-in stage: contract checks, operators and lazy loading.

    Subclasses implement :meth:`transform`. Heavy objects (models, indexes) are created in
    :meth:`load`, which runs once, on first use, never in ``__init__``.
    """

    _loaded: bool = False
    is_chain: ClassVar[bool] = False
    """True for ``a >> b``, whose children run one after another."""
    Options: ClassVar[type[Options]] = StageOptions
    """The stage's settings (:mod:`rerankflow.options`); YAML configs derive from them."""
    stage_name: ClassVar[str | None] = None
    """The stage's name in score provenance and reports (its YAML name); default: the class name."""
    shown: ClassVar[tuple[str, ...]] = ()
    """Attributes holding the objects the stage works with (a backend, an encoder), shown first
    in its ``repr``."""

    @property
    def name(self) -> str:
        """Short name used in score provenance and reports."""
        return self.stage_name or type(self).__name__

    def __repr__(self) -> str:
        """``Class(objects..., option=value, ...)``: the held objects, then every option that
        differs from its default."""
        parts = [repr(getattr(self, a)) for a in self.shown]
        options = getattr(self, "options", None)
        if isinstance(options, Options):
            changed = options.model_dump(exclude_defaults=True)
            parts += [f"{k}={getattr(options, k)!r}" for k in type(options).model_fields if k in changed]
        return f"{type(self).__name__}({', '.join(parts)})"

    def load(self) -> None:  # noqa: B027  (optional hook, not abstract)
        """Load models or indexes; called once before the first batch. Override if needed."""

    def ensure_loaded(self) -> None:
        """Run :meth:`load` once."""
        if not self._loaded:
            self.load()
            self._loaded = True

    def children(self) -> list[Transformer]:
        """Stages this one runs (composites override this)."""
        return []

    def walk(self, *, chain: bool = False) -> list[Transformer]:
        """This stage and every stage inside it, in execution order (composites before their
        parts). With ``chain``: only the steps a ``>>`` chain runs one after another (a
        fusion is one step; a stage that is no chain is a chain of one).
        """
        if chain:
            return [s for c in self.children() for s in c.walk(chain=True)] if self.is_chain else [self]
        return [self, *(s for c in self.children() for s in c.walk())]

    def warm_up(self) -> None:
        """Load this stage and everything it contains now, instead of on the first batch."""
        self.ensure_loaded()
        for child in self.children():
            child.warm_up()

    @abstractmethod
    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Transform a batch; same length and order as the input."""

    def __call__(self, batch: Sequence[Ranking], /) -> list[Ranking]:
        """Run the stage on a batch, loading it first if needed, and check the contract."""
        if isinstance(batch, Ranking):
            raise PipelineTypeError(
                f"{self.name} takes a batch (a list) of rankings, not one Ranking; wrap it: [ranking]"
            )
        self.ensure_loaded()
        out = self.transform(batch)
        check_contract(self, batch, out)
        return out

    def search(self, queries: Sequence[Query | str]) -> list[Ranking]:
        """Run this pipeline on queries (strings get ids ``q0``, ``q1``...)."""
        return self(as_rankings(queries))

    def __rshift__(self, other: Stage) -> Sequential:
        from .ops import Sequential

        return Sequential(self, as_transformer(other))

    def __rrshift__(self, other: Stage) -> Sequential:
        from .ops import Sequential

        return Sequential(as_transformer(other), self)

    def __mod__(self, k: int) -> Sequential:
        from .ops import Cutoff, Sequential

        return Sequential(self, Cutoff(k))

    def __add__(self, other: Transformer | Weighted) -> ConvexFusion:
        from .ops import convex

        return convex(self, other)

    def __mul__(self, weight: float) -> Weighted:
        from .ops import Weighted

        return Weighted(self, float(weight))

    __rmul__ = __mul__


def require_at_most(
    batch: Sequence[Ranking],
    limit: int | None,
    stage: str,
    *,
    setting: str = "max_candidates",
    depth: int | None = None,
) -> None:
    """Raise a :class:`DataError` naming the first query whose ranking holds more than ``limit``
    candidates (only the first ``depth`` count when given); ``None`` means no limit.
    """
    if limit is None:
        return
    for r in batch:
        n = len(r.candidates) if depth is None else min(len(r.candidates), depth)
        if n > limit:
            raise DataError(
                f"query {r.query.qid!r} brings {n} candidates to {stage}, which takes at most {limit} ({setting}); "
                f"cut the list before it (a retriever's k, or '% {limit}') or raise {setting}"
            )


def check_contract(runner: object, batch: Sequence[Ranking], out: Sequence[Ranking]) -> None:
    """Raise if ``out`` of ``runner`` (a stage) breaks the contract (same length, same queries, same order)."""
    name = getattr(runner, "name", type(runner).__name__)
    if not isinstance(out, list):
        raise PipelineTypeError(f"stage {name} returned {type(out).__name__}; stages must return a list of rankings")
    if len(out) != len(batch):
        raise PipelineTypeError(
            f"stage {name} returned {len(out)} rankings for {len(batch)} inputs; stages keep the batch length"
        )
    for i, (a, b) in enumerate(zip(batch, out, strict=True)):
        if a.query.qid != b.query.qid:
            raise PipelineTypeError(
                f"stage {name} changed the order of the batch at position {i} "
                f"(query {a.query.qid!r} became {b.query.qid!r}); stages keep the batch order"
            )


class FunctionStage(Transformer):
    """Adapts any callable that honours the :class:`Stage` protocol."""

    def __init__(self, fn: Stage) -> None:
        self.fn = fn

    @property
    def name(self) -> str:
        """Name of the wrapped callable."""
        return getattr(self.fn, "__name__", type(self.fn).__name__)

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Call the wrapped function."""
        return list(self.fn(batch))

    def __repr__(self) -> str:
        return f"FunctionStage({self.name})"


def as_transformer(stage: Stage) -> Transformer:
    """Wrap a plain callable stage so it composes; transformers are returned as they are."""
    if isinstance(stage, Transformer):
        return stage
    if callable(stage):
        return FunctionStage(stage)
    raise PipelineTypeError(f"cannot compose {type(stage).__name__}: a stage is a callable taking a list of rankings")


class Retriever(Transformer):
    """A stage that produces candidates from the query alone (incoming candidates are dropped)."""

    def retrieve(self, queries: Sequence[Query]) -> list[Ranking]:
        """Rank the collection for each query; one ranking per query, same order.

        Empty query texts are errors. Loads the index on first use.
        """
        for q in queries:
            if not q.text.strip():
                raise DataError(f"query {q.qid!r} is empty; every query needs text")
        self.ensure_loaded()
        return self._retrieve(queries)

    @abstractmethod
    def _retrieve(self, queries: Sequence[Query]) -> list[Ranking]:
        """Subclasses rank the collection here (queries are non-empty, the index loaded)."""

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Retrieve for the queries of the batch (each ranking keeps the trace it came with);
        a query a ``gate`` stage let through without search passes unchanged, with no candidates."""
        run = [i for i, r in enumerate(batch) if not r.retrieval_skipped]
        out = list(batch)
        found = self.retrieve([batch[i].query for i in run]) if run else []
        for i, new in zip(run, found, strict=True):
            out[i] = replace(new, trace=batch[i].trace) if batch[i].trace else new
        return out
