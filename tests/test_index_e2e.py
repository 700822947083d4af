"""Your own documents end to end, with real parts: `rerankflow index` (a subprocess) reads a
folder of Markdown, HTML, a PDF the test writes and a JSONL file, chunks with MiniLM's
tokenizer and encodes with MiniLM; `rerankflow serve` (a subprocess) answers with SmolLM2 on the
HF backend; the official `openai` client asks. Then a file is added and one deleted, the index
is updated incrementally, and a killed indexing run is shown to leave the previous index."""

import json
import os
import signal
import subprocess
import sys
import time

import openai
import pytest

from rerankflow.index import open_index
from rerankflow.index.extract import read_source

from .support.servers import free_port, server_process

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "rerankflow.cli.main"]


def index(*args, cwd):
    done = subprocess.run([*CLI, "-q", "index", *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def write_sources(root):
    fpdf = pytest.importorskip("fpdf")
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "guide.md").write_text(
        "---\ntitle: Daemon guide\ntags: [ops]\ndate: 2025-05-01\n---\n# Daemon\n\n"
        "The frobnicator daemon listens on port 7312 and writes its log to /var/log/frob.\n\n"
        "## Restarting\n\nRestart the daemon with systemctl after every configuration change.\n"
    )
    (root / "docs" / "faq.html").write_text(
        "<html><head><title>FAQ</title><script>track()</script></head><body><h1>FAQ</h1>"
        "<p>Invoices are e-mailed on the first working day of each month.</p></body></html>"
    )
    pdf = fpdf.FPDF()
    pdf.set_font("helvetica", size=12)
    pdf.add_page()
    pdf.multi_cell(0, 10, "Quarterly report. Revenue grew by eleven percent thanks to the walrus product line.")
    pdf.add_page()
    pdf.multi_cell(0, 10, "The octopus division was closed in September.")
    pdf.set_title("Q3 report")
    pdf.output(str(root / "report.pdf"))
    records = [
        {"id": "kb-1", "text": "Zebras at the city zoo are fed at noon.", "team": "zoo"},
        {"id": "kb-2", "text": "The zoo's giraffes moved to the new enclosure in June.", "team": "zoo"},
    ]
    (root / "kb.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "broken.pdf").write_bytes(b"%PDF-1.7 this file was cut off")


def job_yaml(smollm2):
    return f"""
name: mydocs
dataset: {{index: ix}}
pipelines:
  rag:
    - rrf:
        inputs:
          - [bm25: {{k: 10}}]
          - [dense: {{model: all-minilm-l6-v2, k: 10}}]
    - cutoff: {{k: 3}}
    - generate: {{backend: {{kind: hf, model: {smollm2}}}, max_tokens: 16}}
"""


def serve(folder, tag):
    port = free_port()
    cmd = [*CLI, "serve", str(folder / "job.yaml"), "--port", str(port)]
    return server_process(cmd, f"http://127.0.0.1:{port}/readyz", folder / f"server-{tag}.log"), port


def ask(port, question, **extra):
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
    resp = client.chat.completions.create(
        model="rag", messages=[{"role": "user", "content": question}], extra_body=extra or None
    )
    return resp.model_extra["rerankflow"]


def check_locations(root, documents):
    """Every passage names its file and offsets, and those offsets slice that file's text."""
    for d in documents:
        path = root / d["source"].removeprefix("src/")
        extracted = next(x for x in read_source(path, d["source"]) if x.doc_id == d["doc_id"])
        assert extracted.text[d["start"] : d["end"]] == d["text"]


def test_index_serve_ask_update_and_delete(tmp_path, smollm2):
    src = tmp_path / "src"
    write_sources(src)
    out = index("src", "-o", "ix", cwd=tmp_path)
    assert "documents: 5 added" in out and "src/broken.pdf: cannot read the PDF" in out
    (tmp_path / "job.yaml").write_text(job_yaml(smollm2))

    running, port = serve(tmp_path, "first")
    with running:
        found = ask(port, "Which product line made revenue grow?")
        top = found["documents"][0]
        assert (top["source"], top["doc_id"], top["page"]) == ("src/report.pdf", "src/report.pdf", 1)
        check_locations(src, found["documents"])
        for c in found["citations"]:  # what the model cited (if anything) names file and offsets too
            if c["docid"] is not None:
                assert {"source", "start", "end"} <= set(c)
        found = ask(port, "When is the daemon restarted?")
        assert found["documents"][0]["source"] == "src/docs/guide.md"
        assert found["documents"][0]["heading"] == "Daemon > Restarting"
        check_locations(src, found["documents"])
        only_zoo = ask(port, "When is the daemon restarted?", filter={"team": "zoo"})
        assert {d["doc_id"] for d in only_zoo["documents"]} <= {"kb-1", "kb-2"} and only_zoo["documents"]
        in_docs = ask(port, "zebras giraffes revenue", filter={"source": {"glob": "src/docs/*"}})
        assert {d["source"] for d in in_docs["documents"]} <= {"src/docs/guide.md", "src/docs/faq.html"}

    (src / "docs" / "lighthouse.md").write_text(
        "# Lighthouse\n\nThe lighthouse keeper feeds the cormorants on Fridays.\n"
    )
    out = index("src", "-o", "ix", cwd=tmp_path)
    assert "documents: 1 added, 0 changed, 0 removed, 5 unchanged" in out and "chunks: 1 new" in out
    running, port = serve(tmp_path, "added")
    with running:
        found = ask(port, "Who feeds the cormorants?")
        assert found["documents"][0]["source"] == "src/docs/lighthouse.md"

    (src / "docs" / "lighthouse.md").unlink()
    out = index("src", "-o", "ix", cwd=tmp_path)
    assert "0 added, 0 changed, 1 removed" in out
    gone = open_index(tmp_path / "ix")  # what the next server start opens (serving was shown above)
    assert "src/docs/lighthouse.md" not in {c.meta["source"] for c in gone.chunks}
    assert len({c.meta["doc_id"] for c in gone.chunks}) == 5


def test_a_killed_index_run_leaves_the_previous_index_answering(tmp_path, minilm):
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "a.md").write_text("# Alpha\n\nThe alpha document talks about kestrels.\n")
    index("small", "-o", "ix", cwd=tmp_path)
    before = open_index(tmp_path / "ix")
    paragraph = " ".join(f"word{i} falcon harrier osprey" for i in range(40))
    for i in range(150):
        (tmp_path / "small" / f"bulk{i:03d}.md").write_text(f"# Bulk {i}\n\n" + "\n\n".join([paragraph] * 8))
    proc = subprocess.Popen([*CLI, "-q", "index", "small", "-o", "ix"], cwd=tmp_path, start_new_session=True)
    deadline = time.time() + 300
    while not list((tmp_path / "ix" / "segments").glob(".tmp-*/chunks.jsonl")):  # encoding has started
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be interrupted"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    after = open_index(tmp_path / "ix")
    assert [c.docid for c in after.chunks] == [c.docid for c in before.chunks] == ["small/a.md#0"]
    for i in range(150):
        (tmp_path / "small" / f"bulk{i:03d}.md").unlink()
    (tmp_path / "small" / "b.md").write_text("# Beta\n\nThe beta document talks about ospreys.\n")
    out = index("small", "-o", "ix", cwd=tmp_path)
    assert "documents: 1 added, 0 changed, 0 removed, 1 unchanged" in out
    assert not list((tmp_path / "ix" / "segments").glob(".tmp-*"))  # the killed run's leftovers are gone
    assert sorted(c.docid for c in open_index(tmp_path / "ix").chunks) == ["small/a.md#0", "small/b.md#0"]


def test_batched_token_counts_equal_single_counts_even_after_encoding(minilm):
    """The chunker's batched counts use the tokenizer's Rust core, whose truncation and padding an
    earlier encode() leaves switched on: the counts must still equal one-text counts, and the
    encoder's own settings must come back."""
    import random
    import string

    from rerankflow.index.chunking import Chunker, ChunkSettings
    from rerankflow.index.extract import SourceDocument

    rng = random.Random(3)
    texts = ["", " ", "word" * 1000] + [
        "".join(rng.choices(string.ascii_letters + " .,\n\u00e9\u4e2d", k=rng.randint(0, 3000))) for _ in range(100)
    ]
    minilm.encode(["a long text " * 300, "short"])
    core = minilm._st.tokenizer.backend_tokenizer
    before = (core.truncation, core.padding)
    assert before[0] is not None and before[1] is not None  # what encode() leaves behind
    batched_counts = minilm.count_tokens_many(texts)
    assert (core.truncation, core.padding) == before
    assert batched_counts == [minilm.count_tokens(t) for t in texts]
    text = " ".join(texts[3:])
    plain = Chunker(ChunkSettings(), minilm.count_tokens).chunks(SourceDocument("d", "d", text))
    batched = Chunker(ChunkSettings(), minilm.count_tokens, minilm.count_tokens_many).chunks(
        SourceDocument("d", "d", text)
    )
    assert [c.text for c in plain] == [c.text for c in batched]
