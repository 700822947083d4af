"""The composition operators as stages: ``a >> b`` (:class:`Sequential`, :func:`chain`),
``a % k`` (:class:`Cutoff`), the pass-through :class:`Identity`, and fusion: ``a + b`` and
``w * a`` (:class:`ConvexFusion`, a convex combination of normalised scores) and :func:`rrf`.

Fusion runs every input stage on the same batch and merges the candidate lists (union of
documents). A document missing from one input gets that input's floor (see each class).
The fused score becomes the candidate's score; the inputs' scores are kept in its history,
and what the inputs' stages recorded joins the ranking's trace (input by input).

The YAML stages ``cutoff``, ``identity``, ``rrf`` and ``convex`` are these classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from .errors import PipelineTypeError
from .options import StageOptions
from .stage import Transformer, as_transformer
from .types import Candidate, Ranking, sort_candidates


class Sequential(Transformer):
    """``first >> second``: run ``first``, feed its output to ``second``."""

    is_chain = True

    def __init__(self, first: Transformer, second: Transformer) -> None:
        self.first = first
        self.second = second

    def children(self) -> list[Transformer]:
        """Both parts."""
        return [self.first, self.second]

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Run both parts in order."""
        return self.second(self.first(batch))

    def __repr__(self) -> str:
        if isinstance(self.second, Cutoff):
            return f"({self.first!r} % {self.second.options.k})"
        return f"({self.first!r} >> {self.second!r})"


def chain(stages: Sequence[Transformer]) -> Transformer:
    """``stages[0] >> stages[1] >> ...`` (one stage is returned as it is)."""
    if not stages:
        raise PipelineTypeError("a chain needs at least one stage")
    out = stages[0]
    for stage in stages[1:]:
        out = Sequential(out, stage)
    return out


class CutoffOptions(StageOptions):
    """Keep the top k candidates of each ranking."""

    k: int = Field(..., ge=0, strict=True, description="candidates kept per ranking")


class Cutoff(Transformer):
    """Keep the top ``k`` candidates of every ranking (``stage % k``)."""

    Options = CutoffOptions

    def __init__(self, k: int) -> None:
        self.options = CutoffOptions.build(None, {"k": k}, "cutoff", PipelineTypeError)

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Truncate every ranking."""
        return [r.top(self.options.k) for r in batch]

    def __repr__(self) -> str:
        return f"Cutoff({self.options.k})"


class IdentityOptions(StageOptions):
    """Pass rankings through unchanged (in fusion: the incoming candidates)."""


class Identity(Transformer):
    """Returns its input unchanged (useful as a fusion input: "the incoming ranking")."""

    Options = IdentityOptions

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Return the batch as it is."""
        return list(batch)

    def __repr__(self) -> str:
        return "Identity()"


# -- fusion ---------------------------------------------------------------------------------

Normalization = Literal["minmax", "theoretical", "zscore", "none"]


class Weighted:
    """``w * stage``: a stage with a weight, waiting to be added to another (``+``)."""

    def __init__(self, stage: Transformer, weight: float) -> None:
        self.stage = stage
        self.weight = weight

    def __add__(self, other: Transformer | Weighted) -> ConvexFusion:
        return convex(self, other)

    def __repr__(self) -> str:
        return f"{self.weight:g} * {self.stage!r}"


def convex(left: Transformer | Weighted, right: Transformer | Weighted) -> ConvexFusion:
    """``left + right`` as a min-max convex combination (the operator form).

    Sums written with ``+`` flatten: ``0.2 * a + 0.3 * b + 0.5 * c`` is one fusion of three
    inputs with weights 0.2, 0.3, 0.5 (Python builds ``(0.2a + 0.3b) + 0.5c``; without
    flattening the inner fusion would be normalised twice and weighted 1 against 0.5). A
    weighted sum, ``2 * (a + b)``, stays one input; build nested fusions with
    :class:`ConvexFusion` to nest on purpose."""
    terms = _terms(left) + _terms(right)
    fused = ConvexFusion([stage for stage, _ in terms], weights=[w for _, w in terms])
    fused.from_operator = True
    return fused


def _terms(part: Transformer | Weighted) -> list[tuple[Transformer, float]]:
    """The weighted inputs an operand of ``+`` contributes (a ``+``-built fusion: its own)."""
    if isinstance(part, Weighted):
        return [(part.stage, part.weight)]
    if isinstance(part, ConvexFusion) and part.from_operator:
        return list(zip(part.inputs, part.weights, strict=True))
    return [(part, 1.0)]


class FusionOptions(StageOptions):
    """Settings every fusion shares."""

    weights: list[float] | None = Field(None, description="one non-negative weight per input (default: all 1)")

    @field_validator("weights")
    @classmethod
    def _usable_weights(cls, w: list[float] | None) -> list[float] | None:
        if w is not None and (any(x < 0 for x in w) or sum(w) <= 0):
            raise ValueError(f"weights must be non-negative and not all zero, got {w}")
        return w


