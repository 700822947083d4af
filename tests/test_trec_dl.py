"""Acceptance checks on TREC DL 2019/2020 (../shared/data; skipped when absent)."""

from pathlib import Path

import pytest

from rerankflow.eval.measures import evaluate
from rerankflow.io.jsonl import read_hits
from rerankflow.io.trec import rankings_to_run, read_qrels, read_run
from rerankflow.pipelines.job import load_job
from rerankflow.pipelines.runner import run_job

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("year,expected", [("19", 0.5058), ("20", 0.4796)])
def test_bm25_runs_reproduce_published_ndcg(trec_dl, year, expected):
    qrels = read_qrels(trec_dl / f"qrels.dl{year}-passage.txt")
    value = evaluate(["nDCG@10"], qrels, read_run(trec_dl / f"bm25_dl{year}.trec"))["nDCG@10"]
    assert value == pytest.approx(expected, abs=5e-5)
    hits = rankings_to_run(read_hits(trec_dl / f"bm25_dl{year}.json"))
    assert evaluate(["nDCG@10"], qrels, hits)["nDCG@10"] == pytest.approx(expected, abs=5e-5)


@pytest.mark.slow
def test_dl19_dense_rerank_and_hybrids(trec_dl, tmp_path):
    job = load_job(EXAMPLES / "dl19-dense.yaml")
    result = run_job(job, EXAMPLES, tmp_path).result
    means = {s.name: s.means["nDCG@10"] for s in result.systems}
    print("\n" + result.table())
    assert means["bm25"] == pytest.approx(0.5058, abs=5e-5)
    assert means["biencoder"] >= 0.63
    assert set(means) == {"bm25", "biencoder", "hybrid-rrf", "hybrid-convex"}
    assert all(0.4 < v <= 1 for v in means.values())
    assert all(s.queries == 43 for s in result.systems)
