"""Reports read from the rankings' traces: LLM usage and repairs per stage, stage-cache use,
the context tokens that went through the compressors, and what a query's LLM calls cost
under a price table (``cost:`` in a job: dollars per million input and output tokens).

A stage that appears twice in a pipeline (two ``pointwise`` rerankers) is reported as
``pointwise`` and ``pointwise#2``, in execution order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..stage import Transformer
from ..types import Compression, LLMUsage, Ranking, StageRecord
from .rag import ContextFlow


class Price(BaseModel):
    """What a model's tokens cost: dollars per million input (prompt) and output tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_mtok: float = Field(..., ge=0, description="dollars per million prompt tokens")
    output_per_mtok: float = Field(..., ge=0, description="dollars per million output tokens")

    def of(self, usage: LLMUsage) -> float:
        """The cost of ``usage`` in dollars."""
        return (usage.prompt_tokens * self.input_per_mtok + usage.output_tokens * self.output_per_mtok) / 1e6


def backend_model(stage: Transformer) -> str | None:
    """The model name of the LLM backend a stage holds (``None`` without one)."""
    model = getattr(getattr(stage, "backend", None), "model", None)
    return model if isinstance(model, str) else None


def stage_models(pipeline: Transformer) -> dict[str, str]:
    """The model behind each stage that holds an LLM backend, by its report name
    (``pointwise``, ``pointwise#2``... in execution order)."""
    out: dict[str, str] = {}
    for stage in pipeline.walk():
        model = backend_model(stage)
        if model is not None:
            out[unique_name(stage.name, out)] = model
    return out


def usage_summary(
    ranking: Ranking, models: Mapping[str, str] | None = None, prices: Mapping[str, Price] | None = None
) -> dict[str, Any]:
    """One query's LLM use: per stage (calls, prompt and output tokens, model, and the cost
    when its model has a price) and the total (its ``cost`` covers the priced stages)."""
    stages: dict[str, dict[str, Any]] = {}
    total, cost, priced = LLMUsage(), 0.0, False
    for name, rec in _named(ranking, lambda rec: rec.usage is not None):
        usage = rec.usage or LLMUsage()
        row: dict[str, Any] = {k: v for k, v in usage.as_dict().items() if k != "latency_s"}
        model = (models or {}).get(name)
        price = (prices or {}).get(model) if model else None
        if model:
            row["model"] = model
        if price is not None:
            row["cost"] = price.of(usage)
            cost, priced = cost + row["cost"], True
        stages[name] = row
        total = total + usage
    out: dict[str, Any] = {k: v for k, v in total.as_dict().items() if k != "latency_s"}
    if priced:
        out["cost"] = cost
    return {"stages": stages, "total": out}


def unique_name(name: str, taken: Iterable[str]) -> str:
    """``name``, or ``name#2``, ``name#3``... whichever is not yet in ``taken``."""
    used = set(taken)
    out, n = name, 2
    while out in used:
        out, n = f"{name}#{n}", n + 1
    return out


def _named(ranking: Ranking, keep: Callable[[StageRecord], bool]) -> list[tuple[str, StageRecord]]:
    """The records of ``ranking`` that ``keep`` selects, each with its report name."""
    out: list[tuple[str, StageRecord]] = []
    for rec in ranking.trace:
        if keep(rec):
            out.append((unique_name(rec.stage, (n for n, _ in out)), rec))
    return out


def stage_usage(rankings: Sequence[Ranking]) -> dict[str, dict[str, Any]]:
    """Per LLM stage: ``{"total": {...}, "per_query": {qid: {...}}}`` (calls, tokens, latency),
    plus ``"repairs"`` (summed over queries) for stages that repair model output."""
    totals: dict[str, LLMUsage] = {}
    per_query: dict[str, dict[str, dict[str, Any]]] = {}
    repairs: dict[str, Counter[str]] = {}
    for r in rankings:
        for name, rec in _named(r, lambda rec: rec.usage is not None):
            usage = rec.usage or LLMUsage()
            totals[name] = totals.get(name, LLMUsage()) + usage
            per_query.setdefault(name, {})[r.query.qid] = usage.as_dict()
            if rec.repairs is not None:
                repairs.setdefault(name, Counter()).update(rec.repairs)
    out: dict[str, dict[str, Any]] = {}
    for name, total in totals.items():
        out[name] = {"total": total.as_dict(), "per_query": per_query[name]}
        if name in repairs:
            out[name]["repairs"] = {k: v for k, v in repairs[name].items() if v}
    return out


def adaptive_work(rankings: Sequence[Ranking]) -> dict[str, dict[str, float]]:
    """Per stage whose work varies by query, the fraction of queries (and for budgets the mean
    head) it spent: cascades ``escalated`` and ``skipped``; rerankers under a budget
    ``stopped`` (ended by their budget) and ``depth`` (mean head reranked)."""
    counts: dict[str, Counter[str]] = {}
    for r in rankings:
        for name, rec in _named(r, lambda rec: rec.budget is not None or rec.stage == "cascade"):
            c = counts.setdefault(name, Counter())
            c["queries"] += 1
            if rec.budget is not None:
                c["stopped"] += rec.budget.stopped is not None
                c["depth"] += rec.budget.depth
            elif rec.decisions is not None:
                c["escalated"] += bool(rec.decisions.get("escalated"))
                c["skipped"] += bool(rec.decisions.get("skipped"))
    return {name: {k: v / c["queries"] for k, v in c.items() if k != "queries"} for name, c in counts.items()}


def stage_cache_use(rankings: Sequence[Ranking]) -> dict[str, dict[str, int]]:
    """Per cached stage: queries answered from the cache (``hits``), ``computed`` (corrupt
    entries included) and ``corrupt`` entries recomputed."""
    out: dict[str, dict[str, int]] = {}
    for r in rankings:
        for name, rec in _named(r, lambda rec: rec.cache is not None):
            counts = out.setdefault(name, {"hits": 0, "computed": 0, "corrupt": 0})
            counts["hits" if rec.cache == "hit" else "computed"] += 1
            counts["corrupt"] += rec.cache == "corrupt"
    return out


def context_flow(rankings: Sequence[Ranking]) -> dict[str, ContextFlow]:
    """Per query: context tokens entering the first compressor and leaving the last one."""
    out: dict[str, ContextFlow] = {}
    for r in rankings:
        steps = [rec.compression for rec in r.trace if rec.compression is not None]
        if steps:
            out[r.query.qid] = ContextFlow(steps[0].tokens_in, steps[-1].tokens_out)
    return out


def repairs(rankings: Sequence[Ranking]) -> dict[str, int]:
    """Repaired model outputs over all stages and queries, by kind."""
    total: Counter[str] = Counter()
    for r in rankings:
        for rec in r.trace:
            total.update(rec.repairs or {})
    return {k: v for k, v in total.items() if v}


def usage_total(rankings: Sequence[Ranking], stage: str | None = None) -> LLMUsage:
    """LLM usage summed over queries (and over stages, or only those named ``stage``)."""
    out = LLMUsage()
    for r in rankings:
        for rec in r.trace:
            if rec.usage is not None and (stage is None or rec.stage == stage):
                out = out + rec.usage
    return out


def compression_of(ranking: Ranking, stage: str | None = None) -> Compression | None:
    """The last compression record of ``ranking`` (of ``stage`` when given)."""
    found = [rec.compression for rec in ranking.trace if rec.compression and stage in (None, rec.stage)]
    return found[-1] if found else None
