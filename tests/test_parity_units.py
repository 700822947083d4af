"""The six kinds of difference the differential harness found, each pinned by a fast test that
failed before its fix (the harness itself: test_parity_rankllm.py, test_presets_monot5.py and
test_parity_qwen3.py): special tokens, whole-prompt repairs, RankLLM's window schedule, the T5
passage budget and <unk>, the card's truncation (test_parity_qwen3.py), letter identifiers; and
the parser's choices (numbered lists, unterminated reasoning)."""

from __future__ import annotations

import pytest

from rerankflow import Candidate, Document, Query, Ranking
from rerankflow.backends import tokens
from rerankflow.backends.types import Prompt
from rerankflow.pipelines.presets import load_preset
from rerankflow.prompts import rankllm_style
from rerankflow.prompts.template import PromptTemplate, as_template
from rerankflow.rerankers.listwise import ListwiseReranker
from rerankflow.rerankers.permutation import parse_permutation, sliding_windows
from rerankflow.testing.fake import FakeBackend

from .support.parity import tiny_bos_tokenizer


@pytest.fixture(scope="module")
def bos_tokenizer():
    return tiny_bos_tokenizer()


def test_rankllm_presets_give_the_engine_the_bos_a_text_prompt_gets(bos_tokenizer):
    """RankLLM hands vLLM the chat-templated text as a text prompt, so Zephyr's tokenizer adds
    <s>; a chat prompt encoded as a chat API does gets none (Zephyr's template holds no <s>)."""
    zephyr = as_template("rank_zephyr")
    prompt = zephyr.render(query="q", num="1", passages="[1] p")
    assert prompt.special_tokens is True and prompt.adds_special_tokens
    (ids,) = tokens.prompt_ids_many(bos_tokenizer, [prompt])
    assert ids[0] == bos_tokenizer.bos_token_id
    plain = as_template("listwise").render(query="q", num="1", passages="[1] p")
    assert tokens.prompt_ids_many(bos_tokenizer, [plain])[0][0] != bos_tokenizer.bos_token_id


def test_rankllm_presets_repair_the_whole_prompt_query_included(bos_tokenizer):
    """RankLLM runs ftfy's fix_text over the whole templated prompt: the query is repaired too,
    and entities are unescaped where the rendered text holds no '<' (RankVicuna's format)."""
    zephyr = as_template("rank_zephyr").render(query="what’s bm25?", num="1", passages="[1] p")
    assert "what’s" in zephyr.messages[-1].content  # the messages are RankLLM's handler's, unrepaired
    assert "what's bm25?" in tokens.render(bos_tokenizer, zephyr) and "’" not in tokens.render(bos_tokenizer, zephyr)
    vicuna = as_template("rank_vicuna").render(query="AT&amp;T plans cafÃ© ﬁnd ＢＭ２５", num="1", passages="[1] p")
    assert vicuna.text is not None and "AT&T plans café find BM25" in vicuna.text
    assert tokens.repaired("<|user|> AT&amp;T", ("ftfy",)) == "<|user|> AT&amp;T"  # ftfy keeps entities near tags


@pytest.mark.parametrize(
    ("n", "rankllm", "full"),
    [
        (25, [(5, 25), (0, 15)], [(5, 25), (0, 20)]),  # the shorter last window: "I will provide you with 15"
        (100, [(80 - 10 * i, 100 - 10 * i) for i in range(9)], [(80 - 10 * i, 100 - 10 * i) for i in range(9)]),
        (10, [(0, 10)], [(0, 10)]),  # RankLLM makes no call for n == window - stride; here one window
        (31, [(11, 31), (1, 21), (0, 11)], [(11, 31), (1, 21), (0, 20)]),
        (1, [], []),
    ],
)
def test_rankllms_window_schedule(n, rankllm, full):
    assert sliding_windows(n, 20, 10, "rankllm") == rankllm
    assert sliding_windows(n, 20, 10) == full


def test_the_rankllm_presets_use_rankllms_schedule_and_its_word_budget():
    seen = []
    backend = FakeBackend(lambda p: (seen.append(p), "[1]")[1])
    preset = load_preset("rank_zephyr")
    stage = ListwiseReranker(backend, preset.template, **preset.settings)
    docs = tuple(Candidate(Document(f"d{i}", " ".join(["word"] * 500)), -i, "bm25") for i in range(25))
    stage([Ranking(Query("q", "query"), docs)])
    users = [p.messages[-1].content for p in seen]
    assert [u.split(" passages")[0].rsplit(" ", 1)[1] for u in users] == ["20", "15"]
    shown = [line for line in users[1].splitlines() if line.startswith("[")]
    assert len(shown) == 15 and all(line.count("word") == 400 for line in shown)  # 300 * 20 / 15 words each


