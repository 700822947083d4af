"""Quality per unit of cost: anytime rerankers under call budgets, and a cascade.

Parts (``--parts``):

* ``curves``: nDCG@10 against a per-query call budget on TREC DL19 and DL20 (BM25 top-100)
  for listwise sliding 20/10, JointRank (covering, window 20), setwise heapsort (c=2, top 10),
  PRP heapsort (top 10) and pointwise yes/no, all judged by the realistic simulated judge
  (``OracleJudge.realistic``, its documented defaults). Budgets are 10 fractions of the
  method's own unbudgeted calls per query. ``listwise sliding (stop only)`` runs the same
  budgets without fitting the head to the budget (the plan is only stopped when the calls run
  out) to show what fitting buys. "gain" is the fraction of the full method's nDCG@10 gain over
  BM25 that the budget keeps.
* ``cascade``: BM25 -> MiniLM bi-encoder (real all-MiniLM-L6-v2, CPU; its rankings are
  computed once and shared by every rule) -> the simulated listwise
  judge, escalating a query to the listwise step only when the bi-encoder and BM25 disagree
  about the top 10 (``agreement`` rule) or the bi-encoder's margin at rank 10 is small
  (``margin``), against never and always escalating.

* ``serve``: ``/v1/rerank`` on a real server on loopback, the listwise reranker behind it
  answering as the simulated judge after a stated delay per window call (``--window-delay``,
  default 0.19 s: the GPU price below), 8 clients at once sending the DL19 queries with their
  BM25 top-100, with no ``budget_ms`` and with 2,000, 1,000 and 500 ms: latency p50/p99 and
  nDCG@10 of the returned orders.

GPU seconds per query are priced from the GPU measurements in docs/benchmarks.md (H200 and
H100 runs of 7B-shaped models, many queries in flight): a listwise window (20 passages, 108
output tokens) costs 13.71 s / 72 windows = 0.190 s; a label call (one forward pass) costs
15.51 s / 4,300 prompts = 0.0036 s. These are stated prices, not timings of this run.

    python bench/budget.py [--parts curves cascade serve] [--queries N]

Writes bench/results/budget-curves.json and budget-cascade.json. Needs ../shared/data/trec-dl (skips when absent).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rerankflow.eval.measures import evaluate
from rerankflow.eval.trace import usage_total
from rerankflow.io.jsonl import read_hits
from rerankflow.io.trec import rankings_to_run, read_qrels
from rerankflow.rerankers.budget import Work
from rerankflow.rerankers.cascade import Cascade, Rule
from rerankflow.rerankers.listwise import ListwiseReranker
from rerankflow.rerankers.pairwise import PairwiseReranker
from rerankflow.rerankers.pointwise import PointwiseReranker
from rerankflow.rerankers.setwise import SetwiseReranker
from rerankflow.stage import Transformer
from rerankflow.testing.oracle import OracleJudge
from rerankflow.types import Ranking, document_text

from common import SHARED_DATA, table, write_result

WINDOW_S = 13.71 / 72
"""GPU seconds of one listwise window with 8 queries in flight (H200, gpu_speed-decode.json)."""
LABEL_S = 15.51 / 4300
"""GPU seconds of one label prompt in a packed batch (H100, gpu_speed-pointwise.json, compiled)."""
FRACTIONS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0]


class StopOnly(ListwiseReranker):
    """Sliding windows whose head is never fitted to the budget: only the running plan stops."""

    def estimate(self, n: int) -> Work:
        return Work(0, 0)


METHODS: dict[str, Any] = {
    "listwise sliding 20/10": (lambda j, **b: ListwiseReranker(j, window=20, stride=10, max_passage_tokens=None, **b), WINDOW_S),
    "listwise sliding 20/10 (stop only)": (lambda j, **b: StopOnly(j, window=20, stride=10, max_passage_tokens=None, **b), WINDOW_S),
    "JointRank covering w20": (lambda j, **b: ListwiseReranker(j, method="jointrank", window=20, max_passage_tokens=None, **b), WINDOW_S),
    "setwise heapsort c=2 top10": (lambda j, **b: SetwiseReranker(j, num_child=2, top_k=10, max_passage_tokens=None, **b), LABEL_S),
    "PRP heapsort top10": (lambda j, **b: PairwiseReranker(j, method="heapsort", top_k=10, max_passage_tokens=None, **b), LABEL_S),
    "pointwise yes/no": (lambda j, **b: PointwiseReranker(j, max_passage_tokens=None, **b), LABEL_S),
}  # fmt: skip


def ndcg(qrels: Any, rankings: list[Ranking]) -> float:
    return float(evaluate(["nDCG@10"], qrels, rankings_to_run(rankings))["nDCG@10"])


def load(collection: str, queries: int | None) -> tuple[list[Ranking], Any] | None:
    folder = SHARED_DATA / "trec-dl"
    hits = folder / f"bm25_{collection}.json"
    if not hits.is_file():
        return None
    qrels = read_qrels(folder / f"qrels.{collection}-passage.txt")
    first = [r for r in read_hits(hits) if r.query.qid in qrels][:queries]
    return first, {r.query.qid: qrels[r.query.qid] for r in first}  # measures over the queries run


def judge_for(first: list[Ranking], qrels: Any) -> OracleJudge:
    docs = {c.docid: c.doc for r in first for c in r.candidates}
    return OracleJudge.realistic(qrels, [r.query for r in first], docs.values(), seed=0)


def curves(collection: str, first: list[Ranking], qrels: Any) -> list[dict[str, Any]]:
    rows = []
    bm25 = ndcg(qrels, first)
    for name, (make, price) in METHODS.items():
        full = make(judge_for(first, qrels))(first)
        full_calls = usage_total(full).calls / len(first)
        full_ndcg = ndcg(qrels, full)
        for fraction in FRACTIONS:
            calls = round(fraction * full_calls)
            start = time.perf_counter()
            out = make(judge_for(first, qrels), budget={"calls": calls})(first)
            used = usage_total(out).calls / len(first)
            value = ndcg(qrels, out)
            gain = (value - bm25) / (full_ndcg - bm25) if full_ndcg != bm25 else float("nan")
            heads = [rec.budget.depth for r in out for rec in r.trace if rec.budget is not None]
            rows.append(
                {
                    "collection": collection,
                    "method": name,
                    "fraction": fraction,
                    "calls budget": calls,
                    "calls/q": round(used, 1),
                    "mean head": round(sum(heads) / len(heads), 1),
                    "nDCG@10": round(value, 4),
                    "gain": round(gain, 3),
                    "GPU s/q": round(used * price, 3),
                    "bm25": round(bm25, 4),
                    "full nDCG@10": round(full_ndcg, 4),
                    "cpu s": round(time.perf_counter() - start, 1),
                }
            )
            print(f"  {collection} {name} {fraction:.2f}: {value:.4f} ({gain:.0%} of the gain)", file=sys.stderr)
    return rows


def cascade(collection: str, first: list[Ranking], qrels: Any, encoder: Any) -> list[dict[str, Any]]:
    from rerankflow.rerankers.biencoder import BiEncoderReranker

    encoded = {r.query.qid: r for r in BiEncoderReranker(encoder)(first)}  # the same for every rule: once

    class BiEncoded(Transformer):
        """The bi-encoder's rankings, computed once above."""

        stage_name = "biencoder"

        def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
            return [encoded[r.query.qid] for r in batch]

    rules = {
        "never (bi-encoder only)": Rule(rule="never"),
        "always (bi-encoder, then listwise on all)": Rule(rule="always"),
        "agreement < 0.5 with BM25's top 10": Rule(rule="agreement", k=10, threshold=0.5),
        "agreement < 0.7 with BM25's top 10": Rule(rule="agreement", k=10, threshold=0.7),
        "margin at 10 < 0.02": Rule(rule="margin", k=10, threshold=0.02),
        "margin at 10 < 0.05": Rule(rule="margin", k=10, threshold=0.05),
    }
    rows = []
    for name, rule in rules.items():
        listwise = ListwiseReranker(judge_for(first, qrels), window=20, stride=10, max_passage_tokens=None)
        stage: Transformer = Cascade([BiEncoded(), listwise], escalate=[rule])
        start = time.perf_counter()
        out = stage(first)
        escalated = sum(bool(r.trace[-1].decisions and r.trace[-1].decisions["escalated"]) for r in out) / len(out)
        calls = usage_total(out).calls / len(out)
        rows.append(
            {
                "collection": collection,
                "rule": name,
                "escalated": round(escalated, 3),
                "LLM calls/q": round(calls, 2),
                "nDCG@10": round(ndcg(qrels, out), 4),
                "GPU s/q": round(calls * WINDOW_S, 3),
                "cpu s": round(time.perf_counter() - start, 1),
            }
        )
    return rows


