"""Presets: published rerankers with their exact published formats.

The RankZephyr / RankVicuna prompt is compared with RankLLM 0.25.7's own prompt builder
(``SingleTurnListwiseInferenceHandler`` with its ``rank_zephyr_template.yaml``, and the
``fix_text`` of ``RankListwiseOSLLM.create_prompt``), installed from PyPI without its ``vllm``
requirement (``make test``); only its LiT5 module, which does not import under transformers 5
and is not on this path, is replaced by a stub, as bench/peers.py does.
"""

from __future__ import annotations

import sys
import types
from importlib import resources

import pytest
import yaml

from rerankflow import Candidate, Document, Query, Ranking
from rerankflow.cli.main import main
from rerankflow.errors import ConfigError
from rerankflow.pipelines.job import load_job_text
from rerankflow.pipelines.presets import load_preset, preset_for_model, preset_names
from rerankflow.rerankers.listwise import ListwiseReranker
from rerankflow.testing.fake import FakeBackend

PASSAGES = [
    ("Deep learning", "Neural networks with many layers [1] learn representations."),
    (None, "The café’s menu lists â€œcrÃ¨me brÃ»lÃ©eâ€ and other desserts."),  # mojibake ftfy repairs
    ("BM25", "  BM25 scores   a document by term frequency,\ninverse document frequency and length.  "),
    (None, " ".join(f"w{i}" for i in range(400))),  # longer than the 300-word limit of a 20-passage window
    ("Short", "See [12] and [3] for details."),
]
QUERY = "what does [2] say about ranking?"


def rank_llm_handler(template="rank_zephyr_template.yaml"):
    stub = types.ModuleType("rank_llm.rerank.listwise.lit5.model")

    class Unavailable:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("LiT5 is not available under transformers 5")

    stub.FiD = stub.FiDCrossAttentionScore = Unavailable
    sys.modules.setdefault(stub.__name__, stub)
    try:
        from rank_llm.data import Candidate as RCandidate
        from rank_llm.data import Query as RQuery
        from rank_llm.data import Result
        from rank_llm.rerank.listwise.singleturn_listwise_inference_handler import (
            SingleTurnListwiseInferenceHandler,
        )
    except ImportError:
        pytest.skip("rank-llm 0.25.7 is not installed (make test installs it without its vllm requirement)")
    path = resources.files("rank_llm.rerank.prompt_templates") / template
    handler = SingleTurnListwiseInferenceHandler(yaml.safe_load(path.read_text()))
    return handler, Result, RQuery, RCandidate


def ours(docs, window):
    fake = FakeBackend(lambda p: "[1]")
    preset = load_preset("rank_zephyr")
    rr = ListwiseReranker(fake, preset.template, **{**preset.settings, "window": window, "stride": window})
    rr([Ranking(Query("q", QUERY), tuple(Candidate(d, -i, "bm25") for i, d in enumerate(docs)))])
    return fake.seen


@pytest.mark.slow  # imports RankLLM, which imports vLLM
@pytest.mark.parametrize("window", [20, 7, 3])
def test_rank_zephyr_prompt_is_rankllms_own(window):
    handler, Result, RQuery, RCandidate = rank_llm_handler()
    docs = [Document(f"d{i}", text, title) for i, (title, text) in enumerate(PASSAGES * 4)][:window]
    result = Result(
        RQuery(QUERY, "q"),
        [
            RCandidate(d.docid, -i, {"text": d.text, **({"title": d.title} if d.title else {})})
            for i, d in enumerate(docs)
        ],
    )
    reference = handler.generate_prompt(result, rank_start=0, rank_end=window, max_length=300 * (20 / window))
    (prompt,) = ours(docs, window)
    assert [(m.role, m.content) for m in prompt.messages] == [(m["role"], m["content"]) for m in reference]


def test_rank_zephyr_prompt_after_the_chat_template_and_token_ids(smollm2):
    """RankLLM applies the model's chat template and then ftfy's fix_text to the whole prompt.
    Zephyr's and Vicuna's tokenizers cannot be downloaded here, so both sides go through
    SmolLM2's chat template: equal messages must give equal strings and token ids."""
    from ftfy import fix_text
    from transformers import AutoTokenizer

    from rerankflow.backends.models import resolve_llm

    handler, Result, RQuery, RCandidate = rank_llm_handler()
    docs = [Document(f"d{i}", text, title) for i, (title, text) in enumerate(PASSAGES)]
    result = Result(RQuery(QUERY, "q"), [RCandidate(d.docid, 0, {"text": d.text, "title": d.title}) for d in docs])
    reference = handler.generate_prompt(result, rank_start=0, rank_end=5, max_length=300 * (20 / 5))
    tok = AutoTokenizer.from_pretrained(resolve_llm("smollm2-135m-instruct"))
    theirs = fix_text(tok.apply_chat_template(reference, tokenize=False, add_generation_prompt=True))
    (prompt,) = ours(docs, 5)
    mine = tok.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in prompt.messages], tokenize=False, add_generation_prompt=True
    )
    assert mine == theirs and tok.encode(mine) == tok.encode(theirs)


