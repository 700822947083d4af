"""`rerankflow tune` on real data: a hybrid tuned on DL19 and applied unchanged to DL20, and a
RAG compression budget on NQ-open (exact match against the tokens the answering model reads).

* ``hybrid``: tunes examples/dl19-tune.yaml (rrf k, both weights, both depths; 40 TPE trials
  on half of the DL19 queries), then runs examples/dl20-retrieval.yaml with the chosen hybrid
  added as ``hybrid-tuned-on-dl19`` beside BM25, dense and the default hybrid (k 60, equal
  weights, depth 100);
* ``rag``: tunes examples/nq-rag-tune.yaml (budget ratio and bi-encoder cutoff; 16 NSGA-II
  trials, EM against tokens) and reports the front with held-out scores.

    python bench/tune.py [--parts hybrid rag]

Study folders go to runs/bench-tune/ (not kept); tune.json, front.txt and best.yaml of each
are copied to bench/results/tune-dl19/ and tune-nq/, the summaries to tune-hybrid.json and tune-rag.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from typing import Any

from rerankflow.pipelines.job import load_job, load_job_text
from rerankflow.pipelines.runner import run_job
from rerankflow.pipelines.tune import tune_job

from common import RESULTS, ROOT, SHARED_DATA, table, write_result

RUNS = ROOT / "runs" / "bench-tune"


def tuned(example: str, name: str) -> tuple[Any, float]:
    job_path = ROOT / "examples" / example
    out = RUNS / name
    start = time.perf_counter()
    result = tune_job(load_job(job_path), job_path.parent, out, progress=lambda line: print(line, file=sys.stderr))
    seconds = time.perf_counter() - start
    keep = RESULTS / f"tune-{name}"
    keep.mkdir(parents=True, exist_ok=True)
    for file in ("tune.json", "front.txt", "best.yaml"):
        shutil.copy(out / file, keep / file)
    return result, seconds


def hybrid() -> dict[str, Any]:
    result, seconds = tuned("dl19-tune.yaml", "dl19")
    best = load_job(RUNS / "dl19" / "best.yaml")
    dl20_path = ROOT / "examples" / "dl20-retrieval.yaml"
    dl20 = load_job(dl20_path)
    pipelines = {**dl20.pipelines, "hybrid-tuned-on-dl19": best.pipelines["hybrid"]}
    job = load_job_text(json.dumps({**dl20.model_dump(mode="json"), "pipelines": {
        k: [s.to_yaml() for s in v] for k, v in pipelines.items()}}), file=dl20_path)  # fmt: skip
    run = run_job(job, dl20_path.parent, RUNS / "dl20-applied", use_cache=False)
    chosen = next(p for p in result.front if p["number"] == result.chosen)
    rows = [
        {"collection": "DL20 (applied unchanged)", "system": s.name, "nDCG@10": round(s.means["nDCG@10"], 4),
         "R(rel=2)@100": round(s.means["R(rel=2)@100"], 4)}
        for s in run.result.systems
    ]  # fmt: skip
    return {
        "chosen": chosen,
        "dl19 tuning nDCG@10": chosen["tuning"]["objective"],
        "dl19 held-out nDCG@10": chosen["held_out"]["objective"],
        "tune seconds": round(seconds, 1),
        "dl20": rows,
    }


def rag() -> dict[str, Any]:
    result, seconds = tuned("nq-rag-tune.yaml", "nq")
    rows = [
        {"trial": p["number"], **p["params"], "EM tuning": p["tuning"]["objective"], "tokens/q tuning": p["tuning"]["tokens"],
         "EM held-out": p["held_out"]["objective"], "tokens/q held-out": p["held_out"]["tokens"],
         "chosen": p["number"] == result.chosen}
        for p in sorted(result.front, key=lambda p: p["tuning"]["tokens"])
    ]  # fmt: skip
    return {"front": rows, "trials": len(result.trials), "tune seconds": round(seconds, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", nargs="+", default=["hybrid", "rag"], choices=["hybrid", "rag"])
    args = ap.parse_args()
    if not (SHARED_DATA / "trec-dl" / "bm25_dl19.json").is_file():
        print(f"skipped: {SHARED_DATA} not found (third-party data, not shipped)")
        return 0
    if "hybrid" in args.parts:
        hybrid_result = hybrid()
        print(table(hybrid_result["dl20"], ["collection", "system", "nDCG@10", "R(rel=2)@100"]))
        print(
            f"DL19: tuning {hybrid_result['dl19 tuning nDCG@10']:.4f}, held-out {hybrid_result['dl19 held-out nDCG@10']:.4f}"
        )
        print(f"wrote {write_result('tune-hybrid', hybrid_result)}")
    if "rag" in args.parts:
        rag_result = rag()
        front = rag_result["front"]
        print(table(front, list(front[0])))
        print(f"wrote {write_result('tune-rag', rag_result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
