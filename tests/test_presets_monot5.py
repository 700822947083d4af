"""The monot5 preset against RankLLM 0.25.7's own MonoT5 class, run for real.

MonoT5's weights and T5's SentencePiece model cannot be downloaded here, so the test trains a
small SentencePiece model on the demo collection (T5's special-token layout: pad 0, eos 1,
unk 2; "true" and "false" are whole pieces, as in T5's vocabulary) and builds a random-weight
T5 of the real architecture (tiny sizes). RankLLM's MonoT5 loads that folder with its own code,
builds its prompts and scores them; rerankflow's pointwise stage under the monot5 preset on the
hf_seq2seq backend must send the same token ids and give the same scores. This tests the path
(prompt, truncation-free passage content, tokens, first decoder step, label ids, normalisation),
not MonoT5's quality.
"""

from __future__ import annotations

import typing

import pytest

from rerankflow import Candidate, Document, Query, Ranking
from rerankflow.pipelines.presets import load_preset

pytestmark = pytest.mark.slow  # trains a tokenizer and runs a (tiny) model

QUERY = "how does [2] bm25 normalise document length?"
DOCS = [
    Document("a", "BM25 normalises term frequency by document length [3] relative to the average.", "BM25"),
    Document("b", "  Dense retrieval encodes queries and passages as vectors.  "),
    Document("c", "The café’s menu lists â€œcrÃ¨me brÃ»lÃ©eâ€.", "Food"),
    Document("d", "Rerankers read the query and the passage together and output true or false."),
]


def recording_backend(folder):
    """The hf_seq2seq backend, keeping the prompts it is sent (``seen``)."""
    from rerankflow.backends.hf_seq2seq import HFSeq2SeqBackend

    class Recording(HFSeq2SeqBackend):
        seen: typing.ClassVar[list] = []

        async def _alabel_logprobs(self, prompts, labels, after, context):
            self.seen.extend(prompts)
            return await super()._alabel_logprobs(prompts, labels, after, context)

    return Recording(folder, device="cpu")


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory, demo):
    import sentencepiece as spm
    import torch
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    folder = tmp_path_factory.mktemp("monot5-random")
    corpus, queries, _ = demo
    lines = [d.text for d in corpus] + [q.text for q in queries] + [d.text for d in DOCS]
    (tmp_path_factory.mktemp("spm") / "train.txt").write_text("\n".join(lines))
    spm.SentencePieceTrainer.train(
        input=str(tmp_path_factory.getbasetemp() / "spm0" / "train.txt"), model_prefix=str(folder / "spiece"),
        vocab_size=1000, hard_vocab_limit=False, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        character_coverage=1.0, minloglevel=2, user_defined_symbols=["\u2581true", "\u2581false"],
    )  # fmt: skip
    tok = T5Tokenizer.from_pretrained(str(folder))  # converted from spiece.model, 100 extra ids, </s> appended
    tok.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    T5ForConditionalGeneration(config).save_pretrained(str(folder))
    return folder


