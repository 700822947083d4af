"""Listwise, pairwise and setwise rerankers and the scheduler: control flow on scripted backends,
quality against the relevance-judgment oracle on the project's own demo collection."""

import asyncio
import itertools
import math
import random
import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rerankflow import Candidate, Document, Query, Ranking
from rerankflow.backends.types import Prompt
from rerankflow.errors import BackendError, ConfigError, DataError
from rerankflow.eval.measures import evaluate
from rerankflow.eval.trace import repairs, usage_total
from rerankflow.io.trec import rankings_to_run
from rerankflow.pipelines.job import dump_job, load_job_text
from rerankflow.rerankers.listwise import (
    ListwiseReranker,
    covering_blocks,
    equireplicate_blocks,
    latin_blocks,
    pagerank,
    replicated_blocks,
    win_counts,
)
from rerankflow.rerankers.pairwise import PairwiseReranker
from rerankflow.rerankers.permutation import sliding_windows
from rerankflow.rerankers.pointwise import PointwiseReranker
from rerankflow.rerankers.scheduler import Scheduler, counted
from rerankflow.rerankers.setwise import SetwiseReranker
from rerankflow.rerankers.sorting import heap_top_k
from rerankflow.retrievers.bm25 import BM25Retriever
from rerankflow.testing.fake import FakeBackend, prompt_text
from rerankflow.testing.oracle import OracleJudge

from .support.fuzz import examples


def ranking(n, qid="q", text="query"):
    return Ranking(Query(qid, text), tuple(Candidate(Document(f"d{i}", f"passage number {i}"), -i) for i in range(n)))


def window_ids(prompt):
    """The passage numbers shown in a listwise prompt, as input document indices."""
    return [int(m) for m in re.findall(r"passage number (\d+)", prompt_text(prompt))]


def by_doc_number(prompt):
    """A listwise answer ranking passages by descending document number (reverses the input)."""
    ids = window_ids(prompt)
    return " > ".join(f"[{ids.index(d) + 1}]" for d in sorted(ids, reverse=True))


def drive(plan, answer):
    """Run a plan without a backend: answer(call) -> reply."""
    try:
        step = next(plan)
        while True:
            step = plan.send([answer(c) for c in step])
    except StopIteration as stop:
        return stop.value


# -- listwise ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 2, 5, 20, 21, 35, 100])
def test_sliding_window_reaches_every_position(n):
    fake = FakeBackend(by_doc_number)
    rr = ListwiseReranker(fake, window=20, stride=10, max_passage_tokens=None)
    (out,) = rr([ranking(n)])
    assert fake.ledger.calls == len(sliding_windows(n, 20, 10))
    assert sorted(out.docids) == sorted(f"d{i}" for i in range(n))
    # Reversing each window moves the highest document number to the top in one pass.
    if n:
        assert out.docids[0] == f"d{n - 1}"
    assert all(c.rank_derived and c.stage == "listwise" for c in out.candidates)
    assert [c.score for c in out.candidates] == [1 / (r + 1) for r in range(n)]
    assert not repairs([out]) and out.trace[-1].repairs == {}


def test_windows_are_submitted_back_to_front_and_each_waits_for_the_previous():
    fake = FakeBackend(by_doc_number)
    ListwiseReranker(fake, window=4, stride=2, max_passage_tokens=None)([ranking(7)])
    shown = [window_ids(p) for p in fake.seen]
    assert shown[0] == [3, 4, 5, 6]
    assert shown[1] == [1, 2, 6, 5]  # the previous window's winners moved up
    assert len(shown) == len(sliding_windows(7, 4, 2)) == 3


def test_malformed_permutations_are_repaired_and_counted():
    fake = FakeBackend(["[2] > [2] > [9] > junk", "nothing useful"])
    rr = ListwiseReranker(fake, window=3, stride=1, max_passage_tokens=None)
    (out,) = rr([ranking(4)])
    assert sorted(out.docids) == ["d0", "d1", "d2", "d3"]
    assert repairs([out]) == {"duplicates": 1, "out_of_range": 1, "missing": 2 + 3}


