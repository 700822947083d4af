"""A job's dataset: where it comes from (:class:`DatasetSpec`, the ``dataset:`` section of a
YAML job) and loading it: corpus, queries (with any initial candidates), judgments, answers."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import DataError
from ..paths import OptionalJobPath, resolve_path
from ..types import Candidate, Document, Query, Ranking
from .beir import read_beir
from .irds import read_ir_dataset
from .jsonl import read_documents, read_hits, read_queries_jsonl
from .questions import mix_distractors, own_contexts, read_questions
from .trec import Qrels, read_qrels, read_run, read_topics


class DatasetSpec(BaseModel):
    """Where queries, candidates, documents and judgments come from (paths relative to the job file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    builtin: Literal["demo"] | None = Field(None, description="a dataset that ships with rerankflow")
    corpus: OptionalJobPath = Field(None, description="JSONL documents for retrievers")
    index: OptionalJobPath = Field(
        None, description="an index folder made by `rerankflow index` (its chunks are the corpus; nothing re-encoded)"
    )
    topics: OptionalJobPath = Field(None, description="TREC topics (qid<TAB>query) or queries.jsonl")
    qrels: OptionalJobPath = Field(None, description="TREC qrels for evaluation")
    run: OptionalJobPath = Field(None, description="initial candidates: TREC run (needs corpus) or hits JSON")
    beir: OptionalJobPath = Field(None, description="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    ir_datasets: str | None = Field(
        None, description="an ir_datasets id (msmarco-passage/trec-dl-2019/judged): its docs, queries and qrels"
    )
    split: str = Field("test", description="BEIR qrels split")
    corpus_from_run: bool = Field(
        False, description="use the passages of the run's hit lists as the corpus (a pooled corpus)"
    )
    questions: OptionalJobPath = Field(
        None, description="QA JSONL(.gz): question, answers, optional ctxs (passages); NQ-open format"
    )
    distractors: int | None = Field(
        None, ge=0, description="questions only: mix each question's first passage with N from other questions"
    )
    seed: int = Field(0, description="questions with distractors: shuffle seed")
    judged_only: bool = Field(True, description="keep only queries that have judgments")
    limit: int | None = Field(None, ge=1, description="use only the first N queries")

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        if self.builtin and any((self.corpus, self.topics, self.qrels, self.beir)):
            raise ValueError(
                "builtin datasets bring their own corpus, topics and qrels; remove those keys or 'builtin'"
            )
        if self.ir_datasets and any(
            (self.builtin, self.beir, self.corpus, self.topics, self.qrels, self.questions, self.index)
        ):
            raise ValueError(
                "an ir_datasets id brings its own documents, queries and qrels; remove builtin/beir/corpus/topics/"
                "qrels/questions/index or 'ir_datasets'"
            )
        if self.beir and any((self.corpus, self.topics, self.qrels)):
            raise ValueError("a BEIR folder brings its own corpus, queries and qrels; remove those keys or 'beir'")
        if self.corpus_from_run and (not self.run or not self.run.endswith(".json") or self.corpus):
            raise ValueError("corpus_from_run needs 'run' to be a hits .json file (with passage text) and no 'corpus'")
        if self.questions and any((self.builtin, self.beir, self.topics, self.run)):
            raise ValueError("a questions file brings its own questions and passages; remove builtin/beir/topics/run")
        if self.index and any((self.builtin, self.corpus, self.beir, self.questions, self.corpus_from_run)):
            raise ValueError("an index brings its own documents; remove builtin/corpus/beir/questions or 'index'")
        if self.distractors is not None and not self.questions:
            raise ValueError("distractors mixes the passages of a questions file; set 'questions' too")
        if not (
            self.builtin or self.beir or self.topics or self.run or self.questions or self.index or self.ir_datasets
        ):
            raise ValueError(
                "name the queries: set 'builtin', 'beir', 'ir_datasets', 'topics', 'run' or 'questions' (or 'index' to serve)"
            )
        return self


@dataclass
class Dataset:
    """Everything a job runs on."""

    topics: list[Ranking]
    corpus: list[Document] | None = None
    qrels: Qrels | None = None
    answers: dict[str, list[str]] | None = None
    """Gold answers by query id (question files)."""


def builtin_path(name: str, filename: str) -> Path:
    """Path of a file of a dataset that ships inside the package."""
    return Path(str(resources.files("rerankflow") / name / filename))


def demo_dataset() -> tuple[list[Document], list[Query], Qrels]:
    """The demo collection written for this project (corpus, queries, graded qrels)."""
    corpus = read_documents(builtin_path("demo", "corpus.jsonl"))
    queries = [Query(q, t) for q, t in read_topics(builtin_path("demo", "queries.tsv"))]
    qrels = read_qrels(builtin_path("demo", "qrels.txt"))
    return corpus, queries, qrels


def load_dataset(spec: DatasetSpec, base_dir: Path) -> Dataset:
    """Read the files a :class:`DatasetSpec` names (relative paths are relative to ``base_dir``)."""

    def p(path: str) -> Path:
        return resolve_path(path, base_dir)

    corpus: list[Document] | None = None
    queries: list[Query] = []
    qrels: Qrels | None = None
    initial: dict[str, Ranking] = {}
    if spec.questions:
        return _question_dataset(spec, p(spec.questions))
    if spec.builtin == "demo":
        corpus, queries, qrels = demo_dataset()
    elif spec.beir:
        corpus, queries, qrels = read_beir(p(spec.beir), spec.split)
    elif spec.ir_datasets:
        corpus, queries, qrels = read_ir_dataset(spec.ir_datasets)
    else:
        if spec.corpus:
            corpus = read_documents(p(spec.corpus))
        if spec.topics:
            path = p(spec.topics)
            queries = (
                read_queries_jsonl(path) if path.suffix == ".jsonl" else [Query(q, t) for q, t in read_topics(path)]
            )
        if spec.qrels:
            qrels = read_qrels(p(spec.qrels))
    if spec.run:
        initial = _initial_candidates(p(spec.run), corpus, queries)
        if not queries:
            queries = [r.query for r in initial.values()]
        if spec.corpus_from_run:
            pooled: dict[str, Document] = {}
            for r in initial.values():
                for c in r.candidates:
                    pooled.setdefault(c.docid, c.doc)
            corpus = list(pooled.values())
    if spec.judged_only and qrels is not None:
        queries = [q for q in queries if q.qid in qrels]
        if not queries:
            raise DataError(
                "no query has judgments in the qrels; check that topics and qrels match, or set judged_only: false"
            )
    if spec.limit is not None:
        queries = queries[: spec.limit]
    topics = [initial.get(q.qid, Ranking(q)) for q in queries]
    return Dataset(topics, corpus, qrels)


def _initial_candidates(path: Path, corpus: list[Document] | None, queries: list[Query]) -> dict[str, Ranking]:
    if path.suffix == ".json":
        rankings = read_hits(path)
        return {r.query.qid: r for r in rankings}
    if corpus is None:
        raise DataError(
            "a TREC run gives only document ids; add dataset.corpus so candidates have text (or use a hits .json)",
            file=path,
        )
    if not queries:
        raise DataError("a TREC run has no query texts; add dataset.topics", file=path)
    docs = {d.docid: d for d in corpus}
    run = read_run(path)
    out = {}
    for q in queries:
        scored = sorted(run.get(q.qid, {}).items(), key=lambda kv: -kv[1])
        missing = [d for d, _ in scored if d not in docs]
        if missing:
            raise DataError(
                f"query {q.qid}: {len(missing)} run documents are not in the corpus (e.g. {missing[0]!r})",
                file=path,
            )
        out[q.qid] = Ranking(q, tuple(Candidate(docs[d], s, "input") for d, s in scored))
    return out


def _question_dataset(spec: DatasetSpec, path: Path) -> Dataset:
    records = read_questions(path)
    # distractors come from every question of the file; the limit then picks the first N
    topics = (
        mix_distractors(records, spec.distractors, spec.seed) if spec.distractors is not None else own_contexts(records)
    )
    if spec.limit is not None:
        records, topics = records[: spec.limit], topics[: spec.limit]
    pooled: dict[str, Document] = {}
    for r in topics:
        for c in r.candidates:
            pooled.setdefault(c.docid, c.doc)
    answers = {r.query.qid: list(r.answers) for r in records}
    return Dataset(topics, list(pooled.values()) or None, None, answers)
