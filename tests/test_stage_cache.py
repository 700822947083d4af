"""The stage cache: keys, hits, corruption, records, concurrent processes (control flow with
counting stages; real models: the concurrency test here and tests/test_faults.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rerankflow.backends.types import CallStats
from rerankflow.eval.trace import stage_cache_use
from rerankflow.io.rankings import ranking_from_dict, ranking_to_dict
from rerankflow.io.trec import read_run
from rerankflow.pipelines.cache import CachedStage, StageCache, _verified
from rerankflow.pipelines.job import load_job_text
from rerankflow.pipelines.runner import run_job
from rerankflow.stage import Transformer
from rerankflow.types import (
    Answer,
    Candidate,
    Citation,
    Compression,
    Document,
    LLMUsage,
    Query,
    Ranking,
    StageRecord,
    rescore,
)

from .support import assert_same_runs
from .support.fuzz import examples


class Reverse(Transformer):
    """Scores candidates by reversed input position and records one fake call per query."""

    def __init__(self):
        self.seen: list[str] = []

    def transform(self, batch):
        self.seen.extend(r.query.qid for r in batch)
        usage = [LLMUsage.of([CallStats("fake", "m", len(r), 1, 0.5)]) for r in batch]
        return [rescore(r, range(len(r)), "reverse").recorded(StageRecord("reverse", u)) for r, u in zip(batch, usage)]


def plain(rankings):
    """Rankings without their traces (what the stage computed)."""
    return [Ranking(r.query, r.candidates, r.answer) for r in rankings]


def ranking(qid, n=3, text="q"):
    docs = [Document(f"{qid}-d{i}", f"passage {i} of {qid}") for i in range(n)]
    return Ranking(Query(qid, text), tuple(Candidate(d, float(n - i), "bm25") for i, d in enumerate(docs)))


def cached(tmp_path, stage=None, **identity):
    return CachedStage(stage or Reverse(), StageCache(tmp_path), identity or {"stage": "reverse"})


def entries(folder):
    return sorted(Path(folder).rglob("*.json"))


def test_second_run_reads_the_cache_and_restores_usage(tmp_path):
    first = cached(tmp_path)
    batch = [ranking("a"), ranking("b")]
    out1 = first(batch)
    again = cached(tmp_path)  # a new process would build a new stage
    out2 = again(batch)
    assert plain(out2) == plain(out1)
    assert again.stage.seen == []
    assert stage_cache_use(out1) == {"reverse": {"hits": 0, "computed": 2, "corrupt": 0}}
    assert stage_cache_use(out2) == {"reverse": {"hits": 2, "computed": 0, "corrupt": 0}}
    assert [r.trace[0].usage for r in out2] == [r.trace[0].usage for r in out1] == [LLMUsage(1, 3, 1, 0.5)] * 2
    assert len(entries(tmp_path)) == 2


def test_only_missing_queries_are_computed_and_order_is_kept(tmp_path):
    cached(tmp_path)([ranking("b")])
    stage = cached(tmp_path)
    out = stage([ranking("a"), ranking("b"), ranking("c")])
    assert [r.query.qid for r in out] == ["a", "b", "c"]
    assert stage.stage.seen == ["a", "c"]
    assert [r.trace[-1].cache for r in out] == ["computed", "hit", "computed"]


@pytest.mark.parametrize(
    "change",
    [
        lambda r: Ranking(Query(r.query.qid, "other text"), r.candidates),
        lambda r: r.with_candidates(reversed(r.candidates)),
        lambda r: r.with_candidates([r.candidates[0].rescored(9.0, "x"), *r.candidates[1:]]),
        lambda r: r.top(2),
    ],
    ids=["query text", "order", "score", "candidate set"],
)
def test_any_change_of_the_input_ranking_is_a_miss(tmp_path, change):
    cached(tmp_path)([ranking("a")])
    stage = cached(tmp_path)
    stage([change(ranking("a"))])
    assert stage.stage.seen == ["a"]


def test_stage_identity_and_components_are_part_of_the_key(tmp_path):
    from rerankflow.prompts.template import load_template

    base = cached(tmp_path, None, stage_name="reverse", k=1)
    other_params = cached(tmp_path, stage_name="reverse", k=2)
    assert base.key != other_params.key
    with_template = Reverse()
    with_template.template = load_template("pointwise-yes-no")
    other_template = Reverse()
    other_template.template = load_template("pointwise-grade")
    assert cached(tmp_path, with_template, k=1).key != cached(tmp_path, other_template, k=1).key
    assert cached(tmp_path, with_template, k=1).key != base.key


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],  # torn write (cannot happen with rename, but disks fail)
        lambda raw: raw.replace(b"passage 1", b"passage X"),  # content changed, checksum not
        lambda raw: b"\xff\xfe not json",
        lambda raw: b"",
        lambda raw: json.dumps({"format": 1}).encode(),
    ],
    ids=["truncated", "edited", "binary", "empty", "missing keys"],
)
def test_corrupt_entries_are_detected_deleted_and_recomputed(tmp_path, damage, caplog):
    first = cached(tmp_path)
    expected = first([ranking("a")])
    (path,) = entries(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    stage = cached(tmp_path)
    out = stage([ranking("a")])
    assert plain(out) == plain(expected)
    assert stage_cache_use(out) == {"reverse": {"hits": 0, "computed": 1, "corrupt": 1}}
    assert "corrupt" in caplog.text and str(path) in caplog.text
    assert _verified(path.read_bytes(), stage.key, path.stem) is not None  # rewritten whole


def test_an_entry_for_another_key_is_not_used(tmp_path):
    stage = cached(tmp_path)
    stage([ranking("a")])
    (path,) = entries(tmp_path)
    assert _verified(path.read_bytes(), stage.key, path.stem) is not None
    assert _verified(path.read_bytes(), "0" * 64, path.stem) is None
    assert _verified(path.read_bytes(), stage.key, "0" * 64) is None


def test_no_temporary_files_are_left_when_the_stage_fails(tmp_path):
    class Fails(Reverse):
        def transform(self, batch):
            raise RuntimeError("backend died")

    cached(tmp_path)([ranking("a")])
    with pytest.raises(RuntimeError):
        cached(tmp_path, Fails())([ranking("b")])
    assert [p.name for p in Path(tmp_path).rglob("*") if p.is_file()] == [entries(tmp_path)[0].name]


texts = st.text(max_size=30)
floats = st.floats(allow_nan=False)


@settings(max_examples=examples(150), deadline=None)
@given(
    qid=texts,
    query=texts,
    docs=st.lists(st.tuples(texts, texts, st.none() | texts, floats, texts), max_size=5),
    history=st.lists(st.tuples(texts, floats), max_size=3),
    answer=st.none() | st.tuples(texts, st.lists(st.tuples(st.integers(1, 99), st.none() | texts), max_size=3)),
    trace=st.lists(
        st.builds(
            StageRecord,
            texts,
            st.none() | st.builds(LLMUsage, st.integers(0, 99), st.integers(0, 9999), st.integers(0, 999), floats),
            st.none() | st.dictionaries(texts, st.integers(0, 9), max_size=2),
            st.none()
            | st.builds(Compression, *[st.integers(0, 999)] * 4, st.dictionaries(texts, st.integers(0, 9), max_size=2)),
            st.sampled_from([None, "hit", "computed", "corrupt"]),
        ),
        max_size=3,
    ),
)
def test_rankings_survive_the_json_round_trip_exactly(qid, query, docs, history, answer, trace):
    candidates = tuple(
        Candidate(Document(d, t, title), score, stage, tuple(history)) for d, t, title, score, stage in docs
    )
    ans = None
    if answer is not None:
        ans = Answer(answer[0], tuple(Citation(n, d) for n, d in answer[1]), tuple(c.doc for c in candidates))
    r = Ranking(Query(qid, query), candidates, ans, tuple(trace))
    data = json.loads(json.dumps(ranking_to_dict(r)))
    assert ranking_from_dict(data) == r


CONCURRENT_JOB = """
name: concurrent
dataset: {builtin: demo}
batch_size: 2
cache: {dir: CACHE}
pipelines:
  minilm:
    - bm25: {k: 20}
    - biencoder: {model: all-minilm-l6-v2}