def test_single_pass_is_one_call_and_refuses_prompts_that_do_not_fit():
    fake = FakeBackend(by_doc_number)
    rr = ListwiseReranker(fake, method="single_pass", max_passage_tokens=None)
    (out,) = rr([ranking(30)])
    assert fake.ledger.calls == 1 and out.docids[:2] == ["d29", "d28"]
    tight = ListwiseReranker(fake, method="single_pass", max_prompt_tokens=50, max_passage_tokens=None)
    with pytest.raises(DataError, match="max_prompt_tokens=50; use method: sliding"):
        tight([ranking(30)])


def test_first_token_orders_by_label_logprobs():
    def labels(prompt, wanted):
        ids = window_ids(prompt)
        return {label: float(d) for label, d in zip(wanted, ids)}  # higher document number wins

    fake = FakeBackend(labels=labels)
    rr = ListwiseReranker(fake, scorer="first_token", window=5, stride=2, max_passage_tokens=None)
    (out,) = rr([ranking(9)])
    assert out.docids[:3] == ["d8", "d7", "d6"]
    assert "[A] passage number" in prompt_text(fake.seen[0])
    with pytest.raises(ConfigError, match="one single-token label per passage"):
        ListwiseReranker(fake, "listwise", scorer="first_token")


def test_covering_design_meets_every_pair():
    for n, w in [(100, 20), (37, 10), (5, 4), (20, 20)]:
        blocks = covering_blocks(n, w)
        assert all(len(b) <= w for b in blocks)
        met = {frozenset(p) for b in blocks for p in itertools.combinations(b, 2)}
        assert len(met) == n * (n - 1) // 2
    assert len(covering_blocks(100, 20)) == 45 and covering_blocks(1, 20) == []
    rep = replicated_blocks(100, 20, 2, seed=0)
    assert len(rep) == 10 and sorted(i for b in rep for i in b) == sorted(list(range(100)) * 2)
    assert rep == replicated_blocks(100, 20, 2, seed=0)


def test_equireplicate_design_puts_every_candidate_in_r_full_blocks():
    blocks = equireplicate_blocks(100, 20, 4, seed=0)
    assert len(blocks) == 20 and all(len(b) == 20 and len(set(b)) == 20 for b in blocks)
    assert sorted(i for b in blocks for i in b) == sorted(list(range(100)) * 4)
    assert blocks == equireplicate_blocks(100, 20, 4, seed=0) != equireplicate_blocks(100, 20, 4, seed=1)
    assert blocks[0] != list(range(20))  # shuffled, the first replica too
    padded = equireplicate_blocks(90, 20, 2, seed=0)  # 180 / 20 = 9 blocks; 90 is not a multiple of 20
    assert len(padded) == 9 and all(len(b) == 20 and len(set(b)) == 20 for b in padded)
    counts = Counter(i for b in padded for i in b)
    assert set(counts) == set(range(90)) and min(counts.values()) >= 2
    small = equireplicate_blocks(7, 20, 3, seed=0)
    assert len(small) == 3 and all(sorted(b) == list(range(7)) for b in small)


def test_latin_design_is_the_rows_and_columns_of_the_grid():
    blocks = latin_blocks(100, 20)
    assert len(blocks) == 20 and blocks[0] == list(range(10)) and blocks[10] == list(range(0, 100, 10))
    met = Counter(frozenset(p) for b in blocks for p in itertools.combinations(b, 2))
    assert set(met.values()) == {1} and len(met) == 20 * 45  # pairs in one row or one column meet once
    ragged = latin_blocks(90, 20)  # a 10 x 10 grid with the last row empty
    assert sorted(i for b in ragged for i in b) == sorted(list(range(90)) * 2)
    with pytest.raises(DataError, match="set depth to at most 16"):
        latin_blocks(100, 4)


