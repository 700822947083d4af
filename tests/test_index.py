"""Your own documents, fast lane: extraction, chunking, the incremental index, filters, document
aggregation, datasets over an index and the server's exposure check. The encoder here is a
control-flow stand-in (words as tokens, hashed bag-of-words vectors) so the index logic runs
in milliseconds; tests/test_index_e2e.py runs the same paths on real MiniLM and SmolLM2."""

import fcntl
import hashlib
import json

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rerankflow.errors import ConfigError, DataError
from rerankflow.index import ChunkSettings, IndexSettings, open_index, update_index
from rerankflow.index.chunking import Chunker, sections
from rerankflow.index.extract import read_source
from rerankflow.index.update import MAX_SEGMENTS
from rerankflow.io.dataset import DatasetSpec
from rerankflow.pipelines.job import ServeSpec, parse_job
from rerankflow.rerankers.documents import DocumentAggregator
from rerankflow.retrievers.bm25 import BM25Retriever
from rerankflow.retrievers.filters import MetadataFilter, combine
from rerankflow.serve.launch import check_exposure
from rerankflow.serve.protocol import ChatRequest, location
from rerankflow.types import Candidate, Document, Query, Ranking, document_text

from .support.fuzz import examples


class WordEncoder:
    """Stand-in encoder: a token is a whitespace word; a vector is a hashed bag of words."""

    identity = "test-words"
    dimension = 32

    def __init__(self):
        self.encoded = []

    def count_tokens(self, text):
        return len(text.split())

    def encode(self, texts, desc=""):
        self.encoded.extend(texts)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dimension] += 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


SETTINGS = IndexSettings(encoder="all-minilm-l6-v2", chunking=ChunkSettings(chunk_tokens=12, overlap_tokens=3))


def build(sources, folder, **kw):
    return update_index(sources, folder, SETTINGS, encoder=kw.pop("encoder", None) or WordEncoder(), **kw)


def write_corpus(root):
    (root / "guides").mkdir(parents=True)
    (root / "guides" / "install.md").write_text(
        "---\ntitle: Install guide\ntags: [setup, linux]\ndate: 2024-03-01\n---\n# Install\n\n"
        "Intro about installing the frobnicator.\n\n## Linux\n\nRun the installer with sudo. "
        "The daemon listens on port 7312.\n\n## Windows\n\nDouble-click the package and follow the wizard.\n"
    )
    (root / "guides" / "upgrade.md").write_text(
        "---\ntags: [setup]\ndate: 2025-06-10\n---\n# Upgrading\n\nStop the daemon, install the new package, start it.\n"
    )
    (root / "faq.html").write_text(
        "<html><head><title>FAQ</title><script>var tracking = 1;</script><style>p{}</style></head><body>"
        "<nav>Home | About</nav><h1>Questions</h1><p>Why is the sky blue? Rayleigh scattering.</p>"
        "<h2>Billing</h2><p>Invoices are sent on the <b>first</b> of each month.</p></body></html>"
    )
    (root / "notes.txt").write_text("Cafeteria notes\n\nThe cafeteria opens at eight and closes at three.\n")
    (root / "records.jsonl").write_text(
        json.dumps({"id": "r1", "text": "Zebras graze on the savanna.", "lang": "en"})
        + "\n"
        + json.dumps({"id": "r2", "text": "Giraffes browse acacia leaves.", "lang": "de"})
        + "\n"
    )
    (root / "image.png").write_bytes(b"\x89PNG not indexed")


# -- extraction and chunking ----------------------------------------------------------------------


def test_markdown_front_matter_becomes_metadata_and_is_not_chunked(tmp_path):
    write_corpus(tmp_path)
    (doc,) = read_source(tmp_path / "guides" / "install.md", "guides/install.md")
    assert doc.title == "Install guide" and doc.meta == {"tags": ["setup", "linux"], "date": "2024-03-01"}
    chunks = Chunker(ChunkSettings(12, 3), lambda s: len(s.split())).chunks(doc)
    assert all("title:" not in c.text for c in chunks)
    assert [c.meta["heading"] for c in chunks][:2] == ["Install", "Install > Linux"]
    for c in chunks:
        assert doc.text[c.meta["start"] : c.meta["end"]] == c.text  # offsets index into the file
        assert c.meta["doc_id"] == "guides/install.md" and c.meta["tags"] == ["setup", "linux"]


