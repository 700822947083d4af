"""The README's and the guide's Python examples run as written, and the README's command table
is the CLI's (examples and tables drift otherwise)."""

import re
from pathlib import Path

import pytest

from rerankflow.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "guide.md"


def _run_blocks(path: Path) -> dict:
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)
    assert len(blocks) >= 2, f"{path.name} lost its Python examples"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block.replace('result.write("runs/mine")', "pass"), str(path), "exec"), namespace)
    return namespace


@pytest.mark.slow  # loads real models
def test_readme_python_blocks_run(capsys):
    ns = _run_blocks(README)
    assert [c.docid for c in ns["ranking"].candidates] and {c.docid for c in ns["ranking"].candidates} == {"d0", "d1"}
    assert len(ns["rankings"]) == 1 and len(ns["rankings"][0]) == 10
    shown = "((BM25Retriever() % 50) >> (BiEncoderReranker(SentenceTransformerEncoder('all-minilm-l6-v2')) % 10))"
    assert repr(ns["pipeline"]) == shown
    answer = ns["answered"].answer  # the RAG block ran a real generator
    assert answer.text and set(answer.cited_docids) <= {d.docid for d in answer.context}
    assert 0 < answer.context_tokens <= 120 + 5 * len(answer.context)  # + the "[n] " markers
    out = capsys.readouterr().out
    assert "hybrid" in out and "nDCG@10" in out


@pytest.mark.slow  # loads real models
def test_guide_python_blocks_run(capsys):
    ns = _run_blocks(GUIDE)
    assert len(ns["rankings"]) == 1 and len(ns["rankings"][0]) == 10
    assert "nDCG@10" in capsys.readouterr().out


def test_readme_command_table_is_the_cli():
    """Every subcommand appears in the README's table and the table names no other."""
    table = re.search(r"## Commands\n(.*?)\n\n", README.read_text(), flags=re.S)
    assert table, "the README lost its ## Commands table"
    listed = set(re.findall(r"^\| `rerankflow (\w+)", table.group(1), flags=re.M))
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert listed == set(sub.choices)


def test_readme_and_guide_links_resolve():
    for doc in (README, GUIDE):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