def test_pagerank_matches_evalica_as_jointrank_calls_it():
    """JointRank aggregates with evalica.pagerank over every pair of every block (the reference
    code's comparisons_from_rankings); ours must give the same scores."""
    evalica = pytest.importorskip("evalica", reason="evalica (JointRank's aggregator) is in the dev extra")
    rng = random.Random(3)
    for n, window, r in [(30, 10, 3), (100, 20, 4), (12, 5, 2)]:
        blocks = equireplicate_blocks(n, window, r, seed=rng.randrange(100))
        truth = [rng.gauss(0, 1) for _ in range(n)]
        rankings = [sorted(b, key=lambda i: -truth[i] + rng.gauss(0, 1)) for b in blocks]
        xs, ys = [], []
        for order in rankings:
            for a, b in itertools.combinations(order, 2):
                xs.append(a), ys.append(b)
        ref = evalica.pagerank(xs, ys, [evalica.Winner.X] * len(xs))
        want = [float(ref.scores[i]) for i in range(n)]
        assert pagerank(win_counts(n, rankings)) == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("design", "aggregate", "calls"),
    [
        ("covering", "winrate", 6),
        ("covering", "pagerank", 6),
        ("equireplicate", "pagerank", 8),
        ("latin", "pagerank", 7),
    ],
)
def test_jointrank_ranks_all_blocks_in_one_step(design, aggregate, calls):
    fake = FakeBackend(by_doc_number)
    rr = ListwiseReranker(
        fake, method="jointrank", window=6, design=design, aggregate=aggregate, max_passage_tokens=None
    )
    rr.scheduler = Scheduler(fake, mode="concurrent")
    rounds = []
    plan = rr.plan
    rr.plan = lambda q, t, anytime=False: counted(plan(q, t, anytime), rounds)
    (out,) = rr([ranking(12)])
    assert fake.ledger.calls == calls and rounds == [1]
    ranks = [int(d[1:]) for d in out.docids]
    if design == "covering" and aggregate == "winrate":  # every pair met, each win counted once
        assert ranks == list(range(11, -1, -1))
    else:  # pairs that never met (or met more often) are ordered through the others: close, not exact
        concordant = sum(ranks[i] > ranks[j] for i, j in itertools.combinations(range(12), 2))
        assert ranks[0] == 11 and concordant / 66 >= 0.8, ranks
    assert not any(c.rank_derived for c in out.candidates)


def test_permutation_self_consistency_ranks_each_window_k_times_and_undoes_a_position_bias():
    """A judge that always puts the passage shown first on top: one ordering copies that bias,
    three orderings aggregated by mean position recover the true order of a 3-passage window."""

    def first_wins(prompt):
        numbers = window_ids(prompt)
        rest = sorted(range(1, len(numbers)), key=lambda i: -numbers[i])
        return " > ".join(f"[{i + 1}]" for i in [0, *rest])

    fake = FakeBackend(first_wins)
    once = ListwiseReranker(fake, window=3, max_passage_tokens=None)
    (out,) = once([ranking(3)])
    assert out.docids[0] == "d0" and fake.ledger.calls == 1
    psc = ListwiseReranker(fake, window=3, shuffles=5, seed=1, max_passage_tokens=None)
    (out,) = psc([ranking(3)])
    assert fake.ledger.calls == 1 + 5 and out.docids == ["d2", "d1", "d0"]


