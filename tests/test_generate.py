"""Answer generation (control flow on a fake backend), citation parsing, stop handling in
streams, question files, and the RAG side of experiments. Real models: test_rag_e2e.py.
"""

import asyncio
import gzip
import json

import pytest

from rerankflow import Candidate, Document, Query, Ranking
from rerankflow.backends.base import cut_at_stop
from rerankflow.compressors.select import BudgetFilter
from rerankflow.errors import ConfigError, DataError
from rerankflow.eval.experiment import Experiment
from rerankflow.eval.trace import usage_total
from rerankflow.generators.answer import AnswerGenerator, parse_citations
from rerankflow.io.questions import mix_distractors, read_questions
from rerankflow.pipelines.job import load_job_text
from rerankflow.testing.fake import FakeBackend, prompt_text
from rerankflow.types import LLMUsage, StageRecord

DOCS = (Document("a", "Paris is the capital of France.", "France"), Document("b", "Berlin is in Germany."))


def ctx(qid="q1", text="capital of France?"):
    return Ranking(Query(qid, text), tuple(Candidate(d, 2.0 - i, "bm25") for i, d in enumerate(DOCS)))


def test_citations_map_numbers_to_documents_in_order_of_first_use():
    cites = parse_citations("Paris [2][1], see also [1, 2] and [Passage 3]; [ 2 ].", DOCS)
    assert [(c.number, c.docid) for c in cites] == [(2, "b"), (1, "a"), (3, None)]
    assert parse_citations("no markers, 2021 [x]", DOCS) == ()


def test_generator_builds_the_prompt_and_returns_a_cited_answer():
    backend = FakeBackend(["Paris [1], not Lyon [7]."])
    gen = AnswerGenerator(backend)
    (out,) = gen([ctx()])
    a = out.answer
    assert a.text == "Paris [1], not Lyon [7]." and [(c.number, c.docid) for c in a.citations] == [(1, "a"), (7, None)]
    assert a.cited_docids == ["a"] and a.context == DOCS and out.candidates == ctx().candidates
    assert out.trace == (
        StageRecord("generate", LLMUsage(1, out.answer.prompt_tokens, 5, 0.0), {"citations out of range": 1}),
    )
    sent = prompt_text(backend.seen[0])
    assert "[1] France: Paris is the capital of France.\n[2] Berlin is in Germany." in sent
    assert sent.index("capital of France?") < sent.index("[1] France")  # the question before the passages
    assert a.prompt in sent and a.context_tokens == 13 and a.output_tokens == 5
    assert usage_total([out]).calls == 1


def test_generator_answers_with_an_empty_context_and_says_so_in_the_answer():
    backend = FakeBackend(["I do not know."])
    (out,) = AnswerGenerator(backend)([Ranking(Query("q", "anything?"))])
    assert out.answer.text == "I do not know." and out.answer.context == () and out.answer.context_tokens == 0


def test_generator_template_must_have_query_and_passages():
    with pytest.raises(ConfigError, match="placeholders query and passages"):
        AnswerGenerator(FakeBackend(), "pointwise-yes-no")


def test_streaming_on_a_backend_without_increments_gives_one_piece_and_the_answer():
    gen = AnswerGenerator(FakeBackend(["Paris [1]."]))
    pieces = []
    out = gen.stream(ctx(), pieces.append)
    assert pieces == ["Paris [1]."] and out.answer.text == "Paris [1]." and out.answer.cited_docids == ["a"]


async def _collect(pieces, stops):
    async def source():
        for p in pieces:
            yield p

    return [p async for p in cut_at_stop(source(), stops)]


@pytest.mark.parametrize(
    ("pieces", "stops", "expected"),
    [
        (["Hel", "lo wor", "ld"], [], "Hello world"),
        (["Paris", " [1]", "\nQues", "tion: next"], ["\nQuestion:"], "Paris [1]"),
        (["ab", "cS", "TOPd"], ["STOP"], "abc"),
        (["STOP at once"], ["STOP"], ""),
        (["no stop here"], ["STOP", "END"], "no stop here"),
    ],
)
def test_cut_at_stop_handles_stops_that_span_pieces(pieces, stops, expected):
    assert "".join(asyncio.run(_collect(pieces, stops))) == expected


