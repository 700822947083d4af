"""Indexing at scale on this machine: BM25 (ours vs bm25s), the index pipeline with incremental
updates, and dense search exact vs FAISS HNSW.

Parts (each measurement runs in a fresh process, so its peak memory is its own):

* ``bm25``: synthetic passages (words drawn with their observed frequencies from the pooled
  TREC DL passages, else the demo collection; see bench/bm25.py), the real DL19+DL20 queries
  (97) one at a time on one thread. Ours with threshold selection vs ours with the previous
  exhaustive selection (the same-run baseline; top-10 must be identical) vs bm25s (numpy
  backend) indexing the same tokens. Sizes: ``--sizes`` (default 100k and 1M).
* ``pipeline``: ``update_index`` on a JSONL corpus of ``--pipeline-docs`` synthetic records
  (BM25 only; chunked with the real MiniLM tokenizer): build time and peak memory, open time,
  queries/s on the opened index, then 1% of the records changed and the update timed against
  the build. MiniLM encoding throughput is measured on 1,000 chunks and the encoding time of
  the corpus extrapolated from it (encoding 100k chunks on 2 cores takes about ten minutes).
* ``dense``: synthetic clustered unit vectors (384-d, as MiniLM's) at ``--sizes``: exact numpy
  search and FAISS HNSW (M=32, efConstruction=80, efSearch=128, as ``rerankflow index``
  builds it): build time, queries/s, recall@10 against exact.

    python bench/index.py [--parts bm25 pipeline dense] [--sizes 100000 1000000]

Writes bench/results/index.json. bm25s is not a dependency: ``pip install bm25s`` to include it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import table, write_result

K = 10


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def in_child(fn, *args) -> dict[str, Any]:
    """Run ``fn(*args)`` in a fresh interpreter; its result dict gains its peak memory."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def _corpus(n: int):
    from bm25 import source_texts, synthetic_corpus

    texts, queries, source = source_texts()
    return synthetic_corpus(texts, n, 13), queries, source


def bm25_ours(n: int) -> dict[str, Any]:
    from rerankflow.retrievers.bm25 import BM25Index, BM25Retriever
    from rerankflow.types import Query

    corpus, qtexts, source = _corpus(n)
    queries = [Query(str(i), q) for i, q in enumerate(qtexts)]
    start = time.perf_counter()
    index = BM25Index(corpus).build()
    retriever = BM25Retriever(index, k=K)
    retriever.ensure_loaded()
    index_s = time.perf_counter() - start
    retriever.retrieve(queries[:3])
    start = time.perf_counter()
    fast = retriever.retrieve(queries)
    fast_s = time.perf_counter() - start
    retriever._positive = False  # the previous selection: mark every match, select among all of them
    start = time.perf_counter()
    slow = retriever.retrieve(queries)
    slow_s = time.perf_counter() - start
    identical = sum(a.docids == b.docids and [c.score for c in a.candidates] == [c.score for c in b.candidates]
                    for a, b in zip(fast, slow))  # fmt: skip
    tokens = [retriever.tokenizer(q) for q in qtexts]
    return {
        "docs": n, "source": source, "queries": len(queries), "index_s": index_s,
        "qps": len(queries) / fast_s, "qps_exhaustive_selection": len(queries) / slow_s,
        "identical_top10": identical, "peak_gb": peak_gb(),
        "top10": [r.docids for r in fast], "query_tokens": tokens,
    }  # fmt: skip


def bm25_bm25s(n: int) -> dict[str, Any]:
    import bm25s

    from rerankflow.retrievers.tokenize import Tokenizer
    from rerankflow.types import document_text

    corpus, qtexts, _ = _corpus(n)
    tokenizer = Tokenizer()
    start = time.perf_counter()
    tokens = [tokenizer(document_text(d)) for d in corpus]
    tokenize_s = time.perf_counter() - start
    start = time.perf_counter()
    model = bm25s.BM25(k1=0.9, b=0.4, method="lucene", backend="numpy")
    model.index(tokens, show_progress=False)
    index_s = time.perf_counter() - start
    del tokens
    queries = [[t for t in tokenizer(q) if t in model.vocab_dict] or ["the"] for q in qtexts]
    model.retrieve(queries[:3], k=K, show_progress=False, n_threads=1)
    start = time.perf_counter()
    found = [model.retrieve([q], k=K, show_progress=False, n_threads=1)[0][0] for q in queries]
    query_s = time.perf_counter() - start
    return {
        "docs": n, "tokenize_s": tokenize_s, "index_s": index_s, "qps": len(queries) / query_s,
        "peak_gb": peak_gb(), "top10": [[corpus[int(i)].docid for i in row] for row in found],
        "version": bm25s.__version__,
    }  # fmt: skip


