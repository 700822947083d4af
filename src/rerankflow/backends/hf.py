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
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cancel import CancelToken, is_cancelled
from ..errors import BackendError, MissingDependencyError
from . import tokens
from .base import LLMBackend, cut_at_stop
from .batching import Coalescer
from .models import resolve_llm
from .types import Completion, ContinuationScores, GenerationParams, LabelScores, Prompt, StreamChunk

log = logging.getLogger(__name__)


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


class HFBackend(LLMBackend):
    """transformers ``AutoModelForCausalLM`` behind the backend protocol."""

    kind = "hf"

    def __init__(
        self,
        model: str,
        *,
        revision: str | None = None,
        device: str | None = None,
        dtype: str = "auto",
        attn_implementation: str = "sdpa",
        max_batch_tokens: int = 16384,
        max_batch_size: int = 64,
        trust_remote_code: bool = False,
        compile: bool = False,
        share_prefix: bool = False,
        min_shared_prefix: int = 32,
        min_shared_fraction: float = 0.25,
        decode: str = "auto",
    ) -> None:
        super().__init__(model, revision=revision)
        if decode not in ("auto", "static", "generate"):
            raise BackendError(f"decode must be 'auto', 'static' or 'generate', not {decode!r}")
        self.decode = decode
        self._decoder: Any = None  # StaticDecoder when greedy generation takes the static path
        self.compile = compile
        self.share_prefix = share_prefix
        self.min_shared_prefix = min_shared_prefix
        self.min_shared_fraction = min_shared_fraction
        self.device = device
        self.dtype = dtype
        self.attn_implementation = attn_implementation
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.trust_remote_code = trust_remote_code
        self.hf_model: Any = None
        self.tokenizer: Any = None
        self._scorer: Any = None  # the model's forward for scoring, compiled when ``compile``
        lock = threading.Lock()  # one forward pass or generate() at a time
        self._score = Coalescer(self._score_batch, lock)
        self._generate = Coalescer(self._generate_batch, lock)
        self._greedy = Coalescer(self._greedy_batch, lock)

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
        if self.compile:
            import torch

            self._scorer = torch.compile(self.hf_model, dynamic=True)
        self._decoder = self._static_decoder()

    def _static_decoder(self) -> Any:
        """The static-cache decoder when ``decode`` asks for it and the model allows it."""
        from .hf_decode import StaticDecoder, supports_static_decode

        on_gpu = str(self.device or next(self.hf_model.parameters()).device).startswith("cuda")
        wanted = self.decode == "static" or (self.decode == "auto" and on_gpu)
        if not wanted:
            return None
        if not supports_static_decode(self.hf_model):
            if self.decode == "static":
                raise BackendError(
                    f"decode: static needs transformers 5 and a model whose layers all use full attention "
                    f"through SDPA or eager attention; {self.model!r} does not qualify here (use decode: generate)"
                )
            return None
        step = None
        if self.compile:
            import torch

            step = torch.compile(self.hf_model, dynamic=False)
        return StaticDecoder(self.hf_model, graphs=on_gpu, step_fn=step)

    def load(self) -> None:
        """Load tokenizer and weights."""
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise MissingDependencyError("transformers and torch", "hf") from exc
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.dtype == "auto":
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        else:
            dtype = getattr(torch, self.dtype)
        path = resolve_llm(self.model)
        kwargs: dict[str, Any] = {"revision": self.revision, "trust_remote_code": self.trust_remote_code}
        if path.endswith(".gguf"):
            folder, kwargs["gguf_file"] = str(Path(path).parent), Path(path).name
        else:
            folder = path
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
            self.hf_model = AutoModelForCausalLM.from_pretrained(
                folder, dtype=dtype, attn_implementation=self.attn_implementation, **kwargs
            )
        except (OSError, ValueError) as exc:
            raise BackendError(f"transformers could not load {self.model!r}: {exc}") from exc
        self.hf_model.to(device).eval()
        self._ready()
        self.device = device
        log.info("loaded %s on %s (%s)", self.model, device, dtype)

    # -- forward passes -------------------------------------------------------------------
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
        if not self.share_prefix:
            return self._score_padded(items)
        out: list[list[float]] = [[] for _ in items]
        rest: list[int] = []
        for group, shared in prefix_groups([it.ids if it.labels else [] for it in items], self.min_shared_prefix):
            mean = sum(len(items[i].ids) for i in group) / len(group)
            if not shared or shared < self.min_shared_fraction * mean:  # too little in common to pay
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
        for batch in plan_batches([len(s) for s in suffixes], self.max_batch_tokens, self.max_batch_size):
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
        for batch in plan_batches([len(x.ids) for x in items], self.max_batch_tokens, self.max_batch_size):
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
        latency = 0.0
        for _ in range(after):  # greedy answer tokens first (end of sequence excluded, as vLLM's min_tokens)
            seqs, spent = await self._greedy_step(seqs)
            latency += spent
        items = [_Scoring(seq, 1, tuple(ids), True) for seq in seqs]
        values, spent = await self._score.submit_timed(items)
        return [
            LabelScores(dict(zip(labels, v, strict=True)), self.stats(len(it.ids) - after, after + 1, latency + spent))
            for it, v in zip(items, values, strict=True)
        ]

    async def _greedy_step(self, seqs: list[list[int]]) -> tuple[list[list[int]], float]:
        """Each sequence with its most likely next token appended (never an end-of-sequence token)."""
        best, latency = await self._greedy.submit_timed(seqs)
        return [[*seq, b] for seq, b in zip(seqs, best, strict=True)], latency

    def _greedy_batch(self, seqs: list[list[int]]) -> list[int]:
        """The most likely next token of each sequence, end tokens excluded, chosen on the device
        (only one id per row comes back, not the vocabulary's log-probabilities)."""
        import torch

        banned = sorted(tokens.end_ids(self.tokenizer, self.hf_model))
        out = [0] * len(seqs)
        for batch in plan_batches([len(s) for s in seqs], self.max_batch_tokens, self.max_batch_size):
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
            ContinuationScores(tuple(v) if it.targets else (), self.stats(len(it.ids), 0, latency))
            for it, v in zip(items, values, strict=True)
        ]

    async def _agenerate(self, prompts: list[Prompt], params: GenerationParams) -> list[Completion]:
        """Concurrent calls (windows of different queries, say) merge into shared batches."""
        return await self._agenerate_until(prompts, params, [None] * len(prompts))

    async def _agenerate_until(
        self, prompts: list[Prompt], params: GenerationParams, cancel: list[CancelToken | None]
    ) -> list[Completion]:
        """Merged into shared batches; a cancelled prompt waiting in the queue is skipped and a
        running one stops at the next decoding step (the rest of its batch goes on)."""
        seqs = tokens.prompt_ids_many(self.tokenizer, prompts)
        return await self._generate.submit([(seq, params, t) for seq, t in zip(seqs, cancel, strict=True)])

    def _generate_batch(self, items: list[tuple[list[int], GenerationParams, CancelToken | None]]) -> list[Completion]:
        """Generate for merged requests, batching those with the same settings."""
        out: list[Completion | None] = [None] * len(items)
        groups: dict[GenerationParams, list[int]] = {}
        for i, (_, params, token) in enumerate(items):
            if is_cancelled(token):  # went away while waiting for this batch
                out[i] = Completion("", self.stats(len(items[i][0]), 0, 0.0), "cancelled")
            else:
                groups.setdefault(params, []).append(i)
        for params, picked in groups.items():
            done = self._generate_ids([items[i][0] for i in picked], params, cancel=[items[i][2] for i in picked])
            for i, completion in zip(picked, done, strict=True):
                out[i] = completion
        return [c for c in out if c is not None]

    async def _astream(
        self, prompt: Prompt, params: GenerationParams, cancel: CancelToken
    ) -> AsyncGenerator[StreamChunk, None]:
        """Real token streaming: ``generate`` runs in a thread of its own and feeds an
        ``AsyncTextIteratorStreamer`` (no pool thread is held while a stream waits for the
        engine, so many waiting streams cannot starve the event loop's thread pool). When the
        reader goes away the generation stops at the next step and is counted."""
        import asyncio

        from transformers import AsyncTextIteratorStreamer

        loop = asyncio.get_running_loop()
        streamer = AsyncTextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        task: asyncio.Future[list[Completion]] = loop.create_future()

        def settle(result: list[Completion] | None, error: BaseException | None) -> None:
            if not task.done():
                task.set_exception(error) if error is not None else task.set_result(result or [])

        def run() -> None:
            result: list[Completion] | None = None
            error: BaseException | None = None
            try:
                with self._score.lock:
                    ids = tokens.prompt_ids_many(self.tokenizer, [prompt])
                    result = self._generate_ids(ids, params, streamer, cancel=[cancel])
            except BaseException as exc:  # noqa: BLE001  (handed to the awaiting task below)
                error = exc
                streamer.end()  # wake the reader; the error surfaces from the task
            with suppress(RuntimeError):  # the loop is gone (server shut down): nobody waits
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=run, name="rerankflow-hf-stream", daemon=True).start()

        async def pieces() -> AsyncIterator[str]:
            async for piece in streamer:
                if piece:
                    yield piece

        try:
            async for piece in cut_at_stop(pieces(), params.stop):
                yield StreamChunk(piece)
            completion = (await task)[0]
        finally:
            if not task.done():  # the reader left: stop at the next step, then account for it
                cancel.cancel("the stream was closed before its end")
                # no await here: a server may cancel every await of a closing stream
                task.add_done_callback(lambda t: self._account_stopped(t, params))
        yield StreamChunk("", completion)

    def _stop_when_cancelled(self, cancel: list[CancelToken | None]) -> Any:
        """A stopping criterion: ends each row whose token is cancelled, and counts the rows
        decoded at every step in ``ledger.decoded_tokens``."""
        import torch
        from transformers import StoppingCriteria

        ledger = self.ledger

        class StopCancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                ledger.count_decoded(int(input_ids.shape[0]))
                flags = [is_cancelled(t) for t in cancel]
                return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)

        return StopCancelled()

    def _generate_ids(
        self,
        seqs: list[list[int]],
        params: GenerationParams,
        streamer: Any = None,
        *,
        cancel: list[CancelToken | None] | None = None,
    ) -> list[Completion]:
        """Greedy or sampled generation for token-id prompts (the caller holds the engine lock);
        a row whose ``cancel`` token is set stops at the next step (``finish_reason="cancelled"``)."""
        flags = cancel if cancel is not None else [None] * len(seqs)
        out: list[Completion | None] = [None] * len(seqs)
        ends = tokens.end_ids(self.tokenizer, self.hf_model)
        static = self._decoder is not None and params.temperature <= 0 and streamer is None
        for batch in plan_batches([len(s) for s in seqs], self.max_batch_tokens, self.max_batch_size):
            start = time.perf_counter()
            if static:
                made = self._decoder.generate(
                    [seqs[i] for i in batch],
                    params.max_tokens,
                    ends,
                    stopped=lambda b=batch: [is_cancelled(flags[i]) for i in b],
                    on_tokens=self.ledger.count_decoded,
                )
            else:
                made = self._generate_with_hf(
                    [seqs[i] for i in batch], params, ends, streamer, [flags[i] for i in batch]
                )
            latency = (time.perf_counter() - start) / len(batch)
            for i, new in zip(batch, made, strict=True):
                out[i] = self._completion(len(seqs[i]), new, params, ends, is_cancelled(flags[i]), latency)
        return [c for c in out if c is not None]

    def _generate_with_hf(
        self,
        seqs: list[list[int]],
        params: GenerationParams,
        ends: frozenset[int],
        streamer: Any,
        flags: list[CancelToken | None],
    ) -> list[list[int]]:
        """transformers' ``generate`` for one batch: the new token ids of each row."""
        import torch
        from transformers import StoppingCriteriaList

        ids, mask, _ = self._padded(seqs)
        sample = params.temperature > 0
        if params.seed is not None:
            torch.manual_seed(params.seed)
        stop = StoppingCriteriaList([self._stop_when_cancelled(flags)])
        with torch.inference_mode():
            gen = self.hf_model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=params.max_tokens,
                do_sample=sample,
                temperature=params.temperature if sample else None,
                top_p=params.top_p if sample else None,
                pad_token_id=self.tokenizer.pad_token_id,
                streamer=streamer,
                stopping_criteria=stop,
            )
        made = []
        pad = self.tokenizer.pad_token_id
        for row in gen[:, ids.shape[1] :].tolist():
            if pad is not None and pad not in ends and pad in row:  # a cancelled row is padded to the end
                row = row[: row.index(pad)]
            made.append(row)
        return made

    def _completion(
        self,
        prompt_len: int,
        new: list[int],
        params: GenerationParams,
        ends: frozenset[int],
        cancelled: bool,
        latency: float,
    ) -> Completion:
        """Text and finish reason of one row's new tokens: cut at the first end token (``stop``)
        or at a stop string; ``cancelled`` when its token was set before the budget ran out."""
        finish = "length"
        for k, t in enumerate(new):
            if t in ends:
                new, finish = new[:k], "stop"
                break
        if cancelled and len(new) < params.max_tokens:
            finish = "cancelled"
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        for s in params.stop:
            if s in text and finish != "cancelled":
                text, finish = text[: text.index(s)], "stop"
        return Completion(text, self.stats(prompt_len, len(new), latency), finish)