# -- heapsort --------------------------------------------------------------------------------
@settings(max_examples=examples(60), deadline=None)
@given(
    values=st.lists(st.integers(0, 5), min_size=0, max_size=40),
    k=st.integers(1, 12),
    arity=st.integers(1, 4),
    bottom_up=st.booleans(),
)
def test_heap_top_k_finds_the_best_k(values, k, arity, bottom_up):
    n = len(values)
    key = [(v, -i) for i, v in enumerate(values)]  # a strict total order

    def best_of(group):
        yield [group]
        return max(group, key=lambda i: key[i])

    def beats(a, b):
        yield [(a, b)]
        return key[a] > key[b]

    if bottom_up and arity != 2:
        return
    order = drive(heap_top_k(n, k, arity, best_of, beats if bottom_up else None), lambda call: None)
    assert sorted(order) == list(range(n))
    expected = sorted(range(n), key=lambda i: key[i], reverse=True)[:k]
    assert order[: len(expected)] == expected
    rest = order[len(expected) :]
    assert rest == sorted(rest)


# -- pairwise ----------------------------------------------------------------------------------
def passage_numbers(prompt):
    return [int(m) for m in re.findall(r"Passage [AB]: passage number (\d+)", prompt_text(prompt))]


def prefer_higher_number(bias=0.0):
    """P(A) from the document numbers, plus a position bias towards A."""

    def labels(prompt, wanted):
        a, b = passage_numbers(prompt)
        p_a = 1 / (1 + math.exp(-(a - b) - bias))
        return {"A": math.log(p_a), "B": math.log(1 - p_a)}

    return labels


def test_allpairs_needs_depth_and_sums_win_probabilities():
    with pytest.raises(ConfigError, match="n \\* \\(n - 1\\) LLM calls.*Set depth"):
        PairwiseReranker(FakeBackend(), method="allpairs")
    fake = FakeBackend(labels=prefer_higher_number(bias=3.0))
    rr = PairwiseReranker(fake, method="allpairs", depth=4, max_passage_tokens=None)
    (out,) = rr([ranking(6)])
    assert fake.ledger.calls == 4 * 3  # both orders of 6 pairs
    assert out.docids == ["d3", "d2", "d1", "d0", "d4", "d5"]  # the tail keeps its order below the head
    head, tail = out.candidates[:4], out.candidates[4:]
    assert not any(c.rank_derived for c in head) and all(c.rank_derived for c in tail)
    assert min(c.score for c in head) > max(c.score for c in tail)
    # Both orders cancel the position bias: d3 vs d2 is P = (s(1 + 3) + s(1 - 3)) / 2.
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected_d3 = sum((s(d + 3) + s(d - 3)) / 2 for d in (1, 2, 3))
    assert head[0].score == pytest.approx(expected_d3)


def test_strict_rule_scores_allpairs_as_the_reference_does():
    """llm-rankers' all-pairs rule: each order's answer is the likelier label; doc1 gets 1 when
    the answers are (A, B), doc2 gets 1 when they are (B, A), otherwise each gets 0.5."""
    judge = prefer_higher_number(bias=1.5)  # a position bias strong enough to flip close pairs
    fake = FakeBackend(labels=judge)
    rr = PairwiseReranker(fake, method="allpairs", rule="strict", depth=5, max_passage_tokens=None)
    (out,) = rr([ranking(5)])
    expected = dict.fromkeys(range(5), 0.0)
    for a, b in itertools.combinations(range(5), 2):
        shown = lambda x, y: Prompt.raw(f"Passage A: passage number {x}\nPassage B: passage number {y}")  # noqa: E731
        first = max(judge(shown(a, b), ["A", "B"]).items(), key=lambda kv: kv[1])[0]
        second = max(judge(shown(b, a), ["A", "B"]).items(), key=lambda kv: kv[1])[0]
        if (first, second) == ("A", "B"):
            expected[a] += 1
        elif (first, second) == ("B", "A"):
            expected[b] += 1
        else:
            expected[a] += 0.5
            expected[b] += 0.5
    assert {int(c.docid[1:]): c.score for c in out.candidates} == expected
    assert 0.5 in {v % 1 for v in expected.values()}  # some pairs were inconsistent
    with pytest.raises(ConfigError, match="both_orders"):
        PairwiseReranker(fake, rule="strict", both_orders=False)