def pipeline(n: int) -> dict[str, Any]:
    from rerankflow.backends.embeddings import SentenceTransformerEncoder
    from rerankflow.index import IndexSettings, open_index, update_index
    from rerankflow.retrievers.bm25 import BM25Retriever
    from rerankflow.types import Query

    corpus, qtexts, _ = _corpus(n)
    work = Path(tempfile.mkdtemp(prefix="rf-index-bench-"))
    src = work / "corpus.jsonl"

    def write(version: dict[int, str]) -> None:
        with src.open("w") as fh:
            for i, d in enumerate(corpus):
                fh.write(json.dumps({"id": d.docid, "text": version.get(i, d.text)}) + "\n")

    write({})
    settings = IndexSettings(encoder=None)
    encoder = SentenceTransformerEncoder("all-minilm-l6-v2", memo_size=0)
    encoder.load()
    start = time.perf_counter()
    report = update_index([src], work / "ix", settings, encoder=encoder)
    build_s = time.perf_counter() - start
    build_peak = peak_gb()
    start = time.perf_counter()
    opened = open_index(work / "ix")
    retriever = BM25Retriever(opened.bm25, k=K)
    retriever.ensure_loaded()
    open_s = time.perf_counter() - start
    queries = [Query(str(i), q) for i, q in enumerate(qtexts)]
    retriever.retrieve(queries[:3])
    start = time.perf_counter()
    retriever.retrieve(queries)
    qps = len(queries) / (time.perf_counter() - start)
    changed = {i: corpus[i].text + " revised" for i in range(0, n, 100)}
    write(changed)
    start = time.perf_counter()
    update = update_index([src], work / "ix", encoder=encoder)
    update_s = time.perf_counter() - start
    sample = [c.text for c in opened.chunks[:1000]]
    start = time.perf_counter()
    encoder.encode(sample)
    per_chunk = (time.perf_counter() - start) / len(sample)
    return {
        "docs": n, "chunks": report.chunks_live, "build_s": build_s, "build_peak_gb": build_peak,
        "open_s": open_s, "qps": qps, "changed_docs": len(update.changed), "update_s": update_s,
        "update_vs_build": update_s / build_s, "minilm_chunks_per_s": 1 / per_chunk,
        "dense_encoding_s_extrapolated": per_chunk * report.chunks_live,
        "update_vs_build_with_dense_extrapolated": (update_s + per_chunk * len(update.changed))
        / (build_s + per_chunk * report.chunks_live),
    }  # fmt: skip


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((1000, dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        out[start : start + m] = centers[rng.integers(0, 1000, m)] + 0.8 * rng.standard_normal((m, dim), np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def dense(n: int) -> dict[str, Any]:
    import faiss

    faiss.omp_set_num_threads(1)
    emb = clustered(n, 384, 7)
    queries = emb[np.random.default_rng(3).choice(n, 97, replace=False)] + 0.05 * np.random.default_rng(
        4
    ).standard_normal((97, 384), np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    start = time.perf_counter()
    exact = []
    for q in queries:
        sims = emb @ q
        top = np.argpartition(-sims, K)[:K]
        exact.append(set(top[np.argsort(-sims[top])].tolist()))
    exact_qps = len(queries) / (time.perf_counter() - start)
    faiss.omp_set_num_threads(2)  # building uses both cores
    start = time.perf_counter()
    index = faiss.IndexHNSWFlat(384, 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.add(emb)
    build_s = time.perf_counter() - start
    index.hnsw.efSearch = 128
    faiss.omp_set_num_threads(1)
    start = time.perf_counter()
    approx = [set(index.search(q[None, :], K)[1][0].tolist()) for q in queries]
    hnsw_qps = len(queries) / (time.perf_counter() - start)
    recall = float(np.mean([len(a & e) / K for a, e in zip(approx, exact)]))
    return {
        "docs": n, "exact_qps": exact_qps, "hnsw_build_s": build_s, "hnsw_qps": hnsw_qps,
        "speedup": hnsw_qps / exact_qps, "recall_at_10": recall, "peak_gb": peak_gb(),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=["bm25", "pipeline", "dense"], choices=["bm25", "pipeline", "dense"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[100_000, 1_000_000])
    ap.add_argument("--pipeline-docs", type=int, default=100_000)
    args = ap.parse_args()
    out: dict[str, Any] = {"sizes": args.sizes}
    if "bm25" in args.parts:
        rows = []
        for n in args.sizes:
            ours = in_child(bm25_ours, n)
            try:
                theirs = in_child(bm25_bm25s, n)
            except ImportError:
                theirs = None
            row = {
                k: ours[k] for k in ("docs", "index_s", "qps", "qps_exhaustive_selection", "identical_top10", "peak_gb")
            }
            row["speedup_vs_exhaustive"] = ours["qps"] / ours["qps_exhaustive_selection"]
            if theirs:
                row |= {"bm25s_index_s": theirs["index_s"], "bm25s_tokenize_s": theirs["tokenize_s"],
                        "bm25s_qps": theirs["qps"], "bm25s_peak_gb": theirs["peak_gb"],
                        "bm25s_version": theirs["version"]}  # fmt: skip
                dup = [len(t) != len(set(t)) for t in ours["query_tokens"]]
                same = [a == b for a, b in zip(ours["top10"], theirs["top10"])]
                row["same_top10_as_bm25s"] = sum(same)
                row["same_top10_as_bm25s_no_repeated_terms"] = (
                    f"{sum(s for s, d in zip(same, dup) if not d)}/{dup.count(False)}"
                )
            rows.append(row)
            print(table([row], list(row)), flush=True)
        out["bm25"] = rows
    if "pipeline" in args.parts:
        out["pipeline"] = in_child(pipeline, args.pipeline_docs)
        print(table([out["pipeline"]], list(out["pipeline"])), flush=True)
    if "dense" in args.parts:
        out["dense"] = [in_child(dense, n) for n in args.sizes]
        print(table(out["dense"], list(out["dense"][0])), flush=True)
    print(f"wrote {write_result('index', out)}")


if __name__ == "__main__":
    main()
