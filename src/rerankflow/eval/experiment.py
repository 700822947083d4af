"""Run several pipelines on the same topics and compare them side by side.

One row per system: mean of each measure over the judged queries, and, against a baseline,
paired t-test and Wilcoxon signed-rank p-values (SciPy) plus the number of queries improved
and degraded, and the mean wall time per query (pipeline time divided by queries).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..io.trec import Qrels, rankings_to_run
from ..progress import progress
from ..stage import Transformer
from ..types import Document, LLMUsage, Query, Ranking, as_rankings
from .measures import mean_scores, parse_measures, per_query
from .rag import RAG_MEASURES, rag_per_query
from .trace import Price, adaptive_work, context_flow, stage_cache_use, stage_usage, unique_name


@dataclass
class SystemResult:
    """Evaluation of one system."""

    name: str
    means: dict[str, float]
    per_query: dict[str, dict[str, float]]
    seconds: float
    queries: int
    rankings: list[Ranking] = field(default_factory=list, repr=False)
    load_seconds: float = 0.0
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per LLM stage: ``{"total": {...}, "per_query": {qid: {...}}}`` (calls, tokens, latency)."""
    cache: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per cached stage: queries answered from the stage cache (``hits``), ``computed``, ``corrupt``.
    With hits, ``seconds`` is the time of a resumed run, not of computing everything."""

    def calls_per_query(self) -> float | None:
        """LLM calls per query over all stages (``None`` without LLM stages)."""
        if not self.usage:
            return None
        return sum(u["total"]["calls"] for u in self.usage.values()) / max(self.queries, 1)

    def tokens_per_query(self) -> float | None:
        """Prompt + output tokens per query over all stages (``None`` without LLM stages)."""
        if not self.usage:
            return None
        total = sum(u["total"]["prompt_tokens"] + u["total"]["output_tokens"] for u in self.usage.values())
        return total / max(self.queries, 1)

    def llm_seconds_per_query(self) -> float | None:
        """Backend call latency per query over all stages (``None`` without LLM stages)."""
        if not self.usage:
            return None
        return sum(u["total"]["latency_s"] for u in self.usage.values()) / max(self.queries, 1)

    work: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per stage whose work varies by query (cascades, budgets): see :func:`~rerankflow.eval.trace.adaptive_work`."""
    tests: dict[str, dict[str, float]] = field(default_factory=dict)
    cost_per_query: float | None = None
    """Dollars per query of its priced LLM stages (``None``: no price table, or no priced model)."""

    def price(self, models: Mapping[str, str], prices: Mapping[str, Price]) -> None:
        """Set :attr:`cost_per_query` from the stages' models and a price table."""
        costs = [
            prices[models[name]].of(LLMUsage(**u["total"]))
            for name, u in self.usage.items()
            if name in models and models[name] in prices
        ]
        self.cost_per_query = sum(costs) / max(self.queries, 1) if costs else None

    @property
    def ms_per_query(self) -> float:
        """Mean wall time per query, in milliseconds."""
        return 1000.0 * self.seconds / max(self.queries, 1)


def work_line(work: Mapping[str, float]) -> str:
    """One stage's adaptive work in words (escalated 34% of queries...)."""
    if "escalated" in work:
        return f"escalated {work['escalated']:.0%} of queries, skipped {work['skipped']:.0%}"
    return f"stopped by its budget on {work['stopped']:.0%} of queries, mean head {work['depth']:.1f}"


