"""Property-based tests (hypothesis) of the readers and loaders that take untrusted input:
whatever the bytes, the outcome is a result or one of rerankflow's own errors (never a bare
traceback from deep inside), and prompt rendering never interprets what it inserts."""

from __future__ import annotations

import re
import string
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rerankflow.errors import RerankflowError
from rerankflow.io.jsonl import read_documents, read_hits, read_queries_jsonl
from rerankflow.io.questions import read_questions
from rerankflow.io.trec import read_qrels, read_qrels_tsv, read_run, read_topics
from rerankflow.pipelines.job import load_job, load_job_text
from rerankflow.prompts.template import load_template

from .support.fuzz import examples

FUZZ = settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
READERS = [read_topics, read_qrels, read_qrels_tsv, read_run, read_documents, read_queries_jsonl, read_hits,
           read_questions]  # fmt: skip

# text that looks like the formats (tabs, spaces, digits, JSON punctuation) more often than uniform noise
FIELDS = st.text(alphabet=string.ascii_letters + string.digits + ' \t.-{}[]":,\x00é', max_size=12)
LINES = st.lists(st.lists(FIELDS, max_size=7).map(lambda xs: " ".join(xs)), max_size=8).map("\n".join)
RAW = st.one_of(st.binary(max_size=300), LINES.map(str.encode), st.text(max_size=200).map(str.encode))


def _write(data: bytes, suffix: str) -> Path:
    with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as f:
        f.write(data)
    return Path(f.name)


@FUZZ
@given(data=RAW, reader=st.sampled_from(READERS))
def test_readers_return_data_or_a_clear_error_for_any_bytes(data, reader):
    path = _write(data, ".gz" if reader is read_questions and data[:2] == b"\x1f\x8b" else ".txt")
    try:
        reader(path)
    except RerankflowError as exc:
        assert str(path) in str(exc)  # the error names the file
    finally:
        path.unlink()


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
JOB_KEYS = st.sampled_from(["name", "dataset", "pipelines", "measures", "baseline", "serve", "output"])


@FUZZ
@given(
    doc=st.one_of(
        JSONISH,
        st.dictionaries(JOB_KEYS, JSONISH, max_size=5),
        st.fixed_dictionaries({"name": st.text(max_size=8), "dataset": st.just({"builtin": "demo"}),
                               "pipelines": st.dictionaries(st.text(min_size=1, max_size=5), JSONISH, max_size=3)}),
    )
)  # fmt: skip
def test_any_yaml_document_loads_or_fails_with_a_config_error(doc):
    text = yaml.safe_dump(doc, allow_unicode=True)
    try:
        load_job_text(text, file="job.yaml")
    except RerankflowError as exc:
        assert "job.yaml" in str(exc)


@FUZZ
@given(text=st.text(max_size=300))
def test_any_text_as_a_job_file_loads_or_fails_with_a_config_error(text):
    path = _write(text.encode("utf-8", "surrogatepass"), ".yaml")
    try:
        load_job(path)
    except RerankflowError as exc:
        assert str(path) in str(exc)
    finally:
        path.unlink()


NASTY = st.one_of(
    st.text(max_size=200),
    st.sampled_from(["{query}", "{passage}", "{0}", "{}", "{{", "}}", "{query!r}", "{passage:>10}", "%s", "$x", ""]),
    st.text(alphabet="{}\x00\x1b\r\n\t\u202e\ufeff", max_size=50),
    st.just("x" * 20000),
)


@FUZZ
@given(query=NASTY, passage=NASTY)
def test_prompt_rendering_inserts_values_verbatim(query, passage):
    template = load_template("pointwise-yes-no")
    user = template.render(query=query, passage=passage).messages[-1].content
    assert query in user and passage in user
    # the template's own text is intact around the values: with markers in their place, the
    # text is exactly the same around them (query first, then the passage, once each)
    plain = template.render(query="\x01Q\x01", passage="\x01P\x01").messages[-1].content
    head, rest = plain.split("\x01Q\x01")
    middle, tail = rest.split("\x01P\x01")
    assert user == head + query + middle + passage + tail


@FUZZ
@given(
    good=st.lists(
        st.from_regex(r"q[0-9] Q0 d[0-9] [1-9] [0-9]\.[0-9] tag", fullmatch=True),
        max_size=6,
        unique_by=lambda line: tuple(line.split()[:3]),  # a document once per query, as runs require
    )
)
def test_a_bad_byte_is_reported_on_its_own_line(good):
    lines = [x.encode() for x in good] + [b"q1 Q0 d\xff 1 1.0 tag"]
    path = _write(b"\n".join(lines) + b"\n", ".trec")
    try:
        read_run(path)
    except RerankflowError as exc:
        assert f"{path}:{len(lines)}: run file is not valid UTF-8" in str(exc)
    else:
        raise AssertionError("a run file with a non-UTF-8 byte was accepted")
    finally:
        path.unlink()


