"""Cross-encoders on the GPU: the transformers classifier path against ``CrossEncoder.predict``.

Speed only: random-weight classifiers of two published shapes (the GPU machines have no model
hub; a forward pass costs the same whatever the weights), with real tokenizers:

* ``bert-large``: BERT-large (24 layers, hidden 1024, 16 heads, 335 M parameters), the shape of
  the large MS MARCO cross-encoders, with the BERT uncased tokenizer (MiniLM's, the same vocabulary);
* ``qwen3-reranker-0.6b``: Qwen3-Reranker-0.6B's configuration (28 layers, hidden 1024, 16 query
  and 8 key-value heads, 0.6 B parameters) as a sequence classifier (the converted "seq-cls"
  form of that reranker), with the Qwen2.5 tokenizer (the Qwen3 vocabulary; ``gpu_assets.py``).

Every method scores the same 4,300 (query, passage) pairs of the DL19 BM25 top-100 at
``max_length`` 512: ``CrossEncoder.predict`` with its defaults (float32, batch 32, length-sorted
by characters), ``CrossEncoder.predict`` in bfloat16, and ``HFClassifierModel`` (bfloat16,
token-budget batches longest first, SDPA), eager and compiled. Time includes tokenisation.
Useful FLOPs count real tokens only: 2 x the linear layers' parameters per token plus attention
(bidirectional: 4 x layers x L^2 x width per pair; causal: half). The bf16 matmul peak is
measured in the same run. Scores are compared with the float32 reference (largest difference,
Spearman correlation).

    python bench/gpu_crossencoder.py --assets .device-carry --out DIR
    python bench/gpu_crossencoder.py --smoke     # tiny models on the CPU: checks the script only
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from gpu_speed import matmul_peak, spearman, sync
from rerankflow.backends.hf_classifier import HFClassifierModel
from rerankflow.io.jsonl import read_hits
from rerankflow.types import document_text

from common import ROOT, SHARED_DATA, table, write_result

SHAPES: dict[str, dict[str, Any]] = {
    "bert-large": {"model_type": "bert", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                   "intermediate_size": 4096, "max_position_embeddings": 512, "type_vocab_size": 2},
    "qwen3-reranker-0.6b": {"model_type": "qwen3", "hidden_size": 1024, "num_hidden_layers": 28,
                            "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
                            "intermediate_size": 3072, "max_position_embeddings": 40960, "rope_theta": 1000000,
                            "tie_word_embeddings": True, "rms_norm_eps": 1e-6},
}  # fmt: skip
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}


def tokenizer_for(shape: str, assets: Path, smoke: bool) -> Any:
    if shape == "bert-large" or smoke:
        folder = assets / "bert-tokenizer"
        if smoke:
            from rerankflow.backends.models import resolve_embedder

            folder = Path(resolve_embedder("all-minilm-l6-v2"))
        return AutoTokenizer.from_pretrained(folder)
    src = assets / "qwen2.5-tokenizer"
    work = Path(tempfile.mkdtemp())
    for f in src.iterdir():
        if f.name.endswith(".gz"):
            (work / f.name[:-3]).write_bytes(gzip.decompress(f.read_bytes()))
        else:
            shutil.copy(f, work / f.name)
    return AutoTokenizer.from_pretrained(work)


def build(shape: str, tokenizer: Any, folder: Path, smoke: bool) -> Path:
    """A random-weight classifier of ``shape`` saved (float32) with its tokenizer in ``folder``."""
    spec = dict(SHAPES[shape])
    kind = spec.pop("model_type")
    if smoke:
        spec.update(TINY)
        spec.pop("head_dim", None)
        if "num_key_value_heads" in spec:
            spec["num_key_value_heads"] = 2
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = AutoConfig.for_model(kind, vocab_size=len(tokenizer), num_labels=1, pad_token_id=pad, **spec)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or "<|endoftext|>"
    tokenizer.save_pretrained(folder)
    return folder


def linear_params(model: Any) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def useful_flops(folder: Path, lengths: list[int]) -> float:
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    c = model.config
    width = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    attn = c.num_hidden_layers * c.num_attention_heads * width
    causal = c.model_type != "bert"
    per_pair = [2 * linear_params(model) * n + (2 if causal else 4) * attn * n * n for n in lengths]
    return float(sum(per_pair))


def run_shape(
    shape: str, pairs: list[tuple[str, str]], args: argparse.Namespace, device: str, peak: float
) -> dict[str, Any]:
    from sentence_transformers import CrossEncoder

    tokenizer = tokenizer_for(shape, args.assets, args.smoke)
    folder = build(shape, tokenizer, Path(tempfile.mkdtemp()) / shape, args.smoke)
    lengths = [len(x) for x in tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation="longest_first",
                                          max_length=args.max_length)["input_ids"]]  # fmt: skip
    flops = useful_flops(folder, lengths)
    methods: dict[str, Any] = {
        "CrossEncoder.predict (default: float32, batch 32)": lambda: CrossEncoder(
            str(folder), max_length=args.max_length, device=device),
        "CrossEncoder.predict, bfloat16": lambda: CrossEncoder(
            str(folder), max_length=args.max_length, device=device, model_kwargs={"dtype": torch.bfloat16}),
        "HFClassifierModel (bfloat16, packed)": lambda: HFClassifierModel(
            str(folder), device=device, max_length=args.max_length, dtype="float32" if args.smoke else "bfloat16",
            max_batch_tokens=args.max_batch_tokens),
        "HFClassifierModel (bfloat16, packed, compiled)": lambda: HFClassifierModel(
            str(folder), device=device, max_length=args.max_length, dtype="float32" if args.smoke else "bfloat16",
            max_batch_tokens=args.max_batch_tokens, compile=True),
    }  # fmt: skip
    rows, reference = [], None
    for name, make in methods.items():
        model = make()
        if isinstance(model, CrossEncoder):
            run = lambda m=model: [float(s) for s in m.predict(pairs, batch_size=32, show_progress_bar=False)]  # noqa: E731
        else:
            run = lambda m=model: m.score(pairs)  # noqa: E731
        start = time.perf_counter()
        run()  # warm-up (and compilation)
        sync(device)
        first = time.perf_counter() - start
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            scores = run()
            sync(device)
            times.append(time.perf_counter() - start)
        seconds = min(times)
        reference = reference or scores
        rows.append({
            "model": shape, "method": name, "pairs": len(pairs), "seconds": round(seconds, 3),
            "first call s": round(first, 2), "pairs/s": round(len(pairs) / seconds, 1),
            "TFLOP/s": round(flops / seconds / 1e12, 1), "% of peak": round(100 * flops / seconds / 1e12 / peak, 1),
            "max |diff| vs float32": round(max(abs(a - b) for a, b in zip(scores, reference, strict=True)), 5),
            "spearman vs float32": round(spearman(scores, reference), 5),
        })  # fmt: skip
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    base = rows[0]["seconds"]
    for row in rows:
        row["vs default"] = round(base / row["seconds"], 2)
    return {
        "rows": rows,
        "tokens": sum(lengths),
        "mean length": sum(lengths) / len(lengths),
        "useful TFLOP": flops / 1e12,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--assets", type=Path, default=ROOT / ".device-carry")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--shapes", default="bert-large,qwen3-reranker-0.6b")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--max-batch-tokens", type=int, default=32768)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    device = "cpu" if args.smoke else "cuda"
    hits = args.assets / "bm25_dl19.json"
    if not hits.exists():
        hits = SHARED_DATA / "trec-dl" / "bm25_dl19.json"
    if not hits.exists():
        print(f"skipped: no DL19 hits file in {args.assets} or {hits.parent}", file=sys.stderr)
        return 0
    rankings = read_hits(hits)
    if args.smoke:
        rankings = [r.top(8) for r in rankings[:2]]
        args.repeats, args.max_length = 1, 128
    pairs = [(r.query.text, document_text(c.doc)) for r in rankings for c in r.candidates]
    result: dict[str, Any] = {"speed_only": True, "weights": "random (published shapes)", "max_length": args.max_length}
    if torch.cuda.is_available():
        result["gpu"] = torch.cuda.get_device_name()
    peaks = [matmul_peak(device, n=256 if args.smoke else 8192)]
    for shape in args.shapes.split(","):
        result[shape] = run_shape(shape, pairs, args, device, max(peaks))
    peaks.append(matmul_peak(device, n=256 if args.smoke else 8192))
    result["matmul_peak_tflops"] = {"readings": peaks, "peak": max(peaks)}
    for shape in args.shapes.split(","):
        for row in result[shape]["rows"]:
            row["% of peak"] = round(100 * row["TFLOP/s"] / max(peaks), 1)
        print(table(result[shape]["rows"], ["model", "method", "seconds", "pairs/s", "TFLOP/s", "% of peak",
                                            "vs default", "first call s", "max |diff| vs float32",
                                            "spearman vs float32"]))  # fmt: skip
    print(f"bf16 matmul peak: {max(peaks):.0f} TFLOP/s")
    name = "gpu_crossencoder-smoke" if args.smoke else "gpu_crossencoder"
    print(f"wrote {write_result(name, result, folder=args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