class _Fusion(Transformer):
    """Shared machinery: run the inputs, align their candidates by document id."""

    Options: ClassVar[type[FusionOptions]] = FusionOptions

    def __init__(self, inputs: Sequence[Transformer], options: FusionOptions | None, settings: dict[str, Any]) -> None:
        self.options = self.Options.build(options, settings, self.name, PipelineTypeError)
        if len(inputs) < 2:
            raise PipelineTypeError(f"{self.name} fuses at least two inputs, got {len(inputs)}")
        self.inputs = [as_transformer(s) for s in inputs]
        weights = self.options.weights
        w = [1.0] * len(self.inputs) if weights is None else [float(x) for x in weights]
        if len(w) != len(self.inputs):
            raise PipelineTypeError(
                f"{self.name} has {len(self.inputs)} inputs but {len(w)} weights; give one weight per input"
            )
        self.weights = w

    def children(self) -> list[Transformer]:
        """The fused inputs."""
        return list(self.inputs)

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Run each input on the batch and fuse per query."""
        outputs = [stage(batch) for stage in self.inputs]
        return [self._fuse_one(q, [out[i] for out in outputs]) for i, q in enumerate(batch)]

    def _fuse_one(self, incoming: Ranking, lists: list[Ranking]) -> Ranking:
        first: dict[str, Candidate] = {}
        scores: dict[str, dict[str, float]] = {}
        for lst in lists:
            for c in lst.candidates:
                first.setdefault(c.docid, c)
                scores.setdefault(c.docid, {}).update(c.scores())
        fused = self._fused_scores(lists, list(first))
        out = [
            Candidate(first[d].doc, float(s), self.name, tuple(scores[d].items()))
            for d, s in zip(first, fused, strict=True)
        ]
        branch_records = [rec for lst in lists for rec in lst.trace[len(incoming.trace) :]]
        return incoming.with_candidates(sort_candidates(out)).recorded(*branch_records)

    def _fused_scores(self, lists: list[Ranking], docids: list[str]) -> np.ndarray:
        raise NotImplementedError


class RRFOptions(FusionOptions):
    """Reciprocal rank fusion of the sub-pipelines under 'inputs'."""

    k: float = Field(60.0, ge=0)
    rank_base: int = Field(1, ge=0, description="rank of the best document in the formula (1 as in the paper)")


class RRFFusion(_Fusion):
    r"""Reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009).

    .. math:: s(d) = \sum_i w_i / (k + r_i(d))

    where :math:`r_i(d)` is the rank of ``d`` in input ``i`` counted from ``rank_base``
    (default 1, as in the paper: the best document has rank 1, so it adds ``w/(k+1)``),
    ``k`` defaults to 60 and ``w_i`` to 1. A document absent from input ``i`` adds nothing.
    """

    stage_name = "rrf"

    Options = RRFOptions
    options: RRFOptions

    def __init__(self, inputs: Sequence[Transformer], options: RRFOptions | None = None, **settings: Any) -> None:
        super().__init__(inputs, options, settings)
        self.k = float(self.options.k)
        self.rank_base = int(self.options.rank_base)

    def _fused_scores(self, lists: list[Ranking], docids: list[str]) -> np.ndarray:
        index = {d: i for i, d in enumerate(docids)}
        total = np.zeros(len(docids))
        for w, lst in zip(self.weights, lists, strict=True):
            for rank, c in enumerate(lst.candidates):
                total[index[c.docid]] += w / (self.options.k + rank + self.rank_base)
        return total

    def __repr__(self) -> str:
        args = ", ".join(repr(s) for s in self.inputs)
        return f"rrf({args}, k={self.options.k:g}, weights={self.weights})"


class ConvexOptions(FusionOptions):
    """Convex combination of per-query normalised scores of the sub-pipelines under 'inputs'
    (weights are normalised to sum 1)."""

    normalization: Normalization = "minmax"
    floors: list[float] | None = Field(
        None,
        description="theoretical normalisation: the lowest score each input's scorer can give "
        "(e.g. 0 for BM25, -1 for cosine), one per input",
    )
    rank_inputs: Literal["refuse", "ranks"] = Field(
        "refuse",
        description="inputs whose scores only encode ranks (listwise, setwise, PRP sorts, "
        "depth-limited tails): refuse with an error, or fuse their ranks as (n-1-r)/(n-1)",
    )

    @model_validator(mode="after")
    def _floors_for_theoretical(self) -> ConvexOptions:
        if self.normalization == "theoretical" and self.floors is None:
            raise ValueError(
                "normalization 'theoretical' needs floors: the lowest score each input can give, "
                "one per input (e.g. [0, -1] for BM25 and a cosine retriever)"
            )
        return self


class ConvexFusion(_Fusion):
    r"""Convex combination of per-query normalised scores (Bruch, Gai and Ingber, "An Analysis
    of Fusion Functions for Hybrid Retrieval", ACM TOIS 2023).

    .. math:: s(d) = \sum_i \alpha_i\, \phi_i(s_i(d)), \quad \alpha_i = w_i / \sum_j w_j

    ``normalization`` picks :math:`\phi`: ``"minmax"`` maps each query's scores of an input to
    [0, 1] (all-equal scores map to 1); ``"theoretical"`` is the theoretical min-max the paper
    recommends, :math:`(s - m_i) / (\max_q s - m_i)` with :math:`m_i` the lowest score input
    ``i``'s scorer can give (``floors``), so a query's weakest retrieved document is not pulled
    to 0; ``"zscore"`` subtracts the mean and divides by the standard deviation (0 when it is
    0); ``"none"`` uses raw scores. A document absent from an input gets that input's lowest
    normalised score for the query (0 under min-max).

    Rank-derived inputs (``Candidate.rank_derived``: ``1/(rank+1)`` of a listwise, setwise or
    PRP sort, and the tail below a reranker's ``depth``) carry no score scale: min-max would
    squash a depth-20 head into 0.988-1.0. By default they are refused with an error that
    points to :class:`RRFFusion`; ``rank_inputs="ranks"`` fuses such an input by its ranks,
    :math:`(n - 1 - r) / (n - 1)` for the document at rank ``r`` of ``n``.
    """

    stage_name = "convex"

    Options = ConvexOptions
    options: ConvexOptions

    def __init__(self, inputs: Sequence[Transformer], options: ConvexOptions | None = None, **settings: Any) -> None:
        super().__init__(inputs, options, settings)
        self.normalization: Normalization = self.options.normalization
        total = sum(self.weights)
        self.alphas = [w / total for w in self.weights]
        floors = self.options.floors
        if floors is not None and len(floors) != len(self.inputs):
            raise PipelineTypeError(
                f"convex has {len(self.inputs)} inputs but {len(floors)} floors; give one floor per input"
            )
        self.floors = floors
        self.from_operator = False
        """Built by ``+`` (then a further ``+`` adds inputs to it instead of nesting it)."""

    def _fused_scores(self, lists: list[Ranking], docids: list[str]) -> np.ndarray:
        index = {d: i for i, d in enumerate(docids)}
        total = np.zeros(len(docids))
        for i, (alpha, lst) in enumerate(zip(self.alphas, lists, strict=True)):
            if not lst.candidates:
                continue
            norm = self._normalised(i, lst)
            column = np.full(len(docids), norm.min())
            for c, v in zip(lst.candidates, norm, strict=True):
                column[index[c.docid]] = v
            total += alpha * column
        return total

    def _normalised(self, i: int, lst: Ranking) -> np.ndarray:
        """Input ``i``'s normalised scores for one query (rank-derived inputs by the rule)."""
        if any(c.rank_derived for c in lst.candidates):
            if self.options.rank_inputs == "refuse":
                raise PipelineTypeError(
                    f"convex fusion input {i + 1} ({self.inputs[i]!r}) gave rank-derived scores for query "
                    f"{lst.query.qid!r}: they encode only ranks, and min-max normalisation squashes them. "
                    "Fuse ranks with rrf(...) (YAML: rrf:), or set rank_inputs: ranks to fuse this input "
                    "by rank as (n-1-r)/(n-1)"
                )
            n = len(lst.candidates)
            return np.ones(1) if n == 1 else 1.0 - np.arange(n) / (n - 1)
        raw = np.array([c.score for c in lst.candidates], dtype=float)
        method = self.normalization
        if method == "theoretical":
            floor = (self.floors or [])[i]
            top = raw.max()
            return np.ones_like(raw) if top <= floor else (raw - floor) / (top - floor)
        return normalize(raw, method)

    def __repr__(self) -> str:
        terms = " + ".join(f"{w:g} * {s!r}" for w, s in zip(self.weights, self.inputs, strict=True))
        suffix = "" if self.normalization == "minmax" else f" [{self.normalization}]"
        return f"({terms}){suffix}"


def normalize(scores: np.ndarray, method: Literal["minmax", "zscore", "none"]) -> np.ndarray:
    """Normalise one query's scores (see :class:`ConvexFusion`)."""
    if method == "none" or scores.size == 0:
        return scores
    if method == "minmax":
        lo, hi = scores.min(), scores.max()
        return np.ones_like(scores) if hi == lo else (scores - lo) / (hi - lo)
    std = scores.std()
    return np.zeros_like(scores) if std == 0 else (scores - scores.mean()) / std


def rrf(*inputs: Transformer, **settings: Any) -> RRFFusion:
    """Reciprocal rank fusion of ``inputs`` (see :class:`RRFFusion`; settings: :class:`RRFOptions`)."""
    return RRFFusion(inputs, **settings)
