"""Differential harness: the RankLLM presets (rank_zephyr, rank_vicuna, first_mistral) against
RankLLM 0.25.7's own ``RankListwiseOSLLM``, run for real on generated inputs.

RankLLM runs its whole path: ``rerank_batch`` → its sliding-window loop → ``create_prompt``
(its handler's messages, the tokenizer's chat template, ``fix_text`` over the whole prompt) →
its vLLM handler's ``generate``. Only the engine is a stand-in (``vllm.LLM`` replaced): it hands
RankLLM a real tokenizer built offline (:func:`tests.support.parity.llama_style_tokenizer`, a
SentencePiece tokenizer that adds ``<s>`` as Mistral's does, with Zephyr-7B-β's chat template;
RankLLM's handler puts RankVicuna's own template on it by the model name), records each text
prompt and answers with the scripted model. rerankflow's listwise stage under the preset runs on
a recording backend with the same tokenizer and the same scripted model. Per case, layer by
layer:

* the windows: RankLLM's ``permutation_pipeline`` calls (start, end) and rerankflow's schedule;
* the messages RankLLM's handler builds and the ones rerankflow renders;
* the prompt text the engine receives (after the chat template and repairs);
* the token ids the engine receives (vLLM's text-prompt encoding of RankLLM's string, and what
  rerankflow's offline backends encode);
* the final order under the scripted answers (generated permutations; FIRST: label logits).

Cases: generated queries and passages (curly quotes, mojibake, HTML entities, ligatures,
full-width, NFD, control characters, emoji, CJK, ``[n]``, ``<unk>``, ``\\r\\n``, empty text,
titles with and without text, 0 to 4,000 words), n from 1 to 30, window 2 to 20, stride 1 to
window. Known, documented differences are excluded by construction and listed in
docs/presets.md: RankLLM's prompt-shortening loop when a prompt exceeds the model's context
(RankLLM runs here with a context no prompt reaches), a list of one passage (RankLLM makes a
call, rerankflow has nothing to order), and ``n == window - stride`` (RankLLM makes no call and
leaves the list as it is; rerankflow ranks it in one window).
"""

from __future__ import annotations

import contextlib
import copy
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rerankflow import Candidate, Document, Query, Ranking
from rerankflow.pipelines.presets import load_preset
from rerankflow.rerankers import listwise
from rerankflow.rerankers.listwise import ListwiseReranker

from .support import parity
from .support.fuzz import examples

pytestmark = pytest.mark.slow  # imports RankLLM (and with it vLLM)

HARNESS = settings(
    max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    pytest.importorskip("sentencepiece")
    return parity.llama_style_tokenizer(tmp_path_factory.mktemp("llama-style"))


@pytest.fixture(scope="module")
def rankllm(tokenizer):
    """RankLLM's classes, with the LiT5 stub its package import needs."""
    from .test_presets import rank_llm_handler

    rank_llm_handler()
    from rank_llm.data import Candidate as RCandidate
    from rank_llm.data import Query as RQuery
    from rank_llm.data import Request
    from rank_llm.rerank import vllm_handler
    from rank_llm.rerank.listwise import listwise_rankllm
    from rank_llm.rerank.listwise.rank_listwise_os_llm import RankListwiseOSLLM

    return types.SimpleNamespace(
        Request=Request, Query=RQuery, Candidate=RCandidate, OSLLM=RankListwiseOSLLM,
        handler_module=vllm_handler, listwise_module=listwise_rankllm,
    )  # fmt: skip


class StandInEngine:
    """``vllm.LLM`` for RankLLM's handler: a real tokenizer, recorded text prompts, scripted answers."""

    tokenizer_source = None

    def __init__(self, **kwargs):
        self.tokenizer = copy.copy(self.tokenizer_source)  # its own object: RankLLM's handler may set its template
        self.prompts: list[str] = []
        self.window = 20

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, sampling_params):
        out = []
        for text in prompts:
            self.prompts.append(text)
            if sampling_params.logprobs:  # FIRST: letters' log-probabilities at answer position 1
                letters = [chr(ord("A") + i) for i in range(self.window)]
                scores = parity.scripted_label_logprobs(text, letters)
                logits = {
                    k: types.SimpleNamespace(decoded_token=x, logprob=v)
                    for k, (x, v) in enumerate(scores.items())
                    if v > -99
                }
                step = types.SimpleNamespace(
                    outputs=[types.SimpleNamespace(text="[", token_ids=[0, 0], logprobs=[{}, logits])]
                )
            else:
                answer = parity.scripted_answer(text)
                step = types.SimpleNamespace(outputs=[types.SimpleNamespace(text=answer, token_ids=[0] * 8)])
            out.append(step)
        return out


