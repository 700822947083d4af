"""The differential harness's shared parts: generated hostile inputs, tokenizers built offline that
behave like the real ones, a recording backend that keeps what the engine would receive, and the
scripted model answers both sides get.

Inputs are drawn by hypothesis as small integers (counts, seeds) and expanded with a seeded
``random.Random`` over :data:`PIECES`, so a case of 4,000 words costs hypothesis nothing to draw
and CI's derandomized profile draws the same cases every run.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from rerankflow.backends import tokens
from rerankflow.testing.fake import FakeBackend

PIECES = [
    "what’s", "“curly”", "‘quotes’", "cafÃ©", "â€œmojibakeâ€\x9d", "crÃ¨me", "AT&amp;T", "&lt;b&gt;", "&#39;",
    "ﬁnd", "ﬂow", "ＢＭ２５", "ｗｉｄｅ", "e\u0301", "n\u0303", "café", "naïve", "\x07", "\x1b[31m", "\x00",
    "😀", "👍🏽", "检索", "排序", "ランキング", "[3]", "[12]", "[1]", "<unk>", "</s>", "<s>", "<|user|>",
    "<think>", "\r\n", "\n", "\n\n", "\t", "  ", "\u200b", "\ufeff", "\u2028", "—", "…", "Title:", "Content:",
    "BM25", "ranks", "the", "query", "passage", "relevance", "document", "search", "a", "of", "and", "to",
    "is", "for", "in", "rank", "score", "model", "(2)", ">", "[", "]", "{", "}", "{query}", "%s", "\\n",
]  # fmt: skip
"""What users' corpora supply: curly quotes, mojibake, HTML entities, ligatures, full-width and NFD
characters, control characters, emoji, CJK, bracketed numbers, tokenizer markers, line breaks."""


def hostile_text(seed: int, words: int) -> str:
    """``words`` pieces of :data:`PIECES` (and random spacing) from ``seed``."""
    rng = random.Random(seed)
    out = []
    for _ in range(words):
        out.append(rng.choice(PIECES))
        out.append(rng.choice([" ", " ", " ", "", "\n", "  "]))
    return "".join(out)


word_counts = st.sampled_from([(0, 12)] * 5 + [(13, 400)] * 4 + [(401, 4000)]).flatmap(lambda r: st.integers(*r))
"""Passage lengths: empty to 4,000 words (half up to 12 words, one in ten over 400)."""


@st.composite
def passages(draw: Any, n: int, max_words: st.SearchStrategy[int] = word_counts) -> list[tuple[str | None, str]]:
    """``n`` (title or None, text) pairs of hostile text."""
    out = []
    for _ in range(n):
        title = None
        if draw(st.booleans()):
            title = hostile_text(draw(st.integers(0, 10**6)), draw(st.integers(0, 6)))
        out.append((title, hostile_text(draw(st.integers(0, 10**6)), draw(max_words))))
    return out


queries = st.builds(hostile_text, st.integers(0, 10**6), st.integers(1, 25))


def scripted_order(ids: list[str], contents: list[str]) -> list[str]:
    """The scripted model's ranking of the shown passages: by a hash of each passage's shown text
    (ties by identifier), the same on both sides whenever they show the same passages."""
    keyed = {i: hashlib.sha256(c.encode("utf-8", "surrogatepass")).hexdigest() for i, c in zip(ids, contents)}
    return sorted(keyed, key=lambda i: (keyed[i], i))


_SHOWN = re.compile(r"^\[([A-Za-z0-9]+)\] (.*)$", re.M)


def shown_passages(text: str) -> tuple[list[str], list[str]]:
    """Identifiers and texts of the ``[id] text`` lines of a rendered listwise prompt (first
    occurrence of each identifier)."""
    ids: list[str] = []
    contents: list[str] = []
    for m in _SHOWN.finditer(text):
        if m.group(1) not in ids:
            ids.append(m.group(1))
            contents.append(m.group(2))
    return ids, contents


def scripted_answer(text: str) -> str:
    """A listwise answer to a rendered prompt: ``[b] > [a] > ...`` in :func:`scripted_order`."""
    ids, contents = shown_passages(text)
    return " > ".join(f"[{i}]" for i in scripted_order(ids, contents))


def scripted_label_logprobs(text: str, labels: list[str]) -> dict[str, float]:
    """FIRST's answer to a rendered prompt: each label's log-probability by its passage's place
    in :func:`scripted_order` (best -0.0, then -1, ...)."""
    ids, contents = shown_passages(text)
    order = scripted_order(ids, contents)
    return {label: -float(order.index(label)) if label in order else -99.0 for label in labels}


class EngineRecorder(FakeBackend):
    """A scripted backend that holds a real tokenizer and records, per call, the rendered prompt
    text and the token ids an offline engine (HF, vLLM) would receive
    (:func:`rerankflow.backends.tokens.prompt_ids_many`); replies come from the scripted model
    applied to the rendered text."""

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(lambda p: scripted_answer(tokens.render(tokenizer, p)), labels=self._labels)
        self.tokenizer = tokenizer
        self.texts: list[str] = []
        self.ids: list[list[int]] = []
        self.messages: list[list[tuple[str, str]]] = []
        """Each prompt's chat messages as (role, content), or ``[("text", text)]`` for raw text."""

    def _labels(self, prompt: Any, labels: Any) -> dict[str, float]:
        return scripted_label_logprobs(tokens.render(self.tokenizer, prompt), list(labels))

    def _record(self, prompts: list[Any]) -> None:
        self.messages.extend(
            [(m.role, m.content) for m in p.messages] if p.messages else [("text", p.text)] for p in prompts
        )
        self.texts.extend(tokens.render(self.tokenizer, p) for p in prompts)
        self.ids.extend(tokens.prompt_ids_many(self.tokenizer, list(prompts)))

    async def _agenerate(self, prompts: Any, params: Any) -> Any:
        self._record(prompts)
        return await super()._agenerate(prompts, params)

    async def _alabel_logprobs(self, prompts: Any, labels: Any, after: Any, context: Any) -> Any:
        self._record(prompts)
        return await super()._alabel_logprobs(prompts, labels, after, context)


