"""Conversations: the condense stage (standalone queries), the retrieval gate, history in the
answer prompt, and all of it through the server with the official openai client. Scripted
backends test the control flow; one test runs the chain on the real SmolLM2."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

from rerankflow.errors import ConfigError
from rerankflow.generators.answer import AnswerGenerator
from rerankflow.generators.condense import Condenser, clean_rewrite
from rerankflow.generators.gate import RetrievalGate
from rerankflow.io.rankings import ranking_from_dict, ranking_to_dict
from rerankflow.pipelines.job import load_job_text
from rerankflow.retrievers.bm25 import BM25Retriever
from rerankflow.testing.fake import FakeBackend, prompt_text
from rerankflow.types import Query, Ranking, Turn

HISTORY = (
    Turn("system", "Answer like a pirate."),
    Turn("user", "What is reciprocal rank fusion?"),
    Turn("assistant", "It adds one over k plus the rank of a document in every list."),
)
FOLLOW_UP = "What constant does it add?"


def subject_of(prompt) -> str:
    """A scripted condenser: the follow-up with 'it' replaced by the first question's subject."""
    text = prompt_text(prompt)
    subject = re.search(r"User: What is (.+?)\?", text).group(1)
    last = re.search(r"Last message: (.+)", text).group(1)
    standalone = re.sub(r"\bit\b", subject, last, count=1).rstrip("?")
    return f'Query: "{standalone}"'


def asked(text=FOLLOW_UP, history=HISTORY, qid="q1"):
    return Ranking(Query(qid, text, history=history))


def test_condense_rewrites_with_the_history_and_records_what_was_searched():
    backend = FakeBackend(subject_of)
    out, alone = Condenser(backend)([asked(), asked("What is BM25?", history=(), qid="q2")])
    assert out.query.text == "What constant does reciprocal rank fusion add"
    assert out.query.original == FOLLOW_UP and out.query.asked == FOLLOW_UP and out.query.history == HISTORY
    (record,) = out.trace
    assert record.decisions == {"searched": out.query.text, "original": FOLLOW_UP, "condensed": True}
    assert record.usage.calls == 1 and record.repairs == {}
    assert alone.query.text == "What is BM25?" and alone.trace[0].decisions["condensed"] is False
    assert len(backend.seen) == 1  # no call for the query without history
    shown = prompt_text(backend.seen[0])
    assert "Answer like a pirate" not in shown and "User: What is reciprocal rank fusion?" in shown


def test_condense_cheaper_modes_and_repairs():
    (joined,) = Condenser(mode="user_turns", turns=2)([asked()])
    assert joined.query.text == f"What is reciprocal rank fusion? {FOLLOW_UP}" and joined.trace[0].usage is None
    (kept,) = Condenser(mode="last_turn")([asked()])
    assert kept.query.text == FOLLOW_UP and kept.trace[0].decisions["condensed"] is False
    (empty,) = Condenser(FakeBackend(["  \n\n"]))([asked()])
    assert empty.query.text == FOLLOW_UP and empty.trace[0].repairs == {"empty rewrite": 1}
    assert clean_rewrite("\n Standalone query: 'rrf k value'\nmore") == "rrf k value"
    with pytest.raises(ConfigError, match="mode llm needs a backend"):
        Condenser()


@pytest.mark.parametrize(
    ("message", "search"),
    [("thanks!", False), ("Hello there 👋", False), ("ok.", False), ("Thank you so much!!", False),
     ("thanks, and what is bm25?", True), ("hello world programs in python", True)],
)  # fmt: skip
def test_the_rule_gate_skips_search_for_small_talk_only(message, search):
    (out,) = RetrievalGate()([asked(message)])
    assert out.trace[-1].decisions == {"retrieve": search, "reason": "rule"}
    assert out.retrieval_skipped is (not search)