def test_presets_are_data_and_can_be_listed_and_shown(capsys):
    assert {"rank_zephyr", "rank_vicuna", "listwise_instruct", "pointwise_yes_no"} <= set(preset_names())
    zephyr = load_preset("rank_zephyr")
    assert zephyr.stage == "listwise" and zephyr.settings["window"] == 20 and zephyr.published["dl19"] == 0.7365
    assert preset_for_model("castorini/rank_zephyr_7b_v1_full").name == "rank_zephyr"
    assert preset_for_model("some/unknown-model") is None
    assert main(["presets", "list"]) == 0
    out = capsys.readouterr().out
    assert "rank_zephyr" in out and "RankLLM 0.25.7" in out and "0.7365" in out
    assert main(["presets", "show", "rank_vicuna"]) == 0
    assert "castorini/rank_vicuna_7b_v1" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="no preset 'nope'"):
        load_preset("nope")


def test_a_job_picks_a_preset_by_name_or_by_model_and_explicit_settings_win():
    job = load_job_text(
        "name: t\ndataset: {builtin: demo}\npipelines:\n"
        "  a: [bm25, listwise: {preset: rank_zephyr, backend: {kind: vllm, model: m}, window: 10}]\n"
    )
    cfg = job.pipelines["a"][1].config
    assert (cfg.preset, cfg.template, cfg.window, cfg.stride, cfg.max_passage_tokens) == (
        "rank_zephyr",
        "rank_zephyr",
        10,
        10,
        None,
    )
    by_model = load_job_text(
        "name: t\ndataset: {builtin: demo}\npipelines:\n"
        "  a: [bm25, listwise: {backend: {kind: vllm, model: castorini/rank_zephyr_7b_v1_full}}]\n"
    )
    assert by_model.pipelines["a"][1].config.preset == "rank_zephyr"  # the dumped job says which preset ran
    plain = load_job_text(
        "name: t\ndataset: {builtin: demo}\npipelines:\n  a: [bm25, listwise: {backend: {kind: vllm, model: m}}]\n"
    )
    assert plain.pipelines["a"][1].config.preset is None and plain.pipelines["a"][1].config.max_passage_tokens == 256
    with pytest.raises(ConfigError, match="preset 'pointwise_yes_no' is for the pointwise stage"):
        load_job_text(
            "name: t\ndataset: {builtin: demo}\npipelines:\n"
            "  a: [bm25, listwise: {preset: pointwise_yes_no, backend: {kind: vllm, model: m}}]\n"
        )


def test_rerank_in_one_call_with_a_preset_and_a_backend_object():
    from rerankflow import rerank

    def by_number(prompt):  # a listwise answer: passages by the number in their text, highest first
        import re

        shown = re.findall(r"^\[(\d+)\] passage (\d+)", prompt.messages[-1].content, re.M)
        return " > ".join(f"[{i}]" for i, _ in sorted(shown, key=lambda x: -int(x[1])))

    docs = [f"passage {n}" for n in (3, 9, 1, 7)]
    out = rerank("which passage?", docs, preset="listwise_instruct", backend=FakeBackend(by_number), top_k=3)
    assert [c.doc.text for c in out.candidates] == ["passage 9", "passage 7", "passage 3"]
    assert out.trace[-1].stage == "listwise" and out.trace[-1].usage.calls == 1
    with pytest.raises(ConfigError, match="no preset names the model 'my/model'; pass preset="):
        rerank("q", docs, model="my/model")


def test_rerank_in_one_call_on_a_real_model(hf_backend):
    """SmolLM2-135M (a plumbing model: the order is not a quality claim) through the HF backend."""
    from rerankflow import rerank

    docs = ["BM25 ranks documents by term statistics.", "Paris is the capital of France.", "Cats sleep a lot."]
    out = rerank("what is the capital of France?", docs, preset="pointwise_yes_no", backend=hf_backend)
    assert sorted(c.docid for c in out.candidates) == ["d0", "d1", "d2"]
    assert all(c.stage == "pointwise" for c in out.candidates) and out.trace[-1].usage.calls == 3


