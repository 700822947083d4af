import math

import pytest

from rerankflow import Candidate, Document, PipelineTypeError, Query, Ranking, Transformer, rrf
from rerankflow.ops import ConvexFusion, normalize


class Fixed(Transformer):
    """Returns a fixed list of (docid, score) per query: a test double for a retriever."""

    def __init__(self, name, pairs):
        self._name = name
        self.pairs = pairs

    @property
    def name(self):
        return self._name

    def transform(self, batch):
        return [r.with_candidates(Candidate(Document(d, d), s, self._name) for d, s in self.pairs) for r in batch]

    def __repr__(self):
        return self._name


Q = [Ranking(Query("q", "x"))]
A = Fixed("a", [("x", 10.0), ("y", 5.0), ("z", 1.0)])
B = Fixed("b", [("y", 0.9), ("w", 0.8)])


def scores(r):
    return {c.docid: c.score for c in r.candidates}


def test_rrf_formula_rank_base_and_weights():
    out = rrf(A, B)(Q)[0]
    s = scores(out)
    assert s["y"] == pytest.approx(1 / 62 + 1 / 61)
    assert s["x"] == pytest.approx(1 / 61)
    assert s["w"] == pytest.approx(1 / 62)
    assert s["z"] == pytest.approx(1 / 63)
    assert out.docids[0] == "y"
    zero_based = scores(rrf(A, B, k=10, rank_base=0)(Q)[0])
    assert zero_based["x"] == pytest.approx(1 / 10)
    assert zero_based["y"] == pytest.approx(1 / 11 + 1 / 10)
    weighted = scores(rrf(A, B, k=10, weights=[2.0, 1.0])(Q)[0])
    assert weighted["x"] == pytest.approx(2 / 11)
    assert weighted["y"] == pytest.approx(2 / 12 + 1 / 11)


def test_rrf_keeps_input_scores_in_history():
    c = next(c for c in rrf(A, B)(Q)[0].candidates if c.docid == "y")
    assert c.stage == "rrf"
    assert c.scores()["a"] == 5.0 and c.scores()["b"] == 0.9


def test_convex_minmax_with_missing_documents():
    out = ConvexFusion([A, B], weights=[0.25, 0.75])(Q)[0]
    s = scores(out)
    # a: min-max over (10, 5, 1); b: over (0.9, 0.8); missing -> input's minimum (0).
    assert s["x"] == pytest.approx(0.25 * 1.0 + 0.75 * 0.0)
    assert s["y"] == pytest.approx(0.25 * (4 / 9) + 0.75 * 1.0)
    assert s["w"] == pytest.approx(0.25 * 0.0 + 0.75 * 0.0)
    assert out.docids[0] == "y"


def test_convex_zscore_and_operator_sugar():
    p = 0.3 * A + 0.7 * B
    assert isinstance(p, ConvexFusion)
    assert p.alphas == pytest.approx([0.3, 0.7])
    assert repr(p) == "(0.3 * a + 0.7 * b)"
    z = ConvexFusion([A, B], normalization="zscore")(Q)[0]
    raw = [10.0, 5.0, 1.0]
    mean = sum(raw) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in raw) / 3)
    # b's z-scores are (+1, -1); x is missing from b and gets b's minimum, -1.
    assert scores(z)["x"] == pytest.approx(0.5 * (10 - mean) / std + 0.5 * -1.0)


def test_normalize_constant_scores():
    import numpy as np

    assert normalize(np.array([2.0, 2.0]), "minmax").tolist() == [1.0, 1.0]
    assert normalize(np.array([2.0, 2.0]), "zscore").tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    "make",
    [lambda: rrf(A), lambda: rrf(A, B, weights=[1.0]), lambda: rrf(A, B, weights=[-1, 2]), lambda: rrf(A, B, k=-1)],
)
def test_fusion_rejects_bad_arguments(make):
    with pytest.raises(PipelineTypeError):
        make()


C = Fixed("c", [("w", 3.0), ("z", 2.0), ("x", -1.0)])


def test_a_chained_convex_sum_is_one_fusion_with_the_written_weights():
    chained = 0.2 * A + 0.3 * B + 0.5 * C
    direct = ConvexFusion([A, B, C], weights=[0.2, 0.3, 0.5])
    assert chained.inputs == [A, B, C] and chained.alphas == pytest.approx([0.2, 0.3, 0.5])
    got, want = chained(Q)[0], direct(Q)[0]
    assert got.docids == want.docids
    assert [c.score for c in got.candidates] == pytest.approx([c.score for c in want.candidates])
    # flattening also from the right, and unweighted terms count 1
    right = A + (B + C)
    assert right.inputs == [A, B, C] and right.weights == [1.0, 1.0, 1.0]
    # an explicitly weighted sum stays one (nested) input
    nested = 2 * (A + B) + C
    assert len(nested.inputs) == 2 and nested.weights == [2.0, 1.0]


class RankOnly(Fixed):
    """Scores that encode only ranks (like a listwise reranker's 1/(rank+1))."""

    def transform(self, batch):
        return [
            r.with_candidates(
                Candidate(Document(d, d), 1 / (i + 1), self._name, (), True) for i, (d, _) in enumerate(self.pairs)
            )
            for r in batch
        ]


def test_convex_fusion_refuses_rank_derived_scores_and_points_to_rrf():
    ranks = RankOnly("listwise", [("z", 0), ("y", 0), ("x", 0)])
    with pytest.raises(PipelineTypeError, match=r"rank-derived.*rrf.*rank_inputs: ranks"):
        (0.5 * A + 0.5 * ranks)(Q)
    by_rank = scores(ConvexFusion([A, ranks], rank_inputs="ranks")(Q)[0])
    # ranks: z first (1.0), y second (0.5), x last (0.0); A min-max: x 1, y 4/9, z 0
    assert by_rank["z"] == pytest.approx(0.5 * 0 + 0.5 * 1.0)
    assert by_rank["y"] == pytest.approx(0.5 * 4 / 9 + 0.5 * 0.5)
    assert by_rank["x"] == pytest.approx(0.5 * 1.0 + 0.5 * 0.0)


def test_theoretical_min_max_uses_the_scorer_floor():
    out = scores(ConvexFusion([A, C], normalization="theoretical", floors=[0.0, -5.0])(Q)[0])
    # A: (s - 0) / (10 - 0); C: (s + 5) / (3 + 5); y is missing from C -> C's lowest, 4/8
    assert out["x"] == pytest.approx(0.5 * 1.0 + 0.5 * 4 / 8)
    assert out["z"] == pytest.approx(0.5 * 0.1 + 0.5 * 7 / 8)
    assert out["y"] == pytest.approx(0.5 * 0.5 + 0.5 * 4 / 8)
    with pytest.raises(PipelineTypeError, match="floors"):
        ConvexFusion([A, C], normalization="theoretical")
    with pytest.raises(PipelineTypeError, match="one floor per input"):
        ConvexFusion([A, C], normalization="theoretical", floors=[0.0])
