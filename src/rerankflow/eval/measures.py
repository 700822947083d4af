"""Measures parsed from strings (``"nDCG@10"``, ``"R(rel=2)@100"``) and evaluated with ir-measures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from ..io.trec import Qrels, Run


def parse_measures(names: Sequence[str]) -> list[Any]:
    """ir-measures objects for ``names``; a bad name raises :class:`ConfigError` listing valid ones."""
    import ir_measures

    if not names:
        raise ConfigError("no measures given; e.g. ['nDCG@10', 'R@100']")
    out = []
    for i, name in enumerate(names):
        try:
            out.append(ir_measures.parse_measure(name))
        except (NameError, ValueError, TypeError) as exc:
            valid = ", ".join(sorted(k for k in ir_measures.measures.registry if k.isascii()))
            raise ConfigError(
                f"cannot parse measure {name!r} ({exc}); write NAME@k or NAME(param=value)@k with NAME one of: {valid}",
                path=("measures", i),
            ) from None
    return out


def per_query(measures: Sequence[Any], qrels: Qrels, run: Run) -> dict[str, dict[str, float]]:
    """``{measure: {qid: value}}`` over the judged queries; a judged query missing from the run
    scores 0 (as ``trec_eval -c`` does), so systems are compared on the same query set.
    """
    import ir_measures

    out: dict[str, dict[str, float]] = {str(m): dict.fromkeys(qrels, 0.0) for m in measures}
    judged_run = {q: docs for q, docs in run.items() if q in qrels}
    for metric in ir_measures.iter_calc(list(measures), qrels, judged_run):
        out[str(metric.measure)][metric.query_id] = float(metric.value)
    return out


def mean_scores(values: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean over queries of each measure."""
    return {m: (sum(v.values()) / len(v) if v else 0.0) for m, v in values.items()}


def evaluate(measures: Sequence[str], qrels: Qrels, run: Run) -> dict[str, float]:
    """Mean of each named measure over the judged queries (see :func:`per_query`)."""
    return mean_scores(per_query(parse_measures(measures), qrels, run))