def test_html_keeps_headings_and_drops_scripts_styles_navigation(tmp_path):
    write_corpus(tmp_path)
    (doc,) = read_source(tmp_path / "faq.html", "faq.html")
    assert doc.title == "FAQ"
    assert "tracking" not in doc.text and "Home | About" not in doc.text and "p{}" not in doc.text
    assert "# Questions" in doc.text and "## Billing" in doc.text
    assert "Invoices are sent on the first of each month." in doc.text  # inline tags do not split words


def test_pdf_pages_and_a_corrupt_pdf(tmp_path):
    fpdf = pytest.importorskip("fpdf")
    pdf = fpdf.FPDF()
    pdf.set_font("helvetica", size=12)
    for text in ("Page one talks about walruses.", "Page two talks about octopuses."):
        pdf.add_page()
        pdf.multi_cell(0, 10, text)
    pdf.set_title("Zoo report")
    pdf.output(str(tmp_path / "zoo.pdf"))
    (doc,) = read_source(tmp_path / "zoo.pdf", "zoo.pdf")
    assert doc.title == "Zoo report" and len(doc.page_starts) == 2
    chunks = Chunker(ChunkSettings(4, 0), lambda s: len(s.split())).chunks(doc)
    assert {c.meta["page"] for c in chunks if "octopuses" in c.text} == {2}
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.4 truncated garbage")
    with pytest.raises(DataError, match=r"bad\.pdf: cannot read the PDF"):
        read_source(tmp_path / "bad.pdf", "bad.pdf")


def test_errors_name_the_file(tmp_path):
    (tmp_path / "a.md").write_text("---\ntitle: [unclosed\n---\ntext\n")
    with pytest.raises(DataError, match=r"a\.md: front matter is not valid YAML"):
        read_source(tmp_path / "a.md", "a.md")
    (tmp_path / "b.txt").write_bytes(b"caf\xe9")
    with pytest.raises(DataError, match=r"b\.txt: not valid UTF-8"):
        read_source(tmp_path / "b.txt", "b.txt")
    (tmp_path / "c.md").write_text("---\nsource: mine\n---\ntext\n")
    with pytest.raises(DataError, match="'source' is reserved"):
        read_source(tmp_path / "c.md", "c.md")


def test_hash_lines_inside_code_fences_are_not_headings():
    text = "# Top\n\nbody\n\n```\n# a comment\n```\n\n## Sub\n\nmore\n"
    assert [h for _, _, h in sections(text)] == ["Top", "Top > Sub"]


_paragraph = st.lists(
    st.sampled_from(["alpha", "beta.", "gamma!", "delta", "\n", "\n\n", "# Head", "eps?", " ", "\t", "café"]),
    max_size=60,
)


@settings(max_examples=examples(60), deadline=None)
@given(_paragraph, st.integers(3, 15), st.integers(0, 2))
@example(["# Head", "# Head", "alpha", "# Head", "# Head", "# Head", "alpha"], 3, 2)  # found in CI: repeated text
def test_chunks_are_exact_slices_covering_every_word(words, size, overlap):
    from rerankflow.index.extract import SourceDocument

    text = " ".join(words)
    doc = SourceDocument("d", "d", text)
    chunks = Chunker(ChunkSettings(size, overlap), lambda s: len(s.split())).chunks(doc)
    covered = np.zeros(len(text), dtype=bool)
    for c in chunks:
        assert text[c.meta["start"] : c.meta["end"]] == c.text and c.text.strip()
        covered[c.meta["start"] : c.meta["end"]] = True
    assert all(covered[i] for i, ch in enumerate(text) if not ch.isspace())
    assert [c.meta["chunk"] for c in chunks] == list(range(len(chunks)))
    starts = [c.meta["start"] for c in chunks]
    assert starts == sorted(starts)


def test_repeated_text_is_chunked_at_its_own_offsets():
    from rerankflow.index.extract import SourceDocument

    text = "# Head # Head alpha # Head # Head # Head alpha"
    chunks = Chunker(ChunkSettings(3, 2), lambda s: len(s.split())).chunks(SourceDocument("d", "d", text))
    assert chunks[-1].meta["end"] == len(text)  # the last words are covered where they are
    assert [c.meta["start"] for c in chunks] == sorted({c.meta["start"] for c in chunks})


