"""The HF backend's scoring: label log-probabilities (at the last position, or after greedy
answer tokens), continuation log-probabilities, prompts shared by a group scored once
(``share_prefix``), all in length-sorted, token-budgeted, left-padded batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from ..options import Options
from . import tokens
from .base import LLMBackend
from .types import ContinuationScores, LabelScores, Prompt


@dataclass(frozen=True)
class _Scoring:
    ids: list[int]
    keep: int  # how many final positions need logits
    targets: tuple[int, ...]  # label ids or continuation ids
    labels: bool  # True: all targets scored at the next position; False: a continuation


def prefix_groups(seqs: list[list[int]], minimum: int) -> list[tuple[list[int], int]]:
    """Consecutive runs of sequences that share at least ``minimum`` leading tokens, with the
    length they share (kept one token short of the shortest, which must still be computed);
    a sequence sharing less with its neighbours is a group of its own with 0."""
    groups: list[tuple[list[int], int]] = []
    for i, seq in enumerate(seqs):
        if groups and groups[-1][1]:
            members, shared = groups[-1]
            first = seqs[members[0]]
            common = min(shared, _common_prefix(first, seq), len(seq) - 1)
            if common >= minimum:
                groups[-1] = ([*members, i], common)
                continue
        elif groups and len(groups[-1][0]) == 1:
            prev = seqs[groups[-1][0][0]]
            common = min(_common_prefix(prev, seq), len(prev) - 1, len(seq) - 1)
            if common >= minimum:
                groups[-1] = ([groups[-1][0][0], i], common)
                continue
        groups.append(([i], 0))
    return groups


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for k in range(n):
        if a[k] != b[k]:
            return k
    return n


def plan_batches(lengths: list[int], max_batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Group indices into batches, longest first, so padded size (rows x longest) stays
    within ``max_batch_tokens``; similar lengths share a batch, which keeps padding small.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and ((len(current) + 1) * longest > max_batch_tokens or len(current) >= max_batch_size):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class HFOptions(Options):
    """How transformers runs a causal LM: device, precision, attention, batching, decoding."""

    device: str | None = Field(None, description="cpu, cuda, cuda:1, ... (default: cuda when there is one)")
    dtype: str = Field("auto", description="auto (bfloat16 on GPU, float32 on CPU) or a torch dtype name")
    attn_implementation: str = Field("sdpa", description="transformers' attention implementation")
    max_batch_tokens: int = Field(16384, ge=1, description="padded tokens per forward pass")
    max_batch_size: int = Field(64, ge=1, description="sequences per forward pass")
    trust_remote_code: bool = Field(False, description="run code shipped with the model (off unless you trust it)")
    compile: bool = Field(False, description="torch.compile the scoring forward and the decoding step")
    share_prefix: bool = Field(False, description="score a group of prompts' shared prefix once")
    min_shared_prefix: int = Field(32, ge=1, description="share_prefix: shortest prefix worth sharing (tokens)")
    min_shared_fraction: float = Field(
        0.25, ge=0, le=1, description="share_prefix: share only when the prefix is this fraction of the group's length"
    )
    decode: Literal["auto", "static", "generate"] = Field(
        "auto", description="greedy decoding: static (static cache, CUDA graphs), generate, or auto (static on GPU)"
    )


class HFScoring(LLMBackend):
    """Scoring through a loaded ``AutoModelForCausalLM`` (mixed into :class:`~.hf.HFBackend`,
    which loads ``hf_model`` and ``tokenizer`` and owns the batching settings)."""

    options: HFOptions
    hf_model: Any
    tokenizer: Any
    device: str | None
    _scorer: Any
    _score: Any
    _greedy: Any

    def _padded(self, seqs: list[list[int]]) -> tuple[Any, Any, Any]:
        """Left-padded ids, attention mask and position ids (positions count real tokens)."""
        import torch

        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, width - len(s) :] = torch.tensor(s)
            mask[row, width - len(s) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        if str(self.device).startswith("cuda"):  # pinned: the copies do not wait for the device
            ids, mask, positions = ids.pin_memory(), mask.pin_memory(), positions.pin_memory()
        return (
            ids.to(self.device, non_blocking=True),
            mask.to(self.device, non_blocking=True),
            positions.to(self.device, non_blocking=True),
        )

    def _score_batch(self, items: list[_Scoring]) -> list[list[float]]:
        """Log-probabilities of each item's targets (labels at the next position, or the
        continuation tokens at their positions), computed batch by batch. With ``share_prefix``,
        label items that start alike (the prompts of one query) compute their common prefix
        once and only their own suffixes in batches over a copy of its KV cache, when the prefix
        is at least ``min_shared_fraction`` of their mean length (on an H200 a share of 0.36
        gained 1.49x, 0.16 and 0.07 lost: docs/benchmarks.md)."""
        if not self.options.share_prefix:
            return self._score_padded(items)
        out: list[list[float]] = [[] for _ in items]
        rest: list[int] = []
        for group, shared in prefix_groups(
            [it.ids if it.labels else [] for it in items], self.options.min_shared_prefix
        ):
            mean = sum(len(items[i].ids) for i in group) / len(group)
            if not shared or shared < self.options.min_shared_fraction * mean:  # too little in common to pay
                rest.extend(group)
                continue
            for i, values in zip(group, self._score_with_prefix([items[i] for i in group], shared), strict=True):
                out[i] = values
        if rest:
            for i, values in zip(rest, self._score_padded([items[i] for i in rest]), strict=True):
                out[i] = values
        return out

    def _score_with_prefix(self, items: list[_Scoring], shared: int) -> list[list[float]]:
        """Label log-probabilities of items whose first ``shared`` tokens are equal: the prefix
        runs once; each batch of suffixes attends to a copy of its KV cache."""
        import copy

        import torch

        prefix = torch.tensor([items[0].ids[:shared]], device=self.device)
        with torch.inference_mode():
            cache = self.hf_model(input_ids=prefix, use_cache=True).past_key_values
        suffixes = [it.ids[shared:] for it in items]
        out: list[list[float]] = [[] for _ in items]
        for batch in plan_batches(
            [len(s) for s in suffixes], self.options.max_batch_tokens, self.options.max_batch_size
        ):
            rows = [items[i] for i in batch]
            ids, mask, pos = self._padded([suffixes[i] for i in batch])
            mask = torch.cat([torch.ones((len(batch), shared), dtype=mask.dtype, device=mask.device), mask], dim=1)
            batch_cache = copy.deepcopy(cache)
            batch_cache.batch_repeat_interleave(len(batch))
            with torch.inference_mode():
                logits = self._scorer(
                    input_ids=ids, attention_mask=mask, position_ids=pos + shared, past_key_values=batch_cache,
                    logits_to_keep=1,
                ).logits  # fmt: skip
                last, _ = self._gather_targets(torch.log_softmax(logits.float(), dim=-1), rows, 1)
            for j, (i, r) in enumerate(zip(batch, rows, strict=True)):
                out[i] = last[j, : len(r.targets)].cpu().tolist()
        return out

    def _score_padded(self, items: list[_Scoring]) -> list[list[float]]:
        """:meth:`_score_batch` without prefix sharing: every prompt padded and run whole."""
        import torch

        out: list[list[float]] = [[] for _ in items]
        waiting: tuple[list[int], list[_Scoring], int, Any, Any] | None = None

        def collect(batch: list[int], rows: list[_Scoring], keep: int, last: Any, along: Any) -> None:
            last, along = last.cpu(), None if along is None else along.cpu()  # waits for this batch only
            for j, (i, r) in enumerate(zip(batch, rows, strict=True)):
                n = len(r.targets)
                if r.labels:  # every label scored as the token after the prompt
                    out[i] = last[j, :n].tolist()
                else:  # positions keep-1-n .. keep-2 predict the continuation's n tokens
                    out[i] = along[j, keep - 1 - n : keep - 1].tolist() if n and along is not None else []

        # The device runs batch k while the host pads and launches batch k+1; batch k's results
        # are copied back only then, so the device does not idle between batches. Only the
        # gathered target values are kept meanwhile, never a batch's logits.
        for batch in plan_batches(
            [len(x.ids) for x in items], self.options.max_batch_tokens, self.options.max_batch_size
        ):
            rows = [items[i] for i in batch]
            keep = max(r.keep for r in rows)
            ids, mask, pos = self._padded([r.ids for r in rows])
            with torch.inference_mode():
                logits = self._scorer(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep).logits
                last, along = self._gather_targets(torch.log_softmax(logits.float(), dim=-1), rows, keep)
                del logits
            if waiting is not None:
                collect(*waiting)
            waiting = (batch, rows, keep, last, along)
        if waiting is not None:
            collect(*waiting)
        return out

    @staticmethod
    def _gather_targets(logp: Any, rows: list[_Scoring], keep: int) -> tuple[Any, Any]:
        """On the device: label log-probabilities at the last position (rows x labels) and, when
        some row is a continuation, each kept position's continuation token (rows x keep)."""
        import torch

        labels = torch.zeros((len(rows), max(max(len(r.targets) for r in rows), 1)), dtype=torch.long)
        steps = torch.zeros((len(rows), keep), dtype=torch.long) if keep > 1 else None  # label-only: none
        for j, r in enumerate(rows):
            n = len(r.targets)
            if r.labels:
                labels[j, :n] = torch.tensor(r.targets)
            elif n and steps is not None:
                steps[j, keep - 1 - n : keep - 1] = torch.tensor(r.targets)
        last = logp[:, -1, :].gather(-1, labels.to(logp.device))
        along = None if steps is None else logp.gather(-1, steps.to(logp.device)[:, :, None]).squeeze(-1)
        return last, along

    async def _alabel_logprobs(
        self, prompts: list[Prompt], labels: list[str], after: int, context: str | None
    ) -> list[LabelScores]:
        ids = tokens.label_ids(self.tokenizer, labels, context)
        seqs = tokens.prompt_ids_many(self.tokenizer, prompts)
        latency = [0.0] * len(seqs)
        for _ in range(after):  # greedy answer tokens first (end of sequence excluded, as vLLM's min_tokens)
            seqs, spent = await self._greedy_step(seqs)
            latency = [a + b for a, b in zip(latency, spent, strict=True)]
        items = [_Scoring(seq, 1, tuple(ids), True) for seq in seqs]
        values, spent = await self._score.submit_timed(items)
        return [
            LabelScores(dict(zip(labels, v, strict=True)), self.stats(len(it.ids) - after, after + 1, t + s))
            for it, v, t, s in zip(items, values, latency, spent, strict=True)
        ]

    async def _greedy_step(self, seqs: list[list[int]]) -> tuple[list[list[int]], list[float]]:
        """Each sequence with its most likely next token appended (never an end-of-sequence
        token), and each one's share of the step's time."""
        best, latency = await self._greedy.submit_timed(seqs)
        return [[*seq, b] for seq, b in zip(seqs, best, strict=True)], latency

    def _greedy_batch(self, seqs: list[list[int]]) -> list[int]:
        """The most likely next token of each sequence, end tokens excluded, chosen on the device
        (only one id per row comes back, not the vocabulary's log-probabilities)."""
        import torch

        banned = sorted(tokens.end_ids(self.tokenizer, self.hf_model))
        out = [0] * len(seqs)
        for batch in plan_batches([len(s) for s in seqs], self.options.max_batch_tokens, self.options.max_batch_size):
            ids, mask, pos = self._padded([seqs[i] for i in batch])
            with torch.inference_mode():
                logits = self._scorer(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits
                last = logits[:, -1, :].float()
                if banned:
                    last[:, banned] = -torch.inf
                for i, b in zip(batch, last.argmax(-1).tolist(), strict=True):
                    out[i] = int(b)
        return out

    async def _acontinuation_logprobs(
        self, prompts: list[Prompt], continuations: list[str]
    ) -> list[ContinuationScores]:
        items = []
        for seq, c in zip(tokens.prompt_ids_many(self.tokenizer, prompts), continuations, strict=True):
            cont = tokens.continuation_ids(self.tokenizer, c)
            items.append(_Scoring(seq + cont, len(cont) + 1, tuple(cont), False))
        values, latency = await self._score.submit_timed(items)
        return [
            ContinuationScores(tuple(v) if it.targets else (), self.stats(len(it.ids), 0, t))
            for it, v, t in zip(items, values, latency, strict=True)
        ]
