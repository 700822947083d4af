"""`dataset: {ir_datasets: ID}`: documents, queries and qrels through ir_datasets, tested on a
dataset that ir_datasets reads from local files (registered in the test with its own
LocalDownload/TsvDocs/TsvQueries/TrecQrels), and a clear error when the files are neither
cached nor downloadable (a download from a port nothing listens on)."""

import json

import pytest

from rerankflow.cli.main import main
from rerankflow.errors import DataError
from rerankflow.io.dataset import DatasetSpec, load_dataset

irds = pytest.importorskip("ir_datasets", reason="ir_datasets is in the dev extra (with pyterrier)")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
    from ir_datasets.util import Cache, LocalDownload, RequestsDownload

    folder = tmp_path_factory.mktemp("irds")
    (folder / "docs.tsv").write_text(
        "d1\tBM25 scores documents by term frequency and inverse document frequency\n"
        "d2\tReciprocal rank fusion adds one over k plus rank for each list\n"
        "d3\tA recipe for bread with flour, water and salt\n"
    )
    (folder / "queries.tsv").write_text("q1\thow does bm25 score documents\nq2\twhat is reciprocal rank fusion\n")
    (folder / "qrels.txt").write_text("q1 0 d1 2\nq1 0 d3 0\nq2 0 d2 1\n")
    levels = {0: "not relevant", 1: "relevant", 2: "highly relevant"}
    name = f"rerankflow-test/tiny-{folder.name}"
    irds.registry.register(
        name,
        Dataset(
            TsvDocs(LocalDownload(folder / "docs.tsv")),
            TsvQueries(LocalDownload(folder / "queries.tsv")),
            TrecQrels(LocalDownload(folder / "qrels.txt"), levels),
        ),
    )
    offline = f"rerankflow-test/offline-{folder.name}"
    # not cached, and its download fails: nothing listens on port 9
    unreachable = Cache(RequestsDownload("http://127.0.0.1:9/docs.tsv"), folder / "cache" / "docs.tsv")
    irds.registry.register(offline, Dataset(TsvDocs(unreachable), TsvQueries(LocalDownload(folder / "queries.tsv"))))
    return name, offline


def test_an_ir_datasets_id_gives_documents_queries_and_qrels(tiny, tmp_path):
    corpus, queries, qrels = (lambda d: (d.corpus, d.topics, d.qrels))(
        load_dataset(DatasetSpec(ir_datasets=tiny[0]), tmp_path)
    )
    assert [d.docid for d in corpus] == ["d1", "d2", "d3"] and corpus[1].text.startswith("Reciprocal rank fusion")
    assert [(r.query.qid, r.query.text) for r in queries] == [("q1", "how does bm25 score documents"),
                                                             ("q2", "what is reciprocal rank fusion")]  # fmt: skip
    assert qrels == {"q1": {"d1": 2, "d3": 0}, "q2": {"d2": 1}}
    job = tmp_path / "job.yaml"
    job.write_text(f"name: irds\ndataset: {{ir_datasets: '{tiny[0]}'}}\npipelines: {{bm25: [bm25: {{k: 3}}]}}\n")
    assert main(["-q", "run", str(job), "-o", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert result["systems"][0]["queries"] == 2 and result["systems"][0]["means"]["nDCG@10"] == pytest.approx(1.0)


def test_unknown_ids_and_missing_downloads_are_clear_errors(tiny, tmp_path):
    with pytest.raises(DataError, match="ir_datasets has no dataset 'msmarco-pasage/x'"):
        load_dataset(DatasetSpec(ir_datasets="msmarco-pasage/x"), tmp_path)
    with pytest.raises(DataError, match=r"could not read the docs of .*offline\?.*IR_DATASETS_HOME"):
        load_dataset(DatasetSpec(ir_datasets=tiny[1]), tmp_path)
    with pytest.raises(Exception, match="brings its own documents, queries and qrels"):
        DatasetSpec(ir_datasets=tiny[0], topics="t.tsv")
