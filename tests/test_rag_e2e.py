"""Compressors and the generator on real models: SmolLM2-135M through vLLM (offline engine
and `vllm serve`), HF streaming, MiniLM. Questions are written here over demo passages.

Quality from a 135M model is not the point; budgets kept, source text only, complete
accounting, citations that map to documents, and streams that add up to the answer are.
"""

import gzip
import json

import pytest

from rerankflow import Candidate, Query, Ranking
from rerankflow.backends.base import run_sync
from rerankflow.compressors.llm import LLMExtractor, LLMFilter
from rerankflow.compressors.surprisal import SurprisalPruner
from rerankflow.eval.trace import compression_of, usage_total
from rerankflow.generators.answer import AnswerGenerator
from rerankflow.pipelines.job import load_job_text
from rerankflow.pipelines.runner import run_job
from rerankflow.types import document_text

pytestmark = pytest.mark.slow

# (question, gold answers, demo passage that holds the answer)
QA = [
    ("Which k1 value do MS MARCO passage runs of BM25 often use?", ["0.9"], "bm25-3"),
    ("What does an inverted index map every term to?", ["list of documents"], "idx-1"),
    ("What do retrieval-augmented generation systems put into the prompt?", ["retrieved passages"], "rag-1"),
]


@pytest.fixture(scope="module")
def contexts(demo):
    """Each question with its answer passage and two others, answer passage in the middle."""
    corpus = {d.docid: d for d in demo[0]}
    out = []
    for i, (question, _, docid) in enumerate(QA):
        others = [d for d in ("cook-1", "astro-2", "hist-3", "garden-1") if d != docid][i % 2 : i % 2 + 2]
        docs = [corpus[others[0]], corpus[docid], corpus[others[1]]]
        out.append(
            Ranking(Query(f"qa{i}", question), tuple(Candidate(d, 3.0 - k, "input") for k, d in enumerate(docs)))
        )
    return out


def check_compressed(before, after, limit=None, count=None):
    """Kept passages are the inputs' own documents, in input order, with source text only."""
    for b, a in zip(before, after):
        ids = b.docids
        assert [ids.index(d) for d in a.docids] == sorted(ids.index(d) for d in a.docids)
        for c in a.candidates:
            source = next(x.doc.text for x in b.candidates if x.docid == c.docid)
            assert all(w in source for w in c.doc.text.split())
        if limit is not None:
            assert sum(count(document_text(c.doc)) for c in a.candidates) <= limit(b)


