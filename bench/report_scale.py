"""How large an experiment the report's per-query view handles: page size, time to open the
page, and time to open one query's side-by-side view, in headless Chromium.

Synthetic experiments (two systems, 100 candidates per query, passages of about 60 words, the
top 20 of each list kept with texts as ``rerankflow run`` does) of growing query counts go
through the same ``details`` -> ``write_report`` path as a real run.

    python bench/report_scale.py [--queries 43 500 2000 5000]

Writes bench/results/report_scale.json. Needs playwright and /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from rerankflow import Candidate, Document, Query, Ranking
from rerankflow.eval.details import details
from rerankflow.eval.report import write_report

from common import table, write_result

WORDS = [
    "retrieval",
    "ranking",
    "passage",
    "query",
    "model",
    "score",
    "judge",
    "window",
    "batch",
    "token",
    "context",
    "answer",
]


def synthetic(queries: int, folder: Path, seed: int = 0) -> None:
    """results.json + details.json of a two-system experiment with ``queries`` queries."""
    rng = random.Random(seed)
    systems: dict[str, list[Ranking]] = {"bm25": [], "reranker": []}
    qrels: dict[str, dict[str, int]] = {}
    per_query: dict[str, dict[str, float]] = {"bm25": {}, "reranker": {}}
    for q in range(queries):
        qid = f"q{q}"
        docs = [Document(f"{qid}-d{i}", " ".join(rng.choice(WORDS) for _ in range(60))) for i in range(100)]
        first = Ranking(
            Query(qid, "ranking passage query"), tuple(Candidate(d, 100.0 - i, "bm25") for i, d in enumerate(docs))
        )
        shuffled = list(first.candidates)
        rng.shuffle(shuffled)
        systems["bm25"].append(first)
        systems["reranker"].append(
            first.with_candidates(c.rescored(float(i), "reranker") for i, c in enumerate(shuffled))
        )
        qrels[qid] = {d.docid: rng.randint(0, 3) for d in docs[::7]}
        per_query["bm25"][qid], per_query["reranker"][qid] = rng.random(), rng.random()
    results = {
        "measures": ["nDCG@10"],
        "baseline": "bm25",
        "systems": [
            {"name": n, "means": {"nDCG@10": sum(v.values()) / queries}, "queries": queries, "ms_per_query": 1.0,
             "per_query": {"nDCG@10": v}}
            for n, v in per_query.items()
        ],
    }  # fmt: skip
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "details.json").write_text(json.dumps(details(systems, qrels, {})))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, nargs="+", default=[43, 500, 2000, 5000])
    args = ap.parse_args()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("skipped: playwright is not installed (pip install -e '.[dev]')")
        return 0
    if not Path("/usr/bin/chromium").is_file():
        print("skipped: /usr/bin/chromium not found (apt-get install chromium)")
        return 0
    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        for n in args.queries:
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                synthetic(n, folder)
                start = time.perf_counter()
                path = write_report(folder)
                write_s = time.perf_counter() - start
                page = browser.new_page(viewport={"width": 1366, "height": 900})
                start = time.perf_counter()
                page.goto(path.as_uri(), wait_until="load")
                open_s = time.perf_counter() - start
                start = time.perf_counter()
                page.locator("a.bar").nth(n // 2).click()
                page.wait_for_selector(".qhead")
                query_s = time.perf_counter() - start
                page.close()
                rows.append(
                    {
                        "queries": n,
                        "page MB": round(path.stat().st_size / 2**20, 2),
                        "write s": round(write_s, 2),
                        "open s": round(open_s, 2),
                        "open a query s": round(query_s, 3),
                    }
                )
                print(f"{n} queries: done", file=sys.stderr)
        browser.close()
    print(table(rows, list(rows[0])))
    write_result("report_scale", {"systems": 2, "candidates_per_query": 100, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
