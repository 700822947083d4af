"""Ranking quality and cost on TREC DL19 and DL20: BM25 top-100 → each reranker family.

For each dataset (``../shared/data/trec-dl``; skipped when absent):

* on **all** judged queries: BM25 (the input), the MiniLM bi-encoder and a noisy-oracle judge
  (qrels grade + N(0, 1) per prompt, listwise sliding 20/10) as reference points;
* on the **first ``--queries``** queries (file order), the four LLM families with a real
  model (default SmolLM2-135M-Instruct on the HF backend, CPU): pointwise yes/no, listwise
  sliding window 20/10, setwise heapsort (3 children, top 10) and pairwise PRP heapsort (top 10,
  both orders) — and BM25, MiniLM and the oracle again on that same subset, for a fair row.

Per method: nDCG@10, LLM calls, prompt and output tokens per query, wall seconds per query,
and each query's LLM latency (for the report's distributions). The published nDCG@10 from
``../shared/data/README.md`` (7B-class models over all queries) are written beside, marked
published; they are not measured here.

    python bench/quality.py [--queries 3] [--max-passage-tokens 64] [--backend hf]

Writes bench/results/quality.json after every method (a partial run keeps what finished).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from rerankflow import Ranking
from rerankflow.backends.base import LLMBackend
from rerankflow.backends.embeddings import SentenceTransformerEncoder
from rerankflow.backends.factory import BackendConfig, create_backend
from rerankflow.eval.measures import parse_measures, per_query
from rerankflow.io.jsonl import read_hits
from rerankflow.io.trec import rankings_to_run, read_qrels
from rerankflow.ops import Identity
from rerankflow.rerankers.biencoder import BiEncoderReranker
from rerankflow.rerankers.listwise import ListwiseReranker
from rerankflow.rerankers.pairwise import PairwiseReranker
from rerankflow.rerankers.pointwise import PointwiseReranker
from rerankflow.rerankers.setwise import SetwiseReranker
from rerankflow.stage import Transformer
from rerankflow.testing.oracle import OracleJudge

from common import SHARED_DATA, table, write_result

DATASETS = {"dl19": ("bm25_dl19.json", "qrels.dl19-passage.txt"), "dl20": ("bm25_dl20.json", "qrels.dl20-passage.txt")}
# ../shared/data/README.md, BM25 top-100, nDCG@10 over all judged queries (not measured here)
PUBLISHED = [
    {"method": "BM25 (Pyserini)", "dl19": 0.5058, "dl20": 0.4796},
    {"method": "RankZephyr-7B listwise 20/10", "dl19": 0.7365, "dl20": 0.7080},
    {"method": "FirstMistral listwise", "dl19": 0.7294, "dl20": 0.7043},
    {"method": "MonoT5-3B pointwise", "dl19": 0.7173, "dl20": 0.6887},
    {"method": "Qwen2.5-7B-Instruct zero-shot listwise", "dl19": 0.6987, "dl20": 0.6298},
    {"method": "all-MiniLM-L6-v2 cosine rerank", "dl19": 0.642, "dl20": None},
]


def llm_methods(cut: int) -> dict[str, tuple[str, Callable[[LLMBackend], Transformer]]]:
    """Family and constructor of each LLM method (passages cut to ``cut`` tokens)."""
    return {
        "pointwise yes/no": ("pointwise", lambda b: PointwiseReranker(b, max_passage_tokens=cut)),
        "listwise sliding 20/10": ("listwise", lambda b: ListwiseReranker(b, window=20, stride=10,
                                                                          max_passage_tokens=cut)),
        "setwise heapsort c=3 top10": ("setwise", lambda b: SetwiseReranker(b, num_child=3, top_k=10,
                                                                            max_passage_tokens=cut)),
        "pairwise PRP heapsort top10": ("pairwise", lambda b: PairwiseReranker(b, method="heapsort", top_k=10,
                                                                               max_passage_tokens=cut)),
    }  # fmt: skip


def measure(name: str, family: str, stage: Transformer, batch: list[Ranking], qrels: Any) -> dict[str, Any]:
    """Run ``stage`` over ``batch`` and collect quality and cost."""
    start = time.perf_counter()
    out = stage(batch)
    seconds = time.perf_counter() - start
    ndcg = per_query(parse_measures(["nDCG@10"]), qrels, rankings_to_run(out))["nDCG@10"]
    values = [ndcg.get(r.query.qid, 0.0) for r in batch]  # every query in these files is judged
    per_q = [next((rec.usage for rec in r.trace if rec.usage is not None), None) for r in out]
    usage = any(u is not None for u in per_q)
    n = len(batch)
    return {
        "method": name,
        "family": family,
        "queries": n,
        "nDCG@10": sum(values) / n,
        "calls/q": sum(u.calls for u in per_q if u) / n,
        "prompt tokens/q": sum(u.prompt_tokens for u in per_q if u) / n,
        "output tokens/q": sum(u.output_tokens for u in per_q if u) / n,
        "s/q": seconds / n,
        "seconds": seconds,
        "per_query_ndcg": values,
        "per_query_latency_s": [u.latency_s if u else 0.0 for u in per_q] if usage else [seconds / n] * n,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=3, help="queries per dataset for the LLM families")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    ap.add_argument("--max-passage-tokens", type=int, default=64)
    ap.add_argument("--datasets", default="dl19,dl20")
    ap.add_argument("--skip-llm", action="store_true", help="only the reference rows")
    args = ap.parse_args()
    folder = SHARED_DATA / "trec-dl"
    if not (folder / "bm25_dl19.json").is_file():
        print(f"skipped: {folder} not found (third-party data, not shipped)")
        return 0
    encoder = SentenceTransformerEncoder()
    backend = None if args.skip_llm else create_backend(BackendConfig(kind=args.backend, model=args.model))
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "llm": {"model": args.model, "backend": args.backend, "max_passage_tokens": args.max_passage_tokens},
        "published": PUBLISHED,
        "rows": rows,
    }
    for dataset in args.datasets.split(","):
        hits, qrels_file = DATASETS[dataset]
        everything = read_hits(folder / hits)
        qrels = read_qrels(folder / qrels_file)
        docs = {c.docid: c.doc for r in everything for c in r.candidates}
        subset = everything[: args.queries]
        for scope, batch in (("all", everything), ("subset", subset)):
            judge = OracleJudge(qrels, [r.query for r in everything], docs.values(), noise=1.0, seed=0)
            references: list[tuple[str, str, Transformer]] = [
                ("BM25 (input)", "reference", Identity()),
                ("MiniLM bi-encoder", "reference", BiEncoderReranker(encoder)),
                ("noisy oracle σ=1, listwise 20/10", "reference",
                 ListwiseReranker(judge, window=20, stride=10, max_passage_tokens=None)),
            ]  # fmt: skip
            for name, family, stage in references:
                rows.append({"dataset": dataset, "scope": scope, **measure(name, family, stage, batch, qrels)})
                print(f"{dataset} {scope} {name}: {rows[-1]['nDCG@10']:.4f}", file=sys.stderr)
            write_result("quality", result)
        if backend is None:
            continue
        for name, (family, make) in llm_methods(args.max_passage_tokens).items():
            rows.append({"dataset": dataset, "scope": "subset", **measure(name, family, make(backend), subset, qrels)})
            print(f"{dataset} subset {name}: {rows[-1]['nDCG@10']:.4f} in {rows[-1]['seconds']:.0f}s", file=sys.stderr)
            write_result("quality", result)
    print(table(rows, ["dataset", "scope", "method", "queries", "nDCG@10", "calls/q", "prompt tokens/q",
                       "output tokens/q", "s/q"]))  # fmt: skip
    print("published (all queries, not measured here):")
    print(table(PUBLISHED, ["method", "dl19", "dl20"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
