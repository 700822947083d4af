"""The HF backend's generation: greedy decoding through the static-cache decoder where it
applies (:mod:`.hf_decode`), ``generate`` otherwise, streaming, and cancellation at every
decoding step."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import suppress
from typing import Any

from ..cancel import CancelToken, is_cancelled
from ..coalesce import shares
from ..errors import BackendError
from . import tokens
from .base import cut_at_stop
from .hf_scoring import HFScoring, plan_batches
from .types import Completion, GenerationParams, Prompt, StreamChunk

log = logging.getLogger(__name__)


class HFGeneration(HFScoring):
    """Generation through a loaded ``AutoModelForCausalLM`` (the base of :class:`~.hf.HFBackend`,
    over the scoring layer whose batching it shares)."""

    _generate: Any
    _decoder: Any

    def _static_decoder(self) -> Any:
        """The static-cache decoder when ``decode`` asks for it and the model allows it."""
        from .hf_decode import StaticDecoder, supports_static_decode

        on_gpu = str(self.device or next(self.hf_model.parameters()).device).startswith("cuda")
        wanted = self.options.decode == "static" or (self.options.decode == "auto" and on_gpu)
        if not wanted:
            return None
        if not supports_static_decode(self.hf_model):
            if self.options.decode == "static":
                raise BackendError(
                    f"decode: static needs transformers 5 and a model whose layers all use full attention "
                    f"through SDPA or eager attention; {self.model!r} does not qualify here (use decode: generate)"
                )
            return None
        step = None
        if self.options.compile:
            import torch

            step = torch.compile(self.hf_model, dynamic=False)
        return StaticDecoder(self.hf_model, graphs=on_gpu, step_fn=step)

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
        for batch in plan_batches([len(s) for s in seqs], self.options.max_batch_tokens, self.options.max_batch_size):
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
            spent = shares(
                time.perf_counter() - start, [len(seqs[i]) + len(new) for i, new in zip(batch, made, strict=True)]
            )
            for i, new, latency in zip(batch, made, spent, strict=True):
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
