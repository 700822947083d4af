"""HF transformers backend (CPU or GPU): batched, length-sorted, left-padded forward passes.

Label scoring computes logits for the last position only (``logits_to_keep=1``), never the
full vocabulary for every position; continuation scoring keeps only the continuation's
positions. bf16 and SDPA attention on GPU, float32 on CPU unless ``dtype`` says otherwise;
``compile=True`` runs scoring through ``torch.compile`` (see docs/benchmarks.md for its gain).
Greedy generation takes the static-cache decoder (:mod:`.hf_decode`, CUDA graphs on the GPU)
when ``decode`` is ``"static"``, or ``"auto"`` on a GPU; sampling, streaming and models with
sliding-window layers use ``generate``.
``model`` may be a packaged name, a HF id, a folder, or a ``.gguf`` file.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from ..coalesce import Coalescer
from ..errors import BackendError, MissingDependencyError
from .hf_generation import HFGeneration
from .hf_scoring import HFOptions, plan_batches, prefix_groups
from .models import resolve_llm

log = logging.getLogger(__name__)

__all__ = ["HFBackend", "HFOptions", "plan_batches", "prefix_groups"]


class HFBackend(HFGeneration):
    """transformers ``AutoModelForCausalLM`` behind the backend protocol."""

    kind = "hf"

    Options = HFOptions
    options: HFOptions

    def __init__(
        self, model: str, *, revision: str | None = None, options: HFOptions | None = None, **settings: Any
    ) -> None:
        super().__init__(model, revision=revision)
        self.options = HFOptions.build(options, settings, f"hf backend {model!r}", BackendError)
        self.device = self.options.device
        """The device the model runs on (the option, or the one chosen at load)."""
        self._decoder: Any = None  # StaticDecoder when greedy generation takes the static path
        self.hf_model: Any = None
        self.tokenizer: Any = None
        self._scorer: Any = None  # the model's forward for scoring, compiled when ``compile``
        lock = threading.Lock()  # one forward pass or generate() at a time
        # a batch's time is shared by the tokens each item runs through the model
        self._score = Coalescer(self._score_batch, lock, weight=lambda item, _: len(item.ids))
        self._generate = Coalescer(self._generate_batch, lock)
        self._greedy = Coalescer(self._greedy_batch, lock, weight=lambda seq, _: len(seq))

    @classmethod
    def from_model(cls, hf_model: Any, tokenizer: Any, *, name: str, **options: Any) -> HFBackend:
        """A backend around a model and tokenizer already in memory (built from a config,
        fine-tuned in this process, ...); ``options`` are the constructor's batching options.
        """
        backend = cls(name, device=str(next(hf_model.parameters()).device), **options)
        backend.hf_model, backend.tokenizer = hf_model.eval(), tokenizer
        backend._ready()
        backend._loaded = True
        return backend

    def _ready(self) -> None:
        """Padding token and the scoring forward (``torch.compile`` with dynamic shapes fuses
        the normalisation, rotary and activation kernels; it compiles on the first batch)."""
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._scorer = self.hf_model
        if self.options.compile:
            import torch

            self._scorer = torch.compile(self.hf_model, dynamic=True)
        self._decoder = self._static_decoder()

    def load(self) -> None:
        """Load tokenizer and weights."""
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise MissingDependencyError("transformers and torch", "hf") from exc
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.options.dtype == "auto":
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        else:
            dtype = getattr(torch, self.options.dtype)
        path = resolve_llm(self.model)
        kwargs: dict[str, Any] = {"revision": self.revision, "trust_remote_code": self.options.trust_remote_code}
        if path.endswith(".gguf"):
            folder, kwargs["gguf_file"] = str(Path(path).parent), Path(path).name
        else:
            folder = path
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
            self.hf_model = AutoModelForCausalLM.from_pretrained(
                folder, dtype=dtype, attn_implementation=self.options.attn_implementation, **kwargs
            )
        except (OSError, ValueError) as exc:
            raise BackendError(f"transformers could not load {self.model!r}: {exc}") from exc
        self.hf_model.to(device).eval()
        self._ready()
        self.device = device
        log.info("loaded %s on %s (%s)", self.model, device, dtype)