@dataclass
class ExperimentResult:
    """All systems' results; ``baseline`` names the reference row (or ``None``)."""

    measures: list[str]
    systems: list[SystemResult]
    baseline: str | None
    answers: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Gold answers by query id (RAG datasets)."""
    qrels: Qrels = field(default_factory=dict)
    """The judgments the systems were scored against (empty: none)."""
    run: dict[str, Any] = field(default_factory=dict)
    """What produced the result (a job run fills it: job, date, commit, versions, hardware, models)."""

    def table(self) -> str:
        """A plain-text table for the terminal."""
        header = ["system", *self.measures]
        if self.baseline and self.measures:
            m0 = self.measures[0]
            header += [f"p(t) {m0}", f"p(W) {m0}", "+/-"]
        header.append("ms/query")
        llm = any(s.usage for s in self.systems)
        if llm:
            header += ["LLM calls/q", "tokens/q", "LLM s/q"]
        priced = any(s.cost_per_query is not None for s in self.systems)
        if priced:
            header.append("$/q")
        rows = [header]
        for s in self.systems:
            row = [s.name, *(_fmt(m, s.means.get(m)) for m in self.measures)]
            if self.baseline and self.measures:
                t = s.tests.get(self.measures[0])
                row += (
                    ["-", "-", "-"]
                    if t is None
                    else [
                        _p(t["p_ttest"]),
                        _p(t["p_wilcoxon"]),
                        f"{int(t['improved'])}/{int(t['degraded'])}",
                    ]
                )
            row.append(f"{s.ms_per_query:.1f}")
            if llm:
                calls, toks, secs = s.calls_per_query(), s.tokens_per_query(), s.llm_seconds_per_query()
                row += (
                    ["-", "-", "-"]
                    if calls is None or toks is None or secs is None
                    else [f"{calls:.1f}", f"{toks:.0f}", f"{secs:.2f}"]
                )
            if priced:
                row.append("-" if s.cost_per_query is None else f"{s.cost_per_query:.5f}")
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        if self.baseline:
            lines.append(
                f"baseline: {self.baseline}; p(t) paired t-test, p(W) Wilcoxon signed-rank, +/- queries improved/degraded"
            )
        if any(m in RAG_MEASURES for m in self.measures):
            lines.append(
                "RAG: EM best-subspan exact match, F1 token F1, InContext gold answer in the final context, "
                "Ratio context tokens out/in over the compressors, CtxTokens tokens of passages sent, Saved tokens removed"
            )
        for s in self.systems:
            for stage, w in s.work.items():
                lines.append(f"{s.name}: {stage} {work_line(w)}")
            for stage, u in s.usage.items():
                if u.get("repairs"):
                    counts = ", ".join(f"{k} {v}" for k, v in sorted(u["repairs"].items()))
                    lines.append(f"{s.name}: {stage} repaired model output ({counts})")
        return "\n".join(lines)

    def to_frame(self) -> Any:
        """The result table as a pandas DataFrame: one row per system (``system``, each
        measure, and against the baseline ``p_ttest``, ``p_wilcoxon``, ``improved``, ``degraded``
        per measure as ``<measure> p_ttest``..., then ``ms_per_query``, ``llm_calls_per_query``,
        ``tokens_per_query``, ``cost_per_query``)."""
        import pandas

        rows = []
        for s in self.systems:
            row: dict[str, Any] = {"system": s.name, **{m: s.means.get(m) for m in self.measures}}
            for m in self.measures if self.baseline else []:
                for k in ("p_ttest", "p_wilcoxon", "improved", "degraded"):
                    row[f"{m} {k}"] = s.tests.get(m, {}).get(k)
            row.update(ms_per_query=s.ms_per_query, llm_calls_per_query=s.calls_per_query(),
                       tokens_per_query=s.tokens_per_query(), cost_per_query=s.cost_per_query)  # fmt: skip
            rows.append(row)
        return pandas.DataFrame(rows)

    def per_query_frame(self) -> Any:
        """Per-query values as a long pandas DataFrame: ``system``, ``qid``, ``measure``, ``value``."""
        import pandas

        rows = [(s.name, qid, m, v) for s in self.systems for m, vals in s.per_query.items() for qid, v in vals.items()]
        return pandas.DataFrame(rows, columns=["system", "qid", "measure", "value"])

    def to_json(self) -> dict[str, Any]:
        """Everything, per-query values included."""
        return {
            "run": self.run,
            "measures": self.measures,
            "baseline": self.baseline,
            "systems": [
                {
                    "name": s.name,
                    "means": s.means,
                    "tests": s.tests,
                    "seconds": s.seconds,
                    "load_seconds": s.load_seconds,
                    "queries": s.queries,
                    "ms_per_query": s.ms_per_query,
                    "cost_per_query": s.cost_per_query,
                    "usage": s.usage,
                    "cache": s.cache,
                    "work": s.work,
                    "per_query": s.per_query,
                }
                for s in self.systems
            ],
        }

    def write(self, folder: str | Path, documents: Mapping[str, Document] | None = None) -> list[Path]:
        """Write the result files into ``folder`` (:func:`rerankflow.eval.outputs.write_results`:
        ``results.csv``, ``results.json``, ``perquery.csv``, ``details.json``, answers)."""
        from .outputs import write_results

        return write_results(self, Path(folder), documents)


def _fmt(measure: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if measure in ("CtxTokens", "Saved") else f"{value:.4f}"


def _p(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3g}"


def paired_tests(system: Mapping[str, float], baseline: Mapping[str, float]) -> dict[str, float]:
    """Paired t-test and Wilcoxon p-values and improved/degraded counts over shared queries."""
    from scipy import stats

    qids = sorted(set(system) & set(baseline))
    a = np.array([system[q] for q in qids])
    b = np.array([baseline[q] for q in qids])
    diff = a - b
    if len(qids) < 2 or np.allclose(diff, 0):
        p_t = p_w = 1.0 if len(qids) >= 2 else math.nan
    else:
        p_t = float(stats.ttest_rel(a, b).pvalue)
        p_w = float(stats.wilcoxon(a, b).pvalue)
    return {
        "p_ttest": p_t,
        "p_wilcoxon": p_w,
        "improved": float((diff > 0).sum()),
        "degraded": float((diff < 0).sum()),
    }


class Experiment:
    """Evaluate ``systems`` on ``topics`` against ``qrels`` and, for RAG, gold ``answers``
    (per query id). Topics are rankings (possibly with input candidates), queries, or query
    strings; systems a mapping of names to pipelines, or a list (named by each stage's
    ``name``, made unique). With neither qrels nor answers the systems are only run and timed.
    """

    def __init__(
        self,
        systems: Mapping[str, Transformer] | Sequence[Transformer],
        topics: Sequence[Ranking | Query | str],
        qrels: Qrels | None,
        measures: Sequence[str] = ("nDCG@10",),
        *,
        baseline: str | None = None,
        batch_size: int = 64,
        answers: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if not systems:
            raise ConfigError("an experiment needs at least one system")
        if not isinstance(systems, Mapping):
            named: dict[str, Transformer] = {}
            for s in systems:
                named[unique_name(s.name, named)] = s
            systems = named
        if baseline is not None and baseline not in systems:
            raise ConfigError(
                f"baseline {baseline!r} is not one of the systems: {', '.join(systems)}",
                path=("baseline",),
            )
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.systems = dict(systems)
        self.topics = as_rankings(topics)
        self.qrels = qrels or {}
        # Without judgments the systems still run (timed, rankings kept) but nothing is scored.
        self.measures = parse_measures(list(measures)) if self.qrels else []
        self.measure_names = [str(m) for m in self.measures]
        self.answers = dict(answers or {})
        self.baseline = baseline if self.qrels or self.answers else None
        self.batch_size = batch_size

    def run_system(self, name: str, system: Transformer) -> tuple[list[Ranking], float]:
        """Run one system over all topics in batches; returns rankings and wall seconds
        (call ``system.warm_up()`` first to keep model loading and indexing out of the time).
        """
        out: list[Ranking] = []
        start = time.perf_counter()
        batches = range(0, len(self.topics), self.batch_size)
        for i in progress(batches, desc=f"{name}", total=len(batches), unit="batch"):
            out.extend(system(self.topics[i : i + self.batch_size]))
        return out, time.perf_counter() - start

    def run(self) -> ExperimentResult:
        """Run and evaluate every system."""
        results = []
        for name, system in self.systems.items():
            t0 = time.perf_counter()
            system.warm_up()
            load_seconds = time.perf_counter() - t0
            rankings, seconds = self.run_system(name, system)
            pq = per_query(self.measures, self.qrels, rankings_to_run(rankings)) if self.measures else {}
            if self.answers:
                pq.update(rag_per_query(rankings, self.answers, context_flow(rankings)))
            results.append(
                SystemResult(
                    name,
                    mean_scores(pq),
                    pq,
                    seconds,
                    len(self.topics),
                    rankings,
                    load_seconds=load_seconds,
                    usage=stage_usage(rankings),
                    cache=stage_cache_use(rankings),
                    work=adaptive_work(rankings),
                )
            )
        names = self.measure_names + [m for m in RAG_MEASURES if any(m in r.per_query for r in results)]
        if self.baseline is not None:
            base = next(r for r in results if r.name == self.baseline)
            for r in results:
                if r is not base:
                    r.tests = {
                        m: paired_tests(r.per_query[m], base.per_query[m])
                        for m in names
                        if m in r.per_query and m in base.per_query
                    }
        return ExperimentResult(names, results, self.baseline, self.answers, self.qrels)


def experiment(
    systems: Mapping[str, Transformer] | Sequence[Transformer],
    topics: Sequence[Ranking | Query | str],
    qrels: Qrels | None,
    measures: Sequence[str] = ("nDCG@10",),
    **options: Any,
) -> ExperimentResult:
    """Run and evaluate ``systems`` in one call (see :class:`Experiment` for the arguments and
    ``options``: ``baseline``, ``batch_size``, ``answers``); ``print(result.table())``."""
    return Experiment(systems, topics, qrels, measures, **options).run()