@pytest.mark.parametrize("mode", ["self_info", "question"])
def test_surprisal_pruning_on_vllm_keeps_half_of_the_tokens(vllm_backend, contexts, mode):
    stage = SurprisalPruner(vllm_backend, ratio=0.5, mode=mode)
    out = stage(contexts)
    count = vllm_backend.count_tokens
    check_compressed(contexts, out, lambda r: sum(count(document_text(c.doc)) for c in r.candidates) // 2, count)
    for r in out:
        c = compression_of(r)
        assert 0.3 < c.tokens_out / c.tokens_in <= 0.5
    calls = usage_total(out).calls
    # self-information does not depend on the question: a passage shared by contexts is scored
    # once; the question-aware mode scores each (question, passage) pair twice
    distinct = {c.docid for r in contexts for c in r.candidates}
    assert calls == (2 * 9 if mode == "question" else len(distinct)) and len(distinct) < 9
    again = stage(contexts)
    assert [r.docids for r in again] == [r.docids for r in out] and usage_total(again).calls == 0


def test_llm_filter_and_extractor_on_vllm(vllm_backend, contexts):
    filt = LLMFilter(vllm_backend, keep_at_least=1)
    out = filt(contexts)
    check_compressed(contexts, out)
    assert all(len(r) >= 1 for r in out) and usage_total(out).calls == 9
    assert all(0.0 <= p <= 1.0 for p in filt.p_yes.values()) and len(filt.p_yes) == 9
    ext = LLMExtractor(vllm_backend, ratio=0.8)
    extracted = ext(contexts)
    count = vllm_backend.count_tokens
    check_compressed(
        contexts, extracted, lambda r: int(0.8 * sum(count(document_text(c.doc)) for c in r.candidates)), count
    )
    assert usage_total(extracted).calls == 9 and len(ext.replies) == 9
    for r in extracted:  # every kept text is made of whole source sentences
        for c in r.candidates:
            assert c.doc.meta.get("compressed", {}).get("units_kept", 1) >= 1


def test_generator_on_vllm_cites_passages_of_its_context(vllm_backend, contexts):
    gen = AnswerGenerator(vllm_backend, max_tokens=48)
    out = gen(contexts)
    again = AnswerGenerator(vllm_backend, max_tokens=48)(contexts)
    for r, r2 in zip(out, again):
        a = r.answer
        assert a.text and a.text == r2.answer.text  # greedy: the same answer twice
        assert a.context == tuple(c.doc for c in r.candidates) and a.prompt_tokens > a.context_tokens > 0
        assert 0 < a.output_tokens <= 48
        for c in a.citations:
            assert c.docid is None or c.docid == a.context[c.number - 1].docid
    assert usage_total(out).calls == 3


def test_hf_streaming_yields_pieces_that_add_up_to_the_answer(hf_backend, contexts):
    gen = AnswerGenerator(hf_backend, max_tokens=40)
    pieces = []
    streamed = gen.stream(contexts[0], pieces.append)
    plain = gen([contexts[0]])[0]
    assert len(pieces) > 1 and "".join(pieces).strip() == streamed.answer.text == plain.answer.text
    assert streamed.answer.output_tokens == plain.answer.output_tokens and streamed.answer.latency_s > 0


def test_vllm_offline_stream_is_one_piece(vllm_backend, contexts):
    pieces = []
    streamed = AnswerGenerator(vllm_backend, max_tokens=24).stream(contexts[1], pieces.append)
    assert pieces and "".join(pieces).strip() == streamed.answer.text


def test_http_streaming_from_vllm_serve_matches_plain_generation(vllm_server, smollm2, contexts):
    from rerankflow.backends.http import OpenAIHTTPBackend

    backend = OpenAIHTTPBackend("smollm2", base_url=vllm_server, tokenizer=smollm2, api_key_env=None)
    gen = AnswerGenerator(backend, max_tokens=32)
    pieces = []
    streamed = gen.stream(contexts[2], pieces.append)
    plain = gen([contexts[2]])[0]
    assert len(pieces) > 1 and "".join(pieces).strip() == streamed.answer.text == plain.answer.text
    assert streamed.answer.prompt_tokens == plain.answer.prompt_tokens > 0  # usage from the last event

    async def consume():
        return [c async for c in backend.astream(gen.prompt(contexts[2])[0])]

    chunks = run_sync(consume())
    assert chunks[-1].completion is not None and chunks[-1].completion.finish_reason in ("stop", "length")


def test_rag_yaml_job_on_real_models(vllm_backend, smollm2, tmp_path, demo):
    corpus = {d.docid: d for d in demo[0]}
    with gzip.open(tmp_path / "qa.jsonl.gz", "wt", encoding="utf-8") as fh:
        for q, answers, docid in QA:
            d = corpus[docid]
            fh.write(
                json.dumps({"question": q, "answers": answers, "ctxs": [{"title": d.title, "text": d.text}]}) + "\n"
            )
        for docid in ("cook-1", "astro-2", "hist-3"):  # questions that only lend distractors
            d = corpus[docid]
            fh.write(
                json.dumps(
                    {
                        "question": f"about {d.title}?",
                        "answers": [d.title],
                        "ctxs": [{"title": d.title, "text": d.text}],
                    }
                )
                + "\n"
            )
    backend = f'{{kind: vllm, model: "{smollm2}", options: {{enforce_eager: true, gpu_memory_utilization: 0.3, max_model_len: 2048}}}}'
    job = load_job_text(
        f"""
name: rag
dataset: {{questions: qa.jsonl.gz, distractors: 2, limit: 3}}
pipelines:
  full: [generate: {{backend: {backend}, max_tokens: 32}}]
  sentences:
    - sentences: {{tokenizer: {backend}, ratio: 0.5}}
    - reorder: {{policy: ends}}
    - generate: {{backend: {backend}, max_tokens: 32}}
  dedup-budget:
    - biencoder: {{}}
    - dedup: {{tokenizer: {backend}, threshold: 0.9}}
    - budget: {{tokenizer: {backend}, ratio: 0.5}}
    - generate: {{backend: {backend}, max_tokens: 32}}
baseline: full
"""
    )
    from rerankflow.backends.factory import backend_key
    from rerankflow.resources import ResourcePool

    pool = ResourcePool()
    pool.get(backend_key(job.pipelines["full"][0].config.backend), lambda: vllm_backend)
    result = run_job(job, tmp_path, tmp_path / "out", resources=pool)
    systems = {s.name: s for s in result.result.systems}
    assert systems["full"].means["InContext"] == 1.0 and "Ratio" not in systems["full"].means
    for name in ("sentences", "dedup-budget"):
        assert 0 < systems[name].means["Ratio"] <= 0.5 and systems[name].means["Saved"] > 0
    assert all(0 <= s.means["EM"] <= 1 for s in systems.values())
    rows = [json.loads(x) for x in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 9 and all(r["answer"] for r in rows)
    assert "EM" in result.result.table() and (tmp_path / "out" / "answers.csv").is_file()