_splitter_text = st.lists(
    st.sampled_from(["a", "b ", "x.", "y! ", "z? ", "\n", "\n\n", " ", "  ", "\t", "é", "Head", "a.b"]), max_size=80
).map("".join)


@settings(max_examples=examples(150), deadline=None)
@given(_splitter_text, st.integers(1, 12), st.integers(0, 4))
def test_span_splitter_gives_langchains_pieces(text, size, overlap):
    """The splitter is langchain's rule on offsets: the same pieces as the library itself."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from rerankflow.index.chunking import SEPARATORS
    from rerankflow.index.splitter import SpanSplitter

    overlap = min(overlap, size)
    words = lambda t: len(t.split())  # noqa: E731
    reference = RecursiveCharacterTextSplitter(
        separators=list(SEPARATORS),
        is_separator_regex=True,
        keep_separator=True,
        chunk_size=size,
        chunk_overlap=overlap,
        length_function=words,
        strip_whitespace=True,
    ).split_text(text)
    spans = SpanSplitter(SEPARATORS, size, overlap, lambda ts: [words(t) for t in ts]).split(text)
    assert [text[a:b] for a, b in spans] == reference


def test_lengths_are_counted_in_batches_once_per_distinct_piece():
    from rerankflow.index.chunking import SEPARATORS
    from rerankflow.index.splitter import SpanSplitter

    calls = []

    def count_many(texts):
        calls.append(list(texts))
        return [len(t.split()) for t in texts]

    text = " ".join(["alpha", "beta", "gamma"] * 2000)  # one line: the library made 12,000 calls
    spans = SpanSplitter(SEPARATORS, 50, 10, count_many).split(text)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    flat = [t for call in calls for t in call]
    assert len(calls) == 2 and sorted(flat) == ["", " alpha", " beta", " gamma", "alpha"]


# -- the index: build, update, merge, failures -------------------------------------------------------


def scores(index, query):
    r = BM25Retriever(index.bm25, k=50).retrieve([Query("q", query)])[0]
    return {c.docid: round(c.score, 9) for c in r.candidates}


def same_index(a, b):
    """Same chunks (ids, texts, metadata), same BM25 scores, vectors aligned with their chunks."""
    assert sorted(c.docid for c in a.chunks) == sorted(c.docid for c in b.chunks)
    by_id = {c.docid: c for c in b.chunks}
    for c in a.chunks:
        assert (c.text, dict(c.meta)) == (by_id[c.docid].text, dict(by_id[c.docid].meta))
    for q in ("daemon port", "invoices month", "giraffes zebras", "cafeteria eight", "install package"):
        assert scores(a, q) == scores(b, q)
    for ix in (a, b):
        np.testing.assert_allclose(
            ix.embeddings, WordEncoder().encode([document_text(c) for c in ix.chunks]), atol=1e-6
        )


def test_build_reports_counts_skips_and_ignores(tmp_path):
    write_corpus(tmp_path / "src")
    (tmp_path / "src" / "broken.pdf").write_bytes(b"not a pdf")
    report = build([tmp_path / "src"], tmp_path / "ix")
    assert sorted(report.added) == [
        "r1",
        "r2",
        "src/faq.html",
        "src/guides/install.md",
        "src/guides/upgrade.md",
        "src/notes.txt",
    ]
    assert report.ignored == 1 and [s for s, _ in report.skipped] == ["src/broken.pdf"]
    assert "src/broken.pdf: cannot read the PDF" in report.summary()
    assert "added: src/faq.html, src/guides/install.md" in report.summary()  # which documents, not only how many
    ix = open_index(tmp_path / "ix")
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["counts"]["documents"] == 6 and manifest["counts"]["chunks"] == len(ix.chunks)
    assert (
        manifest["settings"]["chunking"]["chunk_tokens"] == 12 and manifest["skipped"][0]["source"] == "src/broken.pdf"
    )
    assert next(iter(scores(ix, "daemon port"))).startswith("src/guides/install.md#")
    with pytest.raises(DataError, match="broken.pdf: cannot read the PDF"):
        build([tmp_path / "src"], tmp_path / "strict", strict=True)


def test_incremental_update_equals_a_rebuild_and_encodes_only_what_changed(tmp_path):
    src = tmp_path / "src"
    write_corpus(src)
    build([src], tmp_path / "ix")
    (src / "notes.txt").write_text("Cafeteria notes\n\nThe cafeteria now opens at seven.\n")  # changed
    (src / "guides" / "upgrade.md").unlink()  # removed
    (src / "new.md").write_text("# Backups\n\nBackups run nightly at two.\n")  # added
    (src / "records.jsonl").write_text(  # r1 unchanged, r2 changed, r3 new
        json.dumps({"id": "r1", "text": "Zebras graze on the savanna.", "lang": "en"})
        + "\n"
        + json.dumps({"id": "r2", "text": "Giraffes browse tall acacia trees.", "lang": "de"})
        + "\n"
        + json.dumps({"id": "r3", "text": "Okapis hide in the forest.", "lang": "en"})
        + "\n"
    )
    enc = WordEncoder()
    report = build([src], tmp_path / "ix", encoder=enc)
    assert sorted(report.added) == ["r3", "src/new.md"] and sorted(report.changed) == ["r2", "src/notes.txt"]
    assert report.removed == ["src/guides/upgrade.md"] and report.unchanged == 3
    assert all(("Okapis" in t) or ("Backups" in t) or ("seven" in t) or ("Giraffes" in t) for t in enc.encoded)
    updated = open_index(tmp_path / "ix")
    assert not [c for c in updated.chunks if "Stop the daemon" in c.text or "opens at eight" in c.text]
    build([src], tmp_path / "fresh")
    same_index(updated, open_index(tmp_path / "fresh"))
    again = build([src], tmp_path / "ix", encoder=(enc := WordEncoder()))
    assert again.chunks_added == 0 and not enc.encoded and again.unchanged == 7


def test_many_updates_merge_segments_without_reencoding(tmp_path):
    src = tmp_path / "src"
    write_corpus(src)
    build([src], tmp_path / "ix")
    for i in range(MAX_SEGMENTS + 2):
        (src / f"extra{i}.txt").write_text(f"Extra note {i} about topic{i}.\n")
        (src / "notes.txt").write_text(f"Cafeteria notes\n\nVersion {i} of the opening hours.\n")
        enc = WordEncoder()
        build([src], tmp_path / "ix", encoder=enc)
        assert len(enc.encoded) == 2  # the new file and the changed one, never the merged rest
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert len(manifest["segments"]) <= MAX_SEGMENTS
    assert sorted(p.name for p in (tmp_path / "ix" / "segments").iterdir()) == sorted(
        s["name"] for s in manifest["segments"]
    )  # superseded segments are deleted
    build([src], tmp_path / "fresh")
    same_index(open_index(tmp_path / "ix"), open_index(tmp_path / "fresh"))


def test_unreadable_file_keeps_its_previous_version(tmp_path):
    src = tmp_path / "src"
    write_corpus(src)
    build([src], tmp_path / "ix")
    (src / "notes.txt").write_bytes(b"\xff\xfe broken bytes")
    report = build([src], tmp_path / "ix")
    assert [s for s, _ in report.skipped] == ["src/notes.txt"] and "not valid UTF-8" in report.summary()
    assert any("opens at eight" in c.text for c in open_index(tmp_path / "ix").chunks)


def test_settings_are_fixed_once_the_index_exists(tmp_path):
    write_corpus(tmp_path / "src")
    build([tmp_path / "src"], tmp_path / "ix")
    other = IndexSettings(encoder="all-minilm-l6-v2", chunking=ChunkSettings(50, 5))
    with pytest.raises(ConfigError, match="chunking .* --rebuild"):
        update_index([tmp_path / "src"], tmp_path / "ix", other, encoder=WordEncoder())
    report = update_index([tmp_path / "src"], tmp_path / "ix", other, encoder=WordEncoder(), rebuild=True)
    assert len(report.added) == 6


def test_a_second_writer_is_refused_and_a_missing_source_changes_nothing(tmp_path):
    write_corpus(tmp_path / "src")
    build([tmp_path / "src"], tmp_path / "ix")
    before = (tmp_path / "ix" / "manifest.json").read_text()
    with open(tmp_path / "ix" / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(DataError, match="another `rerankflow index` run"):
            build([tmp_path / "src"], tmp_path / "ix")
    with pytest.raises(DataError, match="source not found"):
        build([tmp_path / "nope"], tmp_path / "ix")
    assert (tmp_path / "ix" / "manifest.json").read_text() == before


def test_a_run_that_fails_midway_leaves_the_previous_index(tmp_path):
    src = tmp_path / "src"
    write_corpus(src)
    build([src], tmp_path / "ix")
    before = open_index(tmp_path / "ix")
    (src / "new.txt").write_text("Brand new content about lighthouses.\n")

    class Failing(WordEncoder):
        def encode(self, texts, desc=""):
            raise KeyboardInterrupt  # what Ctrl-C does in the middle of encoding

    with pytest.raises(KeyboardInterrupt):
        build([src], tmp_path / "ix", encoder=Failing())
    after = open_index(tmp_path / "ix")
    assert [c.docid for c in after.chunks] == [c.docid for c in before.chunks]
    assert [p.name for p in (tmp_path / "ix" / "segments").iterdir() if p.name.startswith(".tmp")] == []


# -- filters ---------------------------------------------------------------------------------------


DOCS = [
    Document(
        "a#0",
        "daemon port setup",
        None,
        {"source": "guides/a.md", "tags": ["setup", "linux"], "date": "2024-03-01", "n": 3},
    ),
    Document(
        "b#0", "daemon port upgrade", None, {"source": "guides/b.md", "tags": ["setup"], "date": "2025-06-10", "n": 7}
    ),
    Document("c#0", "daemon port billing", None, {"source": "faq.html", "date": "2023-01-01"}),
]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"tags": "setup"}, {"a#0", "b#0"}),
        ({"tags": ["linux", "nothing"]}, {"a#0"}),
        ({"source": {"glob": "guides/*"}}, {"a#0", "b#0"}),
        ({"date": {"gte": "2024-01-01", "lt": "2025-01-01"}}, {"a#0"}),
        ({"n": {"gt": 5}}, {"b#0"}),
        ({"n": {"gt": "5"}}, set()),  # a string never compares with a number
        ({"tags": {"exists": False}}, {"c#0"}),
        ({"tags": {"nin": ["linux"]}}, {"b#0", "c#0"}),
        ({"docid": {"in": ["a#0", "c#0"]}}, {"a#0", "c#0"}),
    ],
)
def test_filter_semantics(spec, expected):
    flt = MetadataFilter(spec)
    assert {d.docid for d in DOCS if flt.matches(d)} == expected


def test_filter_dates_from_yaml_match_strings():
    import datetime as dt

    assert MetadataFilter({"date": {"gte": dt.date(2025, 1, 1)}}).matches(DOCS[1])


def test_bad_filters_are_clear():
    with pytest.raises(ConfigError, match="unknown operator 'between'"):
        MetadataFilter({"date": {"between": [1, 2]}})
    with pytest.raises(ConfigError, match="mapping"):
        MetadataFilter(["tags"])
    with pytest.raises(ConfigError, match="sets 'gte' again"):
        combine({"date": {"gte": "2024"}}, {"date": {"gte": "2025"}})


def test_filters_apply_inside_retrieval_so_k_results_come_back():
    docs = [Document(f"x{i}", "daemon port", None, {"tags": ["noise"]}) for i in range(20)] + DOCS
    bm25 = BM25Retriever(docs, k=2, filter={"tags": "setup"})
    (r,) = bm25.retrieve([Query("q", "daemon port")])
    assert sorted(r.docids) == ["a#0", "b#0"]  # without the filter the top 2 would be noise
    (r,) = bm25.retrieve([Query("q", "daemon port", filter={"date": {"gte": "2025-01-01"}})])
    assert r.docids == ["b#0"]  # the request's filter adds to the stage's


def test_dense_filters_search_exactly_over_the_allowed_documents():
    from rerankflow.retrievers.dense import DenseRetriever

    docs = [Document(f"x{i}", "daemon port", None, {"tags": ["noise"]}) for i in range(20)] + DOCS
    enc = WordEncoder()
    dense = DenseRetriever(docs, enc, k=2, embeddings=enc.encode([document_text(d) for d in docs]))
    (r,) = dense.retrieve([Query("q", "daemon port", filter={"source": {"glob": "guides/*"}})])
    assert sorted(r.docids) == ["a#0", "b#0"]
    (r,) = dense.retrieve([Query("q", "daemon port")])
    assert all(d.startswith("x") for d in r.docids)


# -- document-level ranking ------------------------------------------------------------------------


def chunk(doc, n, score):
    return Candidate(
        Document(f"{doc}#{n}", f"{doc} part {n}", doc, {"doc_id": doc, "chunk": n, "start": 10 * n, "end": 10 * n + 9}),
        score,
        "bm25",
    )


RANKING = Ranking(
    Query("q", "x"),
    (chunk("A", 3, 9.0), chunk("B", 0, 8.0), chunk("B", 1, 7.0), chunk("A", 0, 1.0), chunk("C", 2, 0.5)),
)


@pytest.mark.parametrize(
    ("method", "order", "top"),
    [("maxp", ["A", "B", "C"], 9.0), ("firstp", ["B", "A", "C"], 8.0), ("sump", ["B", "A", "C"], 15.0)],
)
def test_document_aggregation(method, order, top):
    (r,) = DocumentAggregator(method=method)([RANKING])
    assert r.docids == order and r.candidates[0].score == top
    a = next(c for c in r.candidates if c.docid == "A")
    assert a.doc.text == "A part 3" and a.doc.meta["start"] == 30  # the best passage's text and offsets
    assert [p["docid"] for p in a.doc.meta["passages"]] == ["A#3", "A#0"]
    assert a.scores()["bm25"] == 9.0  # the passage score stays in the history


def test_documents_stage_in_yaml_and_k():
    job = parse_job(
        {
            "dataset": {"builtin": "demo"},
            "pipelines": {"p": [{"bm25": {"k": 10}}, {"documents": {"method": "sump", "k": 2}}]},
        }
    )
    from rerankflow.pipelines.runner import build_job

    _, pipes = build_job(job, __import__("pathlib").Path.cwd())
    (r,) = pipes["p"]([Ranking(Query("q", "document length normalisation"))])
    assert len(r.candidates) == 2  # demo passages are their own documents


# -- datasets, serving -------------------------------------------------------------------------------


def test_dataset_index_rules(tmp_path):
    with pytest.raises(ValueError, match="an index brings its own documents"):
        DatasetSpec(index="ix", builtin="demo")
    assert DatasetSpec(index="ix").index == "ix"  # an index alone is enough to serve


def test_job_over_an_index_runs_topics_and_refuses_to_run_without(tmp_path):
    from rerankflow.pipelines.runner import run_job

    write_corpus(tmp_path / "src")
    update_index([tmp_path / "src"], tmp_path / "ix", IndexSettings(encoder=None), encoder=WordEncoder())
    (tmp_path / "topics.tsv").write_text("1\tdaemon port\n")
    job = parse_job({"dataset": {"index": "ix", "topics": "topics.tsv"},
                     "pipelines": {"docs": [{"bm25": {"k": 5}}, {"documents": {"method": "maxp"}}]}})  # fmt: skip
    result = run_job(job, tmp_path, tmp_path / "out", use_cache=False)
    (ranking,) = result.result.systems[0].rankings
    assert ranking.docids[0] == "src/guides/install.md"
    with pytest.raises(ConfigError, match="no queries to run"):
        run_job(parse_job({"dataset": {"index": "ix"}, "pipelines": {"p": [{"bm25": {}}]}}), tmp_path, use_cache=False)
    with pytest.raises(ConfigError, match="built without dense vectors"):
        job = parse_job({"dataset": {"index": "ix", "topics": "topics.tsv"}, "pipelines": {"p": [{"dense": {}}]}})
        run_job(job, tmp_path, tmp_path / "out2", use_cache=False)


def test_chat_requests_carry_a_filter_and_answers_name_locations():
    body = ChatRequest.model_validate(
        {"model": "rag", "messages": [{"role": "user", "content": "q"}], "filter": {"tags": "setup"}}
    )
    assert body.filter == {"tags": "setup"}
    doc = Document("a.md#1", "t", None, {"doc_id": "a.md", "source": "a.md", "start": 5, "end": 9, "other": 1})
    assert location(doc) == {"doc_id": "a.md", "source": "a.md", "start": 5, "end": 9}


@pytest.mark.parametrize(
    ("host", "env", "allow", "ok"),
    [("127.0.0.1", None, False, True), ("::1", None, False, True), ("localhost", None, False, True),
     ("0.0.0.0", None, False, False), ("example.org", None, False, False), ("0.0.0.0", "k", False, True),
     ("0.0.0.0", None, True, True)],
)  # fmt: skip
def test_non_loopback_serving_needs_a_key_or_an_explicit_opt_in(monkeypatch, host, env, allow, ok):
    monkeypatch.delenv("RF_TEST_KEY", raising=False)
    if env:
        monkeypatch.setenv("RF_TEST_KEY", env)
    spec = ServeSpec(host=host, api_key_env="RF_TEST_KEY", allow_unauthenticated=allow)
    if ok:
        check_exposure(spec)
    else:
        with pytest.raises(ConfigError, match="without an API key.*allow_unauthenticated"):
            check_exposure(spec)


def test_cli_serve_refuses_an_open_address(tmp_path, capsys):
    from rerankflow.cli.main import main

    (tmp_path / "job.yaml").write_text(
        "dataset: {builtin: demo}\npipelines:\n  p: [{bm25: {}}]\nserve: {api_key_env: RF_NOT_SET_ANYWHERE}\n"
    )
    assert main(["serve", str(tmp_path / "job.yaml"), "--host", "0.0.0.0"]) == 2
    assert "without an API key" in capsys.readouterr().err


def test_citations_name_the_document_file_and_offsets():
    from rerankflow.serve.protocol import passages
    from rerankflow.types import Answer, Citation

    doc = Document("a.md#1", "t", None, {"doc_id": "a.md", "source": "src/a.md", "start": 5, "end": 9, "heading": "H"})
    answer = Answer("It is so [1][2].", (Citation(1, "a.md#1"), Citation(2, None)), (doc,))
    out = passages(Ranking(Query("q", "x"), (Candidate(doc, 1.0),), answer))
    assert out["citations"] == [
        {"number": 1, "docid": "a.md#1", "doc_id": "a.md", "source": "src/a.md", "start": 5, "end": 9, "heading": "H"},
        {"number": 2, "docid": None},
    ]
    assert out["documents"][0]["source"] == "src/a.md" and out["documents"][0]["cited"]


def test_a_bad_chat_filter_is_a_400_naming_it():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown operator 'near'"):
        ChatRequest.model_validate(
            {"model": "rag", "messages": [{"role": "user", "content": "q"}], "filter": {"x": {"near": 1}}}
        )


def test_an_approximate_index_above_the_threshold_answers_like_exact_search(tmp_path):
    from rerankflow.retrievers.dense import DenseRetriever

    write_corpus(tmp_path / "src")
    settings = IndexSettings(encoder="all-minilm-l6-v2", chunking=ChunkSettings(12, 3), ann_threshold=5)
    report = update_index([tmp_path / "src"], tmp_path / "ix", settings, encoder=WordEncoder())
    assert report.ann and json.loads((tmp_path / "ix" / "manifest.json").read_text())["ann"]["kind"] == "hnsw"
    ix = open_index(tmp_path / "ix")
    assert ix.ann is not None and ix.ann.ntotal == len(ix.chunks)
    approx = DenseRetriever(ix.chunks, WordEncoder(), k=3, embeddings=ix.embeddings, ann=ix.ann)
    exact = DenseRetriever(ix.chunks, WordEncoder(), k=3, embeddings=ix.embeddings)
    for q in ("daemon port", "invoices month", "zebras savanna"):
        a, e = approx.retrieve([Query("q", q)])[0], exact.retrieve([Query("q", q)])[0]
        assert a.docids == e.docids  # a handful of vectors: HNSW finds the exact neighbours
    again = update_index([tmp_path / "src"], tmp_path / "ix", encoder=WordEncoder())
    assert not again.ann and open_index(tmp_path / "ix").ann is not None  # nothing changed: the ANN index is kept


def test_a_hidden_source_folder_is_read_but_hidden_files_inside_are_not(tmp_path):
    (tmp_path / ".notes" / ".git").mkdir(parents=True)
    (tmp_path / ".notes" / "a.md").write_text("# A\n\nalpha text\n")
    (tmp_path / ".notes" / ".git" / "b.md").write_text("# B\n\nbeta text\n")
    report = build([tmp_path / ".notes"], tmp_path / "ix")
    assert report.added == [".notes/a.md"]


def test_the_summary_names_changed_and_removed_documents_and_counts_the_rest(tmp_path):
    from rerankflow.index.update import NAMES_SHOWN, IndexReport

    report = IndexReport(added=[f"a{i}" for i in range(NAMES_SHOWN + 3)], changed=["c.md"], removed=["gone\n.md"])
    text = report.summary()
    assert "added: a0, a1" in text and "(+3 more)" in text and "changed: c.md" in text
    assert "removed: gone\\n.md" in text  # printed on one line
