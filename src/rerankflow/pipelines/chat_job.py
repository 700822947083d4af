"""The job ``rerankflow serve INDEX_FOLDER`` serves: chat over an index without writing a YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..index.store import read_manifest
from .job import Job, parse_job

DEFAULT_MODEL = "smollm2-135m-instruct"
"""The packaged 135M chat model: it runs anywhere, answers poorly; pass a real one with --llm."""


def index_chat_job(folder: str | Path, *, model: str = DEFAULT_MODEL, backend: str = "hf") -> Job:
    """The job of :func:`index_chat_data`, validated."""
    return parse_job(index_chat_data(folder, model=model, backend=backend))


def index_chat_data(folder: str | Path, *, model: str = DEFAULT_MODEL, backend: str = "hf") -> dict[str, Any]:
    """A job serving one pipeline, ``rag``, over the index in ``folder``: small talk answered
    without search (``gate``), a follow-up searched together with the user's previous message
    (``condense``, mode ``user_turns``: no model call), BM25 and (when the index holds vectors)
    dense retrieval fused by RRF, the top three passages, an answer from ``model`` on
    ``backend`` that sees the conversation; ``rerankflow serve FOLDER --print-job`` prints it
    to save and edit."""
    folder = Path(folder).resolve()
    manifest = read_manifest(folder)
    if manifest is None:
        raise ConfigError(
            "not an index folder (no manifest); make one with: rerankflow index SOURCE... -o FOLDER", file=folder
        )
    encoder = manifest["settings"]["encoder"]
    bm25: dict[str, Any] = {"bm25": {"k": 20}}
    first = [bm25] if encoder is None else [{"rrf": {"inputs": [[bm25], [{"dense": {"model": encoder, "k": 20}}]]}}]
    return {
        "name": folder.name,
        "dataset": {"index": str(folder)},
        "pipelines": {
            "rag": [
                "gate",
                {"condense": {"mode": "user_turns", "turns": 2}},
                *first,
                {"cutoff": {"k": 3}},
                {"generate": {"backend": {"kind": backend, "model": model}, "max_tokens": 256}},
            ]
        },
    }
