"""A self-contained HTML page from a folder of results: ``rerankflow report RESULTS_DIR``.

Reads every ``*.json`` under the folder:

* experiment results written by ``rerankflow run`` (``results.json`` with ``systems``): headed by
  the job's name and what it ran with (date, commit, versions, hardware, models), then one table
  of each system's means with the significance tests against the baseline (paired t-test and
  Wilcoxon p-values, queries improved/degraded; a mean whose t-test p is below 0.05 is marked),
  and its cost;
* benchmark results written by ``bench/*.py`` (a ``benchmark`` key): every list of rows in the
  file becomes a table, with the environment it ran in (versions, hardware, commit);
* a tuning run of ``rerankflow tune`` (``tune.json``): the front with each point's tuning and
  held-out scores, and a plot of every trial's objective against its first cost (or against
  the trial number without costs), the front's held-out scores beside its tuning scores.

Next to an experiment's ``results.json``, ``details.json`` (written by the same run) adds the
per-query view of :mod:`~rerankflow.eval.report_queries`: per-query differences between two
systems and each query's rankings side by side.

Methods that have a quality number are also plotted, per group (experiment, or dataset and
query scope of a benchmark): quality against cost for every method (an experiment's wall
seconds per query, which every system has; a benchmark's tokens per query when every method
reports them, else its seconds per query), LLM calls and tokens per query, and the distribution
of per-query LLM time (each call's share of its engine batch, split by tokens, summed per
query). Numbers are formatted per column (one number of decimals a column). Plots are PNGs
embedded as data URIs, so the page is one file that opens anywhere, without JavaScript for
everything but the per-query view. Files that are neither kind are listed as skipped, not
silently ignored; a file that is not valid JSON is an error.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError, MissingDependencyError
from ..io.jsonl import read_json
from .report_queries import Comparison, asset, bars_html, comparison, data_script, pick_pair

log = logging.getLogger(__name__)
QUALITY_KEYS = ("nDCG@10", "quality")
SIGNIFICANT = 0.05
"""A mean is marked when its paired t-test against the baseline gives a p-value below this."""


@dataclass(frozen=True)
class Marked:
    """A table value shown with a mark after it (significance) and a CSS class."""

    value: Any
    mark: str = ""
    css: str = ""


@dataclass(frozen=True)
class PValue:
    """A p-value, shown as ``<0.001`` or with three decimals (``n/a`` when not defined)."""

    value: float | None


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
    lines: list[str] = field(default_factory=list)
    """Further lines under the environment (an experiment's models)."""
    tables: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    """A note under the table of that label (legends)."""
    groups: dict[str, list[Point]] = field(default_factory=dict)
    measure: str = "nDCG@10"
    comparison: Comparison | None = None
    images: list[tuple[str, str]] = field(default_factory=list)
    """(caption, base64 PNG) drawn by the section itself (a tuning run's front)."""


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
        elif isinstance(data, dict) and isinstance(data.get("tune"), dict) and isinstance(data.get("front"), list):
            sections.append(_tuning(name, data))
        else:
            log.warning("report: %s is neither experiment nor benchmark results; skipped", name)
            skipped.append(name)
    if not sections:
        raise DataError("no experiment or benchmark result files (*.json) in this folder", file=folder)
    return sections, skipped


def _experiment(name: str, data: dict[str, Any]) -> Section:
    measures = [str(m) for m in data["measures"]]
    run = data.get("run") or {}
    baseline = data.get("baseline")
    section = Section(
        f"Job {run['job']}" if run.get("job") else f"Experiment {name}",
        environment=_run_line(run, name),
        lines=_model_lines(run),
        measure=measures[0] if measures else "quality",
    )
    tested = bool(baseline and measures)
    base = next((s.get("means") or {} for s in data["systems"] if s.get("name") == baseline), {})
    columns = ["system", *measures]
    if tested:
        columns += [f"p(t) {measures[0]}", f"p(W) {measures[0]}", "+/-"]
    columns += ["queries", "ms/query", "LLM calls/q", "tokens/q", "LLM s/q"]
    rows, points = [], []
    for s in data["systems"]:
        queries = max(int(s.get("queries") or 0), 1)
        usage = s.get("usage") or {}
        total = {k: sum(u["total"][k] for u in usage.values()) for k in ("calls", "prompt_tokens", "output_tokens",
                                                                         "latency_s")} if usage else {}  # fmt: skip
        calls = total["calls"] / queries if usage else None
        tokens = (total["prompt_tokens"] + total["output_tokens"]) / queries if usage else None
        llm_seconds = total["latency_s"] / queries if usage else None
        latency: dict[str, float] = {}
        for u in usage.values():
            for qid, q in (u.get("per_query") or {}).items():
                latency[qid] = latency.get(qid, 0.0) + float(q.get("latency_s", 0.0))
        means, tests = s.get("means") or {}, s.get("tests") or {}
        row: list[Any] = [s.get("name")]
        for m in measures:
            row.append(_significance(means.get(m), tests.get(m), base.get(m)))
        if tested:
            t = tests.get(measures[0])
            row += [PValue(t["p_ttest"]), PValue(t["p_wilcoxon"]), f"{int(t['improved'])}/{int(t['degraded'])}"] if t \
                else ["", "", ""]  # fmt: skip
        row += [s.get("queries"), s.get("ms_per_query"), calls, tokens, llm_seconds]
        rows.append(row)
        if measures and means.get(measures[0]) is not None:
            seconds = s.get("ms_per_query")
            points.append(Point(str(s.get("name")), float(means[measures[0]]), calls, tokens,
                                None if seconds is None else seconds / 1000, sorted(latency.values())))  # fmt: skip
    label = "systems"
    section.tables.append((label, columns, rows))
    if tested:
        section.notes[label] = (
            f"Against the baseline, {baseline}: p(t) paired t-test, p(W) Wilcoxon signed-rank, +/- queries "
            f"improved/degraded on {measures[0]}; ▲/▼ a mean above/below the baseline's with p(t) < {SIGNIFICANT}. "
            "LLM s/q: engine time per query (each call's share of its batch)."
        )
    section.groups[name] = points
    return section


def _significance(mean: Any, test: dict[str, Any] | None, base: float | None) -> Any:
    """A mean, marked ▲ or ▼ when its t-test against the baseline has p below the threshold."""
    if mean is None or not test or base is None:
        return mean
    p = test.get("p_ttest")
    if p is None or math.isnan(p) or p >= SIGNIFICANT:
        return mean
    return Marked(mean, " ▲", "sig up") if mean > base else Marked(mean, " ▼", "sig down")


def _run_line(run: dict[str, Any], name: str) -> str:
    """One line: file, date, commit, versions, hardware."""
    if not run:
        return f"{name} (written before runs recorded their environment)"
    commit = run.get("git_commit")
    commit_text = (
        "no git commit"
        if not commit
        else f"commit {commit[:10]}" + (" (uncommitted changes)" if run.get("git_dirty") else "")
    )
    packages = ", ".join(f"{k} {v}" for k, v in (run.get("packages") or {}).items() if v)
    hardware = f"{run.get('cpu', '?')} ({run.get('cpu_count', '?')} cores)"
    if run.get("gpu"):
        hardware += f", {run['gpu']}"
    date = str(run.get("date", "?")).replace("T", " ").replace("+00:00", " UTC")
    return f"{name}; run {date}; {commit_text}; {hardware}; Python {run.get('python', '?')}; {packages}"


def _model_lines(run: dict[str, Any]) -> list[str]:
    """One line per model: its identity and where the job uses it."""
    return [
        f"model {m['model']} ({m.get('identity', '?')}): {', '.join(m.get('used_by') or [])}"
        for m in run.get("models") or []
    ]


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


def _tuning(name: str, data: dict[str, Any]) -> Section:
    spec, front, trials = data["tune"], data["front"], data.get("trials") or []
    objective, costs = str(spec.get("objective", "quality")), list(spec.get("costs") or [])
    queries = data.get("queries") or {}
    section = Section(
        f"Tuning of {data.get('job', '?')}: pipeline {spec.get('pipeline', '?')} ({name})",
        environment=f"{len(trials)} trials; {len(queries.get('tuning', []))} tuning and "
        f"{len(queries.get('held_out', []))} held-out queries; chosen: trial {data.get('chosen')}",
        measure=objective,
    )
    params = list(spec.get("space") or {})
    columns = ["trial", *params, f"{objective} tuning", f"{objective} held-out"]
    columns += [f"{c} {part}" for c in costs for part in ("tuning", "held-out")]
    rows = []
    for p in front:
        row = [f"{p['number']}{' (chosen)' if p['number'] == data.get('chosen') else ''}"]
        row += [p["params"].get(k) for k in params] + [p["tuning"]["objective"], p["held_out"]["objective"]]
        row += [p[part].get(c) for c in costs for part in ("tuning", "held_out")]
        rows.append(row)
    section.tables.append(("the front (best trials)", columns, rows))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    x_label = costs[0] if costs else "trial"

    def x_of(point: dict[str, Any], part: str) -> float:
        return float(point[part][costs[0]]) if costs else float(point["number"])

    ax.scatter([x_of(t, "tuning") for t in trials], [t["tuning"]["objective"] for t in trials],
               s=12, color="#bbbbbb", label="every trial (tuning)")  # fmt: skip
    ax.scatter([x_of(p, "tuning") for p in front], [p["tuning"]["objective"] for p in front],
               color="#3465a4", label="front (tuning)")  # fmt: skip
    ax.scatter([x_of(p, "held_out") for p in front], [p["held_out"]["objective"] for p in front],
               color="#f57900", marker="s", label="front (held-out)")  # fmt: skip
    for p in front:
        ax.plot([x_of(p, "tuning"), x_of(p, "held_out")], [p["tuning"]["objective"], p["held_out"]["objective"]],
                color="#888888", linewidth=0.8)  # fmt: skip
    ax.set_xlabel(x_label)
    ax.set_ylabel(objective)
    ax.legend(fontsize=7)
    ax.set_title(f"{objective} against {x_label}")
    section.images.append((f"{objective} against {x_label}: every trial, the front and its held-out scores", _png(fig)))
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


def cost_axis(points: list[Point]) -> tuple[str, Any, list[Point]]:
    """The cost that every point can be placed by: tokens per query when all have tokens, else
    seconds per query; returns its label, the value of a point, and the points without it."""
    if points and all(p.tokens for p in points):
        return "LLM tokens per query", lambda p: p.tokens, []
    missing = [p for p in points if not p.seconds]
    if len(missing) < len(points):
        return "seconds per query", lambda p: p.seconds, missing
    return "LLM tokens per query", lambda p: p.tokens, [p for p in points if not p.tokens]


def plots(group: str, points: list[Point], measure: str) -> list[tuple[str, str]]:
    """(caption, base64 PNG) for one group: quality vs cost, calls/tokens, latencies."""
    plt = _pyplot()
    out = []
    label, x_of, missing = cost_axis(points)
    costed = [p for p in points if p not in missing]
    if costed:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for p in costed:
            ax.scatter(x_of(p), p.quality)
            text = p.method if label.startswith("LLM") or not p.tokens else f"{p.method} ({p.tokens:,.0f} tok/q)"
            ax.annotate(text, (x_of(p), p.quality), fontsize=7, xytext=(4, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(f"{label} (log)")
        ax.set_ylabel(measure)
        ax.set_title(f"{group}: quality vs cost")
        caption = f"{group}: {measure} against {label}, every method"
        if missing:
            caption = f"{group}: {measure} against {label}; not placed (no cost recorded): " + ", ".join(
                p.method for p in missing
            )
        out.append((caption, _png(fig)))
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
        fig, ax = plt.subplots(figsize=(6.5, 0.55 * len(timed) + 1.4))
        ax.boxplot([p.latencies for p in timed], orientation="horizontal", showfliers=False)
        for row, p in enumerate(timed, start=1):  # every query as a dot over its box
            jitter = [row + 0.18 * (((i * 7919) % 13) / 12 - 0.5) for i in range(len(p.latencies))]
            ax.scatter(p.latencies, jitter, s=9, alpha=0.6, color="#3465a4", zorder=3)
        ax.set_yticks(range(1, len(timed) + 1), [p.method for p in timed])
        values = [v for p in timed for v in p.latencies if v > 0]
        if values and max(values) > 100 * min(values):
            ax.set_xscale("log")
        ax.set_xlabel("LLM seconds per query (each call's share of its batch, summed; log when spanning 100x)")
        ax.set_title(f"{group}: per-query LLM time")
        caption = f"{group}: per-query LLM time, one dot per query"
        untimed = [p.method for p in points if not p.latencies]
        if untimed:
            caption += f" (no LLM calls, so no per-query time: {', '.join(untimed)})"
        out.append((caption, _png(fig)))
    return out


# -- HTML ---------------------------------------------------------------------------------------
def _number(v: Any) -> float | None:
    inner = v.value if isinstance(v, Marked) else v
    if isinstance(inner, bool) or not isinstance(inner, (int, float)) or isinstance(v, PValue):
        return None
    return float(inner)


def column_decimals(values: list[Any]) -> int | None:
    """Decimals for a column of numbers: none for whole numbers; else enough for three
    significant digits of the largest and two of the smallest non-zero value (at most 6);
    ``None`` when the column holds no numbers."""
    numbers = [n for n in (_number(v) for v in values) if n is not None and math.isfinite(n)]
    if not numbers:
        return None
    if all(isinstance(_inner(v), int) for v in values if _number(v) is not None):
        return 0
    nonzero = [abs(n) for n in numbers if n]
    if not nonzero:
        return 1

    def needed(x: float, digits: int) -> int:
        return max(0, digits - 1 - math.floor(math.log10(x)))

    return min(6, max(needed(max(nonzero), 3), needed(min(nonzero), 2)))


def _inner(v: Any) -> Any:
    return v.value if isinstance(v, Marked) else v


def _cell(v: Any, decimals: int | None) -> str:
    if isinstance(v, PValue):
        p = v.value
        text = "n/a" if p is None or math.isnan(p) else "<0.001" if p < 0.001 else f"{p:.3f}"
        return f'<td class="n">{html.escape(text)}</td>'
    mark, css = (v.mark, f"n {v.css}") if isinstance(v, Marked) else ("", "n")
    inner = _inner(v)
    n = _number(v)
    if n is not None and decimals is not None:
        text = "n/a" if not math.isfinite(n) else f"{n:,.{decimals}f}"
        return f'<td class="{css}">{html.escape(text + mark)}</td>'
    return f"<td>{html.escape('' if inner is None else str(inner))}</td>"


def table_html(columns: list[str], rows: list[list[Any]]) -> str:
    """A table whose numbers have one number of decimals per column."""
    e = html.escape
    decimals = [column_decimals([row[i] for row in rows]) for i in range(len(columns))]
    head = f"<table><tr>{''.join(f'<th>{e(str(c))}</th>' for c in columns)}</tr>"
    body = "".join(f"<tr>{''.join(_cell(v, d) for v, d in zip(row, decimals, strict=True))}</tr>" for row in rows)
    return head + body + "</table>"


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
        parts.extend(f"<p class='env'>{e(line)}</p>" for line in s.lines)
        for label, columns, rows in s.tables:
            parts.append(f"<h3>{e(label)}</h3>{table_html(columns, rows)}")
            if label in s.notes:
                parts.append(f"<p class='note'>{e(s.notes[label])}</p>")
        drawn = [(c, png) for group, points in s.groups.items() for c, png in plots(group, points, s.measure)]
        for caption, png in s.images + drawn:
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
    jobs = [s.title.removeprefix("Job ") for s in sections if s.title.startswith("Job ")]
    default = f"{jobs[0]}: results" if len(jobs) == 1 and len(sections) == 1 else f"rerankflow results: {folder.name}"
    page = render(sections, skipped, title or default)
    output = output or folder / "report.html"
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(output)
    log.info("wrote %s (%d result files, %d skipped)", output, len(sections), len(skipped))
    return output