def test_monot5_prompts_and_scores_equal_rankllms(t5_folder):
    pytest.importorskip("rank_llm", reason="rank-llm 0.25.7 is installed by make test (without its vllm requirement)")
    from transformers import AutoTokenizer, T5Tokenizer

    from rerankflow.rerankers.pointwise import PointwiseReranker

    from .test_presets import rank_llm_handler

    rank_llm_handler()  # installs the LiT5 stub RankLLM's package import needs
    from rank_llm.data import Candidate as RCandidate
    from rank_llm.data import Query as RQuery
    from rank_llm.data import Result
    from rank_llm.rerank.pointwise.monot5 import MonoT5

    slow = T5Tokenizer.from_pretrained(str(t5_folder))  # what RankLLM's MonoT5 loads
    assert len(slow.encode("true", add_special_tokens=False)) == 1  # whole pieces, as in T5's vocabulary
    reference = MonoT5(model=str(t5_folder), device="cpu")
    result = Result(
        RQuery(QUERY, "q"),
        [RCandidate(d.docid, 0.0, {"text": d.text, **({"title": d.title} if d.title else {})}) for d in DOCS],
    )
    ref_prompts = [reference.create_prompt(result, i)[0] for i in range(len(DOCS))]
    # one prompt per call: RankLLM hands generate() the padded input ids without their attention
    # mask, so in a batch the shorter prompts also attend to padding (a property of its batching,
    # not of MonoT5's input); alone, each prompt is scored as MonoT5 scores it
    ref_scores = [reference.run_llm_batched([p])[2][0] for p in ref_prompts]

    backend = recording_backend(str(t5_folder))
    preset = load_preset("monot5")
    stage = PointwiseReranker(backend, preset.template, **preset.settings)
    (out,) = stage([Ranking(Query("q", QUERY), tuple(Candidate(d, 0.0, "bm25") for d in DOCS))])
    fast = AutoTokenizer.from_pretrained(str(t5_folder))
    assert [fast(p.text)["input_ids"] for p in backend.seen] == [slow(p)["input_ids"] for p in ref_prompts]
    scores = {c.docid: c.score for c in out.candidates}
    assert [scores[d.docid] for d in DOCS] == pytest.approx(ref_scores, abs=1e-5)
    assert len({round(s, 6) for s in ref_scores}) == len(DOCS)  # distinct: the comparison can fail


def test_the_preset_names_its_backend_kind_in_a_job():
    from rerankflow.pipelines.job import load_job_text

    job = load_job_text(
        "dataset: {builtin: demo}\npipelines:\n  mono:\n    - pointwise: {backend: {model: castorini/monot5-3b-msmarco-10k}}\n"
    )
    cfg = job.pipelines["mono"][0].config
    assert (cfg.preset, cfg.backend.kind, cfg.template, cfg.score) == ("monot5", "hf_seq2seq", "monot5", "p_yes")


def test_duot5_prompts_and_summed_scores_equal_rankllms(t5_folder):
    pytest.importorskip("rank_llm", reason="rank-llm 0.25.7 is installed by make test (without its vllm requirement)")
    from transformers import AutoTokenizer, T5Tokenizer

    from rerankflow.rerankers.pairwise import PairwiseReranker

    from .test_presets import rank_llm_handler

    rank_llm_handler()
    from rank_llm.data import Candidate as RCandidate
    from rank_llm.data import Query as RQuery
    from rank_llm.data import Request, Result
    from rank_llm.rerank.pairwise.duot5 import DuoT5

    # batch size 1: RankLLM's batches also leave out the attention mask (see the MonoT5 test)
    reference = DuoT5(model=str(t5_folder), device="cpu", batch_size=1)
    cands = [RCandidate(d.docid, 0.0, {"text": d.text, **({"title": d.title} if d.title else {})}) for d in DOCS]
    result = Result(RQuery(QUERY, "q"), cands)
    pairs = [(i, j) for i in range(len(DOCS)) for j in range(i + 1, len(DOCS))]
    ref_prompts = [reference.create_prompt(result, i, j)[0] for i, j in pairs]
    (ranked,) = reference.rerank_batch([Request(RQuery(QUERY, "q"), cands)])
    ref_scores = {c.docid: c.score for c in ranked.candidates}

    backend = recording_backend(str(t5_folder))
    preset = load_preset("duot5")
    stage = PairwiseReranker(backend, preset.template, **preset.settings)
    (out,) = stage([Ranking(Query("q", QUERY), tuple(Candidate(d, 0.0, "bm25") for d in DOCS))])
    fast, slow = AutoTokenizer.from_pretrained(str(t5_folder)), T5Tokenizer.from_pretrained(str(t5_folder))
    assert [fast(p.text)["input_ids"] for p in backend.seen] == [slow(p)["input_ids"] for p in ref_prompts]
    scores = {c.docid: c.score for c in out.candidates}
    assert [scores[d.docid] for d in DOCS] == pytest.approx([ref_scores[d.docid] for d in DOCS], abs=1e-5)
    assert out.docids == [c.docid for c in ranked.candidates]


# -- differential harness on generated inputs ------------------------------------------------------


