"""Greedy decoding over a static KV cache, replayed as a CUDA graph on the GPU.

transformers' ``generate`` spends most of a decoding step on the host (Python, kernel
launches, mask building), so a 7B model decodes at about the same speed at batch 1 and 16, far
from what the memory bandwidth allows. Here one decoding step (embedding, every layer, the last
position's logits, the argmax, and the bookkeeping for the next step) is a fixed sequence of
kernels on fixed buffers: a static cache sized for the batch, a precomputed padding mask and
device-side counters. On CUDA the step is captured once per shape and replayed; the host only
looks at the tokens every ``check_every`` steps to stop when every row has ended. On the CPU the
same step runs eagerly, which is how the tests compare it with ``generate``.

Attention in a decoding step reads each key/value head once for its whole query group
(:func:`grouped_decode_attention`): SDPA with a mask would first copy the cache to every query
head (grouped-query models have 4-8x fewer key/value heads) and fall back to its math kernel.

Rows are padded on the left, so every row writes its next token into the same cache slot; the
mask hides each row's padding and every slot not written yet. Batch sizes are rounded up to a
power of two and cache lengths to ``length_step`` so that few shapes are captured; the extra
rows repeat the first prompt and are dropped. Only greedy decoding of models whose layers all use
full attention takes this path (the backend falls back to ``generate`` otherwise).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

GROUPED = "rerankflow_grouped_decode"


def grouped_decode_attention(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
    scaling: float | None = None, **kwargs: Any,
) -> tuple[Any, None]:  # fmt: skip
    """transformers' attention interface for one query position: the query heads of a group
    share their key/value head (read once, no copy per query head); an additive mask, softmax
    in float32. Longer queries (a prefill) go to SDPA."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.shape[2] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    rows, heads, _, dim = query.shape
    groups = key.shape[1]
    q = query.view(rows, groups, heads // groups, dim)
    scores = torch.matmul(q, key.transpose(-1, -2)) * (scaling if scaling is not None else dim**-0.5)
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    probs = torch.softmax(scores.float(), dim=-1).to(value.dtype)
    out = torch.matmul(probs, value).view(rows, heads, 1, dim)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(GROUPED, grouped_decode_attention)


@contextmanager
def _grouped_attention(model: Any) -> Iterator[None]:
    """Decoding steps run with :func:`grouped_decode_attention` (the model's own setting is put
    back afterwards; the backend's lock keeps other forwards out meanwhile)."""
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = GROUPED
    try:
        yield
    finally:
        config._attn_implementation = before


def supports_static_decode(model: Any) -> bool:
    """True for decoder models whose layers all attend to the whole sequence (no sliding window,
    no linear attention) through SDPA or eager attention, which accept a prepared 4D mask, under
    transformers 5 (whose static cache counts its own write position; 4.x needs a cache
    position passed in, which this decoder does not do). Tested with transformers 5.17 and 5.19."""
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        return False
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    types = getattr(config, "layer_types", None) or ["full_attention"]
    attention = getattr(config, "_attn_implementation", None) or "sdpa"
    return all(t == "full_attention" for t in types) and attention in ("sdpa", "eager")


def _bucket(rows: int) -> int:
    size = 1
    while size < rows:
        size *= 2
    return size


@dataclass
class _Shape:
    """Everything one (rows, cache length) shape keeps between calls: the cache, the buffers the
    step reads and writes in place, and its captured graph."""

    cache: Any
    ids: Any  # (rows, 1) the token each row feeds next
    positions: Any  # (rows, 1) its position (padding not counted)
    slot: Any  # () the cache slot the next token is written to
    step: Any  # (1,) how many tokens were decoded (the column the next one goes to)
    written: Any  # (rows, length) True where a slot holds a row's real token or will hold a new one
    produced: Any  # (rows, length) the decoded tokens, from column 0
    graph: Any = None


class StaticDecoder:
    """Greedy decoding for one model; ``generate`` may be called for any batch of token-id
    prompts (the caller serialises calls). ``graphs`` captures CUDA graphs (GPU only)."""

    def __init__(
        self,
        model: Any,
        *,
        graphs: bool,
        length_step: int = 256,
        check_every: int = 16,
        kept_shapes: int = 2,
        step_fn: Callable[..., Any] | None = None,
    ) -> None:
        self.model = model
        self.graphs = graphs
        self.length_step = length_step
        self.check_every = check_every
        self.kept_shapes = kept_shapes
        # the decoding step's forward (compiled by the caller if wanted)
        self._step_forward = step_fn if step_fn is not None else model
        self._shapes: OrderedDict[tuple[int, int], _Shape] = OrderedDict()
        _register()
        self.captures = 0  # graphs captured so far (each shape once)

    def generate(
        self,
        seqs: list[list[int]],
        max_new: int,
        end_ids: frozenset[int],
        *,
        stopped: Callable[[], list[bool]] | None = None,
        on_tokens: Callable[[int], None] | None = None,
    ) -> list[list[int]]:
        """The greedy continuation of each prompt, up to ``max_new`` tokens, cut after its first
        end token (kept, as ``generate`` keeps it). ``stopped`` says which rows were cancelled (checked
        with the end tokens); ``on_tokens`` is told how many tokens of real rows were decoded, burst by burst."""
        import torch

        with torch.inference_mode():
            return self._generate(seqs, max_new, end_ids, stopped, on_tokens)

    def _generate(
        self,
        seqs: list[list[int]],
        max_new: int,
        end_ids: frozenset[int],
        stopped: Callable[[], list[bool]] | None,
        on_tokens: Callable[[int], None] | None,
    ) -> list[list[int]]:
        import torch

        rows = len(seqs)
        width = max(len(s) for s in seqs)
        length = -(-(width + max_new) // self.length_step) * self.length_step
        shape = self._shape(_bucket(rows), length)
        padded = seqs + [seqs[0]] * (shape.ids.shape[0] - rows)
        self._prefill(shape, padded, width)  # decodes the first token
        ends = torch.tensor(sorted(end_ids) or [-1], device=shape.ids.device)
        done = 1
        cut: list[int | None] = [None] * rows
        if on_tokens is not None:
            on_tokens(rows)
        while True:
            tokens = shape.produced[:rows, :done]
            ended = torch.isin(tokens, ends).any(dim=1).tolist()  # one host sync per burst
            for r, flag in enumerate(stopped() if stopped is not None else [False] * rows):
                if flag and cut[r] is None:
                    cut[r] = done  # a cancelled row keeps what it had; its slot decodes on, unused
            if done >= max_new or all(e or c is not None for e, c in zip(ended, cut, strict=True)):
                break
            burst = min(self.check_every, max_new - done)
            if shape.graph is not None:
                for _ in range(burst):
                    shape.graph.replay()
            else:
                with _grouped_attention(self.model):
                    for _ in range(burst):
                        self._step(shape)
            done += burst
            if on_tokens is not None:
                on_tokens(rows * burst)
        out = shape.produced[:rows, :done].tolist()
        return [_cut(row[:limit] if limit is not None else row, end_ids) for row, limit in zip(out, cut, strict=True)]

    # -- shapes ---------------------------------------------------------------------------
    def _shape(self, rows: int, length: int) -> _Shape:
        import torch
        from transformers import StaticCache

        key = (rows, length)
        if key in self._shapes:
            self._shapes.move_to_end(key)
            return self._shapes[key]
        while len(self._shapes) >= self.kept_shapes:  # free the least recently used shape's memory
            self._shapes.popitem(last=False)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        device = next(self.model.parameters()).device
        shape = _Shape(
            cache=StaticCache(config=self.model.config, max_cache_len=length),
            ids=torch.zeros((rows, 1), dtype=torch.long, device=device),
            positions=torch.zeros((rows, 1), dtype=torch.long, device=device),
            slot=torch.zeros((), dtype=torch.long, device=device),
            step=torch.zeros((1,), dtype=torch.long, device=device),
            written=torch.zeros((rows, length), dtype=torch.bool, device=device),
            produced=torch.zeros((rows, length), dtype=torch.long, device=device),  # >= the new tokens
        )
        self._shapes[key] = shape
        if self.graphs:
            self._capture(shape, rows)
        return shape

    def _capture(self, shape: _Shape, rows: int) -> None:
        """Warm up on a side stream (the cache is allocated by a throwaway prefill), then record
        one step; the recorded kernels read and write only the shape's buffers."""
        import torch

        self._prefill(shape, [[0]] * rows, 1)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with _grouped_attention(self.model):
            with torch.cuda.stream(stream):
                for _ in range(3):  # a compiled step compiles here, outside the capture
                    self._step(shape)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._step(shape)
        shape.graph = graph
        self.captures += 1
        log.info("captured a decoding graph for %d rows x %d cache slots", rows, shape.written.shape[1])

    # -- the two passes ---------------------------------------------------------------------
    def _prefill(self, shape: _Shape, seqs: list[list[int]], width: int) -> None:
        """Run the prompts through the model into a reset cache and set the step buffers to
        decode the first new token (the prompt's own greedy next token)."""
        import torch

        device = shape.ids.device
        rows, length = shape.written.shape
        ids = torch.zeros((rows, width), dtype=torch.long)
        real = torch.zeros((rows, length), dtype=torch.bool)
        for r, s in enumerate(seqs):
            ids[r, width - len(s) : width] = torch.tensor(s)
            real[r, width - len(s) : width] = True
        real[:, width:] = True  # the slots new tokens will fill (hidden until written)
        positions = (real[:, :width].long().cumsum(-1) - 1).clamp(min=0)
        shape.cache.reset()
        shape.written.copy_(real.to(device))
        slots = torch.arange(length, device=device)
        visible = shape.written[:, None, None, :] & (
            slots[None, None, None, :] <= torch.arange(width, device=device)[None, None, :, None]
        )
        logits = self._forward_pass(self.model, shape, ids.to(device), positions.to(device), visible)
        shape.ids.copy_(logits.argmax(-1)[:, None])
        shape.positions.copy_(positions[:, -1:].to(device) + 1)
        shape.slot.fill_(width)
        shape.produced.zero_()
        shape.produced[:, :1].copy_(shape.ids)
        shape.step.fill_(1)

    def _step(self, shape: _Shape) -> None:
        """Decode one token per row from the buffers, and advance them (in place)."""
        import torch

        slots = torch.arange(shape.written.shape[1], device=shape.written.device)
        visible = (shape.written & (slots <= shape.slot))[:, None, None, :]
        logits = self._forward_pass(self._step_forward, shape, shape.ids, shape.positions, visible)
        nxt = logits.argmax(-1)[:, None]
        shape.produced.index_copy_(1, shape.step.clamp(max=shape.produced.shape[1] - 1), nxt)
        shape.ids.copy_(nxt)
        shape.positions.add_(1)
        shape.slot.add_(1)
        shape.step.add_(1)

    def _forward_pass(self, forward: Any, shape: _Shape, ids: Any, positions: Any, visible: Any) -> Any:
        """Logits of each row's last position, the hidden slots masked additively."""
        import torch

        dtype = next(self.model.parameters()).dtype
        mask = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
        mask.masked_fill_(~visible, torch.finfo(dtype).min)
        out = forward(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=shape.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1, :]


def _cut(tokens: list[int], end_ids: frozenset[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in end_ids:
            return tokens[: i + 1]
    return tokens
