"""Every listwise / pairwise / setwise scoring mode on the real SmolLM2 through vLLM, on DL19 queries.

Quality from a 135M model is not the point; complete, valid and deterministic rankings are.
"""

import pytest

from rerankflow.eval.trace import usage_total
from rerankflow.io.jsonl import read_hits
from rerankflow.pipelines.job import load_job_text
from rerankflow.pipelines.runner import run_job
from rerankflow.rerankers.listwise import ListwiseReranker
from rerankflow.rerankers.pairwise import PairwiseReranker
from rerankflow.rerankers.setwise import SetwiseReranker

pytestmark = pytest.mark.slow

MODES = {
    "listwise-sliding": lambda b: ListwiseReranker(b, window=4, stride=2, max_passage_tokens=16),
    "listwise-single-pass": lambda b: ListwiseReranker(b, method="single_pass", max_passage_tokens=16),
    "listwise-jointrank": lambda b: ListwiseReranker(b, method="jointrank", window=4, max_passage_tokens=16),
    "listwise-first": lambda b: ListwiseReranker(b, scorer="first_token", window=4, stride=2, max_passage_tokens=16),
    "pairwise-allpairs": lambda b: PairwiseReranker(b, method="allpairs", depth=4, max_passage_tokens=16),
    "pairwise-heapsort": lambda b: PairwiseReranker(b, method="heapsort", top_k=3, max_passage_tokens=16),
    "pairwise-bubble": lambda b: PairwiseReranker(b, method="bubble", top_k=1, max_passage_tokens=16),
    "setwise-labels": lambda b: SetwiseReranker(b, num_child=2, top_k=3, max_passage_tokens=16),
    "setwise-generate": lambda b: SetwiseReranker(b, num_child=2, top_k=3, scorer="generate", max_passage_tokens=16),
}


@pytest.fixture(scope="module")
def dl19_head(trec_dl):
    """Two DL19 queries with their BM25 top 5 and top 4 (text included; unequal on purpose)."""
    first, second = read_hits(trec_dl / "bm25_dl19.json")[:2]
    return [first.top(5), second.top(4)]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_mode_gives_complete_valid_rankings(vllm_backend, dl19_head, mode):
    first = MODES[mode](vllm_backend)
    out = first(dl19_head)
    for before, after in zip(dl19_head, out):
        assert after.query == before.query
        assert sorted(after.docids) == sorted(before.docids) and len(set(after.docids)) == len(before)
        scores = [c.score for c in after.candidates]
        assert scores == sorted(scores, reverse=True) and all(c.stage == first.name for c in after.candidates)
    total = usage_total(out)
    assert total.calls > 0 and total.prompt_tokens > 0
    assert all([rec.stage for rec in r.trace] == [first.name] and r.trace[0].usage.calls > 0 for r in out)


@pytest.mark.parametrize("mode", ["listwise-sliding", "setwise-generate"])
def test_generation_is_deterministic_whatever_the_call_order(vllm_backend, dl19_head, mode):
    """Greedy decoding: the sequential and the concurrent scheduler give the same rankings."""
    concurrent, sequential = MODES[mode](vllm_backend), MODES[mode](vllm_backend)
    sequential.scheduler.mode = "sequential"
    assert [r.docids for r in concurrent(dl19_head)] == [r.docids for r in sequential(dl19_head)]


def test_yaml_job_with_llm_rerankers_reports_usage_and_repairs(vllm_backend, smollm2, trec_dl, tmp_path, capsys):
    backend = f'{{kind: vllm, model: "{smollm2}", options: {{enforce_eager: true, gpu_memory_utilization: 0.3, max_model_len: 2048}}}}'
    job = load_job_text(
        f"""
name: llm-rerankers
dataset: {{run: {trec_dl}/bm25_dl19.json, qrels: {trec_dl}/qrels.dl19-passage.txt, limit: 2}}
pipelines:
  bm25: [cutoff: {{k: 5}}]
  listwise: [cutoff: {{k: 5}}, listwise: {{backend: {backend}, window: 5, max_passage_tokens: 32}}]
  setwise: [cutoff: {{k: 5}}, setwise: {{backend: {backend}, num_child: 2, top_k: 2, max_passage_tokens: 32}}]
measures: [nDCG@10]
baseline: bm25
"""
    )
    from rerankflow.backends.factory import backend_key
    from rerankflow.resources import ResourcePool

    pool = ResourcePool()
    pool.get(backend_key(job.pipelines["listwise"][1].config.backend), lambda: vllm_backend)
    result = run_job(job, tmp_path, tmp_path / "out", resources=pool).result
    listwise = next(s for s in result.systems if s.name == "listwise")
    assert listwise.usage["listwise"]["total"]["calls"] == 2  # one window of 5 per query
    assert "repairs" in listwise.usage["listwise"]
    table = result.table()
    assert "LLM calls/q" in table
    repairs = listwise.usage["listwise"]["repairs"]
    if any(repairs.values()):
        assert "listwise: listwise repaired model output" in table


def test_shared_prefix_scoring_gives_the_same_scores(smollm2, demo):
    """HF backend with share_prefix: the prompts of a query compute their common prefix once;
    scores equal the unshared path's (real SmolLM2, float32)."""
    from rerankflow.backends.hf import HFBackend
    from rerankflow.rerankers.pointwise import PointwiseReranker
    from rerankflow.retrievers.bm25 import BM25Retriever
    from rerankflow.types import Ranking

    corpus, queries, _ = demo
    first = BM25Retriever(corpus, k=8)([Ranking(q) for q in queries[:3]])
    plain = PointwiseReranker(HFBackend(smollm2, dtype="float32", device="cpu"), max_passage_tokens=64)(first)
    backend = HFBackend(smollm2, dtype="float32", device="cpu", share_prefix=True, max_batch_size=3)
    backend.ensure_loaded()
    used = []
    original = backend._score_with_prefix
    backend._score_with_prefix = lambda items, shared: used.append(len(items)) or original(items, shared)
    shared = PointwiseReranker(backend, max_passage_tokens=64)(first)
    assert sum(used) == sum(len(r) for r in first)  # SmolLM2's long default system prompt: every query shares
    for a, b in zip(plain, shared):
        assert a.docids == b.docids
        assert [c.score for c in a.candidates] == pytest.approx([c.score for c in b.candidates], abs=1e-4)
    # a prefix shorter than min_shared_fraction of the prompts: scored whole, as without sharing
    used.clear()
    backend.options = backend.options.model_copy(update={"min_shared_fraction": 0.99})
    again = PointwiseReranker(backend, max_passage_tokens=64)(first)
    assert used == [] and [r.docids for r in again] == [r.docids for r in plain]
