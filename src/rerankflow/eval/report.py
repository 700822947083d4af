"""A self-contained HTML page from a folder of results: ``rerankflow report RESULTS_DIR``.

Reads every ``*.json`` under the folder:

* experiment results written by ``rerankflow run`` (``results.json`` with ``systems``): a table
  of each system's means, significance tests and cost;
* benchmark results written by ``bench/*.py`` (a ``benchmark`` key): every list of rows in the
  file becomes a table, with the environment it ran in (versions, hardware, commit).

Next to an experiment's ``results.json``, ``details.json`` (written by the same run) adds the
per-query view of :mod:`~rerankflow.eval.report_queries`: per-query differences between two
systems and each query's rankings side by side.

Methods that have a quality number are also plotted, per group (experiment, or dataset and
query scope of a benchmark): quality against cost (tokens per query, else seconds per query),
LLM calls and tokens per query, and the distribution of per-query latency (the latencies of a
query's LLM calls summed: calls that ran side by side in one batch each count in full, so with
a scheduler this exceeds the wall time per query; stages without LLM calls show their wall
time per query). Plots are PNGs
embedded as data URIs, so the page is one file that opens anywhere. Files that are neither kind
are listed as skipped, not silently ignored; a file that is not valid JSON is an error.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError, MissingDependencyError
from ..io.jsonl import read_json
from .report_queries import Comparison, asset, bars_html, comparison, data_script, pick_pair

log = logging.getLogger(__name__)
QUALITY_KEYS = ("nDCG@10", "quality")


@dataclass
class Point:
    """One method's quality and cost within a group."""

    method: str
    quality: float
    calls: float | None = None
    tokens: float | None = None
    seconds: float | None = None
    latencies: list[float] = field(default_factory=list)


@dataclass
class Section:
    """What one result file contributes to the page."""

    title: str
    environment: str = ""
    tables: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)
    groups: dict[str, list[Point]] = field(default_factory=dict)
    measure: str = "nDCG@10"
    comparison: Comparison | None = None


def collect(folder: Path, compare: tuple[str, str] | None = None) -> tuple[list[Section], list[str]]:
    """Sections for the recognised result files under ``folder`` and the paths skipped
    (``details.json`` files are read with their experiment, not listed)."""
    if not folder.is_dir():
        raise DataError("results folder not found (give the folder that holds the result JSON files)", file=folder)
    sections, skipped = [], []
    for path in sorted(folder.rglob("*.json")):
        if path.name == "details.json" and (path.parent / "results.json").is_file():
            continue
        data = read_json(path)
        name = str(path.relative_to(folder))
        if isinstance(data, dict) and isinstance(data.get("systems"), list) and "measures" in data:
            section = _experiment(name, data)
            found = path.parent / "details.json"
            pair = pick_pair(data, compare) if found.is_file() else None
            if pair is not None:
                section.comparison = comparison(data, read_json(found), pair)
            sections.append(section)
        elif isinstance(data, dict) and "benchmark" in data:
            sections.append(_benchmark(name, data))
        else:
            log.warning("report: %s is neither experiment nor benchmark results; skipped", name)
            skipped.append(name)
    if not sections:
        raise DataError("no experiment or benchmark result files (*.json) in this folder", file=folder)
    return sections, skipped


def _experiment(name: str, data: dict[str, Any]) -> Section:
    measures = [str(m) for m in data["measures"]]
    section = Section(f"Experiment {name}", measure=measures[0] if measures else "quality")
    columns = ["system", *measures, "queries", "ms/query", "LLM calls/q", "tokens/q"]
    rows, points = [], []
    for s in data["systems"]:
        queries = max(int(s.get("queries") or 0), 1)
        usage = s.get("usage") or {}
        calls = sum(u["total"]["calls"] for u in usage.values()) / queries if usage else None
        tokens = (
            sum(u["total"]["prompt_tokens"] + u["total"]["output_tokens"] for u in usage.values()) / queries
            if usage
            else None
        )
        latency: dict[str, float] = {}
        for u in usage.values():
            for qid, q in (u.get("per_query") or {}).items():
                latency[qid] = latency.get(qid, 0.0) + float(q.get("latency_s", 0.0))
        means = s.get("means") or {}
        rows.append([s.get("name"), *(means.get(m) for m in measures), s.get("queries"), s.get("ms_per_query"),
                     calls, tokens])  # fmt: skip
        if measures and means.get(measures[0]) is not None:
            seconds = s.get("ms_per_query")
            points.append(Point(str(s.get("name")), float(means[measures[0]]), calls, tokens,
                                None if seconds is None else seconds / 1000, sorted(latency.values())))  # fmt: skip
    section.tables.append(("systems (p-values against the baseline are in results.csv)", columns, rows))
    section.groups[name] = points
    return section


def _benchmark(name: str, data: dict[str, Any]) -> Section:
    env = data.get("environment") or {}
    packages = ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items() if v)
    hardware = env.get("gpu") or f"{env.get('cpu', '?')} ({env.get('cpu_count', '?')} cores)"
    section = Section(
        f"Benchmark {data['benchmark']} ({name})",
        environment=f"{hardware}; Python {env.get('python', '?')}; {packages}; commit {env.get('git_commit', '?')}",
    )
    for label, rows in _row_lists(data):
        columns = [k for k in dict.fromkeys(k for r in rows for k in r) if all(_scalar(r.get(k)) for r in rows)]
        section.tables.append((label, columns, [[r.get(c) for c in columns] for r in rows]))
        for r in rows:
            quality = next((r[k] for k in QUALITY_KEYS if isinstance(r.get(k), (int, float))), None)
            if quality is None or "method" not in r:
                continue
            group = " ".join(
                f"{k} {r[k]}" if k == "noise" else str(r[k]) for k in ("dataset", "scope", "noise") if k in r
            )
            group = group or label
            tokens = [float(r[k]) for k in ("prompt tokens/q", "output tokens/q") if isinstance(r.get(k), (int, float))]
            section.groups.setdefault(group, []).append(
                Point(
                    str(r["method"]),
                    float(quality),
                    r.get("calls/q"),
                    sum(tokens) if tokens else None,
                    r.get("s/q"),
                    sorted(r.get("per_query_latency_s") or []),
                )
            )
    if "published" in data and isinstance(data["published"], list):
        rows = data["published"]
        columns = list(dict.fromkeys(k for r in rows for k in r))
        section.tables.append(("published reference numbers (not measured here)", columns,
                               [[r.get(c) for c in columns] for r in rows]))  # fmt: skip
    return section


