"""Context compression on NQ-open: does the compressed context still hold the answer?

Each question gets a context of its gold passage mixed with passages of other questions
(``--distractors``, default 9: 10 passages), in a seeded random order, as in "Lost in the
Middle" (Liu et al. 2024). Every compressor then cuts the context to a fixed budget (25% and
50% of its tokens, counted with SmolLM2's tokenizer) and we report the compression ratio
reached and the answer-in-context rate (a normalised gold answer string still occurs in the
compressed context). Two random baselines set the bar at the same budget: random passages
(the input order is random) and random sentences. On a subset (``--em-questions``) SmolLM2
generates answers from a few of the contexts and we report best-subspan EM and token F1.

    python bench/rag.py [--questions 200] [--llm-questions 20] [--em-questions 30]

The SmolLM2-based compressors run on the first ``--llm-questions`` only (CPU time).

Writes bench/results/rag.json. Needs ../shared/data/nq-open (exits when absent).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from statistics import mean

from rerankflow.backends.embeddings import SentenceTransformerEncoder
from rerankflow.backends.hf import HFBackend
from rerankflow.compressors.base import Compressor, QueryNotes, Tokenizes, Unit, UnitCompressor
from rerankflow.compressors.dedup import NearDuplicateFilter
from rerankflow.compressors.llm import LLMExtractor, LLMFilter
from rerankflow.compressors.select import BudgetFilter
from rerankflow.compressors.sentences import SentenceExtractor, split_sentences
from rerankflow.compressors.surprisal import SurprisalPruner
from rerankflow.eval.rag import answer_in_context, best_subspan_em, token_f1
from rerankflow.generators.answer import AnswerGenerator
from rerankflow.io.questions import mix_distractors, read_questions
from rerankflow.rerankers.biencoder import BiEncoderReranker
from rerankflow.stage import Transformer
from rerankflow.types import Ranking, document_text

from common import SHARED_DATA, table, write_result


class RandomSentences(UnitCompressor):
    """Baseline: sentences kept in a random (seeded) order until the budget is full."""

    stage_name = "random_sentences"

    def __init__(self, *, tokenizer: Tokenizes, **settings: float) -> None:
        super().__init__(tokenizer, None, settings)
        self.rng = random.Random(0)

    def score_units(self, batch: Sequence[Ranking], notes: Sequence[QueryNotes]) -> list[list[Unit]]:
        return [
            [
                Unit(p, a, b, self.rng.random(), self.count_tokens(c.doc.text[a:b]))
                for p, c in enumerate(r.candidates)
                for a, b in split_sentences(c.doc.text)
            ]
            for r in batch
        ]


def compressors(lm: HFBackend, encoder: SentenceTransformerEncoder) -> dict[str, tuple[Transformer, Compressor]]:
    """Every compressor, as (stage to run, compressor whose budget is set). One instance per
    compressor serves every budget: model scores are memoised per passage, so a sweep scores once.
    """
    biencoder = BiEncoderReranker(encoder)
    plain: dict[str, Compressor] = {
        "random passages": BudgetFilter(tokenizer=lm, ratio=1.0),
        "random sentences": RandomSentences(tokenizer=lm, ratio=1.0),
        "sentences (MiniLM)": SentenceExtractor(encoder, tokenizer=lm, ratio=1.0),
        "surprisal self-info (SmolLM2)": SurprisalPruner(lm, ratio=1.0, mode="self_info"),
        "surprisal question-aware (SmolLM2)": SurprisalPruner(lm, ratio=1.0, mode="question"),
    }
    reranked: dict[str, Compressor] = {
        "MiniLM rerank + budget": BudgetFilter(tokenizer=lm, ratio=1.0),
        "MiniLM rerank + dedup 0.95 + budget": NearDuplicateFilter(encoder, tokenizer=lm, ratio=1.0),
        "MiniLM rerank + LLM filter (SmolLM2)": LLMFilter(lm, ratio=1.0),
        "MiniLM rerank + LLM extract (SmolLM2)": LLMExtractor(lm, ratio=1.0),
    }
    out: dict[str, tuple[Transformer, Compressor]] = {k: (c, c) for k, c in plain.items()}
    out.update({k: (biencoder >> c, c) for k, c in reranked.items()})
    return out


LLM_HEAVY = ("SmolLM2",)


def context_tokens(r: Ranking, count: Callable[[str], int]) -> int:
    return sum(count(document_text(c.doc)) for c in r.candidates)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=200)
    ap.add_argument("--llm-questions", type=int, default=20, help="questions for the SmolLM2 compressors")
    ap.add_argument("--em-questions", type=int, default=30)
    ap.add_argument("--distractors", type=int, default=9)
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.25, 0.5])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    path = SHARED_DATA / "nq-open" / "nq-open-oracle.dev.jsonl.gz"
    if not path.is_file():
        print(f"skipped: {path} not found (third-party data, not shipped with rerankflow)")
        return 0
    records = read_questions(path)
    contexts = mix_distractors(records, args.distractors, args.seed)
    gold = {r.query.qid: list(r.answers) for r in records}
    lm = HFBackend("smollm2-135m-instruct", device="cpu")
    lm.ensure_loaded()
    encoder = SentenceTransformerEncoder("all-minilm-l6-v2", device="cpu")
    encoder.load()

    rows = []
    full = contexts[: args.questions]
    rows.append(
        {
            "compressor": "full context",
            "budget": 1.0,
            "questions": len(full),
            "ratio": 1.0,
            "answer in context": mean(
                answer_in_context([document_text(c.doc) for c in r.candidates], gold[r.query.qid]) for r in full
            ),
            f"in context (first {args.llm_questions})": mean(
                answer_in_context([document_text(c.doc) for c in r.candidates], gold[r.query.qid])
                for r in full[: args.llm_questions]
            ),
            "tokens in": mean(context_tokens(r, lm.count_tokens) for r in full),
            "tokens out": mean(context_tokens(r, lm.count_tokens) for r in full),
            "s/question": 0.0,
        }
    )
    compressed: dict[tuple[str, float], list[Ranking]] = {}
    stages = compressors(lm, encoder)
    for ratio in args.budgets:
        for name, (stage, compressor) in stages.items():
            compressor.options = compressor.options.model_copy(update={"ratio": ratio})
            n = args.llm_questions if any(k in name for k in LLM_HEAVY) else args.questions
            batch = contexts[:n]
            start = time.perf_counter()
            out = stage(batch)
            seconds = time.perf_counter() - start
            tin = [context_tokens(r, lm.count_tokens) for r in batch]
            tout = [context_tokens(r, lm.count_tokens) for r in out]
            in_ctx = [answer_in_context([document_text(c.doc) for c in r.candidates], gold[r.query.qid]) for r in out]
            compressed[(name, ratio)] = out
            rows.append(
                {
                    "compressor": name,
                    "budget": ratio,
                    "questions": n,
                    "ratio": mean(o / i for o, i in zip(tout, tin)),
                    "answer in context": mean(in_ctx),
                    # every row on the same first questions, so SmolLM2 rows compare with the baselines
                    f"in context (first {args.llm_questions})": mean(in_ctx[: args.llm_questions]),
                    "tokens in": mean(tin),
                    "tokens out": mean(tout),
                    "over budget": sum(o > max(1, int(ratio * i)) for o, i in zip(tout, tin)),
                    "s/question": seconds / n,
                }
            )
            print(table(rows[-1:], list(rows[-1])), flush=True)
    cols = list(rows[1])
    print()
    print(table(rows, cols))

    # EM with SmolLM2 on a subset: full context, gold passage only, and a few compressors at 25%.
    em_rows = []
    k = args.em_questions
    gold_only = [r.with_candidates([c for c in r.candidates if c.docid == f"{r.query.qid}-0"]) for r in contexts[:k]]
    em_inputs = {"full context": contexts[:k], "gold passage only": gold_only}
    low = min(args.budgets)
    for name in (
        "random passages",
        "random sentences",
        "MiniLM rerank + budget",
        "sentences (MiniLM)",
        "surprisal question-aware (SmolLM2)",
    ):
        em_inputs[f"{name} @{low:.0%}"] = compressed[(name, low)][:k]
    for name, batch in em_inputs.items():
        generator = AnswerGenerator(lm, max_tokens=32)
        start = time.perf_counter()
        out = generator(batch)
        seconds = time.perf_counter() - start
        em_rows.append(
            {
                "context": name,
                "questions": len(out),
                "EM": mean(best_subspan_em(r.answer.text, gold[r.query.qid]) for r in out if r.answer),
                "F1": mean(token_f1(r.answer.text, gold[r.query.qid]) for r in out if r.answer),
                "answer in context": mean(
                    answer_in_context([document_text(c.doc) for c in r.candidates], gold[r.query.qid]) for r in out
                ),
                "prompt tokens": mean(r.answer.prompt_tokens for r in out if r.answer),
                "cited": mean(bool(r.answer.citations) for r in out if r.answer),
                "s/question": seconds / len(out),
            }
        )
        print(table(em_rows[-1:], list(em_rows[-1])), flush=True)
    print()
    print(table(em_rows, list(em_rows[0])))
    out_path = write_result(
        "rag",
        {
            "settings": vars(args)
            | {"generator": "SmolLM2-135M-Instruct (HF, CPU, float32)", "encoder": "all-MiniLM-L6-v2"},
            "compression": rows,
            "generation": em_rows,
        },
    )
    print(f"\nwrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
