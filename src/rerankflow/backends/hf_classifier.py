"""Cross-encoders and sequence classifiers through transformers directly, packed for the GPU.

:class:`HFClassifierModel` scores (query, passage) pairs with ``AutoModelForSequenceClassification``
as sentence-transformers' ``CrossEncoder.predict`` does (the same pair tokenisation with
``longest_first`` truncation at ``max_length``, the same activation: the one the model's
config names, else a sigmoid for one label), but batches the way the LLM pointwise path does:
every pair is tokenised once, pairs are grouped longest first so that a batch's padded size
(rows x its longest pair) stays within ``max_batch_tokens``, and the model runs in bfloat16
on a GPU (float32 on the CPU) with SDPA attention and, when asked, ``torch.compile``.
``CrossEncoder.predict`` pads batches of a fixed row count (32) sorted by characters, so short
pairs leave the GPU underfed and long ones pad to the longest of 32.

sentence-transformers stays the reference: the tests compare the two in float32 on the CPU.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..errors import BackendError, MissingDependencyError
from .cross_encoder import CrossEncoderModelOptions
from .hf_scoring import plan_batches
from .models import model_identity

ACTIVATIONS = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.Identity": "identity",
}


class HFClassifierOptions(CrossEncoderModelOptions):
    """How the transformers classifier path runs a cross-encoder."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on a GPU, float32 on the CPU"
    )
    max_batch_tokens: int = Field(32768, ge=1, description="padded tokens per forward pass")
    max_batch_size: int = Field(512, ge=1, description="pairs per forward pass at most")
    compile: bool = Field(False, description="torch.compile the forward pass (dynamic shapes)")
    attn_implementation: str = Field("sdpa", description="transformers' attention implementation")


def activation_of(folder: Path, num_labels: int) -> str:
    """The activation sentence-transformers applies to this model's logits: the one its
    config names (``sentence_transformers.activation_fn`` in config.json, the older
    ``sbert_ce_default_activation_function``, or ``activation_fn`` in
    config_sentence_transformers.json), else sigmoid for one label and identity for more."""
    named: str | None = None
    config = folder / "config.json"
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        named = (data.get("sentence_transformers") or {}).get("activation_fn") or data.get(
            "sbert_ce_default_activation_function"
        )
    st_config = folder / "config_sentence_transformers.json"
    if named is None and st_config.is_file():
        named = json.loads(st_config.read_text(encoding="utf-8")).get("activation_fn")
    if named is not None:
        if named not in ACTIVATIONS:
            raise BackendError(
                f"activation {named!r} of {folder} is not one this path knows ({', '.join(ACTIVATIONS)})"
            )
        return ACTIVATIONS[named]
    return "sigmoid" if num_labels == 1 else "identity"


class HFClassifierModel:
    """Scores text pairs with a sequence classifier (see the module docstring); a local folder
    (or a HF id when online). Same interface as :class:`~.cross_encoder.CrossEncoderModel`."""

    Options = HFClassifierOptions
    options: HFClassifierOptions

    def __init__(self, model: str, *, options: HFClassifierOptions | None = None, **settings: Any) -> None:
        self.model = model
        self.options = HFClassifierOptions.build(options, settings, f"classifier {model!r}", BackendError)
        self._net: Any = None
        self._forward: Any = None
        self.tokenizer: Any = None
        self.device = "cpu"
        self.activation = "identity"

    def load(self) -> None:
        """Load tokenizer and model (once)."""
        if self._net is not None:
            return
        try:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as exc:
            raise MissingDependencyError("transformers", "hf") from exc
        o = self.options
        self.device = o.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = o.dtype if o.dtype != "auto" else ("bfloat16" if self.device.startswith("cuda") else "float32")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model, trust_remote_code=o.trust_remote_code)
            net = AutoModelForSequenceClassification.from_pretrained(
                self.model,
                dtype=getattr(torch, dtype),
                attn_implementation=o.attn_implementation,
                trust_remote_code=o.trust_remote_code,
            )
        except (OSError, ValueError) as exc:
            raise BackendError(
                f"could not load classifier {self.model!r}: {exc} (give a local folder when offline)"
            ) from exc
        if net.config.num_labels != 1:
            raise BackendError(
                f"classifier {self.model!r} has {net.config.num_labels} labels; a cross-encoder gives one score (one label)"
            )
        self._net = net.to(self.device).eval()
        self._forward = torch.compile(self._net, dynamic=True) if o.compile else self._net
        folder = Path(self.model)
        self.activation = activation_of(folder, 1) if folder.is_dir() else "sigmoid"

    def tokenized(self, pairs: Sequence[tuple[str, str]]) -> dict[str, list[list[int]]]:
        """Every pair's token ids (and type ids, attention mask), unpadded, cut as sentence-transformers cuts."""
        limit = self.options.max_length or self.tokenizer.model_max_length
        return dict(
            self.tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation="longest_first", max_length=limit)
        )

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One score per pair, in input order (higher is more relevant)."""
        if not pairs:
            return []
        self.load()
        import torch

        features = self.tokenized(pairs)
        lengths = [len(ids) for ids in features["input_ids"]]
        scores = [0.0] * len(pairs)
        o = self.options
        with torch.inference_mode():
            for batch in plan_batches(lengths, o.max_batch_tokens, o.max_batch_size):
                rows = self.tokenizer.pad(
                    {k: [v[i] for i in batch] for k, v in features.items()}, padding=True, return_tensors="pt"
                )
                logits = self._forward(**{k: t.to(self.device) for k, t in rows.items()}).logits.float()
                if self.activation == "sigmoid":
                    logits = torch.sigmoid(logits)
                for i, v in zip(batch, logits[:, 0].tolist(), strict=True):
                    scores[i] = float(v)
        return scores

    @property
    def identity(self) -> str:
        """What the scores depend on (a stage-cache key part)."""
        o = self.options
        return f"hf-classifier:{model_identity(self.model)}:max_length={o.max_length}:dtype={o.dtype}"

    def __repr__(self) -> str:
        return f"HFClassifierModel({self.model!r})"


def local_pair_scorer(path: str, engine: str, options: HFClassifierOptions) -> Any:
    """The scorer of a local cross-encoder by ``engine``: ``hf`` (this module), ``sentence-transformers``
    (``CrossEncoder``), or ``auto``: this module on a GPU, sentence-transformers on the CPU."""
    from .cross_encoder import CrossEncoderModel

    if engine == "auto":
        device = options.device
        if device is None:
            try:
                import torch
            except ImportError as exc:
                raise MissingDependencyError("torch", "hf") from exc
            device = "cuda" if torch.cuda.is_available() else "cpu"
        engine = "hf" if device.startswith("cuda") else "sentence-transformers"
    if engine == "hf":
        return HFClassifierModel(path, options=options)
    return CrossEncoderModel(path, options=options.pick(CrossEncoderModelOptions))
