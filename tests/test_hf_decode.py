"""The static-cache decoder against transformers' ``generate`` (greedy): same tokens, same
completions, same listwise rankings. On the CPU the decoding step runs eagerly; the CUDA-graph
replay of the same step is measured (and checked against ``generate``) by bench/gpu_speed.py.

A tiny random-weight Qwen2 (the real architecture, labelled as such) never emits an end token,
so it decodes whole budgets across several bursts; SmolLM2 (real weights) ends its answers.
"""

import asyncio

import pytest
import torch

from rerankflow import Candidate, Ranking
from rerankflow.backends import tokens
from rerankflow.backends.hf import HFBackend
from rerankflow.backends.hf_decode import StaticDecoder, grouped_decode_attention, supports_static_decode
from rerankflow.backends.types import GenerationParams, Prompt
from rerankflow.cancel import CancelToken
from rerankflow.errors import BackendError
from rerankflow.rerankers.listwise import ListwiseReranker


def tiny_qwen(**extra):
    """A random-weight Qwen2 of the real architecture (head dim 16), float32, fixed seed."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, **extra)  # fmt: skip
    config._attn_implementation = "sdpa"
    return Qwen2ForCausalLM(config).eval()


def generate_reference(model, seqs, max_new, pad=0):
    """transformers' greedy ``generate`` on left-padded prompts: each row's new tokens."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, width - len(s) :] = torch.tensor(s)
        mask[r, width - len(s) :] = 1
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                             pad_token_id=pad, eos_token_id=None)  # fmt: skip
    return out[:, width:].tolist()


def test_grouped_decode_attention_equals_sdpa_with_the_heads_repeated():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(1)
    query, key, value = torch.randn(3, 8, 1, 16), torch.randn(3, 2, 40, 16), torch.randn(3, 2, 40, 16)
    hidden = torch.rand(3, 1, 1, 40) < 0.3
    hidden[:, :, :, 0] = False
    mask = torch.zeros(3, 1, 1, 40).masked_fill(hidden, torch.finfo(torch.float32).min)

    class Module:
        num_key_value_groups, is_causal, training = 4, True, False

    got, _ = grouped_decode_attention(Module(), query, key, value, mask, scaling=0.25)
    want, _ = sdpa_attention_forward(Module(), query, key, value, mask, scaling=0.25)
    assert got.shape == want.shape == (3, 1, 8, 16)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # a longer query (a prefill) is SDPA's own answer
    longer = torch.randn(3, 8, 5, 16)
    torch.testing.assert_close(
        grouped_decode_attention(Module(), longer, key, value, None, scaling=0.25)[0],
        sdpa_attention_forward(Module(), longer, key, value, None, scaling=0.25)[0],
    )


PROMPTS = [[5, 17, 33, 2, 9, 41, 7], [12, 3], list(range(40, 70)), [99] * 11, [7, 7, 8]]


def test_tiny_model_decodes_the_same_tokens_as_generate_across_bursts_and_shapes():
    model = tiny_qwen()
    decoder = StaticDecoder(model, graphs=False, length_step=32, check_every=7)
    counted = []
    got = decoder.generate(PROMPTS, 40, frozenset(), on_tokens=counted.append)
    assert got == generate_reference(model, PROMPTS, 40)
    assert sum(counted) == 40 * len(PROMPTS)  # real rows only, every step
    # a smaller batch on a fresh shape, then the first shape again: the reused cache is reset
    assert decoder.generate(PROMPTS[:2], 25, frozenset()) == generate_reference(model, PROMPTS[:2], 25)
    assert decoder.generate(PROMPTS, 40, frozenset()) == got
    assert len(decoder._shapes) == 2 and decoder.captures == 0  # no graphs on the CPU
    assert model.config._attn_implementation == "sdpa"  # the grouped attention was for the steps only


def test_rows_end_at_their_end_token_and_a_finished_batch_stops_early():
    model = tiny_qwen()
    free = StaticDecoder(model, graphs=False, check_every=4).generate(PROMPTS[:3], 30, frozenset())
    end = free[1][5]  # make the second row's sixth token an end token
    decoder = StaticDecoder(model, graphs=False, check_every=4)
    got = decoder.generate(PROMPTS[:3], 30, frozenset({end}))
    for row, whole in zip(got, free, strict=True):
        cut = whole.index(end) + 1 if end in whole else len(whole)
        assert row == whole[:cut]
    assert got[1][-1] == end and len(got[1]) <= 6
    # every row cancelled: decoding stops at the first check instead of spending the budget
    counted = []
    stopped = decoder.generate(PROMPTS[:3], 30, frozenset(), stopped=lambda: [True] * 3, on_tokens=counted.append)
    assert [len(r) for r in stopped] == [1, 1, 1] and sum(counted) == 3