def test_the_llm_gate_compares_yes_and_no_and_retrievers_pass_skipped_queries(demo):
    backend = FakeBackend(
        labels=lambda p, labels: {"yes": -2.0 if "Last message: thanks\n" in prompt_text(p) else -0.1, "no": -1.0}
    )
    gate = RetrievalGate(backend, mode="llm")
    bm25 = BM25Retriever(demo[0], k=3)
    skipped, searched = (gate >> bm25)([asked("thanks"), asked("what is bm25", qid="q2")])
    assert skipped.retrieval_skipped and len(skipped) == 0 and skipped.trace[-1].usage.calls == 1
    assert not searched.retrieval_skipped and len(searched) == 3
    blind = FakeBackend(labels=lambda p, labels: {"yes": 0.0, "no": -1.0})
    RetrievalGate(blind, mode="llm", history_messages=0)([asked()])
    assert "Conversation so far:\n(none)\n" in prompt_text(blind.seen[0])  # 0: no earlier message shown
    with pytest.raises(ConfigError, match="not a regular expression"):
        RetrievalGate(patterns=["(unclosed"])


def test_the_answer_prompt_holds_the_conversation_within_its_budget(demo):
    backend = FakeBackend(["It is 60 [1]."])  # the history: 4 + 13 words
    ranking = BM25Retriever(demo[0], k=2)(Condenser(FakeBackend(subject_of))([asked()]))[0]
    (answered,) = AnswerGenerator(backend, max_tokens=16)([ranking])
    roles = [m.role for m in backend.seen[0].messages]
    assert roles == ["system", "user", "assistant", "user"]
    system, first, reply, last = backend.seen[0].messages
    assert system.content.endswith("\n\nAnswer like a pirate.") and "cite" in system.content
    assert first.content == HISTORY[1].text and reply.content == HISTORY[2].text
    assert f"Question: {FOLLOW_UP}" in last.content and answered.answer.prompt == last.content
    backend.seen.clear()
    AnswerGenerator(backend, history_tokens=14)([ranking])  # the assistant turn fits (13 words), not both
    assert [m.role for m in backend.seen[0].messages] == ["system", "assistant", "user"]
    backend.seen.clear()
    AnswerGenerator(backend, history_tokens=0)([ranking])
    assert [m.role for m in backend.seen[0].messages] == ["system", "user"]


def test_history_original_and_decisions_survive_serialisation(demo):
    (r,) = Condenser(FakeBackend(subject_of))([asked()])
    again = ranking_from_dict(ranking_to_dict(r))
    assert again.query == r.query and again.query.original == FOLLOW_UP and again.trace == r.trace


def test_a_job_declares_the_conversation_stages_in_yaml():
    job = load_job_text(
        "dataset: {builtin: demo}\npipelines:\n  chat:\n    - gate\n    - condense: {mode: user_turns, turns: 2}\n"
        "    - bm25: {k: 3}\n    - generate: {backend: {kind: hf, model: m}, history_tokens: 256}\n"
    )
    assert [s.name for s in job.pipelines["chat"]] == ["gate", "condense", "bm25", "generate"]
    with pytest.raises(ConfigError, match="did you mean 'turns'"):
        load_job_text("dataset: {builtin: demo}\npipelines:\n  c: [condense: {mode: user_turns, turn: 2}, bm25]\n")


# -- through the server -------------------------------------------------------------------------


def served(pipeline, **spec):
    from rerankflow.pipelines.job import ServeSpec
    from rerankflow.serve.app import create_app
    from rerankflow.serve.launch import serve_in_thread
    from rerankflow.serve.served import serve_pipelines

    return serve_in_thread(create_app(serve_pipelines({"chat": pipeline}), ServeSpec(**spec)))


def ready(base):
    import time

    deadline = time.monotonic() + 120
    while httpx.get(base + "/readyz").status_code != 200:
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.1)


CONVERSATION = [
    {"role": "system", "content": "Answer like a pirate."},
    {"role": "user", "content": "What is reciprocal rank fusion?"},
    {"role": "assistant", "content": "It adds one over k plus the rank of a document in every list."},
    {"role": "user", "content": FOLLOW_UP},
]


