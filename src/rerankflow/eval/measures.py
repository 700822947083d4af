"""Measures parsed from strings (``"nDCG@10"``, ``"R(rel=2)@100"``) and evaluated with ir-measures."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from ..io.trec import Qrels, Run
from ..suggest import did_you_mean


def parse_measures(names: Sequence[str]) -> list[Any]:
    """ir-measures objects for ``names``; a bad name raises :class:`ConfigError` listing valid ones."""
    import ir_measures

    if not names:
        raise ConfigError("no measures given; e.g. ['nDCG@10', 'R@100']")
    out = []
    valid = sorted(k for k in ir_measures.measures.registry if k.isascii())
    for i, name in enumerate(names):
        try:
            out.append(ir_measures.parse_measure(name))
        except (NameError, ValueError, TypeError):
            raise ConfigError(_measure_problem(name, valid), path=("measures", i)) from None
    return out


_MEASURE = re.compile(r"^\s*([A-Za-z_][\w]*)\s*(\([^)]*\))?\s*(?:@\s*(.*))?$")


def _measure_problem(name: str, valid: list[str]) -> str:
    """What is wrong with a measure name ir-measures cannot parse, and the fix."""
    m = _MEASURE.match(name)
    if m is None:
        return f"cannot parse measure {name!r}; write NAME@k or NAME(param=value)@k, e.g. nDCG@10, R(rel=2)@100"
    base, _, cutoff = m.groups()
    if base not in valid:
        return (
            f"unknown measure {base!r} in {name!r}{did_you_mean(base, valid)}; measures are named as in ir-measures: "
            f"{', '.join(valid)}"
        )
    if cutoff is not None and not cutoff.strip().isdigit():
        return f"the cutoff of {name!r} must be a whole number of results, as in {base}@10 (got {cutoff!r})"
    return f"cannot parse measure {name!r}: check its parameters, e.g. R(rel=2)@100"


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
