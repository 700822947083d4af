"""`rerankflow report`: one self-contained HTML page from experiment and benchmark results."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from rerankflow.cli.main import main
from rerankflow.errors import DataError
from rerankflow.eval.report import collect, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bench_file(folder: Path) -> Path:
    """A benchmark result in the shape bench/common.py writes (rows + environment)."""
    rows = [
        {"dataset": "dl19", "scope": "subset", "method": "BM25 (input)", "nDCG@10": 0.5, "calls/q": 0,
         "prompt tokens/q": 0, "output tokens/q": 0, "s/q": 1e-5, "per_query_latency_s": [1e-5, 1e-5]},
        {"dataset": "dl19", "scope": "subset", "method": "listwise <b>sliding</b>", "nDCG@10": 0.61, "calls/q": 9,
         "prompt tokens/q": 11000.0, "output tokens/q": 900.0, "s/q": 30.5, "per_query_latency_s": [28.0, 33.0]},
        {"dataset": "dl19", "scope": "subset", "method": "pointwise", "nDCG@10": 0.55, "calls/q": 100,
         "prompt tokens/q": 9000.0, "output tokens/q": 100.0, "s/q": 20.0, "per_query_latency_s": [19.0, 21.0]},
    ]  # fmt: skip
    data = {
        "benchmark": "quality",
        "environment": {"python": "3.11.7", "packages": {"torch": "2.13.0"}, "cpu": "Test CPU", "cpu_count": 2,
                        "git_commit": "abc1234"},
        "rows": rows,
        "published": [{"method": "RankZephyr-7B", "dl19": 0.7365}],
        "nested": {"rows": [{"scheduler": "sequential", "queries/s": 0.02}, {"scheduler": "concurrent", "queries/s": 0.05}]},
    }  # fmt: skip
    path = folder / "quality.json"
    path.write_text(json.dumps(data))
    return path


def pngs(page: str) -> list[bytes]:
    return [base64.b64decode(x) for x in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)]


def test_report_from_a_real_run_and_a_benchmark_file(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: t\ndataset: {builtin: demo}\npipelines:\n  a: [bm25]\n  b: [bm25: {k1: 1.2, b: 0.75}]\n"
        "measures: [nDCG@10, R@10]\nbaseline: a\n"
    )
    results = tmp_path / "results"
    assert main(["-q", "run", str(job), "-o", str(results / "demo")]) == 0
    bench_file(results)
    (results / "notes.json").write_text('{"something": "else"}')
    capsys.readouterr()
    assert main(["-q", "report", str(results)]) == 0
    out = capsys.readouterr().out.strip()
    page = (results / "report.html").read_text()
    assert out == str(results / "report.html") and not list(results.glob("*.tmp"))
    # the experiment: both systems with their measured means, as stored by the run
    stored = json.loads((results / "demo" / "results.json").read_text())
    for system in stored["systems"]:
        assert f"<td>{system['name']}</td>" in page
        assert f">{system['means']['nDCG@10']:.3f}<" in page  # measures: three decimals, every row
    # headed by the job, with what it ran on; the p-values in the table itself
    run = stored["run"]
    assert "<h2>Job t</h2>" in page and "<title>t: results</title>" not in page  # two result files here
    assert run["date"].split("T")[0] in page and f"Python {run['python']}" in page and "cores)" in page
    assert "p(t) nDCG@10" in page and "p(W) nDCG@10" in page and "paired t-test" in page
    # the benchmark: environment line, rows (nested ones too), published numbers marked
    assert "Test CPU (2 cores)" in page and "commit abc1234" in page
    assert "concurrent" in page and "published reference numbers (not measured here)" in page
    assert "listwise &lt;b&gt;sliding&lt;/b&gt;" in page and "<b>sliding</b>" not in page  # escaped
    # plots: quality vs cost for both groups; calls/tokens and latency for the benchmark group
    images = pngs(page)
    assert len(images) == 4 and all(img.startswith(PNG_MAGIC) and len(img) > 2000 for img in images)
    assert "dl19 subset: nDCG@10 against seconds per query, every method" in page  # BM25 too, at no tokens
    assert "results.json: nDCG@10 against seconds per query, every method" in page
    assert "dl19 subset: per-query LLM time, one dot per query" in page
    assert "notes.json (not experiment or benchmark results)" in page  # nothing silently dropped


def test_experiment_usage_becomes_cost_and_latency(tmp_path):
    usage = {"listwise": {"total": {"calls": 18, "prompt_tokens": 2000, "output_tokens": 200, "latency_s": 3.0},
                          "per_query": {"q1": {"latency_s": 1.0}, "q2": {"latency_s": 2.0}}}}  # fmt: skip
    data = {
        "measures": ["nDCG@10"],
        "baseline": "bm25",
        "systems": [
            {"name": "bm25", "means": {"nDCG@10": 0.4}, "queries": 2, "ms_per_query": 0.01},
            {"name": "listwise", "means": {"nDCG@10": 0.6}, "queries": 2, "ms_per_query": 1500.0, "usage": usage},
        ],
    }
    (tmp_path / "results.json").write_text(json.dumps(data))
    sections, skipped = collect(tmp_path)
    points = {p.method: p for p in sections[0].groups["results.json"]}
    assert skipped == []
    assert points["listwise"].calls == 9 and points["listwise"].tokens == 1100
    assert points["listwise"].latencies == [1.0, 2.0] and points["listwise"].seconds == 1.5
    assert points["bm25"].calls is None and points["bm25"].latencies == []
    page = write_report(tmp_path).read_text()
    assert len(pngs(page)) == 3  # quality vs cost (seconds: bm25 has no tokens), calls/tokens, latency
    assert "(no LLM calls, so no per-query time: bm25)" in page


def test_the_main_table_marks_significance_and_formats_numbers_per_column(tmp_path):
    """p-values and +/- beside each system's means; a mean whose t-test p is below 0.05 gets a
    mark in its direction; each column shows one number of decimals; the page is titled after
    the job and says what the run ran with."""
    from rerankflow.eval.report import column_decimals

    tests = {"nDCG@10": {"p_ttest": 0.0004, "p_wilcoxon": 0.012, "improved": 30.0, "degraded": 5.0},
             "R@10": {"p_ttest": 0.2, "p_wilcoxon": 0.3, "improved": 3.0, "degraded": 2.0}}  # fmt: skip
    worse = {"nDCG@10": {"p_ttest": 0.03, "p_wilcoxon": 0.04, "improved": 2.0, "degraded": 20.0}}
    data = {
        "run": {"job": "dl19-study", "date": "2026-12-07T21:00:00+00:00", "git_commit": "0123456789abcdef",
                "git_dirty": True, "python": "3.11.7", "packages": {"rerankflow": "0.3.0", "torch": None},
                "cpu": "Test CPU", "cpu_count": 2, "gpu": None,
                "models": [{"model": "m1", "identity": "m1@default", "used_by": ["llm: listwise.backend.model"]}]},
        "measures": ["nDCG@10", "R@10"],
        "baseline": "bm25",
        "systems": [
            {"name": "bm25", "means": {"nDCG@10": 0.5, "R@10": 0.7561}, "queries": 43, "ms_per_query": 1.25,
             "tests": {}},
            {"name": "llm", "means": {"nDCG@10": 0.79, "R@10": 0.8}, "queries": 43, "ms_per_query": 1312.0,
             "tests": tests},
            {"name": "worse", "means": {"nDCG@10": 0.41, "R@10": 0.7}, "queries": 43, "ms_per_query": 2.0,
             "tests": worse},
        ],
    }  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps(data))
    page = write_report(tmp_path).read_text()
    assert "<title>dl19-study: results</title>" in page and "<h2>Job dl19-study</h2>" in page
    assert "run 2026-12-07 21:00:00 UTC" in page and "commit 0123456789 (uncommitted changes)" in page
    assert "rerankflow 0.3.0" in page and "torch" not in page.split("<h2>")[1].split("</p>")[0]
    assert "model m1 (m1@default): llm: listwise.backend.model" in page
    assert '<td class="n sig up">0.790 ▲</td>' in page and '<td class="n sig down">0.410 ▼</td>' in page
    assert '<td class="n">0.800</td>' in page  # R@10's p of 0.2: not marked
    assert '<td class="n">0.500</td>' in page and '<td class="n">0.756</td>' in page  # 0.5 beside 0.7561
    assert ">&lt;0.001<" in page and ">0.012<" in page and "<td>30/5</td>" in page
    assert ">1,312.0<" in page and ">1.2<" in page  # ms/query: one decimal down the column
    assert column_decimals([3, 1312, None]) == 0 and column_decimals([0.0012, 0.5]) == 4
    assert column_decimals(["a", None]) is None and column_decimals([0.0, 0.0]) == 1


def test_bad_folders_and_files_are_clear_errors(tmp_path, capsys):
    with pytest.raises(DataError, match="results folder not found"):
        collect(tmp_path / "missing")
    (tmp_path / "other.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="no experiment or benchmark result files"):
        collect(tmp_path)
    (tmp_path / "broken.json").write_text('{"benchmark": "x",\n  "rows": [}')
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "broken.json:2" in err and "invalid JSON" in err
    assert not (tmp_path / "report.html").exists()


def test_details_keep_top_k_with_histories_grades_and_compressed_spans():
    from rerankflow import Answer, Candidate, Document, Query, Ranking
    from rerankflow.eval.details import details

    docs = [Document(f"d{i}", f"text {i} </script>", "T") for i in range(25)]
    ranked = Ranking(Query("q1", "query"), tuple(Candidate(d, 25.0 - i, "bm25") for i, d in enumerate(docs)))
    ranked = ranked.with_candidates(c.rescored(c.score * 2, "rerank") for c in ranked.candidates)
    sent = Document("d3", "text 3", None, {"compressed": {"spans": [(0, 6)], "source_chars": len(docs[3].text)}})
    rag = Ranking(Query("q1", "query"), ranked.candidates[:1], answer=Answer("see [1] [7]", context=(sent,)))
    out = details(
        {"a": [ranked], "rag": [rag]}, {"q1": {"d0": 2, "d24": 1}}, {"q1": ["gold"]}, {d.docid: d for d in docs}
    )
    a = out["systems"]["a"]["q1"]
    assert len(a["ranking"]) == 20 and a["order"] == [f"d{i}" for i in range(25)]
    assert a["ranking"][0] == {"docid": "d0", "score": 50.0, "scores": {"bm25": 25.0, "rerank": 50.0}}
    assert out["queries"]["q1"] == {"text": "query", "gold": ["gold"], "judged": True, "grades": {"d0": 2}}
    context = out["systems"]["rag"]["q1"]["answer"]["context"]
    assert context == [{"docid": "d3", "text": "text 3", "spans": [[0, 6]]}]
    assert out["documents"]["d3"]["text"] == docs[3].text  # the original, not the compressed text


def test_per_query_view_picks_baseline_against_best_and_refuses_unknown_names(tmp_path):
    from rerankflow.errors import ConfigError
    from rerankflow.eval.report_queries import pick_pair

    job = tmp_path / "job.yaml"
    job.write_text(
        "name: t\ndataset: {builtin: demo, limit: 4}\npipelines:\n  a: [bm25]\n  top3: ['bm25', cutoff: {k: 3}]\n"
        "  b: [bm25: {k1: 0.5, b: 0.3}]\nmeasures: [nDCG@10]\nbaseline: top3\n"
    )
    assert main(["-q", "run", str(job), "-o", str(tmp_path / "r")]) == 0
    stored = json.loads((tmp_path / "r" / "results.json").read_text())
    best = max((s for s in stored["systems"] if s["name"] != "top3"), key=lambda s: s["means"]["nDCG@10"])
    assert pick_pair(stored, None) == ("top3", best["name"])
    with pytest.raises(ConfigError, match=r"--compare names \['nope'\], not systems of this experiment \(a, top3, b\)"):
        pick_pair(stored, ("a", "nope"))
    page = write_report(tmp_path / "r", compare=("a", "b")).read_text()
    assert page.count("class='bar'") == 4 and "Per query: b against a" in page
    data = re.search(r"<script type='application/json' id='rf-data-0'>(.*?)</script>", page, re.S).group(1)
    assert json.loads(data.replace("<\\/", "</"))["a"] == "a"


def test_query_links_are_url_encoded_and_infinite_scores_stay_valid_json():
    from rerankflow import Candidate, Document, Query, Ranking
    from rerankflow.eval.details import details
    from rerankflow.eval.report_queries import _href

    assert _href(0, "a b%/&") == "#e0:q=a%20b%25%2F%26"
    ranked = Ranking(Query("q", "x"), (Candidate(Document("d", "t"), float("-inf"), "pointwise"),))
    text = json.dumps(details({"s": [ranked]}, {}, {}), allow_nan=False)  # raises on NaN/inf
    assert json.loads(text)["systems"]["s"]["q"]["ranking"][0]["score"] is None


def test_the_report_assets_are_package_files_that_lint_and_are_embedded(tmp_path):
    """The page's CSS and JavaScript are files a linter and an editor can read; the page embeds
    them (it stays one self-contained file)."""
    import shutil
    import subprocess
    from importlib import resources

    folder = resources.files("rerankflow.eval") / "assets"
    css, js = (folder / "report.css").read_text(), (folder / "report_queries.js").read_text()
    assert css.count("{") == css.count("}") > 30 and "function" in js
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the JavaScript syntax check needs it")
    (tmp_path / "report_queries.js").write_text(js)
    done = subprocess.run([node, "--check", str(tmp_path / "report_queries.js")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    from rerankflow.eval.report_queries import asset

    assert asset("report.css") == css and asset("report_queries.js") == js
