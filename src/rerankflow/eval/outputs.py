"""Everything a run writes, in one place: result tables, per-query details for the report,
answers, run files and the job as run. Each file is written to a temporary file and renamed, so
it is complete or absent."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..io.files import atomic_write
from ..io.trec import write_run
from ..types import Document
from .details import details
from .experiment import ExperimentResult, SystemResult
from .rag import RAG_MEASURES


def write_outputs(
    result: ExperimentResult,
    folder: Path,
    *,
    documents: Mapping[str, Document] | None = None,
    run_tag: str | None = None,
    job_yaml: str | None = None,
) -> list[Path]:
    """The outputs of a job run: one TREC run file per system when ``run_tag`` is given
    (tagged ``<run_tag>.<system>``), the result files (:func:`write_results`) and, when given,
    ``job.yaml`` (the job as run)."""
    files: list[Path] = []
    if run_tag is not None:
        for s in result.systems:
            write_run(s.rankings, folder / f"{s.name}.trec", tag=f"{run_tag}.{s.name}")
            files.append(folder / f"{s.name}.trec")
    files += write_results(result, folder, documents)
    if job_yaml is not None:
        with atomic_write(folder / "job.yaml") as fh:
            fh.write(job_yaml)
        files.append(folder / "job.yaml")
    return files


def write_results(
    result: ExperimentResult, folder: Path, documents: Mapping[str, Document] | None = None
) -> list[Path]:
    """Write ``results.csv`` (one row per system), ``results.json``, ``perquery.csv`` and
    ``details.json`` (per-query rankings for the report; ``documents`` by id supply the
    original texts of passages that a compressor shortened), and the answers when a system
    generated any."""
    with atomic_write(folder / "results.json") as fh:
        json.dump(result.to_json(), fh, indent=2)
    with atomic_write(folder / "results.csv") as fh:
        w = csv.writer(fh)
        test_cols = (
            [f"{k}:{m}" for m in result.measures for k in ("p_ttest", "p_wilcoxon", "improved", "degraded")]
            if result.baseline
            else []
        )
        w.writerow(["system", *result.measures, *test_cols, "ms_per_query"])
        for s in result.systems:
            tests = (
                [
                    s.tests.get(m, {}).get(k, "")
                    for m in result.measures
                    for k in ("p_ttest", "p_wilcoxon", "improved", "degraded")
                ]
                if result.baseline
                else []
            )
            w.writerow([s.name, *(s.means.get(m, "") for m in result.measures), *tests, round(s.ms_per_query, 3)])
    with atomic_write(folder / "perquery.csv") as fh:
        w = csv.writer(fh)
        w.writerow(["system", "qid", "measure", "value"])
        for s in result.systems:
            for m, vals in s.per_query.items():
                for qid, v in vals.items():
                    w.writerow([s.name, qid, m, v])
    with atomic_write(folder / "details.json") as fh:
        rankings = {s.name: s.rankings for s in result.systems}
        json.dump(details(rankings, result.qrels, result.answers, documents), fh, ensure_ascii=False)
    files = [folder / "results.json", folder / "results.csv", folder / "perquery.csv", folder / "details.json"]
    if any(r.answer is not None for s in result.systems for r in s.rankings):
        files += write_answers(result.systems, result.answers, folder)
    return files


def write_answers(systems: Sequence[SystemResult], gold: Mapping[str, Sequence[str]], folder: Path) -> list[Path]:
    """``answers.jsonl`` (one line per system and question: answer, citations, context, tokens,
    per-question scores) and ``answers.csv`` (questions down, one answer column per system).
    """
    with_answers = [s for s in systems if any(r.answer is not None for r in s.rankings)]
    with atomic_write(folder / "answers.jsonl") as fh:
        for s in with_answers:
            for r in s.rankings:
                if r.answer is None:
                    continue
                a, qid = r.answer, r.query.qid
                row = {
                    "system": s.name,
                    "qid": qid,
                    "question": r.query.text,
                    "gold": list(gold.get(qid, [])),
                    "answer": a.text,
                    "citations": [{"number": c.number, "docid": c.docid} for c in a.citations],
                    "context": [d.docid for d in a.context],
                    "context_tokens": a.context_tokens,
                    "prompt_tokens": a.prompt_tokens,
                    "output_tokens": a.output_tokens,
                    "latency_s": a.latency_s,
                    "scores": {m: v[qid] for m, v in s.per_query.items() if m in RAG_MEASURES and qid in v},
                }
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    with atomic_write(folder / "answers.csv") as fh:
        w = csv.writer(fh)
        w.writerow(["qid", "question", "gold", *(s.name for s in with_answers)])
        texts = [{r.query.qid: r.answer.text for r in s.rankings if r.answer is not None} for s in with_answers]
        for r in with_answers[0].rankings if with_answers else []:
            qid = r.query.qid
            w.writerow([qid, r.query.text, " | ".join(gold.get(qid, [])), *(t.get(qid, "") for t in texts)])
    return [folder / "answers.jsonl", folder / "answers.csv"]