ZEPHYR_CHAT_TEMPLATE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
"""Zephyr-7B-β's published chat template (RankZephyr is fine-tuned from Zephyr-7B-β; its own
tokenizer files cannot be downloaded here)."""


def tiny_bos_tokenizer() -> Any:
    """A tiny fast tokenizer that adds ``<s>`` to text (as Mistral's does) with Zephyr's chat
    template, built in memory with the tokenizers library (for fast tests)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "what's", "what’s", "bm25", "?"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", chat_template=ZEPHYR_CHAT_TEMPLATE
    )


def llama_style_tokenizer(folder: Path) -> Any:
    """A Llama/Mistral-style tokenizer built offline: a SentencePiece BPE model with byte fallback
    (unk 0, ``<s>`` 1, ``</s>`` 2) trained on :data:`PIECES` text, loaded as transformers'
    ``LlamaTokenizer`` with ``add_bos_token`` (so a text prompt gets ``<s>``, as Mistral's does)
    and Zephyr's chat template (which holds no ``<s>``)."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    train = folder / "train.txt"
    train.write_text("\n".join(hostile_text(seed, 60) for seed in range(400)).replace("\x00", ""), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(train), model_prefix=str(folder / "tokenizer"), vocab_size=600, model_type="bpe",
        byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0, minloglevel=2,
        hard_vocab_limit=False,
    )  # fmt: skip
    train.unlink()
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "legacy": False,
        "chat_template": ZEPHYR_CHAT_TEMPLATE,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return AutoTokenizer.from_pretrained(str(folder))


def vllm_text_prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """The ids vLLM's engine gives a text prompt, as its renderer's ``_tokenize_prompt`` computes
    them: the tokenizer called with the keyword arguments of vLLM's own ``TokenizeParams`` for
    completion prompts (``add_special_tokens=True``; no length limit here)."""
    from vllm.renderers.params import TokenizeParams

    params = TokenizeParams(max_total_tokens=None, add_special_tokens=True)
    return list(tokenizer(text, **params.get_encode_kwargs())["input_ids"])