@pytest.mark.parametrize("method", ["heapsort", "bubble"])
def test_heapsort_and_bubble_find_the_top_k_and_never_repeat_a_pair(method):
    fake = FakeBackend(labels=prefer_higher_number())
    rr = PairwiseReranker(fake, method=method, top_k=3, max_passage_tokens=None)
    (out,) = rr([ranking(15)])
    assert out.docids[:3] == ["d14", "d13", "d12"] and sorted(out.docids) == sorted(f"d{i}" for i in range(15))
    pairs = [frozenset(passage_numbers(p)) for p in fake.seen]
    assert len(pairs) == 2 * len(set(pairs))  # every pair asked once per order, never again
    assert all(c.rank_derived for c in out.candidates)


def test_one_order_only_halves_the_calls():
    fake = FakeBackend(labels=prefer_higher_number())
    PairwiseReranker(fake, method="allpairs", depth=5, both_orders=False, max_passage_tokens=None)([ranking(5)])
    assert fake.ledger.calls == 10


# -- setwise -----------------------------------------------------------------------------------
def test_setwise_labels_and_generation_agree_and_unparseable_answers_are_counted():
    def labels(prompt, wanted):
        return {label: float(d) for label, d in zip(wanted, window_ids(prompt))}

    def answer(prompt):
        ids = window_ids(prompt)
        return f"The best is [{'ABCD'[ids.index(max(ids))]}]"

    by_labels = SetwiseReranker(FakeBackend(labels=labels), num_child=3, top_k=4, max_passage_tokens=None)
    by_text = SetwiseReranker(FakeBackend(answer), num_child=3, top_k=4, scorer="generate", max_passage_tokens=None)
    (a,), (b,) = by_labels([ranking(13)]), by_text([ranking(13)])
    assert a.docids[:4] == b.docids[:4] == ["d12", "d11", "d10", "d9"]
    assert max(len(window_ids(p)) for p in by_labels.backend.seen) == 4
    confused = SetwiseReranker(FakeBackend("no idea"), num_child=2, top_k=2, scorer="generate", max_passage_tokens=None)
    (c,) = confused([ranking(5)])
    assert sorted(c.docids) == sorted(f"d{i}" for i in range(5))
    assert repairs([c])["unparseable"] == usage_total([c]).calls > 0
    with pytest.raises(ConfigError, match="needs one label each"):
        SetwiseReranker(FakeBackend(), "listwise-first", num_child=30)


def test_setwise_both_orders_undoes_a_position_bias_at_twice_the_calls():
    """A judge whose label scores fall linearly with the position shown (+3 nats first, -3
    last): one order follows the positions; both orders (same round) cancel the bias."""

    def biased(prompt, wanted):
        ids = window_ids(prompt)
        m = len(ids)
        return {label: d / 8 + 3.0 * (1 - 2 * i / (m - 1)) for i, (label, d) in enumerate(zip(wanted, ids))}

    once = SetwiseReranker(FakeBackend(labels=biased), num_child=3, top_k=3, max_passage_tokens=None)
    both = SetwiseReranker(FakeBackend(labels=biased), num_child=3, top_k=3, both_orders=True, max_passage_tokens=None)
    (a,), (b,) = once([ranking(13)]), both([ranking(13)])
    assert a.docids[:3] != ["d12", "d11", "d10"] and b.docids[:3] == ["d12", "d11", "d10"]
    shown = Counter(tuple(window_ids(p)) for p in both.backend.seen)
    assert all(shown[ids[::-1]] == n for ids, n in shown.items())  # every set also reversed
    assert both.backend.ledger.calls == 2 * len({frozenset(ids) for ids in shown})
    with pytest.raises(ConfigError, match="needs scorer: labels"):
        SetwiseReranker(FakeBackend(), scorer="generate", both_orders=True)