"""


def test_two_processes_share_one_cache_folder_safely(tmp_path, minilm):
    """Two `rerankflow run` processes on one cache folder at the same time (real MiniLM)."""
    job = tmp_path / "job.yaml"
    job.write_text(CONCURRENT_JOB.replace("CACHE", str(tmp_path / "cache")))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "rerankflow.cli.main", "-q", "run", str(job), "-o", str(tmp_path / f"out{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    reference = run_job(load_job_text(job.read_text()), tmp_path, tmp_path / "ref", use_cache=False)
    expected = read_run(reference.files[0])
    assert_same_runs(read_run(tmp_path / "out0" / "minilm.trec"), expected)
    assert_same_runs(read_run(tmp_path / "out1" / "minilm.trec"), expected)
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(files) == 26 and all(p.suffix == ".json" for p in files)  # one per query, no temp files
    for p in files:
        stage_key = json.loads(p.read_text())["stage"]
        assert stage_key.startswith(p.parent.parent.name)
        assert _verified(p.read_bytes(), stage_key, p.stem) is not None


def test_job_cache_can_be_switched_off(tmp_path, minilm):
    text = CONCURRENT_JOB.replace("CACHE", str(tmp_path / "cache")).replace("builtin: demo", "builtin: demo, limit: 2")
    off = load_job_text(text.replace("cache: {dir:", "cache: {enabled: false, dir:"))
    run_job(off, tmp_path, tmp_path / "off")
    assert not (tmp_path / "cache").exists()
    on = run_job(load_job_text(text), tmp_path, tmp_path / "on")
    assert len(entries(tmp_path / "cache")) == 2
    assert on.result.systems[0].cache == {"biencoder": {"hits": 0, "computed": 2, "corrupt": 0}}
    again = run_job(load_job_text(text), tmp_path, tmp_path / "on", use_cache=False)
    assert again.result.systems[0].cache == {}