CITED = st.lists(
    st.one_of(
        st.text(alphabet=string.ascii_letters + " .,;[]()", max_size=12),
        st.integers(0, 12).map(lambda n: f"[{n}]"),
        st.lists(st.integers(0, 12), min_size=1, max_size=3).map(lambda ns: "[" + ", ".join(map(str, ns)) + "]"),
        st.integers(0, 10**30).map(lambda n: f"[passage {n}]"),
    ),
    max_size=10,
).map("".join)


@FUZZ
@given(text=CITED, size=st.integers(0, 6))
def test_citations_are_each_number_once_and_none_is_missed(text, size):
    from rerankflow.generators.answer import parse_citations
    from rerankflow.types import Document

    context = [Document(f"d{i}", f"passage {i}") for i in range(size)]
    cites = parse_citations(text, context)
    numbers = [c.number for c in cites]
    assert len(numbers) == len(set(numbers))
    assert {int(n) for n in re.findall(r"\[(\d+)\]", text)} <= set(numbers)  # no plain marker missed
    for c in cites:  # in range: that passage; out of range: kept, marked unknown
        assert c.docid == (context[c.number - 1].docid if 1 <= c.number <= size else None)


# -- untrusted model output: every scoring mode keeps every candidate exactly once -------------
REPLIES = st.one_of(
    st.text(max_size=120),
    st.lists(st.integers(-3, 14), max_size=16).map(lambda ns: " > ".join(f"[{n}]" for n in ns)),
    st.sampled_from(["", "none", "[]", "A", "Passage B", "[1] > [1] > [1]", "0", "4", "yes", "Z Z Z"]),
)
LOGPROB = st.one_of(st.floats(allow_nan=False), st.just(float("-inf")), st.floats(-30, 0))


def _rerankers(reply, logprob):
    from rerankflow.rerankers.listwise import ListwiseReranker
    from rerankflow.rerankers.pairwise import PairwiseReranker
    from rerankflow.rerankers.pointwise import PointwiseReranker
    from rerankflow.rerankers.setwise import SetwiseReranker
    from rerankflow.testing.fake import FakeBackend

    def fake():
        return FakeBackend([reply], labels=lambda prompt, labels: {label: logprob(label) for label in labels})

    common = {"max_passage_tokens": None}
    return [
        PointwiseReranker(fake(), mode="yes_no", **common),
        PointwiseReranker(fake(), mode="yes_no", score="p_yes", **common),
        PointwiseReranker(fake(), mode="grade", **common),
        ListwiseReranker(fake(), window=4, stride=2, **common),
        ListwiseReranker(fake(), window=4, stride=2, scorer="first_token", **common),
        ListwiseReranker(fake(), method="jointrank", window=3, **common),
        SetwiseReranker(fake(), num_child=2, top_k=3, **common),
        SetwiseReranker(fake(), num_child=2, top_k=3, scorer="generate", **common),
        PairwiseReranker(fake(), method="heapsort", top_k=3, **common),
    ]


@FUZZ
@given(reply=REPLIES, logprobs=st.dictionaries(st.text(max_size=3), LOGPROB), default=LOGPROB, n=st.integers(0, 9))
def test_any_model_output_keeps_every_candidate_exactly_once(reply, logprobs, default, n):
    from rerankflow.types import Candidate, Document, Query, Ranking

    docs = [Document(f"d{i}", f"passage {i}") for i in range(n)]
    ranking = Ranking(Query("q", "question"), tuple(Candidate(d, float(n - i), "bm25") for i, d in enumerate(docs)))
    for reranker in _rerankers(reply, lambda label: logprobs.get(label, default)):
        (out,) = reranker([ranking])
        assert sorted(out.docids) == sorted(ranking.docids), reranker
        scores = [c.score for c in out.candidates]
        assert not any(s != s for s in scores), (reranker, scores)  # no NaN
        assert scores == sorted(scores, reverse=True), reranker


@FUZZ
@given(reply=REPLIES, n=st.integers(1, 8))
def test_sentence_picks_from_any_reply_are_valid_and_distinct(reply, n):
    from rerankflow.compressors.base import QueryNotes
    from rerankflow.compressors.llm import LLMExtractor

    notes = QueryNotes(0, None)
    picked = LLMExtractor._pick(reply, n, notes)
    assert picked is None or (len(set(picked)) == len(picked) and all(0 <= i < n for i in picked))
    assert (picked is None) == (notes.repairs["no sentence numbers (passage kept whole)"] == 1)