@pytest.fixture(scope="module")
def t5_references(t5_folder):
    """RankLLM's MonoT5 and DuoT5 loaded once on the random-weight T5 (prompt building only)."""
    pytest.importorskip("rank_llm", reason="rank-llm 0.25.7 is installed by make test (without its vllm requirement)")
    from .test_presets import rank_llm_handler

    rank_llm_handler()
    from rank_llm.rerank.pairwise.duot5 import DuoT5
    from rank_llm.rerank.pointwise.monot5 import MonoT5

    return MonoT5(model=str(t5_folder), device="cpu"), DuoT5(model=str(t5_folder), device="cpu", batch_size=1)


def _t5_case():
    from hypothesis import strategies as st

    from .support import parity

    short = st.sampled_from([(0, 12)] * 3 + [(13, 600)] * 2).flatmap(lambda r: st.integers(*r))
    return st.tuples(
        st.builds(parity.hostile_text, st.integers(0, 10**6), st.integers(1, 25)),
        st.integers(2, 4).flatmap(lambda n: parity.passages(n, short)),
    )


def _rankllm_result(query, pairs):
    from rank_llm.data import Candidate as RCandidate
    from rank_llm.data import Query as RQuery
    from rank_llm.data import Result

    cands = [RCandidate(f"d{i}", 0.0, {"text": t, **({"title": h} if h else {})}) for i, (h, t) in enumerate(pairs)]
    return Result(RQuery(query, "q"), cands)


def _ours(t5_folder, stage_cls, preset_name, query, pairs):
    backend = recording_backend(str(t5_folder))
    backend.seen.clear()
    preset = load_preset(preset_name)
    docs = tuple(Candidate(Document(f"d{i}", t, h), 0.0, "bm25") for i, (h, t) in enumerate(pairs))
    stage_cls(backend, preset.template, **preset.settings)([Ranking(Query("q", query), docs)])
    return backend


from hypothesis import HealthCheck, given, settings  # noqa: E402

from .support.fuzz import examples  # noqa: E402

T5_HARNESS = settings(max_examples=examples(100), deadline=None, suppress_health_check=list(HealthCheck))


@T5_HARNESS
@given(case=_t5_case())
def test_monot5_prompt_text_and_token_ids_equal_rankllms_on_generated_inputs(t5_folder, t5_references, case):
    """Layers: the prompt text RankLLM's MonoT5 builds (its per-query passage budget from the
    query's length, words then tokens, the encode/decode round trip, ``<unk>`` removed, ``[n]``
    written ``(n)``) and the token ids its model reads, against the pointwise stage's."""
    from rerankflow.rerankers.pointwise import PointwiseReranker

    mono, _ = t5_references
    query, pairs = case
    result = _rankllm_result(query, pairs)
    theirs = [mono.create_prompt(result, i)[0] for i in range(len(pairs))]
    backend = _ours(t5_folder, PointwiseReranker, "monot5", query, pairs)
    assert [p.text for p in backend.seen] == theirs
    their_ids = [list(mono._tokenizer(t, truncation=True)["input_ids"]) for t in theirs]
    assert backend.engine_ids(backend.seen) == their_ids


@T5_HARNESS
@given(case=_t5_case())
def test_duot5_prompt_text_and_token_ids_equal_rankllms_on_generated_inputs(t5_folder, t5_references, case):
    """The same layers for DuoT5: every pair (i, j), i < j, in RankLLM's order."""
    from rerankflow.rerankers.pairwise import PairwiseReranker

    _, duo = t5_references
    query, pairs = case
    result = _rankllm_result(query, pairs)
    order = [(i, j) for i in range(len(pairs)) for j in range(i + 1, len(pairs))]
    theirs = [duo.create_prompt(result, i, j)[0] for i, j in order]
    backend = _ours(t5_folder, PairwiseReranker, "duot5", query, pairs)
    assert sorted(p.text for p in backend.seen) == sorted(theirs)  # the scheduler may send pairs in another order
    their_ids = sorted(list(duo._tokenizer(t, truncation=True)["input_ids"]) for t in theirs)
    assert sorted(backend.engine_ids(backend.seen)) == their_ids
