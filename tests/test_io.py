import json

import pytest

from rerankflow import Candidate, DataError, Document, Query, Ranking
from rerankflow.io.beir import read_beir
from rerankflow.io.jsonl import read_documents, read_hits, read_queries_jsonl, write_documents
from rerankflow.io.trec import read_qrels, read_qrels_tsv, read_run, read_topics, write_run


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_run_round_trip_uses_one_based_ranks(tmp_path):
    r = Ranking(Query("1", "q"), (Candidate(Document("a", ""), 2.5), Candidate(Document("b", ""), 1.0)))
    write_run([r], tmp_path / "x.trec", tag="t")
    lines = (tmp_path / "x.trec").read_text().splitlines()
    assert lines[0] == "1 Q0 a 1 2.500000 t"
    assert read_run(tmp_path / "x.trec") == {"1": {"a": 2.5, "b": 1.0}}


@pytest.mark.parametrize(
    "reader,text,line,message",
    [
        (read_topics, "1\tfirst\n2 no tab here\n", 2, "no tab"),
        (read_topics, "1\tfirst\n2\t   \n", 2, "empty"),
        (read_topics, "1\ta\n1\tb\n", 2, "duplicate"),
        (read_qrels, "1 0 d1 1\n1 0 d2\n", 2, "4 columns"),
        (read_qrels, "1 0 d1 x\n", 1, "integer"),
        (read_run, "1 Q0 d1 1 2.0 t\n1 Q0 d2 2 abc t\n", 2, "number"),
        (read_run, "1 Q0 d1 1 2.0 t\n1 Q0 d1 2 1.0 t\n", 2, "twice"),
        (read_documents, '{"docid": "a", "text": "x"}\n{"docid": "b"\n', 2, "invalid JSON"),
        (read_documents, '{"docid": "a", "text": "x"}\n{"docid": "a", "text": "y"}\n', 2, "duplicate"),
        (read_documents, '{"docid": "a", "body": "x"}\n', 1, "needs an id"),
        (read_documents, '["a"]\n', 1, "JSON object"),
        (read_qrels_tsv, "query-id\tcorpus-id\tscore\nq\td\n", 2, "3 tab-separated"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, reader, text, line, message):
    p = write(tmp_path, "input.txt", text)
    with pytest.raises(DataError, match=message) as info:
        reader(p)
    assert f"input.txt:{line}:" in str(info.value)


@pytest.mark.parametrize("reader", [read_topics, read_qrels, read_run, read_documents])
def test_missing_and_empty_files(tmp_path, reader):
    with pytest.raises(DataError, match="not found"):
        reader(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="no |empty"):
        reader(write(tmp_path, "empty.txt", "\n\n"))


def test_non_utf8_is_reported(tmp_path):
    p = tmp_path / "bad.tsv"
    p.write_bytes(b"1\tok\n2\t\xff\xfe\n")
    with pytest.raises(DataError, match="UTF-8"):
        read_topics(p)


def test_documents_round_trip_with_title_and_meta(tmp_path):
    docs = [Document("a", "text one", "Title", {"url": "u"}), Document("b", "two")]
    write_documents(tmp_path / "c.jsonl", docs)
    back = read_documents(tmp_path / "c.jsonl")
    assert back == docs
    assert back[0].meta == {"url": "u"}


def test_beir_folder(tmp_path):
    write(tmp_path, "corpus.jsonl", '{"_id": "d1", "title": "T", "text": "x"}\n{"_id": "d2", "text": "y"}\n')
    write(tmp_path, "queries.jsonl", '{"_id": "q1", "text": "find x"}\n{"_id": "q2", "text": "unjudged"}\n')
    (tmp_path / "qrels").mkdir()
    write(tmp_path, "qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    corpus, queries, qrels = read_beir(tmp_path)
    assert [d.docid for d in corpus] == ["d1", "d2"] and corpus[0].title == "T"
    assert queries == [Query("q1", "find x")]
    assert qrels == {"q1": {"d1": 1}}
    with pytest.raises(DataError, match="available splits: \\['test'\\]"):
        read_beir(tmp_path, "dev")
    assert read_queries_jsonl(tmp_path / "queries.jsonl")[1].text == "unjudged"


def test_hits_json(tmp_path):
    data = [{"query": "what", "hits": [{"qid": 7, "docid": "a", "content": "A", "score": 3.0, "rank": 1}]}]
    p = write(tmp_path, "hits.json", json.dumps(data))
    (r,) = read_hits(p)
    assert r.query == Query("7", "what") and r.docids == ["a"] and r.candidates[0].score == 3.0
    bad = write(tmp_path, "bad.json", json.dumps([{"query": "q", "hits": [{"docid": "a"}]}]))
    with pytest.raises(DataError, match="hit 0"):
        read_hits(bad)
    broken = write(tmp_path, "broken.json", '[\n{"query": }\n]')
    with pytest.raises(DataError, match="broken.json:2"):
        read_hits(broken)


def test_written_files_follow_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_run([], tmp_path / "r.trec")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.trec").stat().st_mode) == 0o644
    assert not list(tmp_path.glob(".*.tmp"))