@pytest.mark.slow  # a loopback server in a thread
@pytest.mark.parametrize("allow_system", [True, False])
def test_a_two_turn_chat_searches_the_standalone_question_and_answers_with_the_history(demo, allow_system):
    corpus = demo[0]
    writer = FakeBackend(["It is usually 60 [1]."])
    bm25 = BM25Retriever(corpus, k=3)
    pipeline = RetrievalGate() >> Condenser(FakeBackend(subject_of)) >> bm25 >> AnswerGenerator(writer, max_tokens=16)
    with served(pipeline, allow_system_messages=allow_system) as base:
        ready(base)
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused")
        body = client.chat.completions.create(model="chat", messages=CONVERSATION).model_dump()
        ext = body["rerankflow"]
        standalone = "What constant does reciprocal rank fusion add"
        assert ext["searched"] == standalone and ext["retrieved"] is True
        assert ext["history_turns"] == (3 if allow_system else 2)
        (expected,) = bm25([Ranking(Query("x", standalone))])
        (alone,) = bm25([Ranking(Query("x", FOLLOW_UP))])
        assert [d["docid"] for d in ext["documents"]] == expected.docids
        assert "hyb-2" in expected.docids and "hyb-2" not in alone.docids  # the history finds the passage
        prompt = writer.seen[-1].messages
        assert [m.role for m in prompt] == ["system", "user", "assistant", "user"]
        assert ("Answer like a pirate." in prompt[0].content) is allow_system
        assert prompt[1].content == "What is reciprocal rank fusion?" and FOLLOW_UP in prompt[-1].content
        thanks = [*CONVERSATION, {"role": "assistant", "content": "60."}, {"role": "user", "content": "thanks!"}]
        ext = client.chat.completions.create(model="chat", messages=thanks).model_dump()["rerankflow"]
        assert ext["retrieved"] is False and ext["searched"] is None and ext["documents"] == []
        assert "answered without searching" in writer.seen[-1].messages[-1].content
        streamed = client.chat.completions.create(model="chat", messages=CONVERSATION, stream=True)
        chunks = list(streamed)
        assert chunks[-1].model_extra["rerankflow"]["searched"] == standalone


@pytest.mark.slow  # SmolLM2 condenses and answers for real
def test_the_chain_on_smollm2(demo, smollm2):
    from rerankflow.backends.hf import HFBackend

    model = HFBackend(smollm2, dtype="float32", device="cpu")
    bm25 = BM25Retriever(demo[0], k=3)
    pipeline = Condenser(model, max_tokens=24) >> bm25 >> AnswerGenerator(model, max_tokens=12)
    with served(pipeline) as base:
        ready(base)
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused")
        body = client.chat.completions.create(model="chat", messages=CONVERSATION).model_dump()
    ext = body["rerankflow"]
    assert ext["retrieved"] is True and ext["searched"] and "\n" not in ext["searched"]
    assert ext["searched"] != FOLLOW_UP  # the model rewrote it (what it wrote is the model's business)
    (expected,) = bm25([Ranking(Query("x", ext["searched"]))])
    assert [d["docid"] for d in ext["documents"]] == expected.docids
    assert body["usage"]["prompt_tokens"] > 60  # the history reached the answering model


@pytest.mark.slow  # SmolLM2 scores yes/no for real
def test_the_llm_gate_on_smollm2_decides_by_the_models_own_label_probabilities(smollm2):
    from rerankflow.backends.hf import HFBackend

    model = HFBackend(smollm2, dtype="float32", device="cpu")
    gate = RetrievalGate(model, mode="llm")
    batch = [asked("thanks, that is all!"), asked("What constant does reciprocal rank fusion add?", qid="q2")]
    decided = gate(batch)
    prompts = [gate.template.render(history="User: What is reciprocal rank fusion?\nAssistant: It adds one over k "
                                    "plus the rank of a document in every list.", question=r.query.asked) for r in batch]  # fmt: skip
    direct = model.label_logprobs(prompts, ["yes", "no"])
    for r, s in zip(decided, direct, strict=True):
        record = r.trace[-1]
        assert record.decisions == {"retrieve": s.logprobs["yes"] >= s.logprobs["no"], "reason": "llm"}
        assert record.usage.calls == 1 and record.usage.prompt_tokens > 40