def test_sliding_window_models_are_not_taken_and_static_is_refused_for_them():
    assert supports_static_decode(tiny_qwen())
    sliding = tiny_qwen(use_sliding_window=True, sliding_window=8, max_window_layers=0)
    assert not supports_static_decode(sliding)

    class Tok:
        pad_token_id, eos_token_id = 0, 1

    with pytest.raises(BackendError, match="decode: generate"):
        HFBackend.from_model(sliding, Tok(), name="tiny-sliding", decode="static")
    assert HFBackend.from_model(sliding, Tok(), name="tiny-sliding")._decoder is None  # auto on the CPU: generate
    with pytest.raises(BackendError, match="'auto', 'static' or 'generate'"):
        HFBackend("x", decode="graphs")


@pytest.fixture(scope="module")
def smol_pair(smollm2):
    """SmolLM2 in float32 behind two backends that share the weights: static and generate."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32, attn_implementation="sdpa")
    return (
        HFBackend.from_model(model, tok, name="smollm2-static", decode="static"),
        HFBackend.from_model(model, tok, name="smollm2-generate", decode="generate"),
    )


def test_backend_completions_equal_generate_on_smollm2(smol_pair):
    static, plain = smol_pair
    assert static._decoder is not None and plain._decoder is None
    prompts = [Prompt.chat("Name three colours."), Prompt.chat("Count from one to twenty in words."),
               Prompt.chat("Say yes."), Prompt.chat("Write the word cat, then stop.")]  # fmt: skip
    params = GenerationParams(max_tokens=48, temperature=0.0, stop=("twelve",))
    got = asyncio.run(static.agenerate(prompts, params))
    want = asyncio.run(plain.agenerate(prompts, params))
    assert [(c.text, c.finish_reason, c.stats.output_tokens) for c in got] == [
        (c.text, c.finish_reason, c.stats.output_tokens) for c in want
    ]
    assert {c.finish_reason for c in got} >= {"stop"}  # some end on their own, one at the stop string
    ends = tokens.end_ids(static.tokenizer, static.hf_model)
    assert ends and all(e not in static.tokenizer.encode(c.text) for c in got for e in ends)


def test_a_row_cancelled_while_decoding_stops_at_the_next_check(smol_pair):
    static, _ = smol_pair
    token = CancelToken()
    token.cancel("client left")  # set before the decoder's first check: it stops there
    params = GenerationParams(max_tokens=64, temperature=0.0)
    seqs = tokens.prompt_ids_many(static.tokenizer, [Prompt.chat("Tell a long story."), Prompt.chat("Say hi.")])
    before = static.ledger.decoded_tokens
    first, second = static._generate_ids(seqs, params, cancel=[token, None])
    assert first.finish_reason == "cancelled" and first.stats.output_tokens < 64
    assert second.finish_reason == "stop" and second.text
    assert static.ledger.decoded_tokens - before < 2 * 64


def test_listwise_rankings_equal_with_either_decoder_and_scheduler(smol_pair, demo):
    static, plain = smol_pair
    corpus, queries, _ = demo
    batch = [
        Ranking(q, tuple(Candidate(d, float(-k)) for k, d in enumerate(corpus[3 * i : 3 * i + 6])))
        for i, q in enumerate(queries[:2])
    ]
    orders = {}
    for backend in (static, plain):
        for mode in ("sequential", "concurrent"):
            reranker = ListwiseReranker(backend, window=4, stride=2, max_passage_tokens=24, scheduler=mode)
            orders[backend.model, mode] = [r.docids for r in reranker(batch)]
    assert len({tuple(map(tuple, o)) for o in orders.values()}) == 1, orders


def test_labels_read_after_a_greedy_token_pick_that_token_on_the_device(smol_pair):
    """``label_logprobs(after=1)`` on HF: the greedy token (end tokens excluded) is appended,
    then the labels are read at the next position, as a manual forward pass finds them."""
    _, plain = smol_pair
    prompts = [Prompt.raw("Query: tides\n[A] Bread.\n[B] The moon causes tides.\nRanking:"), Prompt.chat("Say A.")]
    labels = ["A", "B"]
    got = plain.label_logprobs(prompts, labels, after=1, context=" [")
    ends = tokens.end_ids(plain.tokenizer, plain.hf_model)
    label_ids = tokens.label_ids(plain.tokenizer, labels, " [")
    for prompt, scores in zip(prompts, got, strict=True):
        ids = tokens.prompt_ids_many(plain.tokenizer, [prompt])[0]
        with torch.inference_mode():
            last = plain.hf_model(torch.tensor([ids])).logits[0, -1].clone()
            last[sorted(ends)] = -torch.inf
            greedy = int(last.argmax())
            logp = torch.log_softmax(plain.hf_model(torch.tensor([[*ids, greedy]])).logits[0, -1], -1)
        assert [scores.logprobs[x] for x in labels] == pytest.approx([float(logp[i]) for i in label_ids], abs=1e-4)
        assert scores.stats.output_tokens == 2  # the greedy token and the label position