def _row_lists(data: dict[str, Any], prefix: str = "") -> list[tuple[str, list[dict[str, Any]]]]:
    """Every list of row objects in the file (top level and one level down), with its key path."""
    out = []
    for key, value in data.items():
        if key in ("environment", "published"):
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out.append((f"{prefix}{key}", value))
        elif isinstance(value, dict) and not prefix:
            out.extend(_row_lists(value, f"{key}: "))
    return out


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


# -- plots --------------------------------------------------------------------------------------
def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", "report") from exc
    return plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plots(group: str, points: list[Point], measure: str) -> list[tuple[str, str]]:
    """(caption, base64 PNG) for one group: quality vs cost, calls/tokens, latencies."""
    plt = _pyplot()
    out = []
    by_tokens = [p for p in points if p.tokens]
    x_of = (lambda p: p.tokens) if by_tokens else (lambda p: p.seconds)
    costed = [p for p in points if x_of(p)]
    if costed:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for p in costed:
            ax.scatter(x_of(p), p.quality)
            ax.annotate(p.method, (x_of(p), p.quality), fontsize=7, xytext=(4, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("LLM tokens per query (log)" if by_tokens else "seconds per query (log)")
        ax.set_ylabel(measure)
        ax.set_title(f"{group}: quality vs cost")
        out.append((f"{group}: {measure} against cost per method", _png(fig)))
    counted = [p for p in points if p.calls]
    if counted:
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 0.45 * len(counted) + 1.2))
        names = [p.method for p in counted]
        a.barh(names, [p.calls or 0 for p in counted])
        a.set_xlabel("LLM calls per query")
        b.barh(names, [p.tokens or 0 for p in counted])
        b.set_xlabel("tokens per query")
        b.set_yticks([])
        fig.suptitle(f"{group}: calls and tokens per query")
        out.append((f"{group}: LLM calls and tokens per query", _png(fig)))
    timed = [p for p in points if p.latencies]
    if timed:
        fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(timed) + 1.2))
        ax.boxplot([p.latencies for p in timed], orientation="horizontal")
        ax.set_yticks(range(1, len(timed) + 1), [p.method for p in timed])
        values = [v for p in timed for v in p.latencies if v > 0]
        if values and max(values) > 100 * min(values):
            ax.set_xscale("log")
        ax.set_xlabel("LLM seconds per query (call latencies summed; log scale when they span 100x)")
        ax.set_title(f"{group}: per-query latency")
        out.append((f"{group}: per-query latency distribution", _png(fig)))
    return out


# -- HTML ---------------------------------------------------------------------------------------
def _cell(v: Any) -> str:
    if isinstance(v, float):
        text = f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
        return f'<td class="n">{text}</td>'
    if isinstance(v, int) and not isinstance(v, bool):
        return f'<td class="n">{v:,}</td>'
    return f"<td>{html.escape('' if v is None else str(v))}</td>"


def render(sections: list[Section], skipped: list[str], title: str) -> str:
    """The page's HTML."""
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<style>{asset('report.css')}</style></head><body><h1>{e(title)}</h1>"]  # fmt: skip
    compared = 0
    for s in sections:
        parts.append(f"<h2>{e(s.title)}</h2>")
        if s.environment:
            parts.append(f"<p class='env'>{e(s.environment)}</p>")
        for label, columns, rows in s.tables:
            parts.append(f"<h3>{e(label)}</h3><table><tr>{''.join(f'<th>{e(str(c))}</th>' for c in columns)}</tr>")
            parts.extend(f"<tr>{''.join(_cell(v) for v in row)}</tr>" for row in rows)
            parts.append("</table>")
        for group, points in s.groups.items():
            for caption, png in plots(group, points, s.measure):
                parts.append(
                    f"<figure><img alt='{e(caption)}' src='data:image/png;base64,{png}'>"
                    f"<figcaption>{e(caption)}</figcaption></figure>"
                )
        if s.comparison is not None:
            parts.append(bars_html(compared, s.comparison))
            parts.append(data_script(compared, s.comparison))
            compared += 1
    if skipped:
        parts.append("<h2>Skipped files</h2><ul>")
        parts.extend(f"<li>{e(s)} (not experiment or benchmark results)</li>" for s in skipped)
        parts.append("</ul>")
    if compared:
        parts.append(f"<script>{asset('report_queries.js')}</script>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    folder: Path, output: Path | None = None, title: str | None = None, compare: tuple[str, str] | None = None
) -> Path:
    """Write the HTML page for ``folder`` (default ``folder/report.html``) atomically;
    ``compare`` names the two systems of the per-query view (default: baseline against best)."""
    sections, skipped = collect(folder, compare)
    page = render(sections, skipped, title or f"rerankflow results: {folder.name}")
    output = output or folder / "report.html"
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(output)
    log.info("wrote %s (%d result files, %d skipped)", output, len(sections), len(skipped))
    return output
