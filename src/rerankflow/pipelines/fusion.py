"""Rank fusion: reciprocal rank fusion and convex combination of normalised scores.

Both run every input stage on the same batch and merge the candidate lists (union of
documents). A document missing from one input gets that input's floor (see each class).
The fused score becomes the candidate's score; the inputs' scores are kept in its history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from ..errors import PipelineTypeError
from ..stage import Transformer, as_transformer
from ..types import Candidate, Ranking, sort_candidates

Normalization = Literal["minmax", "zscore", "none"]


class Weighted:
    """``w * stage``: a stage with a weight, waiting to be added to another (``+``)."""

    def __init__(self, stage: Transformer, weight: float) -> None:
        self.stage = stage
        self.weight = weight

    def __add__(self, other: Transformer | Weighted) -> ConvexFusion:
        return convex(self, other)

    def __repr__(self) -> str:
        return f"{self.weight:g} * {self.stage!r}"


def convex(left: Weighted, right: Transformer | Weighted) -> ConvexFusion:
    """``left + right`` as a min-max convex combination (the operator form)."""
    right_w = right if isinstance(right, Weighted) else Weighted(right, 1.0)
    return ConvexFusion([left.stage, right_w.stage], weights=[left.weight, right_w.weight])


class _Fusion(Transformer):
    """Shared machinery: run the inputs, align their candidates by document id."""

    def __init__(self, inputs: Sequence[Transformer], weights: Sequence[float] | None, stage_name: str) -> None:
        if len(inputs) < 2:
            raise PipelineTypeError(f"{stage_name} fuses at least two inputs, got {len(inputs)}")
        self.inputs = [as_transformer(s) for s in inputs]
        w = [1.0] * len(self.inputs) if weights is None else [float(x) for x in weights]
        if len(w) != len(self.inputs):
            raise PipelineTypeError(
                f"{stage_name} has {len(self.inputs)} inputs but {len(w)} weights; give one weight per input"
            )
        if any(x < 0 for x in w) or sum(w) <= 0:
            raise PipelineTypeError(f"{stage_name} weights must be non-negative and not all zero, got {w}")
        self.weights = w
        self.stage_name = stage_name

    @property
    def name(self) -> str:
        """Provenance name of the fused score."""
        return self.stage_name

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
            Candidate(first[d].doc, float(s), self.stage_name, tuple(scores[d].items()))
            for d, s in zip(first, fused, strict=True)
        ]
        return incoming.with_candidates(sort_candidates(out))

    def _fused_scores(self, lists: list[Ranking], docids: list[str]) -> np.ndarray:
        raise NotImplementedError


class RRFFusion(_Fusion):
    r"""Reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009).

    .. math:: s(d) = \sum_i w_i / (k + r_i(d))

    where :math:`r_i(d)` is the rank of ``d`` in input ``i`` counted from ``rank_base``
    (default 1, as in the paper: the best document has rank 1, so it adds ``w/(k+1)``),
    ``k`` defaults to 60 and ``w_i`` to 1. A document absent from input ``i`` adds nothing.
    """

    def __init__(
        self,
        inputs: Sequence[Transformer],
        *,
        k: float = 60.0,
        weights: Sequence[float] | None = None,
        rank_base: int = 1,
    ) -> None:
        super().__init__(inputs, weights, "rrf")
        if k < 0:
            raise PipelineTypeError(f"rrf k must be >= 0, got {k}")
        self.k = float(k)
        self.rank_base = int(rank_base)

    def _fused_scores(self, lists: list[Ranking], docids: list[str]) -> np.ndarray:
        index = {d: i for i, d in enumerate(docids)}
        total = np.zeros(len(docids))
        for w, lst in zip(self.weights, lists, strict=True):
            for rank, c in enumerate(lst.candidates):
                total[index[c.docid]] += w / (self.k + rank + self.rank_base)
        return total

    def __repr__(self) -> str:
        args = ", ".join(repr(s) for s in self.inputs)
        return f"rrf({args}, k={self.k:g}, weights={self.weights})"


class ConvexFusion(_Fusion):
    r"""Convex combination of per-query normalised scores (Bruch, Gai and Ingber, "An Analysis
    of Fusion Functions for Hybrid Retrieval", ACM TOIS 2023).

    .. math:: s(d) = \sum_i \alpha_i\, \phi_i(s_i(d)), \quad \alpha_i = w_i / \sum_j w_j

    ``normalization`` picks :math:`\phi`: ``"minmax"`` maps each query's scores of an input to
    [0, 1] (all-equal scores map to 1); ``"zscore"`` subtracts the mean and divides by the
    standard deviation (0 when it is 0); ``"none"`` uses raw scores. A document absent from an
    input gets that input's lowest normalised score for the query (0 under min-max).
    """

    def __init__(
        self,
        inputs: Sequence[Transformer],
        *,
        weights: Sequence[float] | None = None,
        normalization: Normalization = "minmax",
    ) -> None:
        super().__init__(inputs, weights, "convex")
        if normalization not in ("minmax", "zscore", "none"):
            raise PipelineTypeError(f"normalization must be minmax, zscore or none, got {normalization!r}")
        self.normalization: Normalization = normalization
        total = sum(self.weights)
        self.alphas = [w / total for w in self.weights]

    def _fused_scores(self, lists: list[Ranking], docids: list[str]) -> np.ndarray:
        index = {d: i for i, d in enumerate(docids)}
        total = np.zeros(len(docids))
        for alpha, lst in zip(self.alphas, lists, strict=True):
            if not lst.candidates:
                continue
            raw = np.array([c.score for c in lst.candidates], dtype=float)
            norm = normalize(raw, self.normalization)
            column = np.full(len(docids), norm.min())
            for c, v in zip(lst.candidates, norm, strict=True):
                column[index[c.docid]] = v
            total += alpha * column
        return total

    def __repr__(self) -> str:
        terms = " + ".join(f"{w:g} * {s!r}" for w, s in zip(self.weights, self.inputs, strict=True))
        suffix = "" if self.normalization == "minmax" else f" [{self.normalization}]"
        return f"({terms}){suffix}"


def normalize(scores: np.ndarray, method: Normalization) -> np.ndarray:
    """Normalise one query's scores (see :class:`ConvexFusion`)."""
    if method == "none" or scores.size == 0:
        return scores
    if method == "minmax":
        lo, hi = scores.min(), scores.max()
        return np.ones_like(scores) if hi == lo else (scores - lo) / (hi - lo)
    std = scores.std()
    return np.zeros_like(scores) if std == 0 else (scores - scores.mean()) / std


def rrf(
    *inputs: Transformer,
    k: float = 60.0,
    weights: Sequence[float] | None = None,
    rank_base: int = 1,
) -> RRFFusion:
    """Reciprocal rank fusion of ``inputs`` (see :class:`RRFFusion`)."""
    return RRFFusion(inputs, k=k, weights=weights, rank_base=rank_base)