# -- question files ---------------------------------------------------------------------------
def write_questions(path, rows):
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


QUESTIONS = [
    {
        "question": f"question {i}?",
        "answers": [f"answer{i}"],
        "ctxs": [{"title": f"T{i}", "text": f"The answer is answer{i}."}],
    }
    for i in range(6)
]


def test_questions_file_and_distractor_contexts(tmp_path):
    records = read_questions(write_questions(tmp_path / "q.jsonl.gz", QUESTIONS))
    assert [r.query.qid for r in records] == [f"q{i}" for i in range(6)] and records[2].answers == ("answer2",)
    mixed = mix_distractors(records, 3, seed=1)
    assert all(len(r) == 4 for r in mixed)
    for r in mixed:
        ids = r.docids
        assert f"{r.query.qid}-0" in ids and len(set(ids)) == 4  # own passage once, distractors distinct
        assert [c.score for c in r.candidates] == [4.0, 3.0, 2.0, 1.0]
    positions = {r.docids.index(f"{r.query.qid}-0") for r in mixed}
    assert len(positions) > 1  # the gold passage is not always in the same place
    assert [r.docids for r in mix_distractors(records, 3, seed=1)] == [r.docids for r in mixed]  # seeded
    with pytest.raises(DataError, match="6 distractors need at least 7 questions"):
        mix_distractors(records, 6)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"answers": ["x"]}, "non-empty 'question'"),
        ({"question": "q?", "answers": "x"}, "non-empty list of strings"),
        ({"question": "q?", "answers": ["x"], "ctxs": [{"title": "t", "text": 5}]}, r"ctxs\[0\] needs a 'text' string"),
    ],
)
def test_bad_question_lines_name_the_line(tmp_path, row, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(QUESTIONS[0]) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=message) as info:
        read_questions(path)
    assert "bad.jsonl:2:" in str(info.value)


def test_questions_dataset_in_a_job_validates_its_keys(tmp_path):
    with pytest.raises(ConfigError, match="distractors mixes the passages of a questions file"):
        load_job_text("dataset: {builtin: demo, distractors: 3}\npipelines: {a: [bm25]}")
    with pytest.raises(ConfigError, match="brings its own questions"):
        load_job_text("dataset: {questions: q.jsonl, topics: t.tsv}\npipelines: {a: [bm25]}")


# -- the RAG side of an experiment ---------------------------------------------------------------
def test_experiment_reports_rag_measures_and_writes_answers(tmp_path):
    records = read_questions(write_questions(tmp_path / "q.jsonl.gz", QUESTIONS))
    topics = mix_distractors(records, 2, seed=0)
    gold = {r.query.qid: list(r.answers) for r in records}

    def reply(prompt):  # answers with the first passage's last word and cites it
        first = prompt_text(prompt).split("[1] ")[1].split("\n")[0]
        return f"{first.split()[-1].rstrip('.')} [1]"

    backend = FakeBackend(reply)
    systems = {
        "full": AnswerGenerator(backend),
        "budget": BudgetFilter(tokenizer=backend, max_tokens=5) >> AnswerGenerator(backend),
    }
    result = Experiment(systems, topics, None, ["nDCG@10"], answers=gold, baseline="full").run()
    full, cut = result.systems
    expected_em = sum(r.candidates[0].docid == f"{r.query.qid}-0" for r in topics) / len(topics)
    assert full.means["EM"] == pytest.approx(expected_em) and full.means["InContext"] == 1.0
    assert "Ratio" not in full.means and cut.means["Ratio"] < 0.5
    assert cut.means["Saved"] == 10.0  # 3 passages of 5 words (title + text) in, 1 kept
    assert cut.means["InContext"] == pytest.approx(expected_em)
    table = result.table()
    assert "EM" in table and "InContext" in table and "RAG: EM best-subspan" in table
    files = result.write(tmp_path / "out")
    rows = [json.loads(line) for line in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * len(topics) and {"answer", "citations", "context", "scores", "gold"} <= set(rows[0])
    side = (tmp_path / "out" / "answers.csv").read_text().splitlines()
    assert side[0] == "qid,question,gold,full,budget" and len(side) == 1 + len(topics)
    assert tmp_path / "out" / "answers.csv" in files
