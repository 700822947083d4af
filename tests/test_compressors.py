"""Compressors: budgets, unit selection, sentence splitting, and each compressor's control flow
(fake backends) or behaviour on the real MiniLM encoder. Real-LLM runs are in test_rag_e2e.py.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rerankflow import Candidate, Document, Query, Ranking
from rerankflow.compressors.base import CompressorOptions, Unit, select_units
from rerankflow.compressors.dedup import NearDuplicateFilter
from rerankflow.compressors.llm import LLMExtractor, LLMFilter
from rerankflow.compressors.select import BudgetFilter
from rerankflow.compressors.sentences import SentenceExtractor, split_sentences
from rerankflow.compressors.surprisal import SurprisalPruner, word_units
from rerankflow.errors import BackendError, ConfigError, DataError
from rerankflow.eval.trace import compression_of, repairs, usage_total
from rerankflow.testing.fake import FakeBackend, prompt_text
from rerankflow.types import document_text

FAKE = FakeBackend()
WORDS = FAKE.count_tokens  # the fake backend counts words; it is the tokenizer of these tests


def rank(query, *passages, titles=None):
    titles = titles or [None] * len(passages)
    return Ranking(
        Query("q1", query),
        tuple(
            Candidate(Document(f"d{i}", t, title), 10.0 - i, "bm25")
            for i, (t, title) in enumerate(zip(passages, titles))
        ),
    )


# -- budget -------------------------------------------------------------------------------
def test_budget_limit_takes_the_smaller_of_tokens_and_ratio():
    assert CompressorOptions(max_tokens=100).limit(1000) == 100
    assert CompressorOptions(ratio=0.25).limit(1000) == 250
    assert CompressorOptions(max_tokens=100, ratio=0.05).limit(1000) == 50
    assert CompressorOptions(ratio=0.01).limit(10) == 1  # never zero
    assert CompressorOptions().limit(1000) is None and CompressorOptions().unlimited
    with pytest.raises(ConfigError, match=r"budget: ratio: Input should be greater than 0 \(got 0\)"):
        BudgetFilter(tokenizer=FAKE, ratio=0)
    with pytest.raises(ConfigError, match=r"dedup: max_tokens: Input should be greater than or equal to 1"):
        NearDuplicateFilter(None, tokenizer=FAKE, max_tokens=0)
    with pytest.raises(ConfigError, match="budget: needs a budget"):
        BudgetFilter(tokenizer=FAKE)
    with pytest.raises(ConfigError, match="sentences: needs a budget"):
        SentenceExtractor(None, tokenizer=FAKE)


def test_budget_filter_by_ratio_records_tokens_in_and_out():
    f = BudgetFilter(tokenizer=FAKE, ratio=0.6)
    (out,) = f([rank("x", "a b c d", "e f g h", "i j")])
    assert out.docids == ["d0", "d2"]
    c = compression_of(out)
    assert (c.tokens_in, c.tokens_out, c.passages_in, c.passages_out) == (10, 6, 3, 2)
    assert c.dropped == {"budget": 1}


def test_non_text_passages_are_errors_naming_the_document():
    bad = Ranking(Query("q9", "x"), (Candidate(Document("d7", 42), 1.0),))  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"query 'q9', document 'd7' has a int text"):
        BudgetFilter(tokenizer=FAKE, max_tokens=10)([bad])


def test_empty_contexts_stay_empty_for_every_compressor(minilm):
    empty = [Ranking(Query("e", "anything"))]
    stages = [
        BudgetFilter(tokenizer=FAKE, max_tokens=5),
        SentenceExtractor(minilm, tokenizer=FAKE, max_tokens=5),
        NearDuplicateFilter(minilm, tokenizer=FAKE),
        SurprisalPruner(FakeBackend(), max_tokens=5),
        LLMFilter(FakeBackend()),
        LLMExtractor(FakeBackend()),
    ]
    for stage in stages:
        (out,) = stage(empty)
        assert out.candidates == () and compression_of(out).tokens_in == 0


# -- unit selection ------------------------------------------------------------------------
def test_select_units_best_first_with_title_cost_once_per_passage():
    units = [Unit(0, 0, 1, 0.9, 3), Unit(0, 2, 3, 0.8, 3), Unit(1, 0, 1, 0.7, 2), Unit(1, 2, 3, 0.1, 1)]
    assert select_units(units, [2, 0], 8) == [0, 1]  # 3 + title 2 + 3 = 8
    assert select_units(units, [2, 0], 10) == [0, 1, 2]
    assert select_units(units, [2, 0], 11) == [0, 1, 2, 3]
    assert select_units(units, [9, 9], 4) == []


@given(
    st.lists(st.sampled_from(["Alpha beta.", "Gamma delta epsilon!", "Zeta?", "eta theta", "Dr. Iota"]), max_size=12),
    st.integers(1, 40),
)
def test_sentence_extractor_never_exceeds_its_budget(sentences, limit):
    class Encoder:  # deterministic stand-in: similarity by word count (MiniLM runs below)
        identity = "len"

        def encode(self, texts, desc=""):
            import numpy as np

            v = np.array([[len(t.split()), 1.0] for t in texts], dtype="float32")
            return v / np.linalg.norm(v, axis=1, keepdims=True)

    ranking = rank("q w", " ".join(sentences[: len(sentences) // 2]), " ".join(sentences[len(sentences) // 2 :]))
    stage = SentenceExtractor(Encoder(), tokenizer=FAKE, max_tokens=limit)
    (out,) = stage([ranking])
    assert sum(WORDS(document_text(c.doc)) for c in out.candidates) <= limit
    for c in out.candidates:  # every kept sentence comes from its own source passage
        source = next(s.doc.text for s in ranking.candidates if s.docid == c.docid)
        for a, b in c.doc.meta["compressed"]["spans"]:
            kept = source[a:b].strip()
            assert kept.startswith(c.doc.text) if c.doc.meta["compressed"].get("cut") else kept in c.doc.text


@given(st.text(alphabet=st.sampled_from('ab .!?\n"A1'), max_size=80))
def test_split_sentences_covers_every_visible_character_once(text):
    spans = split_sentences(text)
    covered = "".join(text[a:b] for a, b in spans)
    assert "".join(text.split()) == "".join(covered.split())
    assert all(a < b and not text[a].isspace() and not text[b - 1].isspace() for a, b in spans)
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))


def test_split_sentences_keeps_abbreviations_and_initials():
    text = 'Dr. J. Smith moved to the U.S. in 1990. He said "Hi!" Then he left. 3 cats ran.'
    assert [text[a:b] for a, b in split_sentences(text)] == [
        "Dr. J. Smith moved to the U.S. in 1990.",
        'He said "Hi!"',
        "Then he left.",
        "3 cats ran.",
    ]


# -- sentence extraction and dedup on the real MiniLM ---------------------------------------
def test_sentence_extractor_keeps_the_relevant_sentence_in_source_order(minilm):
    r = rank(
        "who invented the telephone",
        "The weather was cold in March. Alexander Graham Bell was awarded the first patent for the telephone in 1876.",
        "Bananas are rich in potassium. Many people eat them at breakfast.",
        titles=["Telephone", "Fruit"],
    )
    stage = SentenceExtractor(minilm, tokenizer=FAKE, max_tokens=18)  # title 1 + 13 words fit, 6 more do not
    (out,) = stage([r])
    assert out.docids == ["d0"] and out.candidates[0].doc.title == "Telephone"
    assert out.candidates[0].doc.text == "Alexander Graham Bell was awarded the first patent for the telephone in 1876."
    assert out.candidates[0].score == r.candidates[0].score  # the score and id travel unchanged
    assert compression_of(out).dropped == {"budget": 1}
    # a larger budget keeps both sentences of the passage, in source order
    (more,) = SentenceExtractor(minilm, tokenizer=FAKE, max_tokens=30)([r])
    assert more.candidates[0].doc.text.startswith("The weather was cold in March. Alexander")


def test_budget_smaller_than_one_sentence_keeps_the_best_sentence_cut(minilm):
    r = rank(
        "telephone inventor", "Bell invented the telephone and patented it in the year 1876 in Boston.", titles=["Bell"]
    )
    (out,) = SentenceExtractor(minilm, tokenizer=FAKE, max_tokens=4)([r])
    (c,) = out.candidates
    assert c.doc.text == "Bell invented the telephone" and c.doc.title is None and c.doc.meta["compressed"]["cut"]


def test_near_duplicates_keep_the_better_ranked_copy(minilm):
    r = rank(
        "x",
        "The Eiffel Tower is in Paris and was finished in 1889.",
        "The Eiffel Tower is located in Paris and was completed in 1889.",
        "Mount Everest is the highest mountain on Earth.",
    )
    stage = NearDuplicateFilter(minilm, tokenizer=FAKE, threshold=0.9)
    (out,) = stage([r])
    assert out.docids == ["d0", "d2"] and compression_of(out).dropped == {"duplicate": 1}
    (everything,) = NearDuplicateFilter(minilm, tokenizer=FAKE, threshold=1.0)([r])
    assert everything.docids == ["d0", "d1", "d2"]
    (capped,) = NearDuplicateFilter(minilm, tokenizer=FAKE, threshold=0.9, max_tokens=12)([r])
    assert capped.docids == ["d0"]


# -- surprisal -----------------------------------------------------------------------------
def test_word_units_group_tokens_into_words():
    text = "Röntgen won, in 1901."
    offsets = [(0, 1), (0, 1), (1, 7), (7, 11), (11, 12), (12, 15), (15, 20), (20, 21)]  # "Ö" split in two bytes
    words = [(text[a:b], f, t) for a, b, f, t in word_units(text, offsets)]
    assert words == [("Röntgen", 0, 3), ("won,", 3, 5), ("in", 5, 6), ("1901.", 6, 8)]


def surprisal_backend(plain, with_question=None):
    """Fake continuation logprobs: per word, from ``plain`` or, when the prompt holds the
    question, from ``with_question``."""

    def score(prompt, text):
        table = with_question if with_question and "Question:" in prompt_text(prompt) else plain
        return [table.get(w, -1.0) for w in text.split()]

    return FakeBackend(continuation=score)


def test_self_information_keeps_the_surprising_words_in_order():
    backend = surprisal_backend({"Bell": -9.0, "1876": -8.0, "the": -0.1, "telephone": -4.0})
    stage = SurprisalPruner(backend, max_tokens=3)
    (out,) = stage([rank("who", "Bell made the telephone in 1876")])
    assert out.candidates[0].doc.text == "Bell telephone 1876"
    assert usage_total([out]).calls == 1


def test_question_aware_mode_adds_the_contrastive_term_and_memoises():
    plain = {"Paris": -5.0, "Lyon": -5.0}
    asked = {"Paris": -1.0, "Lyon": -6.0}  # the question makes "Paris" likely
    backend = surprisal_backend(plain, asked)
    stage = SurprisalPruner(backend, max_tokens=1, mode="question")
    batch = [rank("capital of France", "Lyon Paris")]
    (out,) = stage(batch)
    assert out.candidates[0].doc.text == "Paris"
    assert usage_total([out]).calls == 2  # one pass without, one with the question
    stage.options = stage.options.model_copy(update={"max_tokens": 2})
    (wider,) = stage(batch)  # a budget sweep: scores are memoised, no new calls
    assert wider.candidates[0].doc.text == "Lyon Paris" and usage_total([wider]).calls == 0
    (selfinfo,) = SurprisalPruner(surprisal_backend(plain, asked), max_tokens=1)(batch)
    assert selfinfo.candidates[0].doc.text == "Lyon"  # a tie, broken by source order


def test_surprisal_refuses_scores_that_do_not_line_up_with_the_tokenizer():
    backend = FakeBackend(continuation=lambda p, t: [-1.0])  # one value for many words
    with pytest.raises(BackendError, match="scored 1 tokens of passage 'd0' but its tokenizer gives 3"):
        SurprisalPruner(backend, max_tokens=2)([rank("q", "three words here")])


# -- LLM filter and extractor ---------------------------------------------------------------
def judge(helpful):
    def labels(prompt, names):
        good = any(h in prompt_text(prompt) for h in helpful)
        return {"yes": -0.1 if good else -3.0, "no": -3.0 if good else -0.1}

    return FakeBackend(labels=labels)


def test_llm_filter_keeps_helpful_passages_in_rank_order():
    backend = judge(["Bell"])
    stage = LLMFilter(backend)
    (out,) = stage([rank("who", "Cats purr.", "Bell patented it.", "Dogs bark.", "Bell again.")])
    assert out.docids == ["d1", "d3"] and compression_of(out).dropped == {"judged not helpful": 2}
    assert usage_total([out]).calls == 4
    (again,) = stage([rank("who", "Cats purr.", "Bell patented it.", "Dogs bark.", "Bell again.")])
    assert usage_total([again]).calls == 0 and backend.ledger.calls == 4  # judged once per (question, passage)
    assert again.docids == out.docids


def test_llm_filter_keeps_at_least_the_best_judged_passage():
    (out,) = LLMFilter(judge([]), keep_at_least=1)([rank("who", "Cats purr.", "Dogs bark.")])
    assert out.docids == ["d0"]
    (none,) = LLMFilter(judge([]), keep_at_least=0)([rank("who", "Cats purr.", "Dogs bark.")])
    assert none.docids == []
    with pytest.raises(ConfigError, match=r"llm_filter: threshold: Input should be less than or equal to 1 \(got 2\)"):
        LLMFilter(judge([]), threshold=2)


def test_llm_extractor_repairs_replies_deterministically():
    passages = ["One. Two. Three.", "Four. Five.", "Six. Seven.", "Eight.", "Nine. Ten."]
    replies = ["[3] [1] [9]", "[0]", "none of them", "I cannot tell", "2"]
    stage = LLMExtractor(FakeBackend(replies))
    (out,) = stage([rank("q", *passages)])
    assert [(c.docid, c.doc.text) for c in out.candidates] == [("d0", "One. Three."), ("d3", "Eight."), ("d4", "Ten.")]
    assert repairs([out]) == {"sentence numbers out of range": 1, "no sentence numbers (passage kept whole)": 1}
    assert compression_of(out).dropped == {"no sentence picked": 2}
    first_prompt = prompt_text(stage.backend.seen[0])
    assert "[1] One.\n[2] Two.\n[3] Three." in first_prompt
