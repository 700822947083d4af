"""BM25 engines head to head: rank_bm25 (reference) vs the sparse-matrix engine.

Builds a corpus of >= 100k passages (synthetic: words drawn with their observed frequencies
from the pooled TREC DL passages when ../shared/data is there, else from the demo
collection), indexes it with both engines, runs the same queries (real DL19/DL20 queries
when available) and reports index time, queries/s, their ratio, and whether the top-10
lists and scores agree. Writes bench/results/bm25.json.

    python bench/bm25.py [--docs 100000] [--ref-queries 50]
"""

from __future__ import annotations

import argparse
import itertools
import random
import time
from collections import Counter

from rerankflow.io.dataset import demo_dataset
from rerankflow.io.jsonl import read_hits
from rerankflow.retrievers.bm25 import BM25Index, BM25Retriever
from rerankflow.retrievers.tokenize import Tokenizer
from rerankflow.types import Document, Query

from common import SHARED_DATA, table, write_result


def source_texts() -> tuple[list[str], list[str], str]:
    dl = SHARED_DATA / "trec-dl"
    if (dl / "bm25_dl19.json").is_file():
        texts, queries = {}, []
        for year in ("19", "20"):
            for r in read_hits(dl / f"bm25_dl{year}.json"):
                queries.append(r.query.text)
                for c in r.candidates:
                    texts[c.docid] = c.doc.text
        return list(texts.values()), queries, "pooled TREC DL19+DL20 passages"
    corpus, queries, _ = demo_dataset()
    return [d.text for d in corpus], [q.text for q in queries], "demo collection"


def synthetic_corpus(texts: list[str], n_docs: int, seed: int) -> list[Document]:
    words = Counter(w for t in texts for w in t.split())
    vocab, cum = list(words), list(itertools.accumulate(words.values()))
    lengths = [len(t.split()) for t in texts]
    rng = random.Random(seed)
    return [
        Document(f"s{i}", " ".join(rng.choices(vocab, cum_weights=cum, k=rng.choice(lengths)))) for i in range(n_docs)
    ]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--ref-queries", type=int, default=50, help="queries run through rank_bm25 (it is slow)")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()

    texts, query_texts, source = source_texts()
    corpus, gen_s = timed(lambda: synthetic_corpus(texts, args.docs, args.seed))
    queries = [Query(str(i), q) for i, q in enumerate(query_texts)]
    ref_queries = queries[: args.ref_queries]
    print(
        f"corpus: {len(corpus):,} synthetic passages from the {source} ({gen_s:.1f}s to generate); {len(queries)} queries"
    )

    tokenizer = Tokenizer()
    index = BM25Index(corpus, tokenizer)
    fast = BM25Retriever(index, k=10)
    ref = BM25Retriever(index, k=10, engine="rank_bm25")
    _, fast_index_s = timed(lambda: (index.build(), fast.ensure_loaded()))
    _, ref_index_s = timed(ref.ensure_loaded)

    fast.retrieve(queries[:5])  # warm caches once
    _, fast_s = timed(lambda: fast.retrieve(queries))
    fast_ref_set, fast_ref_s = timed(lambda: fast.retrieve(ref_queries))
    ref_out, ref_s = timed(lambda: ref.retrieve(ref_queries))

    same_ids = sum(a.docids == b.docids for a, b in zip(fast_ref_set, ref_out))
    max_diff = max(
        (abs(x.score - y.score) for a, b in zip(fast_ref_set, ref_out) for x, y in zip(a.candidates, b.candidates)),
        default=0.0,
    )
    rows = [
        {
            "engine": "rank_bm25",
            "index_s": ref_index_s,
            "queries": len(ref_queries),
            "query_s": ref_s,
            "qps": len(ref_queries) / ref_s,
        },
        {
            "engine": "sparse",
            "index_s": fast_index_s,
            "queries": len(ref_queries),
            "query_s": fast_ref_s,
            "qps": len(ref_queries) / fast_ref_s,
        },
        {
            "engine": "sparse (all queries)",
            "index_s": None,
            "queries": len(queries),
            "query_s": fast_s,
            "qps": len(queries) / fast_s,
        },
    ]
    speedup = rows[1]["qps"] / rows[0]["qps"]
    print(table(rows, ["engine", "index_s", "queries", "query_s", "qps"]))
    print(f"\nquery speed-up sparse / rank_bm25: {speedup:,.0f}x on the same {len(ref_queries)} queries")
    print(
        f"identical top-10 ids: {same_ids}/{len(ref_queries)} queries; max |score difference| in top-10: {max_diff:.2e}"
    )
    path = write_result(
        "bm25",
        {
            "corpus": {"documents": len(corpus), "source": source, "seed": args.seed},
            "tokenizer": repr(tokenizer),
            "params": {"k1": fast.k1, "b": fast.b, "variant": fast.variant, "k": 10},
            "rows": rows,
            "query_speedup": speedup,
            "identical_top10": same_ids,
            "compared_queries": len(ref_queries),
            "max_abs_score_diff_top10": max_diff,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