# -- the scheduler ------------------------------------------------------------------------------
class SlowFake(FakeBackend):
    """Tracks calls in flight; each generation sleeps a time that depends on the query."""

    def __init__(self, delays):
        super().__init__(by_doc_number)
        self.delays = delays
        self.in_flight = self.peak = 0
        self.events = []

    async def _agenerate(self, prompts, params):
        query = re.search(r"Query: (\S+)", prompt_text(prompts[0])).group(1)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.events.append(("start", query))
        await asyncio.sleep(self.delays[query])
        self.in_flight -= 1
        self.events.append(("end", query))
        return await super()._agenerate(prompts, params)


def test_scheduler_is_window_level_not_lockstep_and_bounded():
    slow = SlowFake({"fast": 0.001, "slow": 0.05})
    rr = ListwiseReranker(slow, window=4, stride=2, max_passage_tokens=None, max_concurrency=3)
    out = rr([ranking(8, "a", "fast"), ranking(3, "b", "slow"), ranking(8, "c", "slow")])
    assert [len(r) for r in out] == [8, 3, 8]
    first_slow_end = slow.events.index(("end", "slow"))
    fast_windows_started = [e for e in slow.events[:first_slow_end] if e == ("start", "fast")]
    assert len(fast_windows_started) == 3  # the fast query finished all its windows meanwhile
    assert slow.peak == 3
    bounded = SlowFake({"slow": 0.01})
    ListwiseReranker(bounded, window=4, stride=2, max_passage_tokens=None, max_concurrency=2)(
        [ranking(8, q, "slow") for q in "abcde"]
    )
    assert bounded.peak == 2


def test_sequential_mode_makes_one_call_at_a_time_in_query_order():
    slow = SlowFake({"x": 0.001, "y": 0.001})
    rr = ListwiseReranker(slow, window=4, stride=2, max_passage_tokens=None, scheduler="sequential")
    rr([ranking(6, "a", "x"), ranking(6, "b", "y")])
    assert slow.peak == 1
    assert [q for kind, q in slow.events if kind == "start"] == ["x", "x", "y", "y"]
    with pytest.raises(ConfigError, match="scheduler mode"):
        Scheduler(slow, mode="lockstep")  # type: ignore[arg-type]


def test_usage_is_recorded_per_query():
    fake = FakeBackend(by_doc_number)
    rr = ListwiseReranker(fake, window=4, stride=2, max_passage_tokens=None)
    out = rr([ranking(8, "a"), ranking(2, "b"), ranking(0, "c")])
    assert [[(rec.stage, rec.usage.calls) for rec in r.trace] for r in out] == [
        [("listwise", 3)],
        [("listwise", 1)],
        [("listwise", 0)],
    ]


def test_passages_are_cut_by_tokens_and_flattened_to_one_line():
    fake = FakeBackend(by_doc_number)
    long = Ranking(Query("q", "x"), (Candidate(Document("d0", "passage number 0\nsecond line is long"), 0.0),) * 1)
    two = long.with_candidates([*long.candidates, Candidate(Document("d1", "passage number 1 more words"), 0.0)])
    ListwiseReranker(fake, max_passage_tokens=3)([two])
    text = prompt_text(fake.seen[0])
    assert "[1] passage number 0\n" in text and "second" not in text and "more" not in text


# -- YAML -------------------------------------------------------------------------------------
def test_yaml_configs_round_trip_and_reject_unknown_keys():
    text = """
name: llm
dataset: {builtin: demo}
pipelines:
  listwise:
    - bm25: {k: 20}
    - listwise: {backend: {kind: vllm, model: smollm2-135m-instruct}, window: 10, stride: 5}
  prp:
    - bm25: {k: 20}
    - pairwise: {backend: {kind: hf, model: smollm2-135m-instruct}, method: allpairs, depth: 10}
  setwise:
    - bm25: {k: 20}
    - setwise: {backend: {kind: hf, model: smollm2-135m-instruct}, num_child: 2, scorer: generate}
"""
    job = load_job_text(text)
    assert load_job_text(dump_job(job)) == job
    with pytest.raises(ConfigError, match="num_childs"):
        load_job_text(text.replace("num_child: 2", "num_childs: 2"))


