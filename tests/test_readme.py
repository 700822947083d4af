"""The README's Python example runs as written (examples drift otherwise)."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the README examples, which load real models

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block.replace('result.write("runs/mine")', "pass"), "README.md", "exec"), namespace)
    assert len(namespace["rankings"]) == 1 and len(namespace["rankings"][0]) == 10
    assert repr(namespace["pipeline"]).startswith("((BM25Retriever(")
    answer = namespace["answered"].answer  # the RAG block ran a real generator
    assert answer.text and set(answer.cited_docids) <= {d.docid for d in answer.context}
    assert 0 < answer.context_tokens <= 120 + 5 * len(answer.context)  # + the "[n] " markers
    out = capsys.readouterr().out
    assert "hybrid" in out and "nDCG@10" in out