def test_the_t5_budget_follows_the_query_as_rankllm_computes_it():
    """RankLLM: 512 - 64 - tokens("Query: <q> Document:  Relevant: ") - tokens("") with T5's </s>
    counted; a fixed 400 was right only for one query length."""
    words_plus_eos = lambda texts: [len(t.split()) + 1 for t in texts]  # noqa: E731
    empty = as_template("monot5").user.format(query="a b c", passage="")
    assert rankllm_style.t5_passage_budget(empty, 1, words_plus_eos) == 512 - 64 - (6 + 1) - 1
    longer = as_template("monot5").user.format(query="a b c d e f g h", passage="")
    assert rankllm_style.t5_passage_budget(longer, 1, words_plus_eos) == 512 - 64 - (11 + 1) - 1
    duo = as_template("duot5").user.format(query="a b c", passage_a="", passage_b="")
    assert rankllm_style.t5_passage_budget(duo, 2, words_plus_eos) == (512 - 64 - (7 + 1) - 1) // 2
    assert load_preset("monot5").settings["passage_budget"] == "rankllm_t5"


def test_t5_prompts_drop_a_literal_unk_query_included():
    prompt = as_template("monot5").render(query="what is <unk> here?", passage="text <unk> more")
    assert prompt.text == "Query: what is  here? Document: text  more Relevant: "


def letter_template() -> PromptTemplate:
    return as_template("rank_zephyr_alpha").model_copy(update={"label_after": 0, "label_context": None})


def test_letter_templates_are_shown_and_read_as_letters():
    """An alpha template with the generate scorer kept the input order: the parser read no
    letters. Now the passages are shown as [A], [B]... and [C] > [A] > [B] is read."""
    fake = FakeBackend(lambda p: "[C] > [A] > [B]")
    stage = ListwiseReranker(fake, letter_template(), scorer="generate", window=3, stride=3, max_passage_tokens=None)
    docs = tuple(Candidate(Document(f"d{i}", f"passage {i}"), -i, "bm25") for i in range(3))
    (out,) = stage([Ranking(Query("q", "q"), docs)])
    assert out.docids == ["d2", "d0", "d1"] and "[A] passage 0" in fake.seen[0].messages[-1].content
    assert not out.trace[-1].repairs


def test_letter_parsing_counts_what_it_repairs():
    labels = [chr(ord("A") + i) for i in range(26)]
    parsed = parse_permutation("[B] > [B] > [Z] > [A]", 3, labels=labels)
    assert parsed.order == (1, 0, 2) and (parsed.duplicates, parsed.out_of_range, parsed.missing) == (1, 1, 1)
    bare = parse_permutation("C > A > B", 3, labels=labels)
    assert bare.order == (2, 0, 1) and bare.unbracketed == 1
    assert parse_permutation("A good answer is [B]", 3, labels=labels).order == (1, 0, 2)  # prose "A" is not read


def test_numbered_lists_are_read_as_their_bracketed_identifiers():
    parsed = parse_permutation("1. [3]\n2. [1]\n3. [2]", 3)
    assert parsed.order == (2, 0, 1) and parsed.clean


def test_an_unterminated_reasoning_section_is_no_answer_and_is_counted():
    """A model cut off while thinking gave no ranking: ids it mentioned while reasoning are not
    read as an answer (RankLLM would read every digit); the input order stays, counted."""
    parsed = parse_permutation("<think>maybe [3] is best, then [1]", 3)
    assert parsed.order == (0, 1, 2) and parsed.unterminated_reasoning == 1 and parsed.missing == 3
    closed = parse_permutation("<think>[1] or [2]?</think> [3] > [1] > [2]", 3)
    assert closed.order == (2, 0, 1) and closed.clean


def test_a_token_cap_needs_raw_text_and_a_span_inside_it():
    from rerankflow.backends.types import TokenCap
    from rerankflow.errors import BackendError

    with pytest.raises(BackendError):
        Prompt(text="abc", cap=TokenCap(1, 9, 10))
    with pytest.raises(ValueError, match="token_cap needs chat_format: raw"):
        PromptTemplate(
            name="x", placeholders=["query"], user="{query}", token_cap={"max_tokens": 9, "prefix": "", "suffix": ""}
        )