# -- the oracle ---------------------------------------------------------------------------------
def oracle_for(corpus, queries, qrels, noise=0.0):
    return OracleJudge(qrels, queries, corpus, noise=noise)


METHODS = {
    "sliding": lambda j: ListwiseReranker(j, window=20, stride=10),
    "single_pass": lambda j: ListwiseReranker(j, method="single_pass", max_prompt_tokens=100_000),
    "jointrank": lambda j: ListwiseReranker(j, method="jointrank", window=20),
    "first": lambda j: ListwiseReranker(j, scorer="first_token", window=20, stride=10),
    "prp-allpairs": lambda j: PairwiseReranker(j, method="allpairs", depth=30),
    "prp-heapsort": lambda j: PairwiseReranker(j, method="heapsort", top_k=10),
    "prp-bubble": lambda j: PairwiseReranker(j, method="bubble", top_k=10),
    "setwise": lambda j: SetwiseReranker(j, num_child=2, top_k=10),
    "setwise-generate": lambda j: SetwiseReranker(j, num_child=2, top_k=10, scorer="generate"),
    "pointwise-yes-no": lambda j: PointwiseReranker(j),
    "pointwise-grade": lambda j: PointwiseReranker(j, mode="grade"),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_perfect_oracle_reaches_the_ideal_reordering_on_the_demo(demo, method):
    corpus, queries, qrels = demo
    first = BM25Retriever(corpus, k=30)([Ranking(q) for q in queries])
    ideal = [
        r.with_candidates(sorted(r.candidates, key=lambda c: -qrels.get(r.query.qid, {}).get(c.docid, 0)))
        for r in first
    ]
    ideal_ndcg = evaluate(["nDCG@10"], qrels, rankings_to_run([_rank_scored(r) for r in ideal]))["nDCG@10"]
    out = METHODS[method](oracle_for(corpus, queries, qrels))(first)
    assert [sorted(r.docids) for r in out] == [sorted(r.docids) for r in first]
    assert evaluate(["nDCG@10"], qrels, rankings_to_run(out))["nDCG@10"] == pytest.approx(ideal_ndcg, abs=1e-9)


def _rank_scored(r):
    return r.with_candidates(c.rescored(-i, "ideal") for i, c in enumerate(r.candidates))


def test_noisy_oracle_is_reproducible_and_errs(demo):
    corpus, queries, qrels = demo
    first = BM25Retriever(corpus, k=20)([Ranking(q) for q in queries])
    runs = [ListwiseReranker(oracle_for(corpus, queries, qrels, noise=1.5))(first) for _ in range(2)]
    assert [r.docids for r in runs[0]] == [r.docids for r in runs[1]]
    perfect = ListwiseReranker(oracle_for(corpus, queries, qrels))(first)
    assert [r.docids for r in runs[0]] != [r.docids for r in perfect]
    with pytest.raises(BackendError, match="unknown passage"):
        oracle_for(corpus, queries, qrels).label_logprobs(
            [ListwiseReranker(FakeBackend()).template.render(query=queries[0].text, num="1", passages="[1] unseen")],
            ["A"],
        )


def test_realistic_judge_errs_the_same_way_whatever_the_order_and_can_be_position_bound(demo):
    corpus, queries, qrels = demo
    first = BM25Retriever(corpus, k=20)([Ranking(q) for q in queries])
    flipped = [r.with_candidates(reversed(r.candidates)) for r in first]
    single = lambda j: ListwiseReranker(j, method="single_pass", max_passage_tokens=None)  # noqa: E731
    misreads = OracleJudge(qrels, queries, corpus, passage_error=1.0)
    a, b = single(misreads)(first), single(misreads)(flipped)
    assert [r.docids for r in a] == [r.docids for r in b]  # the errors stick to the passages
    assert [r.docids for r in a] != [r.docids for r in single(oracle_for(corpus, queries, qrels))(first)]
    bound = OracleJudge(qrels, queries, corpus, position_bias=100.0)
    assert [r.docids for r in single(bound)(flipped)] == [r.docids for r in flipped]
    copier = OracleJudge(qrels, queries, corpus, copy_rate=1.0)
    assert [r.docids for r in single(copier)(first)] == [r.docids for r in first]
    realistic = OracleJudge.realistic(qrels, queries, corpus)
    assert "passage_error=0.5" in realistic.model and realistic.copy_rate == 0.05
    with pytest.raises(BackendError, match="rates"):
        OracleJudge(qrels, queries, corpus, copy_rate=1.5)


def test_malformed_answers_exercise_every_repair_path_and_lose_no_candidate(demo):
    corpus, queries, qrels = demo
    first = BM25Retriever(corpus, k=20)([Ranking(q) for q in queries])
    judge = OracleJudge(qrels, queries, corpus, malformed_rate=1.0, noise=0.3)
    found = Counter()
    for reranker in [
        ListwiseReranker(judge, window=6, stride=3, max_passage_tokens=None),
        ListwiseReranker(judge, scorer="first_token", window=6, stride=3, max_passage_tokens=None),
        SetwiseReranker(judge, num_child=2, top_k=5, scorer="generate", max_passage_tokens=None),
        SetwiseReranker(judge, num_child=2, top_k=5, max_passage_tokens=None),
        PairwiseReranker(judge, method="heapsort", top_k=3, max_passage_tokens=None),
        PointwiseReranker(judge, max_passage_tokens=None),
    ]:
        out = reranker(first)
        assert [sorted(r.docids) for r in out] == [sorted(r.docids) for r in first]
        assert all(not math.isnan(c.score) for r in out for c in r.candidates)
        found.update(repairs(out))
        if not isinstance(reranker, ListwiseReranker) or reranker.options.scorer == "first_token":
            assert repairs(out).get("unscored_labels", 0) + repairs(out).get("unparseable", 0) > 0, reranker
    assert {"duplicates", "missing", "out_of_range", "unparseable", "unscored_labels"} <= {
        k for k, v in found.items() if v > 0
    }


@pytest.mark.shared_data
def test_dl19_perfect_oracle_reaches_ideal_within_the_call_budget(trec_dl):
    """Issue bar for n=100: sliding 20/10 = 9 calls, setwise c=2 top-10 <= 130 calls, PRP heapsort <= 250 comparisons."""
    from rerankflow.io.jsonl import read_hits
    from rerankflow.io.trec import read_qrels

    first = read_hits(trec_dl / "bm25_dl19.json")
    qrels = read_qrels(trec_dl / "qrels.dl19-passage.txt")
    judge = OracleJudge(qrels, [r.query for r in first], {c.docid: c.doc for r in first for c in r.candidates}.values())
    ideal = [
        _rank_scored(r.with_candidates(sorted(r.candidates, key=lambda c: -qrels[r.query.qid].get(c.docid, 0))))
        for r in first
    ]
    ideal_ndcg = evaluate(["nDCG@10"], qrels, rankings_to_run(ideal))["nDCG@10"]
    for reranker, per_query_bar, per_call in [
        (ListwiseReranker(judge, window=20, stride=10, max_passage_tokens=None), 9, 1),
        (SetwiseReranker(judge, num_child=2, top_k=10, max_passage_tokens=None), 130, 1),
        (PairwiseReranker(judge, method="heapsort", top_k=10, max_passage_tokens=None), 250, 2),
    ]:
        out = reranker(first)
        assert evaluate(["nDCG@10"], qrels, rankings_to_run(out))["nDCG@10"] == pytest.approx(ideal_ndcg, abs=1e-9)
        assert usage_total(out).calls / per_call / len(first) <= per_query_bar, reranker
