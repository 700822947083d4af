"""Prompt rendering and tokenisation shared by the backends that hold a HF tokenizer."""

from __future__ import annotations

from typing import Any

from ..errors import BackendError
from .types import Prompt


def render(tokenizer: Any, prompt: Prompt) -> str:
    """Prompt text: raw text as is, chat messages through the model's own chat template; then
    the prompt's repairs over the whole text."""
    if prompt.text is not None:
        text = prompt.text
    else:
        if not getattr(tokenizer, "chat_template", None):
            raise BackendError(
                "this model's tokenizer has no chat template; send raw-text prompts (Prompt.raw) instead"
            )
        messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
        text = str(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    return repaired(text, prompt.repairs)


def repaired(text: str, repairs: tuple[str, ...]) -> str:
    """``text`` with each repair applied in order (see :data:`~rerankflow.backends.types.Repair`)."""
    for repair in repairs:
        if repair == "ftfy":
            from ftfy import fix_text  # a core dependency

            text = fix_text(text)
        elif repair == "drop_unk":
            text = text.replace("<unk>", "")
        else:
            raise BackendError(f"unknown prompt repair {repair!r}; known: ftfy, drop_unk")
    return text


def prompt_ids_many(tokenizer: Any, prompts: list[Prompt]) -> list[list[int]]:
    """Token ids of each prompt as the engine receives them: the rendered text encoded with
    or without the tokenizer's special tokens (:attr:`Prompt.adds_special_tokens`: raw text gets
    them, as a completions server adds them; a chat template holds its own), a capped prompt in
    three parts (:class:`~rerankflow.backends.types.TokenCap`). One tokenizer call per kind of
    prompt, so a fast tokenizer encodes the batch in parallel, off the Python thread.
    """
    out: list[list[int]] = [[] for _ in prompts]
    for special in (True, False):
        picked = [i for i, p in enumerate(prompts) if p.adds_special_tokens == special and p.cap is None]
        if picked:
            encoded = tokenizer([render(tokenizer, prompts[i]) for i in picked], add_special_tokens=special)
            for i, ids in zip(picked, encoded["input_ids"], strict=True):
                out[i] = list(ids)
    for i, p in enumerate(prompts):
        if p.cap is not None and p.text is not None:
            out[i] = capped_ids(tokenizer, p)
    return out


def capped_ids(tokenizer: Any, prompt: Prompt) -> list[int]:
    """The ids of a prompt with a :class:`~rerankflow.backends.types.TokenCap`: the text before
    and after the capped part encoded on their own without special tokens, the part itself with
    the prompt's special-token setting and cut (from its end) so that all fit ``max_tokens``."""
    cap, text = prompt.cap, prompt.text
    if cap is None or text is None:
        raise BackendError("capped_ids needs a raw prompt with a token cap")
    head = list(tokenizer(repaired(text[: cap.start], prompt.repairs), add_special_tokens=False)["input_ids"])
    tail = list(tokenizer(repaired(text[cap.end :], prompt.repairs), add_special_tokens=False)["input_ids"])
    middle = tokenizer(
        repaired(text[cap.start : cap.end], prompt.repairs), add_special_tokens=prompt.adds_special_tokens
    )
    room = cap.max_tokens - len(head) - len(tail)
    if room < 0:
        raise BackendError(f"the prompt's fixed parts alone are {len(head) + len(tail)} tokens, over {cap.max_tokens}")
    return head + list(middle["input_ids"])[:room] + tail


def label_ids(tokenizer: Any, labels: list[str], context: str | None = None) -> list[int]:
    """One token id per label; a label that is not exactly one token is an error. With a
    ``context``, the token a label is when it continues that text (``[`` then ``A``)."""
    ids = []
    before = list(tokenizer(context, add_special_tokens=False)["input_ids"]) if context else []
    for label in labels:
        toks = tokenizer((context or "") + label, add_special_tokens=False)["input_ids"]
        if context:
            if list(toks[: len(before)]) != before:
                raise BackendError(f"label {label!r} merges with the text before it ({context!r}) into other tokens")
            toks = toks[len(before) :]
        if len(toks) != 1:
            raise BackendError(
                f"label {label!r} is {len(toks)} tokens for this model; labels must be single tokens "
                "(try another spelling, e.g. with or without a leading space, or letters instead of numbers)"
            )
        ids.append(int(toks[0]))
    if len(set(ids)) != len(ids):
        raise BackendError(f"labels {labels} map to repeated token ids {ids}; use distinct labels")
    return ids


def end_ids(tokenizer: Any, model: Any = None) -> frozenset[int]:
    """Token ids that end a sequence: the tokenizer's and the model's generation config's."""
    found: set[int] = set()
    for value in (getattr(tokenizer, "eos_token_id", None),
                  getattr(getattr(model, "generation_config", None), "eos_token_id", None)):  # fmt: skip
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, list | tuple):
            found.update(int(v) for v in value)
    return frozenset(found)


def continuation_ids(tokenizer: Any, continuation: str) -> list[int]:
    """Token ids of a continuation (tokenised on its own, without special tokens)."""
    return list(tokenizer(continuation, add_special_tokens=False)["input_ids"])


def count(tokenizer: Any, text: str) -> int:
    """Number of tokens of ``text`` without special tokens."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def truncate_many(tokenizer: Any, texts: list[str], max_tokens: int) -> list[str]:
    """Longest prefix of each text within ``max_tokens`` tokens (cut at a token boundary);
    one tokenizer call for all texts."""
    if max_tokens < 0:
        raise BackendError(f"max_tokens must be >= 0, got {max_tokens}")
    if not texts:
        return []
    spans = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    out = []
    for text, offsets in zip(texts, spans, strict=True):
        if len(offsets) <= max_tokens:
            out.append(text)
        else:
            out.append(text[: offsets[max_tokens - 1][1]] if max_tokens > 0 else "")
    return out


def offsets(tokenizer: Any, text: str) -> list[tuple[int, int]]:
    """Character span of each token of ``text`` (no special tokens; as :func:`continuation_ids`)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [(int(a), int(b)) for a, b in enc["offset_mapping"]]