class DelayedJudge(OracleJudge):
    """The simulated judge, answering a generation call after ``delay`` seconds (a GPU window)."""

    delay = 0.0

    async def _agenerate(self, prompts: list[Any], params: Any) -> list[Any]:
        await asyncio.sleep(self.delay)
        return await super()._agenerate(prompts, params)


def serve(first: list[Ranking], qrels: Any, delay: float, rounds: int) -> list[dict[str, Any]]:
    import httpx

    from rerankflow.pipelines.job import ServeSpec
    from rerankflow.serve.app import create_app
    from rerankflow.serve.launch import serve_in_thread
    from rerankflow.serve.served import serve_pipelines
    from rerankflow.types import Candidate, Query

    rows = []
    for budget in (None, 2000, 1000, 500):
        docs = {c.docid: c.doc for r in first for c in r.candidates}
        judge = DelayedJudge.realistic(qrels, [r.query for r in first], docs.values(), seed=0)
        judge.delay = delay
        listwise = ListwiseReranker(judge, window=20, stride=10, max_passage_tokens=None)
        app = create_app(serve_pipelines({"listwise": listwise}), ServeSpec(max_concurrent=8, max_documents=100))
        with serve_in_thread(app) as base, httpx.Client(timeout=60) as client:

            def ask(r: Ranking, budget: int | None = budget) -> tuple[float, Ranking, dict[str, Any]]:
                body: dict[str, Any] = {
                    "query": r.query.text,
                    "documents": [document_text(c.doc) for c in r.candidates],
                }
                if budget is not None:
                    body["budget_ms"] = budget
                start = time.perf_counter()
                reply = client.post(base + "/v1/rerank", json=body)
                took = time.perf_counter() - start
                reply.raise_for_status()
                data = reply.json()
                order = [r.candidates[item["index"]].doc for item in data["results"]]
                ranked = Ranking(Query(r.query.qid, r.query.text), tuple(
                    Candidate(d, float(len(order) - i), "served") for i, d in enumerate(order)))  # fmt: skip
                return took, ranked, data.get("rerankflow", {})

            ask(first[0])  # warm-up: the stage measures its pace
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(ask, [r for _ in range(rounds) for r in first]))
        latencies = sorted(a[0] for a in answers)
        stopped = sum(any(b.get("stopped") for b in a[2].get("budget", [])) for a in answers)
        heads = [b["depth"] for a in answers for b in a[2].get("budget", [])]
        rows.append({
            "budget_ms": budget or "none", "requests": len(answers), "clients": 8,
            "p50 s": round(latencies[len(latencies) // 2], 3),
            "p99 s": round(latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))], 3),
            "max s": round(latencies[-1], 3), "stopped": stopped,
            "mean head": round(sum(heads) / len(heads), 1) if heads else 100,
            "nDCG@10": round(ndcg(qrels, [a[1] for a in answers[: len(first)]]), 4),
        })  # fmt: skip
        print(f"  budget {budget}: p50 {rows[-1]['p50 s']} s, p99 {rows[-1]['p99 s']} s", file=sys.stderr)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", nargs="+", default=["curves", "cascade"], choices=["curves", "cascade", "serve"])
    ap.add_argument("--window-delay", type=float, default=WINDOW_S, help="serve: seconds per window call")
    ap.add_argument("--rounds", type=int, default=2, help="serve: times each query is sent")
    ap.add_argument("--collections", nargs="+", default=["dl19", "dl20"])
    ap.add_argument("--queries", type=int, default=None, help="only the first N queries of each collection")
    args = ap.parse_args()
    data = {c: load(c, args.queries) for c in args.collections}
    if any(v is None for v in data.values()):
        print(f"skipped: {SHARED_DATA / 'trec-dl'} not found (third-party data, not shipped)")
        return 0
    prices = {"window_s": WINDOW_S, "label_s": LABEL_S}
    if "curves" in args.parts:
        result: dict[str, Any] = {"prices": prices, "fractions": FRACTIONS}
        rows = [row for c, (first, qrels) in data.items() for row in curves(c, first, qrels)]  # type: ignore[misc]
        cols = [
            "collection",
            "method",
            "fraction",
            "calls budget",
            "calls/q",
            "mean head",
            "nDCG@10",
            "gain",
            "GPU s/q",
        ]
        print(table(rows, cols))
        result["curves"] = rows
        result["at half the calls"] = {
            f"{r['collection']} {r['method']}": r["gain"] for r in rows if r["fraction"] == 0.5
        }
        print(f"wrote {write_result('budget-curves', result)}")
    if "cascade" in args.parts:
        from rerankflow.backends.embeddings import SentenceTransformerEncoder

        encoder = SentenceTransformerEncoder("all-minilm-l6-v2", device="cpu")
        rows = [row for c, (first, qrels) in data.items() for row in cascade(c, first, qrels, encoder)]  # type: ignore[misc]
        print(table(rows, ["collection", "rule", "escalated", "LLM calls/q", "nDCG@10", "GPU s/q"]))
        print(f"wrote {write_result('budget-cascade', {'prices': prices, 'cascade': rows})}")
    if "serve" in args.parts:
        first, qrels = data[args.collections[0]]  # type: ignore[misc]
        rows = serve(first, qrels, args.window_delay, args.rounds)
        print(table(rows, list(rows[0])))
        note = {"window_delay_s": args.window_delay, "collection": args.collections[0]}
        print(f"wrote {write_result('budget-serve', {'setup': note, 'serve': rows})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
