"""Budgets on LLM rerankers: early stops return a permutation in each strategy's documented
order, at every call budget from zero up; deadlines cancel calls in flight; records and the
stage cache know what a budget did."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rerankflow.backends.types import Completion, GenerationParams, LabelScores, Prompt
from rerankflow.coalesce import Coalescer
from rerankflow.errors import ConfigError
from rerankflow.io.rankings import record_from_dict, record_to_dict
from rerankflow.pipelines.cache import CachedStage, StageCache
from rerankflow.rerankers.budget import Allowance, Budget, Pace, Work, fitted_depth, slotted
from rerankflow.rerankers.listwise import ListwiseReranker
from rerankflow.rerankers.pairwise import PairwiseReranker
from rerankflow.rerankers.pointwise import PointwiseReranker
from rerankflow.rerankers.scheduler import Scheduler
from rerankflow.rerankers.setwise import SetwiseReranker
from rerankflow.retrievers.bm25 import BM25Retriever
from rerankflow.testing.fake import FakeBackend
from rerankflow.testing.oracle import OracleJudge
from rerankflow.types import BudgetUse, Document, LLMUsage, Query, Ranking, StageRecord

STRATEGIES = {
    "sliding": lambda j, **b: ListwiseReranker(j, window=6, stride=3, **b),
    "jointrank": lambda j, **b: ListwiseReranker(j, method="jointrank", window=6, **b),
    "setwise": lambda j, **b: SetwiseReranker(j, num_child=2, top_k=4, **b),
    "prp-heapsort": lambda j, **b: PairwiseReranker(j, method="heapsort", top_k=4, **b),
    "prp-bubble": lambda j, **b: PairwiseReranker(j, method="bubble", top_k=3, **b),
    "prp-allpairs": lambda j, **b: PairwiseReranker(j, method="allpairs", depth=8, **b),
    "pointwise": lambda j, **b: PointwiseReranker(j, budget_step=3, **b),
}


@pytest.fixture(scope="module")
def judged(demo):
    corpus, queries, qrels = demo
    judge = OracleJudge(qrels, queries, corpus, noise=1.0)
    first = BM25Retriever(corpus, k=12)([Ranking(q) for q in queries[:3]])
    return judge, first


def calls_of(ranking: Ranking) -> int:
    return sum(r.usage.calls for r in ranking.trace if r.usage is not None)


def budget_of(ranking: Ranking) -> BudgetUse:
    (use,) = [r.budget for r in ranking.trace if r.budget is not None]
    return use


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_a_call_budget_returns_a_permutation_with_the_tail_in_input_order(judged, name, data):
    judge, first = judged
    full = STRATEGIES[name](judge)(first)
    most = max(calls_of(r) for r in full)
    calls = data.draw(st.integers(0, most + 2), label="calls")
    out = STRATEGIES[name](judge, budget={"calls": calls})(first)
    for before, after, unlimited in zip(first, out, full, strict=True):
        assert sorted(after.docids) == sorted(before.docids)
        assert calls_of(after) <= calls
        use = budget_of(after)
        assert use.stopped in (None, "calls") and not use.timed
        assert after.docids[use.depth :] == before.docids[use.depth :]  # below the head: input order
        if use.depth == len(before.candidates) and use.stopped is None:
            assert after.docids == unlimited.docids  # a budget that was never reached changes nothing


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_budget_that_covers_the_work_changes_nothing(judged, name):
    judge, first = judged
    full = STRATEGIES[name](judge)(first)
    rr = STRATEGIES[name](judge, budget={"calls": 10_000, "tokens": 10**9, "seconds": 600})
    plenty = rr(first)
    assert [r.docids for r in plenty] == [r.docids for r in full]
    head = getattr(rr.options, "depth", None) or 12
    assert all(budget_of(r) == BudgetUse(head, None, {}, timed=True) for r in plenty)


# -- each strategy's order when its plan is stopped ----------------------------------------------
def stopped_plan(reranker, ranking: Ranking, calls: int):
    texts = reranker.passages(ranking.candidates, ranking.query.text)
    budget = Allowance(calls=calls)
    (result,) = Scheduler(reranker.backend).run([reranker.plan(ranking.query.text, texts, True)], [budget])
    return result, budget


def order_of(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: -scores[i])


@settings(max_examples=8, deadline=None)
@given(calls=st.integers(0, 12), query=st.integers(0, 2))
def test_stopped_sliding_windows_keep_the_windows_done_and_leave_the_top_untouched(judged, calls, query):
    judge, first = judged
    rr = ListwiseReranker(judge, window=6, stride=3)
    result, _ = stopped_plan(rr, first[query], calls)
    windows = rr._windows(len(first[query].candidates))
    done = min(calls, len(windows))
    assert len(result.stats) == done
    assert result.outcome.left == ({"windows": len(windows) - done} if done < len(windows) else {})
    order = order_of(result.outcome.scores)
    top = windows[done - 1][0] if done else len(order)
    assert order[:top] == list(range(top))


@settings(max_examples=8, deadline=None)
@given(calls=st.integers(0, 30), query=st.integers(0, 2), pairwise=st.booleans())
def test_stopped_heapsort_returns_the_extracted_top_then_input_order(judged, calls, query, pairwise):
    judge, first = judged
    rr = PairwiseReranker(judge, top_k=4) if pairwise else SetwiseReranker(judge, num_child=2, top_k=4)
    result, _ = stopped_plan(rr, first[query], calls)
    order = order_of(result.outcome.scores)
    found = 4 - result.outcome.left.get("extractions", 0)
    assert order[found:] == sorted(order[found:])
    assert len(result.stats) <= calls


@settings(max_examples=8, deadline=None)
@given(calls=st.integers(0, 40), query=st.integers(0, 2))
def test_stopped_allpairs_ranks_the_compared_head_and_keeps_the_rest(judged, calls, query):
    judge, first = judged
    rr = PairwiseReranker(judge, method="allpairs", depth=12)
    result, _ = stopped_plan(rr, first[query], calls)
    order = order_of(result.outcome.scores)
    compared = 12 - result.outcome.left.get("candidates", 0)
    assert sorted(order[:compared]) == list(range(compared)) and order[compared:] == list(range(compared, 12))
    # candidate b joins in round b with 2 * b calls (both orders): the rounds that fit ran
    assert compared == max(b for b in range(1, 13) if b * (b - 1) <= max(calls, 0)) or compared == 1


@settings(max_examples=8, deadline=None)
@given(calls=st.integers(0, 60), query=st.integers(0, 2))
def test_stopped_jointrank_orders_judged_candidates_within_their_places(judged, calls, query):
    judge, first = judged
    rr = ListwiseReranker(judge, method="jointrank", window=6)
    result, _ = stopped_plan(rr, first[query], calls)
    order = order_of(result.outcome.scores)
    blocks = rr._blocks(12)
    if result.outcome.left:
        finished = blocks[: len(blocks) - result.outcome.left["blocks"]]
        judged_ids = {i for b in finished for i in b}
        assert [i for i in order if i not in judged_ids] == [i for i in range(12) if i not in judged_ids]
        assert all(order[i] == i for i in range(12) if i not in judged_ids)


def test_slotted_fills_the_places_the_judged_held():
    assert slotted([5, 1, 3], 6) == [0, 5, 2, 1, 4, 3]
    assert slotted([2, 0, 1], 5) == [2, 0, 1, 3, 4]
    assert slotted([], 3) == [0, 1, 2]


def test_pointwise_scores_the_top_first_and_sorts_only_what_it_scored(judged):
    judge, first = judged
    out = PointwiseReranker(judge, budget_step=4, budget={"calls": 6})(first)
    for before, after in zip(first, out, strict=True):
        use = budget_of(after)
        assert calls_of(after) == 6 and use == BudgetUse(6, None, {"candidates": 6})  # rounds of 4, then 2
        assert sorted(after.docids[:6]) == sorted(before.docids[:6])
        assert after.docids[6:] == before.docids[6:]
        assert [c.score for c in after.candidates[:6]] == sorted((c.score for c in after.candidates[:6]), reverse=True)
        assert not any(c.rank_derived for c in after.candidates[:6]) and all(
            c.rank_derived for c in after.candidates[6:]
        )


# -- fitting the head to the budget ----------------------------------------------------------------
def test_fitted_depth_is_the_deepest_head_whose_work_fits():
    work = lambda d: Work(d * 2, d)  # noqa: E731
    assert fitted_depth(20, work, Allowance(calls=13), Pace()) == 6
    assert fitted_depth(20, work, Allowance(calls=1), Pace()) == 0  # not even a pair fits
    assert fitted_depth(20, work, None, Pace()) == 20
    paced = Pace(round_seconds=0.5, call_tokens=100.0)
    assert fitted_depth(20, work, Allowance(tokens=1000), paced) == 5
    assert fitted_depth(20, work, Allowance(deadline=time.monotonic() + 3.2), paced) == 6
    assert fitted_depth(20, work, Allowance(tokens=1000), Pace()) == 20  # no measurement yet


def test_sliding_windows_under_a_call_budget_reach_the_top_of_a_shorter_head(judged):
    judge, first = judged
    out = ListwiseReranker(judge, window=6, stride=3, budget={"calls": 2})(first)
    for before, after in zip(first, out, strict=True):
        use = budget_of(after)
        assert use.depth == 9 and use.stopped is None  # 9 candidates take two windows: 3-9, 0-6
        assert calls_of(after) == 2 and after.docids[9:] == before.docids[9:]


# -- time: deadlines cancel what is in flight ------------------------------------------------------
class SlowBackend(FakeBackend):
    """Every call sleeps ``delay`` seconds; counts calls started and finished."""

    def __init__(self, delay: float) -> None:
        super().__init__(lambda p: "[1] > [2]", labels=lambda p, labels: {x: -float(i) for i, x in enumerate(labels)})
        self.delay = delay
        self.started = self.finished = 0

    async def _agenerate(self, prompts: list[Prompt], params: GenerationParams) -> list[Completion]:
        self.started += 1
        await asyncio.sleep(self.delay)
        self.finished += 1
        return await super()._agenerate(prompts, params)

    async def _alabel_logprobs(self, prompts, labels, after=0, context=None) -> list[LabelScores]:
        self.started += 1
        await asyncio.sleep(self.delay)
        self.finished += 1
        return await super()._alabel_logprobs(prompts, labels, after, context)


def toy_rankings(n: int, queries: int = 2, deadline: float | None = None) -> list[Ranking]:
    return [
        Ranking.from_documents(
            Query(f"q{j}", f"query {j}", deadline=deadline),
            [Document(f"d{i}", f"passage {i}") for i in range(n)],
        )
        for j in range(queries)
    ]


def test_a_seconds_budget_stops_at_the_deadline_and_cancels_the_call_in_flight():
    slow = SlowBackend(0.25)
    began = time.monotonic()
    out = ListwiseReranker(slow, window=4, stride=2, budget={"seconds": 0.6})(toy_rankings(12))
    took = time.monotonic() - began
    assert took < 0.6 + 0.2
    for r in out:
        use = budget_of(r)
        assert use.stopped == "seconds" and use.timed and use.left["windows"] >= 1
        assert calls_of(r) == 2  # windows finished by 0.5 s; the third was cancelled at 0.6 s
    assert slow.started - slow.finished == 2  # one cancelled call per query, none left running


def test_a_request_deadline_bounds_the_stage_like_a_seconds_budget():
    slow = SlowBackend(0.2)
    out = PointwiseReranker(slow, budget_step=2)(toy_rankings(10, deadline=time.monotonic() + 0.5))
    for r in out:
        use = budget_of(r)
        assert use.stopped == "seconds" and use.timed
        assert calls_of(r) == 4 and use.left == {"candidates": 6}


def test_a_token_budget_stops_once_the_tokens_are_spent():
    backend = FakeBackend(lambda p: "[2] > [1]")
    out = ListwiseReranker(backend, window=4, stride=2, budget={"tokens": 30})(toy_rankings(12, 1))
    (r,) = out
    usage = sum((rec.usage for rec in r.trace if rec.usage), start=LLMUsage())
    assert budget_of(r).stopped == "tokens" and usage.calls >= 1
    assert usage.prompt_tokens + usage.output_tokens - 30 < usage.prompt_tokens / usage.calls + 20


def test_a_cancelled_waiter_never_reaches_the_engine():
    ran: list[int] = []

    def run_batch(items: list[int]) -> list[int]:
        time.sleep(0.1)
        ran.extend(items)
        return items

    async def scenario() -> None:
        coalescer: Coalescer[int, int] = Coalescer(run_batch)
        first = asyncio.ensure_future(coalescer.submit([1]))
        await asyncio.sleep(0.02)  # the first batch is running; the next two wait for it
        second = asyncio.ensure_future(coalescer.submit([2]))
        third = asyncio.ensure_future(coalescer.submit([3]))
        await asyncio.sleep(0)
        second.cancel()
        assert await first == [1] and await third == [3]

    asyncio.run(scenario())
    assert ran == [1, 3]


# -- records, options, cache -------------------------------------------------------------------------
def test_budget_records_round_trip_and_settings_are_checked():
    record = StageRecord("listwise", budget=BudgetUse(9, "calls", {"windows": 2}, timed=False))
    assert record_from_dict(record_to_dict(record)) == record
    with pytest.raises(ConfigError, match="calls"):
        ListwiseReranker(FakeBackend(), budget={"calls": -1})
    with pytest.raises(ConfigError, match="second"):
        ListwiseReranker(FakeBackend(), budget={"second": 1})
    assert ListwiseReranker(FakeBackend(), budget=Budget(calls=3)).options.budget == Budget(calls=3)


def test_results_that_depended_on_the_clock_are_not_cached(tmp_path):
    backend = FakeBackend(lambda p: "[2] > [1]")
    cache = StageCache(tmp_path)
    timed = CachedStage(ListwiseReranker(backend, window=4, budget={"seconds": 60}), cache, {"v": 1})
    counted = CachedStage(ListwiseReranker(backend, window=4, budget={"calls": 60}), cache, {"v": 2})
    rankings = toy_rankings(6, 1)
    timed(rankings), counted(rankings)
    assert [r.trace[-1].cache for r in timed(rankings)] == ["computed"]
    assert [r.trace[-1].cache for r in counted(rankings)] == ["hit"]
    late = [replace(r, query=replace(r.query, deadline=time.monotonic() + 60)) for r in rankings]
    assert budget_of(counted(late)[0]).timed is False  # a cached answer predates the deadline


# -- a served request's budget_ms -----------------------------------------------------------------
@pytest.mark.slow
def test_served_requests_stop_at_their_budget_ms_capped_by_the_job(demo):
    from rerankflow.generators.answer import AnswerGenerator
    from rerankflow.pipelines.job import ServeSpec
    from rerankflow.serve.app import create_app
    from rerankflow.serve.launch import serve_in_thread
    from rerankflow.serve.served import serve_pipelines

    from .test_serve import wait_ready

    judge = ListwiseReranker(SlowBackend(0.2), window=4, stride=2)
    rag = BM25Retriever(demo[0], k=8) >> ListwiseReranker(SlowBackend(0.2), window=4, stride=2)
    rag = rag >> AnswerGenerator(FakeBackend(["An answer [1]."]), max_tokens=8)
    spec = ServeSpec(budget_ms=300, max_budget_ms=700)
    docs = [f"passage number {i}" for i in range(12)]
    with serve_in_thread(create_app(serve_pipelines({"judge": judge, "rag": rag}), spec)) as base:
        wait_ready(base)
        for asked, allowed in [(500, 0.5), (None, 0.3), (5000, 0.7)]:  # 300 ms by default, 700 ms at most
            began = time.monotonic()
            body = httpx.post(base + "/v1/rerank", json={"query": "q", "documents": docs, "budget_ms": asked}).json()
            took = time.monotonic() - began
            (used,) = body["rerankflow"]["budget"]
            # the full head takes 5 windows of 0.2 s: the budget either shrank the head or stopped it
            assert used["timed"] and (used["stopped"] == "seconds" or used["depth"] < 12)
            assert sorted(r["index"] for r in body["results"]) == list(range(12))
            assert took < allowed + 0.3
        chat = {"model": "rag", "messages": [{"role": "user", "content": "bm25"}], "budget_ms": 500}
        ext = httpx.post(base + "/v1/chat/completions", json=chat).json()["rerankflow"]
        assert ext["budget"][0]["stopped"] == "seconds"
        assert (
            httpx.post(base + "/v1/rerank", json={"query": "q", "documents": docs, "budget_ms": 0}).status_code == 400
        )


# -- the real model ----------------------------------------------------------------------------------
def test_on_the_real_model_a_deadline_cuts_generation_and_budgeted_scores_are_the_models_own(hf_backend, smollm2, demo):
    from rerankflow.backends.hf import HFBackend

    corpus, queries, _ = demo
    first = BM25Retriever(corpus, k=9)([Ranking(queries[0])])
    listwise = {"window": 6, "stride": 3, "max_output_tokens": 32}
    began = time.monotonic()
    ListwiseReranker(hf_backend, **listwise)(first)  # two windows of up to 32 tokens, one after the other
    unlimited = time.monotonic() - began
    began = time.monotonic()
    (out,) = ListwiseReranker(hf_backend, **listwise, budget={"seconds": 0.3})(first)
    took = time.monotonic() - began
    assert sorted(out.docids) == sorted(first[0].docids)
    assert budget_of(out).stopped == "seconds" and budget_of(out).timed
    # the window in flight stops at its next decoding step: the stage ends within one prefill and
    # a step of its deadline, far sooner than the two windows (a forward pass is not interruptible)
    assert took < 0.6 * unlimited, (took, unlimited)
    first = BM25Retriever(corpus, k=8)([Ranking(q) for q in queries[:2]])
    exact = HFBackend(smollm2, dtype="float32", device="cpu")  # float32: batch shapes change nothing
    full = PointwiseReranker(exact)(first)
    head = PointwiseReranker(exact, budget_step=2, budget={"calls": 5})(first)
    for unlimited_ranking, budgeted, before in zip(full, head, first, strict=True):
        scored = {c.docid: c.score for c in budgeted.candidates[:5]}  # 5 calls: rounds of 2, 2 and 1
        assert set(scored) == set(before.docids[:5]) and budgeted.docids[5:] == before.docids[5:]
        model = {c.docid: c.score for c in unlimited_ranking.candidates}
        assert all(abs(scored[d] - model[d]) < 1e-3 for d in scored)  # the model's own scores, in rounds of 2
