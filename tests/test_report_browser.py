"""The report's per-query view in a real browser: headless Chromium (Debian's package) driven
by Playwright. A job runs for real, ``rerankflow report`` renders it, the test opens the page,
clicks a query in the per-query chart and checks the side-by-side view that appears."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from rerankflow.cli.main import main
from rerankflow.io.dataset import builtin_path

from .support import EXAMPLES, SHARED_DATA

pytestmark = pytest.mark.slow  # real jobs, a real browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    if not Path(CHROMIUM).is_file():
        pytest.skip("chromium not installed (make test installs Debian's chromium package when it can)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def open_report(browser, results: Path, *compare: str):
    argv = ["-q", "report", str(results), *(["--compare", *compare] if compare else [])]
    assert main(argv) == 0
    page = browser.new_page(viewport={"width": 1366, "height": 900})  # a laptop screen
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "request",
        lambda r: errors.append(f"network request {r.url}") if not r.url.startswith(("file:", "data:")) else None,
    )
    page.goto((results / "report.html").resolve().as_uri())
    return page, errors


def run_job(tmp_path: Path, text: str) -> Path:
    job = tmp_path / "job.yaml"
    job.write_text(text)
    out = tmp_path / "results"
    assert main(["-q", "run", str(job), "-o", str(out)]) == 0
    return out


def demo_job(limit: int) -> str:
    text = (EXAMPLES / "demo.yaml").read_text()
    return text.replace("  builtin: demo\n", f"  builtin: demo\n  limit: {limit}\n")


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory, smollm2, minilm):
    return run_job(tmp_path_factory.mktemp("demo"), demo_job(6))


def test_the_first_page_answers_the_question(browser, demo_results):
    """Headed by the job with its run metadata; p-values and +/- in the main table; every
    system on the quality-against-cost plot; per-query LLM time as a distribution."""
    page, errors = open_report(browser, demo_results)
    assert page.locator("h2").first.inner_text() == "Job demo"
    env = page.locator("p.env").first.inner_text()
    assert re.search(r"run \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", env) and "cores)" in env and "rerankflow " in env
    assert "model smollm2-135m-instruct" in page.locator("body").inner_text()
    table = page.locator("table").first
    header = table.locator("th").all_inner_texts()
    assert header[:7] == ["system", "nDCG@10", "R@10", "RR@10", "p(t) nDCG@10", "p(W) nDCG@10", "+/-"]
    rows = table.locator("tr")
    systems = [rows.nth(i).locator("td").first.inner_text() for i in range(1, rows.count())]
    assert len(systems) == 7 and systems[0] == "bm25"
    for i in range(2, rows.count()):  # every system but the baseline has its p-values and +/-
        cells = rows.nth(i).locator("td").all_inner_texts()
        assert re.fullmatch(r"<0\.001|0\.\d{3}|1\.000|n/a", cells[4]) and re.fullmatch(r"\d+/\d+", cells[6])
    cost = page.locator("figure", has_text="against seconds per query, every method")
    assert cost.count() == 1 and cost.locator("img").evaluate("i => i.naturalWidth") > 300
    assert "one dot per query" in page.locator("figcaption").nth(2).inner_text()
    assert "not placed" not in page.locator("body").inner_text()
    assert errors == []


def test_demo_report_shows_wins_and_losses_and_a_query_side_by_side(browser, demo_results):
    page, errors = open_report(browser, demo_results)
    bars = page.locator("a.bar")
    assert bars.count() == 6
    heading = page.locator("h3[id^=e]").first.inner_text()
    assert heading.startswith("Per query:") and heading.endswith("against bm25")  # default: baseline vs best
    values = [float(v) for v in page.locator("a.bar .v").all_inner_texts()]
    assert values == sorted(values, reverse=True)
    bars.first.click()
    page.wait_for_selector(".qhead")
    qid = page.url.split("q=")[1]
    assert qid in page.locator(".qhead").inner_text()
    columns = page.locator(".detail .sbs").last.locator(".col")
    assert columns.count() == 2 and columns.first.locator("h4").inner_text() == "bm25"
    first = columns.nth(1).locator(".item").first
    assert re.fullmatch(r"[0-3?]", first.locator(".grade").inner_text())
    assert first.locator("mark").count() >= 1  # a query term in the passage
    inside_words = page.evaluate(
        """() => [...document.querySelectorAll('.detail .text mark:not(.kept)')].filter(m => {
            const before = (m.previousSibling && m.previousSibling.textContent) || '';
            const after = (m.nextSibling && m.nextSibling.textContent) || '';
            return /[\\p{L}\\p{N}]$/u.test(before) || /^[\\p{L}\\p{N}]/u.test(after);
        }).map(m => m.parentElement.textContent)"""
    )
    assert inside_words == []  # whole words only: no term marked inside a longer word
    assert first.locator(".hist").inner_text().startswith("bm25 ")  # the score history starts at retrieval
    assert page.locator(".detail .move").count() > 0
    assert errors == []


def test_llm_stage_calls_and_a_rag_answer_with_kept_sentences_and_citations(browser, demo_results):
    page, errors = open_report(browser, demo_results, "bm25-llm-pointwise", "bm25-rag")
    page.locator("a.bar").nth(2).click()
    page.wait_for_selector(".qhead")
    usage = page.locator(".detail .usage").first.inner_text()
    assert usage.startswith("bm25-llm-pointwise LLM use on this query: pointwise: 10 calls")
    assert "bm25-rag LLM use on this query: generate: 1 calls" in page.locator(".detail").inner_text()
    answer_col = page.locator(".detail .col").filter(has=page.locator("p.answer"))
    assert answer_col.count() == 1
    assert answer_col.locator("mark.kept").count() >= 1  # the sentences the compressor kept
    assert answer_col.locator(".item").count() >= 1  # the passages sent, numbered as in the prompt
    assert "citations:" in answer_col.inner_text()
    assert errors == []


def test_a_run_without_judgments_lists_queries_and_shows_unknown_grades(browser, tmp_path, minilm):
    topics = tmp_path / "topics.tsv"
    topics.write_text("u1\thow does bm25 normalise document length\nu2\twhat is reciprocal rank fusion\n")
    corpus = builtin_path("demo", "corpus.jsonl")
    results = run_job(
        tmp_path,
        f"name: nojudge\nallow_outside_paths: true\ndataset: {{corpus: {corpus}, topics: {topics}}}\n"
        "pipelines:\n  bm25: [bm25: {k: 10}]\n  rerank: [bm25: {k: 10}, biencoder: {model: all-minilm-l6-v2}]\n",
    )
    page, errors = open_report(browser, results)
    assert page.locator("a.bar").count() == 0 and "no judgments" in page.inner_text("body")
    page.locator("a.ql", has_text="u2").click()
    page.wait_for_selector(".qhead")
    assert "reciprocal rank fusion" in page.locator(".qhead").inner_text()
    assert set(page.locator(".detail .grade").all_inner_texts()) == {"?"}
    assert "grades unknown" in page.locator(".detail").inner_text()
    assert errors == []


@pytest.mark.shared_data
def test_dl19_report_side_by_side(browser, tmp_path, trec_dl, minilm):
    text = (EXAMPLES / "dl19-dense.yaml").read_text()
    text = text.replace("../../shared/data", str(SHARED_DATA))
    text = text[: text.index("  bm25:\n")]  # BM25's top 30 against the bi-encoder's order of them
    text += "  bm25: [cutoff: {k: 30}]\n  biencoder: [cutoff: {k: 30}, biencoder: {model: all-minilm-l6-v2}]\n"
    text += "measures: [nDCG@10]\nbaseline: bm25\n"
    results = run_job(tmp_path, text)
    page, errors = open_report(browser, results)
    bars = page.locator("a.bar")
    assert bars.count() == 43
    worst = bars.last
    assert float(worst.locator(".v").inner_text()) < 0  # a query the bi-encoder hurt
    worst.click()
    page.wait_for_selector(".qhead")
    detail = page.locator(".detail")
    assert detail.locator(".col").count() == 2 and detail.locator(".item").count() == 40
    grades = detail.locator(".grade").all_inner_texts()
    assert any(g in "123" for g in grades) and "?" in grades  # judged and unjudged passages
    assert detail.locator(".move.up").count() > 0 and detail.locator(".move.down").count() > 0
    page.screenshot(path=str(tmp_path / "query-view.png"))
    assert (tmp_path / "query-view.png").stat().st_size > 10_000
    assert errors == []
