"""LangChain adapters on real parts: langchain-core's standard retriever tests on a YAML
pipeline (BM25 then the MiniLM bi-encoder over the demo collection), and the stage compressor
inside an LCEL chain, sync and async.
"""

import asyncio
from functools import cache

import pytest
from langchain_core.documents import Document as LCDocument
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough
from langchain_tests.integration_tests import RetrieversIntegrationTests

from rerankflow.errors import ConfigError
from rerankflow.generators.answer import AnswerGenerator
from rerankflow.pipelines import load_pipeline
from rerankflow.serve.langchain import PipelineRetriever, StageCompressor
from rerankflow.testing.fake import FakeBackend

pytestmark = pytest.mark.slow  # the pipelines load the real MiniLM encoder

JOB = """
name: lc
dataset: {builtin: demo}
pipelines:
  bm25: [bm25: {k: 10}]
  bm25-minilm: [bm25: {k: 20}, biencoder: {model: all-minilm-l6-v2}]
  minilm: [biencoder: {model: all-minilm-l6-v2}]
"""


@cache
def job_file(tmp_dir):
    path = tmp_dir / "lc.yaml"
    path.write_text(JOB)
    return path


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    return job_file(tmp_path_factory.mktemp("lc"))


@cache
def _pipeline():
    import tempfile
    from pathlib import Path

    return load_pipeline(job_file(Path(tempfile.mkdtemp())), "bm25-minilm")


class TestPipelineRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[BaseRetriever]:
        return PipelineRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"pipeline": _pipeline()}

    @property
    def retriever_query_example(self) -> str:
        return "how does BM25 normalise document length?"


def test_retriever_documents_carry_ids_scores_and_ranks(job, demo):
    retriever = PipelineRetriever.from_job(job, "bm25-minilm", k=5)
    docs = retriever.invoke("how does BM25 normalise document length?")
    (ranking,) = _pipeline().search(["how does BM25 normalise document length?"])
    assert [d.metadata["docid"] for d in docs] == ranking.docids[:5] == [d.id for d in docs]
    assert [d.metadata["rank"] for d in docs] == [0, 1, 2, 3, 4]
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True) and set(docs[0].metadata["scores"]) == {"bm25", "biencoder"}
    texts = {d.docid: d.text for d in demo[0]}
    assert all(texts[d.id] == d.page_content for d in docs)


def test_compressor_reranks_in_an_lcel_chain_sync_and_async(job):
    retriever = PipelineRetriever.from_job(job, "bm25")
    compressor = StageCompressor.from_job(job, "minilm", top_n=3)
    chain = RunnableParallel(docs=retriever, question=RunnablePassthrough()) | RunnableLambda(
        lambda x: compressor.compress_documents(x["docs"], x["question"])
    )
    question = "dense retrieval with sentence embeddings"
    docs = chain.invoke(question)
    (expected,) = load_pipeline(job, "bm25-minilm").search([question])
    # the same passages MiniLM ranks first among BM25's top 10 (the YAML pipeline takes 20)
    bm25_top10 = {d.id for d in retriever.invoke(question)}
    best = [d for d in expected.docids if d in bm25_top10][:3]
    assert [d.id for d in docs] == best and [d.metadata["docid"] for d in docs] == best
    assert all(set(d.metadata["scores"]) == {"input", "biencoder"} for d in docs)
    assert docs[0].metadata["score"] >= docs[-1].metadata["score"]

    async def run():
        return await compressor.acompress_documents(retriever.invoke(question), question)

    assert [d.id for d in asyncio.run(run())] == best


def test_compressor_keeps_caller_metadata_and_handles_documents_without_ids(job):
    compressor = StageCompressor.from_job(job, "minilm")
    docs = [
        LCDocument(page_content="Cats purr when they are content.", metadata={"source": "pets.txt"}),
        LCDocument(page_content="Stock markets fell on Monday.", metadata={"source": "news.txt", "title": "Markets"}),
    ]
    out = compressor.compress_documents(docs, "why do cats purr?")
    assert [d.metadata["source"] for d in out] == ["pets.txt", "news.txt"]
    assert out[1].metadata["title"] == "Markets" and all(d.metadata["docid"] is None for d in out)
    assert compressor.compress_documents([], "anything") == []


def test_compressor_refuses_stages_that_ignore_or_answer(job):
    with pytest.raises(ConfigError, match="BM25Retriever cannot compress given documents"):
        StageCompressor.from_job(job, "bm25")
    with pytest.raises(ConfigError, match="AnswerGenerator cannot compress given documents"):
        StageCompressor(stage=AnswerGenerator(FakeBackend()))
    with pytest.raises(ConfigError, match="no pipeline named 'nope'; the job has: bm25, bm25-minilm, minilm"):
        StageCompressor.from_job(job, "nope")


def test_retriever_documents_carry_the_index_metadata_so_a_chain_can_cite(tmp_path):
    """Over an index, every LangChain document names its file, offsets and heading (was dropped)."""
    from rerankflow.index import IndexSettings, update_index
    from rerankflow.retrievers.bm25 import BM25Retriever

    from .test_index import WordEncoder, write_corpus

    write_corpus(tmp_path / "src")
    update_index([tmp_path / "src"], tmp_path / "ix", IndexSettings(encoder=None), encoder=WordEncoder())
    from rerankflow.index import open_index

    ix = open_index(tmp_path / "ix")
    docs = PipelineRetriever(pipeline=BM25Retriever(ix.bm25, k=3)).invoke("daemon port")
    assert docs and all({"doc_id", "source", "start", "end", "heading"} <= set(d.metadata) for d in docs)
    top = docs[0]
    assert top.metadata["source"] == "src/guides/install.md" and top.metadata["tags"] == ["setup", "linux"]
    text = (tmp_path / "src" / "guides" / "install.md").read_text()
    assert text[top.metadata["start"] : top.metadata["end"]] == top.page_content
