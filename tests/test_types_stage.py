import dataclasses

import pytest

from rerankflow import FIRST_RANK, Candidate, Cutoff, Document, Identity, PipelineTypeError, Query, Ranking, Transformer
from rerankflow.ops import Sequential
from rerankflow.stage import FunctionStage
from rerankflow.types import rescore


def make(qid="q1", scores=(3.0, 2.0, 1.0)):
    docs = [Document(f"d{i}", f"text {i}") for i in range(len(scores))]
    return Ranking(Query(qid, "query"), tuple(Candidate(d, s, "first") for d, s in zip(docs, scores)))


class Reverse(Transformer):
    def transform(self, batch):
        return [rescore(r, [-c.score for c in r.candidates], "reverse") for r in batch]

    def __repr__(self):
        return "Reverse()"


def test_types_are_frozen_and_ranks_are_zero_based():
    r = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.candidates[0].score = 1.0  # type: ignore[misc]
    assert FIRST_RANK == 0
    assert r.docids[FIRST_RANK] == "d0"


def test_rescore_keeps_provenance_and_sorts():
    out = Reverse()([make()])[0]
    assert out.docids == ["d2", "d1", "d0"]
    assert out.candidates[0].scores() == {"first": 1.0, "reverse": -1.0}
    assert out.candidates[0].history == (("first", 1.0),)


def test_operators_and_parenthesised_repr():
    p = Identity() >> Reverse() % 2
    assert repr(p) == "(Identity() >> (Reverse() % 2))"
    q = (Identity() >> Reverse()) % 1
    assert repr(q) == "((Identity() >> Reverse()) % 1)"
    out = p([make(), make("q2", (1.0,))])
    assert [len(r) for r in out] == [2, 1]
    assert out[0].docids == ["d2", "d1"]
    assert isinstance(p, Sequential) and [type(s).__name__ for s in p.walk(chain=True)] == [
        "Identity",
        "Reverse",
        "Cutoff",
    ]


def test_plain_functions_compose():
    def drop_last(batch):
        return [r.top(len(r) - 1) for r in batch]

    p = Identity() >> drop_last
    assert isinstance(p.second, FunctionStage)
    assert p([make()])[0].docids == ["d0", "d1"]


@pytest.mark.parametrize(
    "bad",
    [
        lambda batch: batch[:-1],
        lambda batch: list(reversed(batch)),
        lambda batch: [batch[0], batch[0]],
    ],
)
def test_contract_violations_are_reported(bad):
    with pytest.raises(PipelineTypeError, match="stage"):
        FunctionStage(bad)([make("a"), make("b")])


def test_single_ranking_instead_of_batch_is_a_clear_error():
    with pytest.raises(PipelineTypeError, match="wrap it"):
        Identity()(make())  # type: ignore[arg-type]


@pytest.mark.parametrize("k", [-1, 1.5, True])
def test_cutoff_rejects_bad_k(k):
    with pytest.raises(PipelineTypeError):
        Cutoff(k)


def test_search_wraps_strings_as_queries():
    out = Identity().search(["a", "b"])
    assert [r.query for r in out] == [Query("q0", "a"), Query("q1", "b")]
    assert all(len(r) == 0 for r in out)


def test_warm_up_reaches_nested_stages():
    loaded = []

    class Loads(Identity):
        def load(self):
            loaded.append(1)

    p = Loads() >> (Loads() >> Loads())
    p.warm_up()
    p.warm_up()
    assert len(loaded) == 3