@contextlib.contextmanager
def rankllm_reranker(rankllm, tok, model, window, stride, **kwargs):
    """RankLLM's RankListwiseOSLLM on the stand-in engine, recording its windows and messages."""
    real = rankllm.handler_module.vllm
    StandInEngine.tokenizer_source = tok
    rankllm.handler_module.vllm = types.SimpleNamespace(LLM=StandInEngine, SamplingParams=real.SamplingParams)
    try:
        reranker = rankllm.OSLLM(
            model=model, context_size=10**7, window_size=window, stride=stride, device="cpu", **kwargs
        )
    finally:
        rankllm.handler_module.vllm = real
    engine = reranker._vllm_handler._vllm
    engine.window = window
    windows, messages = [], []
    pipeline, build = reranker.permutation_pipeline_batched, reranker._inference_handler.generate_prompt

    def record_window(results, start, end, *args, **kw):
        windows.append((start, end))
        return pipeline(results, start, end, *args, **kw)

    def record_messages(*args, **kw):
        built = build(*args, **kw)
        messages.append([(m["role"], m["content"]) for m in built])
        return built

    reranker.permutation_pipeline_batched = record_window
    reranker._inference_handler.generate_prompt = record_messages
    yield reranker, engine, windows, messages


def run_case(rankllm, tok, preset_name, model, query, docs, window, stride, **rankllm_kwargs):
    """Both sides on one case; returns what each recorded."""
    with rankllm_reranker(rankllm, tok, model, window, stride, **rankllm_kwargs) as (theirs, engine, windows, msgs):
        cands = [
            rankllm.Candidate(d.docid, -float(i), {"text": d.text, **({"title": d.title} if d.title else {})})
            for i, d in enumerate(docs)
        ]
        (result,) = theirs.rerank_batch([rankllm.Request(rankllm.Query(query, "q"), cands)], rank_end=len(docs))
    backend = parity.EngineRecorder(engine.tokenizer)  # the same tokenizer (for RankVicuna: with RankLLM's template)
    preset = load_preset(preset_name)
    ours = ListwiseReranker(backend, preset.template, **{**preset.settings, "window": window, "stride": stride})
    our_windows: list[tuple[int, int]] = []
    planned = listwise.sliding_windows

    def record_schedule(*args):
        our_windows.extend(planned(*args))
        return planned(*args)

    listwise.sliding_windows = record_schedule
    try:
        (ranked,) = ours(
            [Ranking(Query("q", query), tuple(Candidate(d, -float(i), "bm25") for i, d in enumerate(docs)))]
        )
    finally:
        listwise.sliding_windows = planned
    return types.SimpleNamespace(
        their_windows=windows,
        our_windows=our_windows,
        their_messages=msgs,
        our_messages=backend.messages,
        their_texts=engine.prompts,
        our_texts=backend.texts,
        their_ids=[parity.vllm_text_prompt_ids(engine.tokenizer, t) for t in engine.prompts],
        our_ids=backend.ids,
        their_order=[c.docid for c in result.candidates],
        our_order=ranked.docids,
        tokenizer=engine.tokenizer,
    )


@st.composite
def cases(draw):
    window = draw(st.integers(2, 20))
    stride = draw(st.integers(1, window))
    n = draw(st.integers(2, 30).filter(lambda k: k != window - stride))
    docs = [Document(f"d{i}", text, title) for i, (title, text) in enumerate(draw(parity.passages(n)))]
    return draw(parity.queries), docs, window, stride


def assert_layers_equal(run, chat):
    assert run.our_windows == run.their_windows, "window schedule"
    if chat:
        assert run.our_messages == run.their_messages, "messages"
    assert run.our_texts == run.their_texts, "prompt text"
    assert run.our_ids == run.their_ids, "token ids"
    assert run.our_order == run.their_order, "final order"


@HARNESS
@given(cases())
def test_rank_zephyr_equals_rankllm_on_every_layer(rankllm, tokenizer, case):
    query, docs, window, stride = case
    run = run_case(rankllm, tokenizer, "rank_zephyr", "castorini/rank_zephyr_7b_v1_full", query, docs, window, stride)
    assert_layers_equal(run, chat=True)
    assert all(ids[0] == run.tokenizer.bos_token_id for ids in run.our_ids)  # the BOS a text prompt gets


@HARNESS
@given(cases())
def test_rank_vicuna_equals_rankllm_on_every_layer(rankllm, tokenizer, case):
    query, docs, window, stride = case
    run = run_case(rankllm, tokenizer, "rank_vicuna", "castorini/rank_vicuna_7b_v1", query, docs, window, stride)
    assert [[("text", t)] for t in run.their_texts] == run.our_messages  # the vicuna format is rendered text
    assert_layers_equal(run, chat=False)


@HARNESS
@given(cases())
def test_first_mistral_equals_rankllm_on_every_layer(rankllm, tokenizer, case):
    query, docs, window, stride = case
    run = run_case(
        rankllm, tokenizer, "first_mistral", "castorini/first_mistral", query, docs, window, stride,
        use_logits=True, use_alpha=True,
    )  # fmt: skip
    assert_layers_equal(run, chat=True)


def test_the_cases_reach_the_hard_inputs():
    """The harness's inputs really hold what breaks parity (not a check that cannot fail)."""
    text = " ".join(parity.hostile_text(seed, 200) for seed in range(20))
    for piece in ("Ã©", "&amp;", "ﬁ", "ＢＭ", "e\u0301", "\x07", "😀", "检索", "[3]", "<unk>", "\r\n"):
        assert piece in text, piece
