"""Encoder-decoder rerankers (MonoT5 and kin) on transformers: label log-probabilities at the
first decoder step.

The encoder reads the prompt (plain text; a T5 tokenizer appends ``</s>``), the decoder starts
from the model's ``decoder_start_token_id`` and the log-softmax of its first step's logits gives
each label's log-probability, as MonoT5 is scored (Nogueira et al., 2020: ``true`` against
``false``). Only label scoring is offered: these checkpoints are not used to generate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pydantic import Field

from ..coalesce import shares
from ..errors import BackendError, MissingDependencyError
from ..options import Options
from . import tokens
from .base import LLMBackend
from .models import resolve_llm
from .types import Completion, ContinuationScores, GenerationParams, LabelScores, Prompt

log = logging.getLogger(__name__)


class Seq2SeqOptions(Options):
    """How transformers runs an encoder-decoder scorer (MonoT5, DuoT5)."""

    device: str | None = Field(None, description="cpu, cuda, ... (default: cuda when there is one)")
    dtype: str = Field("float32", description="a torch dtype name")
    batch_size: int = Field(32, ge=1, description="prompts per forward pass")
    max_length: int = Field(512, ge=8, description="prompts are cut at the end to this many tokens")


class HFSeq2SeqBackend(LLMBackend):
    """transformers ``AutoModelForSeq2SeqLM`` scoring labels at the first decoder step."""

    kind = "hf_seq2seq"

    Options = Seq2SeqOptions
    options: Seq2SeqOptions

    def __init__(
        self, model: str, *, revision: str | None = None, options: Seq2SeqOptions | None = None, **settings: Any
    ) -> None:
        super().__init__(model, revision=revision)
        self.options = Seq2SeqOptions.build(options, settings, f"hf_seq2seq backend {model!r}", BackendError)
        self.device = self.options.device
        """The device the model runs on (the option, or the one chosen at load)."""
        self.hf_model: Any = None

    def load(self) -> None:
        """Load tokenizer and weights."""
        try:
            import torch
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
        except ImportError as exc:
            raise MissingDependencyError("transformers and torch", "hf") from exc
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        folder = resolve_llm(self.model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, revision=self.revision)
            self.hf_model = AutoModelForSeq2SeqLM.from_pretrained(
                folder, revision=self.revision, dtype=getattr(torch, self.options.dtype)
            )
        except (OSError, ValueError) as exc:
            raise BackendError(f"transformers could not load {self.model!r}: {exc}") from exc
        self.hf_model.to(device).eval()
        self.device = device
        log.info("loaded %s (encoder-decoder) on %s", self.model, device)

    def _texts(self, prompts: list[Prompt]) -> list[str]:
        if any(p.text is None for p in prompts):
            raise BackendError(
                f"{self.model!r} is an encoder-decoder scorer that reads plain text; use a template with "
                "chat_format: raw (e.g. the monot5 preset's)"
            )
        return [str(p.text) for p in prompts]

    @property
    def _encoding(self) -> dict[str, Any]:
        """How prompts are encoded: special tokens added, cut at ``max_length`` from the end."""
        return {"truncation": True, "max_length": self.options.max_length}

    def engine_ids(self, prompts: list[Prompt]) -> list[list[int]]:
        """The token ids the model reads for each prompt (what :meth:`label_logprobs` feeds it,
        before padding)."""
        self.ensure_loaded()
        return [list(ids) for ids in self.tokenizer(self._texts(prompts), **self._encoding)["input_ids"]]

    def _score(self, texts: list[str], label_ids: list[int]) -> tuple[list[list[float]], list[int]]:
        """Label log-probabilities at the first decoder step, batch by batch (prompts longer than
        ``max_length`` tokens are cut at the end, as the T5 rerankers' own code does), and each
        prompt's token count."""
        import torch

        start = self.hf_model.config.decoder_start_token_id
        out: list[list[float]] = []
        lengths: list[int] = []
        for i in range(0, len(texts), self.options.batch_size):
            enc = self.tokenizer(
                texts[i : i + self.options.batch_size], padding=True, return_tensors="pt", **self._encoding
            )
            enc = enc.to(self.device)
            decoder = torch.full((enc["input_ids"].shape[0], 1), start, dtype=torch.long, device=self.device)
            with torch.inference_mode():
                logits = self.hf_model(**enc, decoder_input_ids=decoder).logits[:, 0, :]
                logp = torch.log_softmax(logits.float(), dim=-1)[:, label_ids]
            out.extend(logp.cpu().tolist())
            lengths.extend(int(n) for n in enc["attention_mask"].sum(dim=1).tolist())
        return out, lengths

    async def _alabel_logprobs(
        self, prompts: list[Prompt], labels: list[str], after: int, context: str | None
    ) -> list[LabelScores]:
        if after:
            raise BackendError("an encoder-decoder scorer reads labels at the first decoder step only (after: 0)")
        texts = self._texts(prompts)
        ids = tokens.label_ids(self.tokenizer, labels, context)
        started = time.perf_counter()
        values, lengths = await asyncio.to_thread(self._score, texts, ids)
        spent = shares(time.perf_counter() - started, lengths)
        return [
            LabelScores(dict(zip(labels, v, strict=True)), self.stats(n, 1, latency))
            for v, n, latency in zip(values, lengths, spent, strict=True)
        ]

    async def _agenerate(self, prompts: list[Prompt], params: GenerationParams) -> list[Completion]:
        raise BackendError(f"{self.model!r} runs as an encoder-decoder scorer: it scores labels, it does not generate")

    async def _acontinuation_logprobs(
        self, prompts: list[Prompt], continuations: list[str]
    ) -> list[ContinuationScores]:
        raise BackendError(f"{self.model!r} runs as an encoder-decoder scorer: it scores labels only")
