"""The report's per-query view: which queries one system helped or hurt against another, and
what it moved.

For a pair of systems of an experiment (``--compare A B``; default: the baseline against the
best other system by the first measure), the page gets a sorted bar chart of the per-query
metric differences (static HTML, each bar a link) and, on click, that query's side-by-side
view: both top-k lists with grades, the rank each passage has in the other list and its move,
query terms highlighted, every stage's score, the LLM calls and tokens each stage spent on the
query, and for RAG runs the question, gold answers, answer, citations and the context with the
kept sentences marked. Details are rendered by a small script from JSON embedded in the page,
only when a query is opened (the page opens fast however many queries it holds) and never
fetch anything.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import quote

from ..errors import ConfigError


@dataclass
class Comparison:
    """What the page needs for one experiment's pair of systems."""

    a: str
    b: str
    measure: str | None
    data: dict[str, Any]


def pick_pair(results: dict[str, Any], compare: tuple[str, str] | None) -> tuple[str, str] | None:
    """The two systems to compare: ``compare`` if given, else the baseline (or the first system)
    against the best other one by the first measure (or the second system without measures)."""
    names = [str(s["name"]) for s in results["systems"]]
    if compare is not None:
        missing = [n for n in compare if n not in names]
        if missing:
            raise ConfigError(f"--compare names {missing}, not systems of this experiment ({', '.join(names)})")
        return compare
    if len(names) < 2:
        return None
    base = results.get("baseline") or names[0]
    measures = [str(m) for m in results.get("measures") or []]
    others = [s for s in results["systems"] if s["name"] != base]
    if measures:
        m = measures[0]
        others.sort(key=lambda s: -float((s.get("means") or {}).get(m, float("-inf"))))
    return base, str(others[0]["name"])


def comparison(results: dict[str, Any], found: dict[str, Any], pair: tuple[str, str]) -> Comparison:
    """The embedded data for ``pair`` from ``results.json`` and ``details.json`` contents."""
    a, b = pair
    by_name = {s["name"]: s for s in results["systems"]}
    measures = [str(m) for m in results.get("measures") or []]
    measure = next((m for m in measures if m in (by_name[a].get("per_query") or {})), None)
    qids = list(found["queries"])
    diffs = []
    if measure is not None:
        va, vb = by_name[a]["per_query"][measure], by_name[b]["per_query"][measure]
        diffs = [[q, va[q], vb[q]] for q in qids if _finite(va.get(q)) and _finite(vb.get(q))]
        diffs.sort(key=lambda d: (-(d[2] - d[1]), d[0]))
    systems = {n: found["systems"].get(n, {}) for n in pair}
    used = {
        e["docid"]
        for per_query in systems.values()
        for entry in per_query.values()
        for e in [*entry.get("ranking", []), *(entry.get("answer") or {}).get("context", [])]
    }
    usage = {n: {stage: u.get("per_query", {}) for stage, u in (by_name[n].get("usage") or {}).items()} for n in pair}
    data = {
        "a": a,
        "b": b,
        "measure": measure,
        "diffs": diffs,
        "qids": qids,
        "queries": found["queries"],
        "documents": {d: t for d, t in found["documents"].items() if d in used},
        "systems": systems,
        "usage": usage,
    }
    return Comparison(a, b, measure, data)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _href(index: int, qid: str) -> str:
    return html.escape(f"#e{index}:q={quote(qid, safe='')}")


def bars_html(index: int, c: Comparison) -> str:
    """The sorted per-query differences as linked bars (or a plain list of queries)."""
    e = html.escape
    head = f"<h3 id='e{index}'>Per query: {e(c.b)} against {e(c.a)}</h3>"
    if not c.data["diffs"]:
        links = "".join(f"<a class='ql' href='{_href(index, q)}'>{e(q)}</a> " for q in c.data["qids"])
        why = "no per-query measure (no judgments)" if c.measure is None else "no query scored by both systems"
        return (
            f"{head}<p class='env'>{why}; open a query:</p><p>{links}</p><div class='detail' id='detail-{index}'></div>"
        )
    diffs = c.data["diffs"]
    top = max(abs(vb - va) for _, va, vb in diffs) or 1.0
    wins = sum(vb > va for _, va, vb in diffs)
    losses = sum(vb < va for _, va, vb in diffs)
    rows = []
    for qid, va, vb in diffs:
        d = vb - va
        width = 50 * abs(d) / top
        side = f"left:50%;width:{width:.2f}%" if d >= 0 else f"left:{50 - width:.2f}%;width:{width:.2f}%"
        kind = "pos" if d > 0 else "neg" if d < 0 else "tie"
        text = e(c.data["queries"].get(qid, {}).get("text", ""))
        rows.append(
            f"<a class='bar' href='{_href(index, qid)}' title='{e(qid)}: {va:.4g} → {vb:.4g}'>"
            f"<span class='qid'>{e(qid)}</span><span class='track'><span class='fill {kind}' style='{side}'></span>"
            f"</span><span class='v'>{d:+.3f}</span><span class='qt'>{text}</span></a>"
        )
    summary = (
        f"<p class='env'>{e(c.measure or '')} of {e(c.b)} minus {e(c.a)} per query, best first: "
        f"{wins} better, {losses} worse, {len(diffs) - wins - losses} equal. Click a query for its rankings.</p>"
    )
    return f"{head}{summary}<div class='bars'>{''.join(rows)}</div><div class='detail' id='detail-{index}'></div>"


def data_script(index: int, c: Comparison) -> str:
    """The comparison's data as an inert JSON script element (``</`` escaped)."""
    text = json.dumps(c.data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    return f"<script type='application/json' id='rf-data-{index}'>{text}</script>"


def asset(name: str) -> str:
    """A file of the report's assets (CSS and JavaScript kept as package data, where editors and
    linters read them)."""
    return (resources.files("rerankflow.eval") / "assets" / name).read_text(encoding="utf-8")