def test_rank_vicuna_prompt_is_the_text_rankllms_vllm_handler_builds(smollm2):
    """RankLLM's VllmHandler installs its own chat template on a rank_vicuna model's tokenizer.
    The handler runs for real with a stand-in engine that hands it a real tokenizer (SmolLM2's,
    whose own template it replaces); its rendered, fix_text-ed prompt must equal ours, and both
    must tokenize alike (a text prompt gets the BOS token, as vLLM gives a string prompt)."""
    from ftfy import fix_text
    from transformers import AutoTokenizer

    from rerankflow.backends import tokens
    from rerankflow.backends.models import resolve_llm

    handler, Result, RQuery, RCandidate = rank_llm_handler()
    from rank_llm.rerank import vllm_handler

    class StandInEngine:
        def __init__(self, **kwargs):
            self.tokenizer = AutoTokenizer.from_pretrained(resolve_llm("smollm2-135m-instruct"))

        def get_tokenizer(self):
            return self.tokenizer

    real = vllm_handler.vllm
    vllm_handler.vllm = types.SimpleNamespace(LLM=StandInEngine)
    try:
        engine = vllm_handler.VllmHandler(
            model="castorini/rank_vicuna_7b_v1", download_dir="", enforce_eager=True, max_logprobs=30,
            tensor_parallel_size=1, gpu_memory_utilization=0.3,
        )  # fmt: skip
    finally:
        vllm_handler.vllm = real
    tok = engine._tokenizer
    docs = [Document(f"d{i}", text, title) for i, (title, text) in enumerate(PASSAGES)]
    result = Result(RQuery(QUERY, "q"), [RCandidate(d.docid, 0, {"text": d.text, "title": d.title}) for d in docs])
    messages = handler.generate_prompt(result, rank_start=0, rank_end=5, max_length=300 * (20 / 5))
    theirs = fix_text(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    fake = FakeBackend(lambda p: "[1]")
    preset = load_preset("rank_vicuna")
    ListwiseReranker(fake, preset.template, **{**preset.settings, "window": 5, "stride": 5})(
        [Ranking(Query("q", QUERY), tuple(Candidate(d, -i, "bm25") for i, d in enumerate(docs)))]
    )
    (prompt,) = fake.seen
    assert prompt.text == theirs and theirs.startswith("You are RankLLM") and theirs.endswith(" ASSISTANT:")
    assert tokens.prompt_ids_many(tok, [prompt]) == [tok(theirs)["input_ids"]]


def rankllm_result(docs, RQuery, RCandidate, Result):
    cands = [
        RCandidate(d.docid, -i, {"text": d.text, **({"title": d.title} if d.title else {})}) for i, d in enumerate(docs)
    ]
    return Result(RQuery(QUERY, "q"), cands)


def first_mistral_prompts(docs, window, backend=None):
    fake = backend or FakeBackend(
        lambda p: "[A]", labels=lambda p, labels: {x: -float(i) for i, x in enumerate(labels)}
    )
    preset = load_preset("first_mistral")
    rr = ListwiseReranker(fake, preset.template, **{**preset.settings, "window": window, "stride": window})
    out = rr([Ranking(Query("q", QUERY), tuple(Candidate(d, -i, "bm25") for i, d in enumerate(docs)))])
    return (fake.seen if backend is None else None), out


@pytest.mark.slow  # imports RankLLM, which imports vLLM
@pytest.mark.parametrize("window", [20, 7, 3])
def test_first_mistral_prompt_is_rankllms_alpha_prompt(window):
    handler, Result, RQuery, RCandidate = rank_llm_handler("rank_zephyr_alpha_template.yaml")
    docs = [Document(f"d{i}", text, title) for i, (title, text) in enumerate(PASSAGES * 4)][:window]
    result = rankllm_result(docs, RQuery, RCandidate, Result)
    reference = handler.generate_prompt(
        result, rank_start=0, rank_end=window, max_length=300 * (20 / window), use_alpha=True
    )
    seen, _ = first_mistral_prompts(docs, window)
    assert [(m.role, m.content) for m in seen[0].messages] == [(m["role"], m["content"]) for m in reference]


def test_first_mistral_reads_the_identifiers_where_rankllm_does(vllm_backend):
    """RankLLM (use_logits) asks vLLM for 2 greedy tokens with the top-30 log-probabilities and
    reads position 1, the token after the model's "["; rerankflow asks for the letters' own
    log-probabilities after 1 greedy token, as the tokens that continue "[". On one engine (real
    SmolLM2 on vLLM) and one prompt, RankLLM's own _get_logits_single_digit must find the same
    values and give the same order."""
    from vllm import SamplingParams

    from rerankflow.backends import tokens
    from rerankflow.backends.base import run_sync
    from rerankflow.backends.types import Prompt
    from rerankflow.backends.vllm_offline import _Request

    rank_llm_handler()  # skips without RankLLM; installs the LiT5 stub
    from rank_llm.rerank.listwise.rank_listwise_os_llm import RankListwiseOSLLM

    # SmolLM2 does not answer the FIRST prompt with "[" (it starts "Title:"), so position 1 would
    # hold no letter for either side; a few-shot prompt in the same answer format makes it start
    # with "[" as a FIRST model does. What is compared is where and how the letters are read.
    prompt = Prompt.raw(
        "Rank the passages by relevance to the query.\nQuery: tides\n[A] Bread recipes.\n[B] The moon causes "
        "tides.\n[C] Ocean tides rise twice a day.\nRanking: [B] > [C] > [A]\n\nRank the passages by relevance "
        "to the query.\nQuery: volcanoes\n[A] Lava erupts from volcanoes.\n[B] Stock markets fell.\n[C] Magma "
        "chambers feed volcanoes.\n[D] Tennis scores.\n[E] Volcanic ash clouds.\nRanking:"
    )
    ids = tokens.prompt_ids_many(vllm_backend.tokenizer, [prompt])[0]
    sp = SamplingParams(min_tokens=2, max_tokens=2, temperature=0.0, logprobs=30)
    (output,), _ = run_sync(vllm_backend._coalescer.submit_timed([_Request(ids, sp)]))
    reference = object.__new__(RankListwiseOSLLM)  # only the two attributes its scoring reads
    reference._use_alpha, reference._window_size = True, 20
    ranking, evaluations = reference._get_logits_single_digit(output)
    assert output.outputs[0].text.strip().startswith("["), output.outputs[0].text
    assert len(evaluations) >= 3, evaluations  # the comparison below covers several letters
    labels = ["A", "B", "C", "D", "E"]
    (mine,) = vllm_backend.label_logprobs([prompt], labels, after=1, context=" [")
    for code, logprob in evaluations.items():
        if chr(code) in labels:
            assert mine.logprobs[chr(code)] == pytest.approx(logprob, abs=1e-4)
    theirs = [x for x in ranking.replace("[", "").replace("]", "").split(">") if x in labels]
    ours_order = sorted(labels, key=lambda x: -mine.logprobs[x])
    assert ours_order[: len(theirs)] == theirs


def test_a_reranker_object_loads_once_and_rerank_reuses_a_loaded_one():
    """Reranker(model, preset=...).rank(...) builds its backend once; rerank() keeps the last
    ones loaded, so a second call with the same arguments builds nothing."""
    import rerankflow.pipelines.oneshot as oneshot
    from rerankflow import Reranker, rerank

    built = []

    class Counting(FakeBackend):
        def load(self):
            built.append(1)

    backend = Counting(lambda p: "[2] > [1]")
    reranker = Reranker(preset="listwise_instruct", backend=backend)
    first = reranker.rank("q", ["alpha", "beta"])
    second = reranker.rank("q", ["gamma", "delta"], top_k=1)
    assert [c.text for c in first.candidates] == ["beta", "alpha"] and [c.text for c in second.candidates] == ["delta"]
    assert len(built) == 1
    oneshot._LOADED.clear()
    rerank("q", ["a", "b"], preset="listwise_instruct", backend=backend)
    held = dict(oneshot._LOADED)
    rerank("q", ["c", "d"], preset="listwise_instruct", backend=backend)
    assert dict(oneshot._LOADED) == held and len(held) == 1  # the same Reranker object served both calls


def test_a_repaired_answer_is_a_warning_naming_the_repair():
    from rerankflow import Reranker
    from rerankflow.errors import RepairWarning

    reranker = Reranker(preset="listwise_instruct", backend=FakeBackend(lambda p: "I like [2] best"))
    with pytest.warns(RepairWarning, match="missing: 1"):
        out = reranker.rank("q", ["alpha", "beta"])
    assert [c.text for c in out.candidates] == ["beta", "alpha"]
    clean = Reranker(preset="listwise_instruct", backend=FakeBackend(lambda p: "[1] > [2]"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RepairWarning)
        clean.rank("q", ["alpha", "beta"])
