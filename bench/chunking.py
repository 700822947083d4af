"""Chunking speed on normal and pathological text: rerankflow's chunker (langchain's splitting rule
computed on offsets, lengths counted in batches) against langchain-text-splitters itself (one
tokenizer call per split), both measuring length with the real MiniLM tokenizer, 200-token
chunks with 40 overlapping (the index's defaults).

Texts (generated here, words drawn from this repository's README so they are real English):

* ``prose``: paragraphs of 3-8 sentences (what documentation looks like)
* ``one line``: the same words without a sentence end or line break (a minified or extracted file)
* ``unique words``: one line of distinct random 8-letter tokens (nothing repeats: the worst
  case for counting each distinct piece once)
* ``no spaces``: one word of repeated letters (split character by character)

The library runs only on the small sizes (it took 164 s for a 5 MB one-line file in a probe);
the ratio is taken on the same text in the same run.

    python bench/chunking.py [--sizes 0.2 5]

Writes bench/results/chunking.json.
"""

from __future__ import annotations

import argparse
import random
import string
import time
from typing import Any

from common import ROOT, table, write_result


def texts(kind: str, n_bytes: int, rng: random.Random) -> str:
    words = [w.strip(".,!?:;()`*#[]") for w in (ROOT / "README.md").read_text().split()]
    words = [w for w in words if w.isalpha()]
    if kind == "no spaces":
        return ("abcdefghij" * (n_bytes // 10 + 1))[:n_bytes]
    out: list[str] = []
    size = 0
    while size < n_bytes:
        if kind == "unique words":
            w = "".join(rng.choices(string.ascii_lowercase, k=8))
        elif kind == "prose":
            w = rng.choice(words)
            r = rng.random()
            w += ".\n\n" if r < 0.02 else "." if r < 0.12 else ""
        else:
            w = rng.choice(words)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.2, 5.0], help="MB of text per kind")
    ap.add_argument("--library-max-mb", type=float, default=0.2, help="largest text the library is timed on")
    args = ap.parse_args()

    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from rerankflow.backends.embeddings import SentenceTransformerEncoder
    from rerankflow.index.chunking import SEPARATORS, Chunker, ChunkSettings
    from rerankflow.index.extract import SourceDocument

    enc = SentenceTransformerEncoder("all-minilm-l6-v2", device="cpu", memo_size=0)
    enc.load()
    settings = ChunkSettings()
    rows: list[dict[str, Any]] = []
    for kind in ("prose", "one line", "unique words", "no spaces"):
        for mb in args.sizes:
            text = texts(kind, int(mb * 1e6), random.Random(7))
            started = time.perf_counter()
            chunks = Chunker(settings, enc.count_tokens, enc.count_tokens_many).chunks(SourceDocument("d", "d", text))
            ours = time.perf_counter() - started
            assert chunks[0].meta["start"] >= 0 and all(text[c.meta["start"] : c.meta["end"]] == c.text for c in chunks)
            row: dict[str, Any] = {
                "text": kind,
                "MB": mb,
                "chunks": len(chunks),
                "ours s": ours,
                "ours MB/s": mb / ours,
            }
            if mb <= args.library_max_mb:
                splitter = RecursiveCharacterTextSplitter(
                    separators=list(SEPARATORS),
                    is_separator_regex=True,
                    keep_separator=True,
                    chunk_size=settings.chunk_tokens,
                    chunk_overlap=settings.overlap_tokens,
                    length_function=enc.count_tokens,
                    strip_whitespace=True,
                )
                started = time.perf_counter()
                pieces = splitter.split_text(text)
                row["library s"] = time.perf_counter() - started
                row["library MB/s"] = mb / row["library s"]
                row["speed-up"] = row["library s"] / ours
                row["same pieces"] = pieces == [c.text for c in chunks]
            rows.append(row)
            print(table(rows[-1:], list(rows[-1])), flush=True)
    columns = ["text", "MB", "chunks", "ours s", "ours MB/s", "library s", "library MB/s", "speed-up", "same pieces"]
    print()
    print(table(rows, columns))
    print(f"\nwrote {write_result('chunking', {'chunk_tokens': 200, 'overlap_tokens': 40, 'rows': rows})}")


if __name__ == "__main__":
    main()
